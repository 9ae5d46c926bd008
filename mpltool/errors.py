"""Exit codes and the exceptions that carry them.

Every failure a user can cause maps to one exception class here, so the CLI can print one line and
exit with the documented code; anything else is an internal error (exit 1, traceback only with --debug).
"""


class ExitCode:
    OK = 0
    INTERNAL = 1
    USAGE = 2
    INVALID_INPUT = 3
    PREREQUISITE = 4
    TOOL_MISSING = 5
    TOOL_FAILED = 6
    VERIFICATION = 7
    INTERRUPTED = 130


EXIT_CODE_MEANINGS = [
    (ExitCode.OK, "success"),
    (ExitCode.INTERNAL, "unexpected internal error (traceback with --debug)"),
    (ExitCode.USAGE, "usage error: bad option, unknown recipe key, invalid value"),
    (ExitCode.INVALID_INPUT, "invalid input data or file (CIFAR file, checkpoint, GraphDef, manifest)"),
    (ExitCode.PREREQUISITE, "missing or stale prerequisite (no earlier stage, hash mismatch, lock held)"),
    (ExitCode.TOOL_MISSING, "external tool missing (atc, npu_bridge for --device npu)"),
    (ExitCode.TOOL_FAILED, "external tool failed (atc error codes are shown)"),
    (ExitCode.VERIFICATION, "verification failed (graph op check, parity check)"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C; training saves a checkpoint first)"),
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


class Interrupted(MpltoolError):
    exit_code = ExitCode.INTERRUPTED
