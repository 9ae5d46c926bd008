"""Signals: SIGTERM is Ctrl-C in every command, and no signal lands inside a commit.

CI cancels a job with SIGTERM (then SIGKILL after a grace period). Python's default for SIGTERM is to
die at once: exit 143, no message, the stage left `running` and the lock file in place. Turning SIGTERM
(and SIGHUP, a closed terminal) into KeyboardInterrupt for the whole command lets the one interrupt path
(record `interrupted`, release the lock, exit 130) handle all three.

A signal that arrives while the manifest is being replaced or outputs are being renamed into place is
held back (blocked, not lost) until that short critical section ends, so it can never leave the
manifest and the files it names out of step.
"""

import contextlib
import signal
import threading

TERMINATING_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
_CRITICAL_SIGNALS = {signal.SIGINT} | set(TERMINATING_SIGNALS)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


_received = []  # signals delivered while interrupts are on (outermost block): one may have been swallowed
_depth = [0]


def _name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt naming the signal.

    Every signal raises (none is ignored), and each is remembered: some libraries swallow exceptions
    raised while they load (TensorFlow's SWIG start-up does), so `check_interrupted()` re-raises one that
    vanished once that code returns.
    """
    if not _main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        _received.append(signum)
        raise KeyboardInterrupt(_name(signum))

    if _depth[0] == 0:
        del _received[:]
    _depth[0] += 1
    for signum in _CRITICAL_SIGNALS:
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        yield
    finally:
        _depth[0] -= 1
        for signum, old in previous.items():
            signal.signal(signum, old)


def check_interrupted() -> None:
    """Raise the interrupt a signal asked for, if something swallowed it."""
    if _received and _depth[0]:
        raise KeyboardInterrupt(_name(_received[-1]))


@contextlib.contextmanager
def critical_section():
    """Hold back SIGINT/SIGTERM/SIGHUP for the duration (they are delivered when it ends)."""
    if not _main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _CRITICAL_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
