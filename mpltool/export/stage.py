"""The `export` stage: the frozen .pb -> an .onnx that provably computes what the .pb computes.

Order of work, as freeze does it:
1. the .pb: the freeze record's (its sha256 checked: a changed file is exit 4), or one given with --model;
2. tf2onnx converts it (input `input:0`, outputs `logits:0`, `probs:0`, renamed `input`, `logits`, `probs`
   in the .onnx; NHWC raw pixels in, as the .pb), written under a staging name;
3. the file as written is re-read: onnx's checker, standard ops only, one input, both outputs (exit 7);
4. parity: the .onnx in onnxruntime (at its static batch, as written) against the .pb in TensorFlow on
   the same test images (load_test_set, as freeze's check): max |Δlogit| over tolerance is exit 7, the
   file kept as `<name>.rejected.onnx` and the stage recorded failed, so no passing record names it.
"""

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from mpltool.data.stage import load_test_set
from mpltool.errors import InvalidInputError, PrerequisiteError, UsageError
from mpltool.freeze.stage import parity_check, parity_tolerance, record_parity, whole_number
from mpltool.manifest import Project
from mpltool.manifest.files import atomic_write_bytes

FORMATS = ("onnx",)
EXPORT_DIR = "onnx"
FREEZE_COMMAND = "mpltool freeze"
# atc reads ai.onnx opsets 11 to 15 (convert/onnx_check.py); 11 is the one every CANN release takes.
DEFAULT_OPSET = 11
OPSETS = (11, 15)
# onnxruntime and TensorFlow sum in different orders (MLAS vs Eigen/oneDNN kernels): logits agree to ~1e-6
# relative, so the default allows 1e-3 absolute where freeze (TF against TF) allows 1e-4.
DEFAULT_TOLERANCE = 1e-3


def _frozen_source(project: Project, model) -> Dict[str, Any]:
    """The .pb to export: the freeze record's, proven unchanged, or the one named."""
    if model is None:
        record = project.require_stage("freeze", FREEZE_COMMAND)
        pb_record = (record.get("outputs") or {}).get("pb")
        if not pb_record:
            raise PrerequisiteError("the freeze record lacks its .pb", hint="re-run `{}`".format(FREEZE_COMMAND))
        pb = project.verify_file(pb_record, "frozen graph")
        return {"pb": pb, "record": pb_record, "chosen": "freeze record", "freeze": record.get("source")}
    pb = Path(str(model)).expanduser().absolute()
    if pb.suffix.lower() != ".pb":
        raise UsageError("--model {} is not a frozen graph (.pb)".format(model),
                         hint="export converts a frozen GraphDef; make one with `{}`".format(FREEZE_COMMAND))
    if not pb.is_file():
        raise InvalidInputError("no frozen graph at {}".format(pb))
    return {"pb": pb, "record": None, "chosen": "path", "freeze": None}


def export(project_dir, format: str = "onnx", model=None, output=None, parity_images: int = 1000,
           tolerance: float = DEFAULT_TOLERANCE, opset: int = DEFAULT_OPSET, force: bool = False,
           progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Export the frozen graph to `<project>/onnx/<pb stem>.onnx` (or `output`) and prove it; stage `export`.

    `model`: a .pb other than the freeze record's. `parity_images`: test images the parity check runs
    (0 = all). `force` allows replacing an existing file that no stage recorded.
    """
    from mpltool.export import runtime
    from mpltool.models.inference import FrozenModel, OUTPUT_NAMES, read_graph_def

    project = Project(project_dir)
    if format not in FORMATS:
        raise UsageError("unknown export format {!r}; mpltool exports {}".format(format, ", ".join(FORMATS)))
    parity_images = whole_number(parity_images, "parity images", 0)
    opset = whole_number(opset, "opset", 1)
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise UsageError("--opset {} is outside {}..{}, the ONNX opsets atc reads".format(opset, *OPSETS))
    tolerance = parity_tolerance(tolerance)
    runtime.require(purpose="export --format onnx")  # exit 5 before any file is read
    source = _frozen_source(project, model)
    pb = source["pb"]
    graph_def = read_graph_def(pb)
    absent = [name for name in OUTPUT_NAMES if name not in {node.name for node in graph_def.node}]
    if absent:
        raise InvalidInputError("frozen graph {} lacks output node(s) {}".format(pb, ", ".join(absent)))
    images, _, test_files = load_test_set(project)
    count = images.shape[0] if parity_images == 0 else min(parity_images, images.shape[0])
    if output is None:
        output = project.path("{}/{}.onnx".format(EXPORT_DIR, pb.stem))
    output = Path(str(output)).expanduser().absolute()
    if output.is_dir() or output.suffix.lower() != ".onnx":
        raise UsageError("--output {} is not a file name ending in .onnx".format(output))
    project.check_writable(output, "export", force)  # early: before the conversion (again at staging)
    params = {"format": format, "model": project.relative(pb), "output": project.relative(output),
              "parity_images": parity_images, "tolerance": tolerance, "opset": opset}

    started = time.perf_counter()
    with project.stage_run("export", params, force=force) as run:
        run.inputs["pb"] = source["record"] or project.file_record(pb)
        run.inputs.update(test_files)
        run.record["source"] = {"pb": project.relative(pb), "sha256": run.inputs["pb"]["sha256"],
                                "chosen": source["chosen"], "freeze": source["freeze"]}
        run.record["onnx_stack"] = runtime.versions()
        staged = run.stage_output("onnx", output)
        model_proto = runtime.convert_graph_def(graph_def, opset, str(pb))
        atomic_write_bytes(staged, model_proto.SerializeToString(deterministic=True))

        written = staged.read_bytes()
        run.record["onnx"] = dict(runtime.check_model(written, str(output)), opset=opset)
        with runtime.OnnxModel(written, str(output)) as exported, \
                FrozenModel(graph_def, str(pb), any_batch=True) as reference:
            run.record["io"] = exported.describe()
            parity = parity_check(exported, reference.predict, images[:count], tolerance, progress)
        record_parity(run, parity, started, staged, output, "the ONNX model differs from {}".format(
            project.relative(pb)))
    return {"onnx": str(output), "sha256": run.outputs["onnx"]["sha256"], "size": run.outputs["onnx"]["size"],
            "format": format, "source": run.record["source"], "io": run.record["io"], "model": run.record["onnx"],
            "parity": parity, "onnx_stack": run.record["onnx_stack"], "seconds": run.metrics["seconds"],
            "project": str(project.dir)}
