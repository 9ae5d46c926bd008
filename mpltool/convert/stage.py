"""The `convert` stage: frozen .pb -> Ascend .om through atc, recorded in the project manifest.

Read top to bottom: the frozen graph (from the freeze record, hash-checked, or a .pb given explicitly; or an
.onnx given explicitly, converted with --framework=5 and pre-checked by convert/onnx_check.py),
the offline pre-check, atc and the soc_version (each with the rule that found it), the exact command,
then either the command for a CANN host (check-only / no atc) or the run and its .om, which is then run on
the host's Ascend device, when it has one and CANN's runtime (models/om_runtime.py), against the .pb on
the parity images (`--verify`; the tolerance follows the precision mode, convert/atc.py om_tolerance).
"""

import datetime
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from mpltool.convert import atc as atc_tool
from mpltool.convert import onnx_check
from mpltool.models import onnx_file
from mpltool.convert import precheck as graph_check
from mpltool.convert.soc import SocChoice, resolve_soc
from mpltool.errors import PrerequisiteError, ToolMissingError, UsageError, VerificationError
from mpltool.manifest import Project
from mpltool.manifest.records import typed
from mpltool.manifest.stages import command as stage_command
from mpltool.models import artifacts, om_runtime
from mpltool.manifest.files import sha256_file
from mpltool.models.verify import parity_tolerance, whole_number

OM_DIR = "om"
LOG_DIR = "logs"
WORK_DIR = "atc-work"
CHECK_STAGE = "convert-check"  # where a --check-only run is recorded: it converts nothing
SOC_PLACEHOLDER = "<SOC>"  # atc's cwd: fusion_result.json and kernel_meta/ land here, not in the user's cwd


def _batch_one(shape):
    """An unknown batch dimension is converted for batch 1, as the seed did; other unknown dims stay -1."""
    if shape is None:
        return None
    dims = [-1 if d is None else int(d) for d in shape]
    return [1] + dims[1:] if dims and dims[0] == -1 else dims


def _frozen_graph(project: Project, model) -> Dict[str, Any]:
    """The model to convert (the freeze record's .pb, verified, or a .pb or .onnx given: models/artifacts.py)
    and its input/output names: from the freeze record when it is that record's .pb, else read from the
    file (a .pb's Placeholder, an .onnx's one graph input)."""
    artifact = artifacts.resolve(project, model, kinds=("pb", "onnx"), default="frozen", what="convert --model")
    path = artifact.path
    if artifact.kind == "onnx":
        onnx_model = onnx_file.read_onnx(path)
        given = onnx_file.graph_input(onnx_model, str(path))
        return {"pb": path, "format": "onnx", "onnx": onnx_model, "input_name": given["name"],
                "input_shape": _batch_one(given["shape"]), "output_names": [],
                "io_source": "input of {}".format(path.name)}
    record = project.record("freeze")
    recorded = record.done and record.io and record.output("pb").get("sha256") == sha256_file(path)
    if artifact.record is not None and not (record.io.get("input_name") and record.io.get("input_shape")):
        raise PrerequisiteError("the freeze record lacks the .pb or its input name/shape",
                                hint="re-run `{}`".format(stage_command("freeze")))
    graph_def = graph_check.load_graph_def(path)
    if recorded:
        io = record.io
        return {"pb": path, "format": "pb", "graph_def": graph_def, "input_name": io["input_name"],
                "input_shape": _batch_one(io["input_shape"]), "output_names": list(io.get("output_names") or []),
                "io_source": "freeze record"}
    placeholder = graph_check.graph_input(graph_def)
    return {"pb": path, "format": "pb", "graph_def": graph_def, "input_name": placeholder["name"],
            "input_shape": _batch_one(placeholder["shape"]), "output_names": [],
            "io_source": "Placeholder in {}".format(path.name)}


def _locate_toolkit(atc, toolkit_root):
    """(atc location or None, the ToolMissingError if none, the root whose platform_config inis count).

    The inis come from an explicit toolkit root first, else from beside atc, else $ASCEND_TOOLKIT_HOME or
    the default root."""
    default_root = Path(str(toolkit_root)) if toolkit_root else atc_tool.DEFAULT_TOOLKIT_ROOT
    try:
        location, missing = atc_tool.find_atc(atc, default_root=default_root), None
    except ToolMissingError as exc:
        location, missing = None, exc
    if toolkit_root:
        ini_root = default_root
    elif location is not None and location.toolkit_root is not None:
        ini_root = location.toolkit_root
    else:
        ini_root = atc_tool.default_toolkit_root(default_root)
    return location, missing, ini_root


def _output_base(project: Project, pb: Path, output) -> Path:
    if output is None:
        return project.path(OM_DIR) / pb.stem
    text = str(output)
    if text.endswith("/") or Path(text).is_dir():
        raise UsageError("--output {} is a directory; give a file name without .om, e.g. {}/{}".format(
            text, text.rstrip("/"), pb.stem))
    base = Path(text).expanduser().absolute()
    return base.with_suffix("") if base.suffix == ".om" else base


def _new_log_path(project: Project) -> Path:
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    path = project.path(LOG_DIR) / "atc-{}.log".format(stamp)
    counter = 1
    while path.exists():
        path = project.path(LOG_DIR) / "atc-{}-{}.log".format(stamp, counter)
        counter += 1
    return path


def _fingerprint(argv, atc_path: Path, pb_sha256: str) -> str:
    """Same command, same atc binary (a `latest` link resolves to the installed version), same .pb."""
    payload = {"argv": list(argv), "atc": str(atc_path.resolve()), "pb": pb_sha256}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _up_to_date(project: Project, previous: Dict[str, Any], fingerprint: str) -> Optional[Dict[str, Any]]:
    """The earlier convert record when it converted this very command and its .om is still the recorded one."""
    if not previous or previous.get("status") != "done" or previous.get("fingerprint") != fingerprint:
        return None
    om_record = typed("convert", previous).output("om")
    if not om_record:
        return None
    try:
        project.verify_file(om_record, "offline model")
    except PrerequisiteError:
        return None
    return previous


def convert(project_dir, soc: Optional[str] = None, atc: Optional[str] = None, model=None, output=None,
            check_only: bool = False, precision_mode: Optional[str] = None, log_level: Optional[str] = None,
            out_nodes=None, output_type: Optional[str] = None, timeout: float = 900, npu_smi: Optional[str] = None,
            toolkit_root=None, force: bool = False, verify: Optional[bool] = None, parity_images: int = 1000,
            tolerance: Optional[float] = None,
            progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Convert the frozen graph to `<project>/om/<pb stem>.om`, or with `check_only` print how to.

    `model` and `output` (no .om suffix needed) are paths as the user typed them, relative to the cwd.
    `toolkit_root` stands in for /usr/local/Ascend/ascend-toolkit/latest: the last place atc is looked for,
    and the platform_config set that validates soc_version. A check-only run is recorded with mode
    `check-only` and no .om output. `verify`: None runs the .om against the .pb when a runtime and a device
    are here (else records why not), True requires it, False skips it; `parity_images` (0: all) and
    `tolerance` (None: by precision mode) as freeze's.
    """
    if timeout is None or timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds, not {}".format(timeout))
    parity_images = whole_number(parity_images, "parity images", 0)
    tolerance = None if tolerance is None else parity_tolerance(tolerance)
    runtime = None  # the .om's runtime: required (exit 5 before atc spends minutes) with --verify
    if not check_only and verify is not False:
        runtime = om_runtime.require_runtime() if verify else om_runtime.find_runtime()
    options = atc_tool.validate_options(precision_mode, log_level, out_nodes, output_type)
    project = Project(project_dir)
    graph = _frozen_graph(project, model)
    pb = graph["pb"]
    requested_outputs = (options["--out_nodes"] or "").split(";")
    is_onnx = graph["format"] == "onnx"
    model_key = "onnx" if is_onnx else "pb"  # the result's and the record's name for the model converted
    if is_onnx:
        report = onnx_check.precheck_onnx(graph["onnx"], graph["input_name"], graph["input_shape"],
                                          graph["output_names"] + [n for n in requested_outputs if n])
    else:
        report = graph_check.precheck_graph(graph["graph_def"], graph["input_name"], graph["input_shape"],
                                            graph["output_names"] + [n for n in requested_outputs if n])
    location, missing, ini_root = _locate_toolkit(atc, toolkit_root)
    om_base = _output_base(project, pb, output)
    om_path = om_base.with_name(om_base.name + ".om")
    if not check_only:
        project.check_writable(om_path, "convert", force)  # early: before the toolkit is even looked at
    choice = _soc_choice(soc, npu_smi, ini_root, needed=not check_only and location is not None)

    def command_for(base):
        if report["input"]["input_shape"] is None:
            return None
        return atc_tool.build_command(
            location.path if location else "atc", pb, base, choice.soc_version, report["input"]["name"],
            report["input"]["input_shape"], precision_mode=precision_mode, log_level=log_level,
            out_nodes=out_nodes, output_type=output_type,
            framework=atc_tool.FRAMEWORK_ONNX if is_onnx else atc_tool.FRAMEWORK_TENSORFLOW)

    command = command_for(om_base)
    pb_sha256 = sha256_file(pb)
    result = {
        "project": str(project.dir),
        "mode": "check-only" if check_only else "convert",
        model_key: project.relative(pb),
        model_key + "_sha256": pb_sha256,
        "framework": atc_tool.FRAMEWORK_ONNX if is_onnx else atc_tool.FRAMEWORK_TENSORFLOW,
        "io_source": graph["io_source"],
        "om": project.relative(om_path),
        "om_sha256": None,
        "soc_version": choice.soc_version,
        "soc_rule": choice.rule,
        "atc_path": str(location.path) if location else None,
        "atc_rule": location.rule if location else None,
        "atc_version": None,
        "command": command.display if command else None,
        "argv": command.argv if command else None,
        "exit_status": None,
        "log": None,
        "precheck": report,
        "skipped": False,
    }
    failed_check = None
    if not report["ok"]:
        failed_check = VerificationError(
            "{} fails the ATC pre-check: {}".format(result[model_key], graph_check.problems_line(report["problems"])),
            hint="re-run `{}` on an inference graph".format(stage_command("export" if is_onnx else "freeze")))
    params = {"model": result[model_key], "output": result["om"], "soc": soc, "precision_mode": precision_mode,
              "log_level": log_level, "out_nodes": out_nodes, "output_type": output_type, "timeout": timeout,
              "atc": str(atc) if atc else None, "toolkit_root": str(toolkit_root) if toolkit_root else None,
              "check_only": check_only}
    fingerprint = _fingerprint(command.argv, location.path, pb_sha256) if (location and command) else None
    recorded = {
        "mode": result["mode"], "framework": result["framework"], "soc_version": choice.soc_version,
        "soc_rule": choice.rule, "command": result["command"], "argv": result["argv"], "atc_path": result["atc_path"],
        "atc_rule": result["atc_rule"],
        "io": {"input_name": report["input"]["name"], "input_shape": report["input"]["input_shape"],
               "output_names": report["outputs"], "source": graph["io_source"]},
        "precheck": {"ok": report["ok"], "nodes": report["nodes"], "op_counts": report["op_counts"],
                     "problems": report["problems"]},
        "fingerprint": fingerprint,
    }
    if check_only:
        if failed_check:
            raise failed_check
        # Recorded as its own stage, never as a conversion: `status` shows the command for a CANN host
        # and a real conversion recorded earlier stays as it was.
        with project.stage_run(CHECK_STAGE, params) as run:
            run.inputs[model_key] = project.file_record(pb)
            run.record.update(recorded)
        return result

    earlier = project.stage("convert") or {}
    earlier_verification = earlier.get("verification") if earlier.get("status") == "done" else None
    previous = None if force or fingerprint is None else _up_to_date(project, earlier, fingerprint)
    if previous and runtime and (previous.get("verification") or {}).get("status") != "verified":
        previous = None  # converted where it could not be run: run it now that it can be
    if previous:
        result.update({"om_sha256": previous["outputs"]["om"]["sha256"], "atc_version": previous.get("atc_version"),
                       "exit_status": previous.get("exit_status"), "log": previous.get("log"), "skipped": True})
        return result

    with project.stage_run("convert", params, force=force) as run:
        run.inputs[model_key] = project.file_record(pb)
        run.record.update(recorded)
        if failed_check:
            raise failed_check
        if location is None:
            raise ToolMissingError("{}; the pre-check passed: {}, or on a CANN host run: {}".format(
                missing.message, missing.hint, command.display))
        # atc writes into the staging area; the .om is renamed into place only once it is verified.
        staged_om = run.stage_output("om", om_path)
        log_path = _new_log_path(project)
        result["log"] = run.record["log"] = project.relative(log_path)
        staged_command = command_for(staged_om.with_suffix(""))
        outcome = atc_tool.run_atc(staged_command.argv, project.path(WORK_DIR), log_path, timeout,
                                   progress=progress)
        result["exit_status"] = run.record["exit_status"] = outcome.exit_status
        version = atc_tool.parse_version(outcome.lines)
        if version is None and not outcome.timed_out:
            version = atc_tool.query_version(location.path)
        result["atc_version"] = run.record["atc_version"] = version
        run.metrics["atc_seconds"] = round(outcome.seconds, 3)
        atc_tool.check_run(outcome, staged_om, result["log"])
        result["verification"] = verify_om(project, run, graph, staged_om, om_path, verify, runtime, precision_mode,
                                           parity_images, tolerance, earlier_verification)
    result["om_sha256"] = run.outputs["om"]["sha256"]
    return result


def verify_om(project: Project, run, graph: Dict[str, Any], staged_om: Path, om_path: Path, verify: Optional[bool],
              runtime: Optional[str], precision_mode: Optional[str], parity_images: int,
              tolerance: Optional[float], earlier: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run the new .om on the Ascend device against the model it came from, on the parity images, and record
    it (run.record["verification"], and "parity" as freeze records it). Over tolerance: exit 7, the .om kept
    as `<name>.rejected.om` (its verification under "rejected") and the earlier conversion still recorded
    with `earlier`, its verification. No runtime, no device or no test images: recorded as not verified,
    with the reason (an error instead when `verify` is True)."""
    from mpltool.data.stage import load_test_set
    from mpltool.errors import InvalidInputError
    from mpltool.models.verify import parity_check, parity_count, parity_set, record_parity, rejected_path

    if verify is False:
        return _not_verified(run, "not verified (--no-verify)")
    if runtime is None:
        return _not_verified(run, "not verified (no runtime)", om_runtime.INSTALL_HINT)
    chosen, why = atc_tool.om_tolerance(precision_mode)
    if tolerance is not None:
        why = "given (--tolerance); {} would take {:g}".format(why, chosen)
    try:
        images, _, test_files = load_test_set(project)
    except (PrerequisiteError, InvalidInputError) as exc:
        if verify:
            raise
        return _not_verified(run, "not verified (no test images)", exc.message)
    device = artifacts.device_id()
    started = time.perf_counter()
    try:
        om = om_runtime.OmModel(staged_om, device, runtime)
    except om_runtime.DeviceUnavailable as exc:
        if verify:
            raise
        return _not_verified(run, "not verified (no device)", exc.message)
    with om, _reference_model(graph) as reference:
        checked = parity_set(images, parity_count(images.shape[0], parity_images), om.image_shape)
        parity = parity_check(om, reference.predict, checked, chosen if tolerance is None else tolerance)
        described = om.describe()
    run.inputs.update(test_files)
    verification = dict(described, status="verified" if parity["passed"] else "failed", tolerance_reason=why,
                        max_abs_logit_diff=parity["max_abs_logit_diff"], top1_agreement=parity["top1_agreement"],
                        images=parity["images"], tolerance=parity["tolerance"])
    if parity["passed"]:
        run.record["verification"] = verification
    else:  # the recorded .om stays the earlier one: so does the verification the record shows
        run.record["rejected"] = dict(verification, om=project.relative(rejected_path(om_path)))
        run.record["verification"] = earlier
    record_parity(run, parity, started, staged_om, om_path, "the .om differs from {}".format(
        project.relative(graph["pb"])))
    return verification


def verification_line(verification: Optional[Dict[str, Any]]) -> str:
    """One line for a convert record's verification (the CLI, `status` and the report show it)."""
    if not verification:
        return "not verified (converted before mpltool ran .om files)"
    if verification.get("status") not in ("verified", "failed"):
        return verification.get("status", "not verified")
    return "{} on device {} through {}: max |dlogit| {:.3g} (tolerance {:g}: {}), top-1 agreement {:.4f} over {} " \
           "images".format(verification["status"], verification.get("device_id"), verification.get("runtime"),
                           verification["max_abs_logit_diff"], verification["tolerance"],
                           verification.get("tolerance_reason"), verification["top1_agreement"],
                           verification["images"])


def _not_verified(run, status: str, reason: Optional[str] = None) -> Dict[str, Any]:
    run.record["verification"] = dict({"status": status}, **({"reason": reason} if reason else {}))
    return run.record["verification"]


def _reference_model(graph: Dict[str, Any]):
    """The model the .om was converted from, run on this host's CPU."""
    if graph["format"] == "onnx":
        from mpltool.models.onnx_runtime import OnnxModel

        return OnnxModel(graph["pb"], str(graph["pb"]))
    from mpltool.models.inference import FrozenModel

    return FrozenModel(graph["graph_def"], str(graph["pb"]), any_batch=True)


def _soc_choice(soc: Optional[str], npu_smi: Optional[str], ini_root, needed: bool):
    """The soc_version, or (for a check-only run, or when atc itself is missing and that is the error to
    report) a `<SOC>` placeholder in the printed command when nothing can tell it."""
    try:
        return resolve_soc(soc, npu_smi=npu_smi, toolkit_root=ini_root)
    except PrerequisiteError:
        if soc or needed:
            raise
        return SocChoice(SOC_PLACEHOLDER, "not given (pass --soc, e.g. --soc Ascend910A)")
