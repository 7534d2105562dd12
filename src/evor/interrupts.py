"""Ctrl-C that stops evor cleanly, even while the simulation stack is starting up.

CPython raises KeyboardInterrupt at the next bytecode after SIGINT, wherever that is. While MuJoCo,
dm_control and OGBench are being imported and an environment is being built, that is unsafe (measured
by sending SIGINT at random times to `evor data generate`): pybind11 module initialisation turns the
interrupt into "ImportError: initialization failed" with a traceback, dm_control's XML parser rewraps
it, and C code that clears pending errors (hasattr-style lookups) can drop it altogether, so the
Ctrl-C is lost and the run carries on. `interrupts_deferred()` holds a Ctrl-C pressed during such code
and raises it as a plain KeyboardInterrupt as soon as the code has finished.

A Ctrl-C can also be lost in pure Python: CPython cannot raise an exception out of a weakref callback
or a `__del__` method, so one that lands there is printed as "Exception ignored in ..." and dropped
(CI, 2026-12-07: SIGINT 0.3 s after `evor data generate` started hit importlib's module-lock callback
while the CLI imported its modules, and generation ran on). `dropped_interrupts_reraised()` raises
such an interrupt again in the code it interrupted, where it propagates.

`kill PID` (SIGTERM) ends a Python process where it stands, so a study runner killed that way left its
cells training as orphans. `sigterm_as_interrupt()` makes SIGTERM take the Ctrl-C path instead, as
`Terminated`, a KeyboardInterrupt that says where it came from (a terminal's Ctrl-C reaches a whole
process group, a `kill` only the process named).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


@contextlib.contextmanager
def interrupts_deferred():
    """Run the block with SIGINT recorded, not raised; raise KeyboardInterrupt after it if one came.

    Only the default handler is replaced: when SIGINT is ignored (nohup, a background job of a
    non-interactive shell) or the caller installed its own handler, the block runs unchanged. Python
    signal handlers run in the main thread, so elsewhere this is a no-op too.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by `sigterm_as_interrupt()`; caught as KeyboardInterrupt wherever Ctrl-C is."""


@contextlib.contextmanager
def dropped_interrupts_reraised():
    """Run the block with a KeyboardInterrupt (or `Terminated`) that Python had to drop, raised inside
    a weakref callback or `__del__` where exceptions only reach `sys.unraisablehook`, raised again at
    the thread's next function call or return, where it propagates. Nothing is printed for it: an
    interrupt is not an error. Every other unraisable exception goes to the hook installed before, as
    it would have, and so does an interrupt while a profiler is installed (the re-raise borrows
    `sys.setprofile` for one event and would displace it)."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and sys.getprofile() is None):
            previous(unraisable)
            return
        interrupt = unraisable.exc_value.with_traceback(None)

        def raise_at_next_event(frame, event, arg):
            # Raising from the hook itself would be dropped again; the first event outside it is in the
            # code the interrupt was meant for (or in another callback, which sends it here once more).
            if frame.f_code is hook.__code__:
                return
            sys.setprofile(None)
            raise interrupt

        sys.setprofile(raise_at_next_event)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Run the block with SIGTERM raised as `Terminated` (a KeyboardInterrupt), so that `kill PID` stops
    it the way Ctrl-C does (its cleanup runs) rather than ending the process mid-step. The previous
    handler is restored after; outside the main thread this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["Terminated", "dropped_interrupts_reraised", "interrupts_deferred", "sigterm_as_interrupt"]
