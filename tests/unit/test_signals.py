"""lab/signals.py: one owner of SIGINT/SIGTERM/SIGHUP; a signal during a teardown is held, not lost."""

import os
import signal

import pytest

from vclab.lab.signals import interrupts


def test_a_signal_during_a_teardown_is_raised_when_it_is_done():
    before = signal.getsignal(signal.SIGINT)
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts.interruptible():
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                finished = True  # the teardown went on to its end
    assert finished
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_during_a_failing_teardown_wins_over_the_failure():
    with pytest.raises(SystemExit) as exit_:
        with interrupts.interruptible():
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                raise RuntimeError("a bridge would not go")
    assert exit_.value.code == 128 + signal.SIGTERM


def test_an_interrupt_already_on_its_way_out_is_not_doubled():
    with pytest.raises(KeyboardInterrupt) as raised:
        with interrupts.interruptible():
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                raise KeyboardInterrupt("first")
    assert str(raised.value) == "first"


def test_nested_owners_share_the_handlers_and_the_outermost_restores():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with interrupts.interruptible():
        inside = signal.getsignal(signal.SIGTERM)
        with interrupts.interruptible():
            assert signal.getsignal(signal.SIGTERM) is inside
        assert signal.getsignal(signal.SIGTERM) is inside
        with pytest.raises(SystemExit):
            os.kill(os.getpid(), signal.SIGHUP)
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_quiet_teardown_raises_nothing():
    with interrupts.interruptible():
        with interrupts.deferred():
            pass
