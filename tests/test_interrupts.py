"""Ctrl-C during library start-up is held and raised once the start-up is over, and `kill` takes the
Ctrl-C path where asked (evor/interrupts.py)."""

import os
import signal
import time

import pytest

from evor.interrupts import Terminated, interrupts_deferred, sigterm_as_interrupt


@pytest.fixture
def sigint_handler():
    """Run the test with a known SIGINT handler (CI may start us with SIGINT ignored); restore it after."""
    previous = signal.getsignal(signal.SIGINT)

    def use(handler):
        signal.signal(signal.SIGINT, handler)

    yield use
    signal.signal(signal.SIGINT, previous)


def _wait_for_signal_delivery():
    for _ in range(50):  # Python runs signal handlers between bytecodes of the main thread
        time.sleep(0.001)


def test_an_interrupt_inside_the_block_is_raised_after_it(sigint_handler):
    sigint_handler(signal.default_int_handler)
    finished_block = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for_signal_delivery()
            finished_block = True  # the interrupt did not cut the block short
    assert finished_block
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_interrupt_no_exception_and_the_handler_is_restored(sigint_handler):
    sigint_handler(signal.default_int_handler)
    with interrupts_deferred():
        _wait_for_signal_delivery()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):  # and Ctrl-C acts at once again after the block
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for_signal_delivery()


def test_an_error_inside_the_block_wins_and_the_handler_is_restored(sigint_handler):
    sigint_handler(signal.default_int_handler)
    with pytest.raises(ValueError, match="bad input"):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for_signal_delivery()
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
        _wait_for_signal_delivery()
    assert signal.getsignal(signal.SIGINT) is installed
    assert calls == ([] if handler == "ignored" else [signal.SIGINT])


def test_sigterm_inside_the_block_is_raised_as_a_keyboard_interrupt_that_says_terminated():
    previous = signal.getsignal(signal.SIGTERM)
    reached_end = False
    with pytest.raises(KeyboardInterrupt) as raised:  # every Ctrl-C cleanup path catches it
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal_delivery()
            reached_end = True
    assert raised.type is Terminated and not reached_end  # unlike a deferred Ctrl-C, it stops the block
    assert signal.getsignal(signal.SIGTERM) is previous
