"""Signals: SIGTERM is Ctrl-C in every command, and no signal lands inside a commit.

CI cancels a job with SIGTERM (then SIGKILL after a grace period). Python's default for SIGTERM is to
die at once: exit 143, no message, the stage left `running` and the lock file in place. Turning SIGTERM
(and SIGHUP, a closed terminal) into KeyboardInterrupt for the whole command lets the one interrupt path
(record `interrupted`, release the lock, exit 130) handle all three.

A signal that arrives while the manifest is being replaced or outputs are being renamed into place is
held back (recorded, not lost) until that short critical section ends, so it can never leave the
manifest and the files it names out of step.
"""

import contextlib
import os
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


_held = []  # signals that arrived inside the outermost critical section, delivered when it ends
_critical_depth = [0]


@contextlib.contextmanager
def critical_section():
    """Hold back SIGINT/SIGTERM/SIGHUP for the duration (they are delivered when it ends).

    Two layers, because blocking alone is not enough: pthread_sigmask blocks a signal for the calling
    thread only, and a process-directed signal (kill, CI's SIGTERM) is delivered to any thread that does
    not block it (TensorFlow's thread pools). Python then runs its handler in the main thread at the next
    bytecode, inside the section. So the section also swaps in handlers that only record the signal, and
    replays each recorded one through the previous handler (or its default action) once it ends.
    """
    if not _main_thread():
        yield
        return
    _critical_depth[0] += 1
    if _critical_depth[0] > 1:
        try:
            yield
        finally:
            _critical_depth[0] -= 1
        return
    previous = {signum: signal.getsignal(signum) for signum in _CRITICAL_SIGNALS}
    del _held[:]
    for signum in _CRITICAL_SIGNALS:
        signal.signal(signum, lambda signum, frame: _held.append(signum))
    blocking = hasattr(signal, "pthread_sigmask")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CRITICAL_SIGNALS) if blocking else None
    try:
        yield
    finally:
        _critical_depth[0] -= 1
        for signum, old in previous.items():
            signal.signal(signum, old)
        if blocking:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a blocked one now runs the restored handler
        _replay(previous)


def _replay(previous) -> None:
    held, _held[:] = list(_held), []
    for signum in held:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)  # terminate_as_interrupt's handler or Python's SIGINT: raises
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action (SIGTERM: the process ends), as if never held
