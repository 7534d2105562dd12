"""Ctrl-C during library start-up is held and raised once the start-up is over, and `kill` takes the
Ctrl-C path where asked (evor/interrupts.py)."""

import os
import signal
import sys
import time
import weakref

import pytest

from evor.interrupts import Terminated, dropped_interrupts_reraised, interrupts_deferred, sigterm_as_interrupt


@pytest.fixture
def sigint_handler():
    """Run the test with a known SIGINT handler (CI may start us with SIGINT ignored); restore it after."""
    previous = signal.getsignal(signal.SIGINT)

    def use(handler):
        signal.signal(signal.SIGINT, handler)

    yield use
    signal.signal(signal.SIGINT, previous)


def _run_on_briefly():
    """A few dozen function calls and returns: where Python runs a pending signal handler (between
    bytecodes of the main thread) and where `dropped_interrupts_reraised` raises a dropped interrupt
    again (at the next function event)."""
    for _ in range(50):
        time.sleep(0.001)


def test_an_interrupt_inside_the_block_is_raised_after_it(sigint_handler):
    sigint_handler(signal.default_int_handler)
    finished_block = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            _run_on_briefly()
            finished_block = True  # the interrupt did not cut the block short
    assert finished_block
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_interrupt_no_exception_and_the_handler_is_restored(sigint_handler):
    sigint_handler(signal.default_int_handler)
    with interrupts_deferred():
        _run_on_briefly()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):  # and Ctrl-C acts at once again after the block
        os.kill(os.getpid(), signal.SIGINT)
        _run_on_briefly()


def test_an_error_inside_the_block_wins_and_the_handler_is_restored(sigint_handler):
    sigint_handler(signal.default_int_handler)
    with pytest.raises(ValueError, match="bad input"):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            _run_on_briefly()
            raise ValueError("bad input")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("handler", ["ignored", "custom"])
def test_an_ignored_or_custom_sigint_is_left_alone(sigint_handler, handler):
    calls = []
    installed = signal.SIG_IGN if handler == "ignored" else (lambda signum, frame: calls.append(signum))
    sigint_handler(installed)
    with interrupts_deferred():
        assert signal.getsignal(signal.SIGINT) is installed
        os.kill(os.getpid(), signal.SIGINT)
        _run_on_briefly()
    assert signal.getsignal(signal.SIGINT) is installed
    assert calls == ([] if handler == "ignored" else [signal.SIGINT])


def test_sigterm_inside_the_block_is_raised_as_a_keyboard_interrupt_that_says_terminated():
    previous = signal.getsignal(signal.SIGTERM)
    reached_end = False
    with pytest.raises(KeyboardInterrupt) as raised:  # every Ctrl-C cleanup path catches it
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            _run_on_briefly()
            reached_end = True
    assert raised.type is Terminated and not reached_end  # unlike a deferred Ctrl-C, it stops the block
    assert signal.getsignal(signal.SIGTERM) is previous


class _Collected:
    pass


def _drop_inside_a_weakref_callback(exception: BaseException):
    """Raise `exception` where CPython cannot propagate it: in a weakref callback, which runs when the
    referent goes (as importlib's module-lock callback does during imports)."""
    def callback(_):
        raise exception

    thing = _Collected()
    ref = weakref.ref(thing, callback)
    del thing
    return ref


def test_an_interrupt_python_would_drop_is_raised_again_where_it_was_dropped(capsys):
    carried_on = False
    with pytest.raises(KeyboardInterrupt) as raised:
        with dropped_interrupts_reraised():
            _drop_inside_a_weakref_callback(KeyboardInterrupt())
            _run_on_briefly()
            carried_on = True
    assert not carried_on and type(raised.value) is KeyboardInterrupt
    assert "Exception ignored" not in capsys.readouterr().err  # no traceback: an interrupt is no error
    assert sys.getprofile() is None  # borrowed for one event, then given back
    # Without the hook Python drops it and the code runs on (what CI saw).
    unraisable = []
    previous = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        _drop_inside_a_weakref_callback(KeyboardInterrupt())
        _run_on_briefly()
    finally:
        sys.unraisablehook = previous
    assert [u.exc_type for u in unraisable] == [KeyboardInterrupt]


def test_a_dropped_sigterm_comes_back_as_terminated_and_other_errors_go_to_the_previous_hook():
    previous_term = signal.getsignal(signal.SIGTERM)
    seen = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with pytest.raises(Terminated):
            with sigterm_as_interrupt(), dropped_interrupts_reraised():
                _drop_inside_a_weakref_callback(ValueError("not an interrupt"))
                _run_on_briefly()
                assert [u.exc_type for u in seen] == [ValueError]  # printed as before, not raised
                _drop_inside_a_weakref_callback(Terminated())
                _run_on_briefly()
        assert sys.unraisablehook == seen.append  # the block put the previous hook back
    finally:
        sys.unraisablehook = previous
    assert signal.getsignal(signal.SIGTERM) is previous_term


def test_under_a_profiler_a_dropped_interrupt_goes_to_the_previous_hook_as_before():
    seen = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append

    def profiler(frame, event, arg):
        return None

    sys.setprofile(profiler)
    try:
        with dropped_interrupts_reraised():
            _drop_inside_a_weakref_callback(KeyboardInterrupt())
            _run_on_briefly()
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)
        sys.unraisablehook = previous
    assert [u.exc_type for u in seen] == [KeyboardInterrupt]
