"""Exit codes and the exceptions that carry them.

Every failure a user can cause maps to one exception class here, so the CLI can print one line and
exit with the documented code; anything else is an internal error (exit 1, traceback only with --debug).
"""

import errno


class ExitCode:
    OK = 0
    INTERNAL = 1
    USAGE = 2
    INVALID_INPUT = 3
    PREREQUISITE = 4
    TOOL_MISSING = 5
    TOOL_FAILED = 6
    VERIFICATION = 7
    NO_SPACE = 8
    NON_FINITE = 9
    INTERRUPTED = 130


EXIT_CODE_MEANINGS = [
    (ExitCode.OK, "success"),
    (ExitCode.INTERNAL, "unexpected internal error (traceback with --debug)"),
    (ExitCode.USAGE, "usage error: bad option, unknown recipe key, invalid value"),
    (ExitCode.INVALID_INPUT, "invalid input data or file (CIFAR file, checkpoint, GraphDef, manifest)"),
    (ExitCode.PREREQUISITE, "missing or stale prerequisite (no earlier stage, hash mismatch, lock held)"),
    (ExitCode.TOOL_MISSING, "external tool missing (atc, npu_bridge for --device npu, the onnx extra)"),
    (ExitCode.TOOL_FAILED, "external tool failed (atc error codes are shown; a rank of a data-parallel job died)"),
    (ExitCode.VERIFICATION, "verification failed (graph op check, parity check)"),
    (ExitCode.NO_SPACE, "out of disk space (nothing recorded is lost; free space and re-run)"),
    (ExitCode.NON_FINITE, "non-finite numbers: training diverged (last finite checkpoint kept) or a model gives NaN"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C or SIGTERM; training saves a checkpoint first)"),
]


class MpltoolError(Exception):
    """A failure the user can act on: one line of text and an exit code."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self):
        if self.hint:
            return "{} ({})".format(self.message, self.hint)
        return self.message


class UsageError(MpltoolError):
    exit_code = ExitCode.USAGE


class InvalidInputError(MpltoolError):
    exit_code = ExitCode.INVALID_INPUT


class PrerequisiteError(MpltoolError):
    exit_code = ExitCode.PREREQUISITE


class ToolMissingError(MpltoolError):
    exit_code = ExitCode.TOOL_MISSING


class ToolFailedError(MpltoolError):
    exit_code = ExitCode.TOOL_FAILED


class VerificationError(MpltoolError):
    exit_code = ExitCode.VERIFICATION


class NoSpaceError(MpltoolError):
    exit_code = ExitCode.NO_SPACE


class NonFiniteError(MpltoolError):
    exit_code = ExitCode.NON_FINITE


class Interrupted(MpltoolError):
    exit_code = ExitCode.INTERRUPTED


_NO_SPACE_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")


def first_line(exc: BaseException) -> str:
    """One line of an exception's text: TensorFlow appends whole stack traces to its messages."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def os_error(exc: OSError, doing: str) -> MpltoolError:
    """An OSError met while `doing` something: out of space (exit 8) or a one-line invalid-input error."""
    error = classify(exc)
    if isinstance(error, NoSpaceError):
        return error
    return InvalidInputError("{}: {}".format(doing, exc.strerror or first_line(exc)))


def _interrupt_in_chain(exc: BaseException):
    """The KeyboardInterrupt behind `exc`, if any: a signal that lands inside a C call of TensorFlow's comes
    back as `SystemError: ... returned a result with an error set` caused by it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def classify(exc: BaseException):
    """The MpltoolError a raw exception stands for, or None when it is a genuine internal error.

    One place decides this for every command, so a full disk, an unwritable folder, a path that is a file
    or too long, or undecodable text is the same one-line error whichever stage hits it.
    """
    if isinstance(exc, MpltoolError):
        return exc
    interrupt = _interrupt_in_chain(exc)
    if interrupt is not None:
        return Interrupted("interrupted" + (" by {}".format(interrupt.args[0])
                                            if interrupt.args and interrupt.args[0] else ""))
    errno_value = getattr(exc, "errno", None)
    text = str(exc)
    if errno_value in _NO_SPACE_ERRNOS or any(marker in text for marker in _NO_SPACE_TEXT):
        where = getattr(exc, "filename", None)
        return NoSpaceError("out of disk space{}".format(" writing {}".format(where) if where else ""),
                            hint="free space and re-run the same command: what was recorded before is intact")
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInputError("a file is not UTF-8 text: {}".format(first_line(exc)))
    if isinstance(exc, OSError) and errno_value is not None:
        where = getattr(exc, "filename", None)
        reason = exc.strerror or first_line(exc)
        if errno_value == errno.EEXIST:
            reason = "a file is in the way of a folder (move or remove it)"
        elif errno_value == errno.ENOTDIR:
            reason = "a part of the path is a file, not a folder"
        if where is not None:
            shown = str(where)
            if len(shown) > 120:
                shown = shown[:60] + "..." + shown[-40:]
            return InvalidInputError("cannot use {}: {}".format(shown, reason))
        return InvalidInputError(reason)
    return None
