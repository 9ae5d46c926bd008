"""The `export` stage: the frozen .pb -> a file of another format (export/formats.py) that provably
computes what the .pb computes.

Order of work, as freeze does it, for every format:
1. the .pb: the freeze record's (its sha256 checked: a changed file is exit 4), or one given with --model;
2. the format converts it (ONNX: tf2onnx, input `input`, outputs `logits`, `probs`, NHWC raw pixels in, as
   the .pb), written under a staging name;
3. the file as written is re-read and checked by the format (ONNX: onnx's checker, standard ops only, one
   input, both outputs; exit 7);
4. parity: the file opened by the format (at its static batch, as written) against the .pb in TensorFlow
   on the same test images (load_test_set, as freeze's check): max |Δlogit| over tolerance is exit 7, the
   file kept as `<name>.rejected<suffix>` and the stage recorded failed, so no passing record names it.
"""

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from mpltool.data.stage import load_test_set
from mpltool.errors import InvalidInputError, UsageError
from mpltool.export.formats import get_format
from mpltool.manifest import Project
from mpltool.manifest.files import atomic_write_bytes
from mpltool.models import artifacts
from mpltool.models.verify import parity_check, parity_count, parity_set, parity_tolerance, record_parity, whole_number

def export(project_dir, format: str = "onnx", model=None, output=None, parity_images: int = 1000,
           tolerance: Optional[float] = None, opset: Optional[int] = None, force: bool = False,
           progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Export the frozen graph to `<project>/<folder>/<pb stem><suffix>` (or `output`) and prove it; stage
    `export`.

    `model`: a .pb other than the freeze record's. `parity_images`: test images the parity check runs
    (0 = all). `tolerance`: None is the format's default. `opset`: ONNX's. `force` allows replacing an
    existing file that no stage recorded.
    """
    from mpltool.models.inference import FrozenModel, OUTPUT_NAMES, read_graph_def

    project = Project(project_dir)
    chosen_format = get_format(format)
    parity_images = whole_number(parity_images, "parity images", 0)
    options = chosen_format.options({"opset": opset})
    tolerance = parity_tolerance(chosen_format.default_tolerance if tolerance is None else tolerance)
    chosen_format.require()  # exit 5 before any file is read
    source = artifacts.resolve(project, model, kinds=("pb",), default="frozen", what="export --model")
    pb = source.path
    graph_def = read_graph_def(pb)
    absent = [name for name in OUTPUT_NAMES if name not in {node.name for node in graph_def.node}]
    if absent:
        raise InvalidInputError("frozen graph {} lacks output node(s) {}".format(pb, ", ".join(absent)))
    images, _, test_files = load_test_set(project)
    count = parity_count(images.shape[0], parity_images)
    suffix = chosen_format.suffix
    if output is None:
        output = project.path("{}/{}{}".format(chosen_format.folder, pb.stem, suffix))
    output = Path(str(output)).expanduser().absolute()
    if output.is_dir() or output.suffix.lower() != suffix:
        raise UsageError("--output {} is not a file name ending in {}".format(output, suffix))
    project.check_writable(output, "export", force)  # early: before the conversion (again at staging)
    params = dict({"format": format, "model": project.relative(pb), "output": project.relative(output),
                   "parity_images": parity_images, "tolerance": tolerance}, **options)

    started = time.perf_counter()
    key = chosen_format.name
    with project.stage_run("export", params, force=force) as run:
        run.inputs["pb"] = artifacts.input_record(project, source)
        run.inputs.update(test_files)
        run.record["source"] = {"pb": project.relative(pb), "sha256": run.inputs["pb"]["sha256"],
                                "chosen": source.chosen,
                                "freeze": project.record("freeze").source if source.record else None}
        run.record[key + "_stack"] = chosen_format.versions()
        staged = run.stage_output(key, output)
        atomic_write_bytes(staged, chosen_format.convert(graph_def, options, str(pb)))

        written = staged.read_bytes()
        run.record[key] = chosen_format.check(written, str(output), options)
        with chosen_format.open(written, str(output)) as exported, \
                FrozenModel(graph_def, str(pb), any_batch=True) as reference:
            run.record["io"] = exported.describe()
            checked = parity_set(images, count, exported.image_shape)
            parity = parity_check(exported, reference.predict, checked, tolerance, progress)
        record_parity(run, parity, started, staged, output, "the {} model differs from {}".format(
            key.upper(), project.relative(pb)))
    return {key: str(output), "sha256": run.outputs[key]["sha256"], "size": run.outputs[key]["size"],
            "format": format, "source": run.record["source"], "io": run.record["io"], "model": run.record[key],
            "parity": parity, key + "_stack": run.record[key + "_stack"], "seconds": run.metrics["seconds"],
            "project": str(project.dir)}
