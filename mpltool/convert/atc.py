"""Huawei's `atc`: find it, build its command line (here and nowhere else), run it, read its output.

Facts in docs/atc.md §1: ATC prints everything, errors included, on stdout; success
is the line `ATC run success, welcome to the next use.` with exit 0; failures print error-code lines
(`E10016: ...`, CANN 8: `E10007: [PID: n] <timestamp> ...`) and exit 255.
"""

import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import time
from collections import OrderedDict, namedtuple
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence

from mpltool.convert.soc import platform_config_files
from mpltool.errors import ToolFailedError, ToolMissingError, UsageError

DEFAULT_TOOLKIT_ROOT = Path("/usr/local/Ascend/ascend-toolkit/latest")
SET_ENV_SCRIPT = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
# Where a toolkit root keeps atc: CANN 5 `atc/bin`, CANN 7/8 `<arch>-linux/bin` (plus a `bin/` link farm).
TOOLKIT_ATC_PATHS = ("bin/atc", "atc/bin/atc", "*-linux/bin/atc", "*-linux/atc/bin/atc")

FRAMEWORK_TENSORFLOW = 3
FRAMEWORK_ONNX = 5
PRECISION_MODES = (
    "force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision", "allow_fp32_to_fp16",
    "must_keep_origin_dtype", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16",
)
# ATC's own default when --precision_mode is not given, for a TensorFlow or ONNX model (docs/atc.md §1).
DEFAULT_PRECISION_MODE = "force_fp16"
# The .om's logits against the .pb's, by how the precision mode computes (mpltool's tolerances, docs/atc.md
# §6): fp32 kernels differ from TensorFlow's CPU kernels by summation order only; fp16 keeps 11 significant
# bits (a logit of 10 is rounded by up to 0.004 at the output alone, more through the layers); bf16 keeps 8.
FP32_MODES = ("force_fp32", "must_keep_origin_dtype")
BF16_MODES = ("allow_mix_precision_bf16", "allow_fp32_to_bf16")
OM_TOLERANCES = {"fp32": 1e-3, "fp16": 0.1, "bf16": 0.5}


def om_tolerance(precision_mode: Optional[str]):
    """(max |logit difference| accepted between the .om and the .pb, why) for a conversion's precision mode."""
    mode = precision_mode or DEFAULT_PRECISION_MODE
    kind = "fp32" if mode in FP32_MODES else "bf16" if mode in BF16_MODES else "fp16"
    return OM_TOLERANCES[kind], "precision_mode {}{} computes in {}".format(
        mode, "" if precision_mode else " (atc's default)", kind)


LOG_LEVELS = ("debug", "info", "warning", "error", "null")
OUTPUT_TYPES = ("FP32", "FP16", "UINT8", "INT8")

SUCCESS_LINE = "ATC run success, welcome to the next use."
FAILURE_LINE_PREFIX = "ATC run failed"
# ATC refuses other characters in file paths (docs/atc.md §1); non-ASCII (CJK) is allowed there too.
_PATH_OK = re.compile(r"^[A-Za-z0-9_.+/\-\u0080-\uffff]+$")
# `E10016: msg`, `EZ3003: msg`, CANN 8 `E10007: [PID: 10490] 2025-03-18-09:02:18.501.341 msg`.
_ERROR_LINE = re.compile(
    r"^\s*(E[0-9A-Z]\d{4}):\s*(?:\[PID:\s*\d+\]\s*)?(?:\d{4}-\d{2}-\d{2}-\d{2}:\d{2}:\d{2}(?:\.\d+)*\s+)?(.*?)\s*$")
_VERSION_LINE = re.compile(r"\b(?:ATC|CANN)\s+version\b\s*[:=]?\s*([0-9][0-9A-Za-z.\-]*)", re.IGNORECASE)
# Values ATC's docs tell users to quote; shown as --key="value" so the line reads like the docs and the seed.
_QUOTED_VALUES = ("--input_shape", "--out_nodes", "--output_type")

AtcLocation = namedtuple("AtcLocation", "path rule toolkit_root")
AtcCommand = namedtuple("AtcCommand", "argv display")
AtcRun = namedtuple("AtcRun", "exit_status lines timed_out seconds timeout log_path")
AtcError = namedtuple("AtcError", "code message")


# -- discovery --------------------------------------------------------------------------------------
def _executable(path: Path) -> bool:
    return path.is_file() and os.access(str(path), os.X_OK)


def atc_under(root) -> Optional[Path]:
    """atc inside one toolkit root, trying each CANN layout."""
    if not root:
        return None
    root = Path(str(root))
    for pattern in TOOLKIT_ATC_PATHS:
        for candidate in sorted(root.glob(pattern)):
            if _executable(candidate):
                return candidate
    return None


def toolkit_root_of(atc_path) -> Optional[Path]:
    """The toolkit root that holds atc's platform_config inis: the nearest ancestor (of the path as found,
    then of its resolved target) that has them."""
    atc_path = Path(str(atc_path))
    for start in (atc_path.absolute(), atc_path.resolve()):
        for ancestor in list(start.parents)[:4]:
            if platform_config_files(ancestor):
                return ancestor
    return None


def find_atc(atc_path=None, default_root=DEFAULT_TOOLKIT_ROOT, environ=None) -> AtcLocation:
    """atc by rule: `--atc`, then PATH, then $ASCEND_TOOLKIT_HOME, then the default toolkit root."""
    environ = os.environ if environ is None else environ
    if atc_path:
        path = Path(str(atc_path)).expanduser()
        if path.is_dir():
            path = atc_under(path) or path / "atc"
        if not _executable(path):
            raise ToolMissingError("--atc {}: no executable atc there".format(atc_path),
                                   hint="pass the path of the atc program, or `source {}`".format(SET_ENV_SCRIPT))
        return AtcLocation(path.absolute(), "--atc", toolkit_root_of(path))
    on_path = shutil.which("atc", path=environ.get("PATH", os.defpath))
    if on_path:
        return AtcLocation(Path(on_path).absolute(), "PATH", toolkit_root_of(on_path))
    for rule, root in (("ASCEND_TOOLKIT_HOME", environ.get("ASCEND_TOOLKIT_HOME")), ("default toolkit", default_root)):
        found = atc_under(root)
        if found:
            return AtcLocation(found.absolute(), rule, toolkit_root_of(found) or Path(str(root)))
    raise ToolMissingError(
        "atc not found (not on PATH, not under $ASCEND_TOOLKIT_HOME or {})".format(default_root),
        hint="`source {}` or pass --atc PATH".format(SET_ENV_SCRIPT))


def default_toolkit_root(default_root=DEFAULT_TOOLKIT_ROOT, environ=None) -> Optional[Path]:
    """Where to look for platform_config when atc itself was not found: $ASCEND_TOOLKIT_HOME, else the default."""
    environ = os.environ if environ is None else environ
    for root in (environ.get("ASCEND_TOOLKIT_HOME"), default_root):
        if root and platform_config_files(root):
            return Path(str(root))
    return None


# -- the command line -------------------------------------------------------------------------------
def _choice(value: Optional[str], valid: Sequence[str], option: str) -> Optional[str]:
    if value is None or value in valid:
        return value
    raise UsageError("invalid {} {!r}; valid: {}".format(option, value, ", ".join(valid)))


def tensor_name(name: str) -> str:
    """`probs` -> `probs:0`: ATC's --out_nodes wants node:index."""
    return name if re.match(r"^.+:\d+$", name) else name + ":0"


def format_out_nodes(out_nodes) -> Optional[str]:
    if out_nodes is None:
        return None
    names = out_nodes.split(";") if isinstance(out_nodes, str) else list(out_nodes)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise UsageError("--out-nodes is empty", hint="give node names separated by ';', e.g. logits:0;probs:0")
    return ";".join(tensor_name(n) for n in names)


def validate_output_type(output_type: Optional[str]) -> Optional[str]:
    """FP32/FP16/UINT8/INT8 for all outputs, or `node:index:TYPE;...` per output."""
    if output_type is None or output_type in OUTPUT_TYPES:
        return output_type
    for item in output_type.split(";"):
        parts = item.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or parts[2] not in OUTPUT_TYPES:
            raise UsageError("invalid --output-type {!r}; valid: {} or node:index:TYPE[;...]".format(
                output_type, ", ".join(OUTPUT_TYPES)))
    return output_type


def format_input_shape(input_name: str, input_shape: Iterable[int]) -> str:
    dims = [int(d) for d in input_shape]
    if not dims or any(d <= 0 for d in dims):
        raise UsageError("input shape {} of {!r} is not fully static; ATC needs positive dimensions".format(
            dims, input_name))
    return "{}:{}".format(input_name, ",".join(str(d) for d in dims))


def check_atc_path(path, what: str) -> str:
    text = str(path)
    if not _PATH_OK.match(text):
        bad = sorted(set(c for c in text if not _PATH_OK.match(c)))
        raise UsageError("atc accepts only letters, digits and _ . + - / in paths; the {} path {} contains {}".format(
            what, text, " ".join(repr(c) for c in bad)),
            hint="move the project to a plain path or pass --output")
    return text


def display_arg(arg: str) -> str:
    if arg.startswith("--") and "=" in arg:
        key, value = arg.split("=", 1)
        if key in _QUOTED_VALUES and not re.search(r'["$`\\!]', value):
            return '{}="{}"'.format(key, value)
    return shlex.quote(arg)


def validate_options(precision_mode: Optional[str] = None, log_level: Optional[str] = None, out_nodes=None,
                     output_type: Optional[str] = None) -> "OrderedDict[str, Optional[str]]":
    """The optional atc flags, checked against docs/atc.md §1's lists and normalised, in command-line order."""
    return OrderedDict((
        ("--precision_mode", _choice(precision_mode, PRECISION_MODES, "--precision-mode")),
        ("--log", _choice(log_level, LOG_LEVELS, "--log")),
        ("--out_nodes", format_out_nodes(out_nodes)),
        ("--output_type", validate_output_type(output_type)),
    ))


def build_command(atc: str, model, output, soc_version: str, input_name: str, input_shape: Iterable[int],
                  precision_mode: Optional[str] = None, log_level: Optional[str] = None, out_nodes=None,
                  output_type: Optional[str] = None, framework: int = FRAMEWORK_TENSORFLOW) -> AtcCommand:
    """The atc argv (no shell) and the same line shell-quoted for pasting on a CANN host.

    `output` has no suffix: atc appends `.om` itself. `framework`: 3 for a frozen .pb, 5 for an .onnx.
    """
    if framework not in (FRAMEWORK_TENSORFLOW, FRAMEWORK_ONNX):
        raise ValueError("framework must be {} or {}, got {!r}".format(FRAMEWORK_TENSORFLOW, FRAMEWORK_ONNX, framework))
    options = validate_options(precision_mode, log_level, out_nodes, output_type)
    argv = [
        str(atc),
        "--model={}".format(check_atc_path(model, "model")),
        "--framework={}".format(framework),
        "--output={}".format(check_atc_path(output, "output")),
        "--soc_version={}".format(soc_version),
        "--input_shape={}".format(format_input_shape(input_name, input_shape)),
    ]
    argv.extend("{}={}".format(key, value) for key, value in options.items() if value is not None)
    return AtcCommand(argv, " ".join(display_arg(a) for a in argv))


# -- running ----------------------------------------------------------------------------------------
def _kill_group(proc: subprocess.Popen) -> None:
    """atc is a bash wrapper around atc.bin: kill the whole process group, not just the wrapper."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_atc(argv: Sequence[str], cwd, log_path, timeout: float, progress: Optional[Callable[[str], None]] = None,
            env=None) -> AtcRun:
    """Run atc in `cwd` (where it drops fusion_result.json and kernel_meta/), teeing its output to `log_path`
    and to `progress` line by line; past `timeout` seconds the process group is killed."""
    log_path = Path(str(log_path))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    Path(str(cwd)).mkdir(parents=True, exist_ok=True)
    lines = []  # type: List[str]
    started = time.monotonic()
    deadline = started + timeout
    timed_out = False
    with open(str(log_path), "w", encoding="utf-8") as log:
        log.write("$ {}\n".format(" ".join(display_arg(a) for a in argv)))
        log.flush()

        def emit(raw: bytes) -> None:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            lines.append(line)
            log.write(line + "\n")
            log.flush()
            if progress is not None:
                progress(line)

        try:
            proc = subprocess.Popen(list(argv), cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            raise ToolFailedError("cannot run {}: {}".format(argv[0], exc.strerror or exc))
        try:
            pending = b""
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        timed_out = True
                        break
                    if not selector.select(min(remaining, 1.0)):
                        continue
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for raw in complete:
                        emit(raw)
            if pending:
                emit(pending)
            if not timed_out:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    timed_out = True
            if timed_out:
                _kill_group(proc)
                log.write("# mpltool: killed after {:g} s (timeout)\n".format(timeout))
        finally:
            if proc.poll() is None:  # KeyboardInterrupt or an error while reading: never leave atc behind
                _kill_group(proc)
            proc.stdout.close()
    return AtcRun(proc.returncode, lines, timed_out, time.monotonic() - started, timeout, log_path)


# -- reading its output -----------------------------------------------------------------------------
def parse_errors(lines: Iterable[str]) -> List[AtcError]:
    """Error-code lines in order, duplicates dropped (ATC often repeats a code in its TraceBack)."""
    errors = []  # type: List[AtcError]
    for line in lines:
        match = _ERROR_LINE.match(line)
        if match:
            error = AtcError(match.group(1), match.group(2))
            if error not in errors:
                errors.append(error)
    return errors


def parse_version(lines: Iterable[str]) -> Optional[str]:
    """The version atc reports about itself, if it does; None rather than a guess."""
    for line in lines:
        match = _VERSION_LINE.search(line)
        if match:
            return match.group(1).rstrip(".")
    return None


def query_version(atc_path, timeout: float = 30.0) -> Optional[str]:
    """Ask `atc --version`; builds without that flag just print no version line and give None."""
    try:
        done = subprocess.run([str(atc_path), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout, start_new_session=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(done.stdout.decode("utf-8", errors="replace").splitlines())


def failure_summary(run: AtcRun, log_label: str) -> str:
    """One line for the user: the first error code and its message, how many more, and where the log is."""
    errors = parse_errors(run.lines)
    if errors:
        first = "{}: {}".format(errors[0].code, errors[0].message.rstrip("."))
        if len(errors) > 1:
            first += " (+{} more)".format(len(errors) - 1)
    else:
        tail = [line.strip() for line in run.lines if line.strip() and set(line.strip()) != {"."}]
        first = "no error code in its output" + ("; last line: {}".format(tail[-1]) if tail else "")
    return "atc failed (exit {}): {}; see {}".format(run.exit_status, first, log_label)


def check_run(run: AtcRun, om_path, log_label: str) -> None:
    """Success needs all three: exit 0, ATC's success line, and the .om on disk."""
    if run.timed_out:
        raise ToolFailedError("atc timed out after {:g} s and was killed; its output so far is in {}".format(
            run.timeout, log_label), hint="raise --timeout if the model is just slow")
    succeeded = any(line.strip() == SUCCESS_LINE for line in run.lines)
    if run.exit_status != 0 or not succeeded:
        if run.exit_status == 0:
            raise ToolFailedError("atc exited 0 without printing '{}'; see {}".format(SUCCESS_LINE, log_label))
        raise ToolFailedError(failure_summary(run, log_label))
    if not Path(str(om_path)).is_file():
        raise ToolFailedError("atc reported success but wrote no {}; see {}".format(om_path, log_label))
