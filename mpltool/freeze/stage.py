"""The `freeze` stage: checkpoint -> frozen `.pb` that provably computes what the checkpoint computes.

Order of work, each step a guard against a known way exports go wrong:
1. a fresh inference graph (training=False as a Python bool) restored through a Saver over exactly its
   own variables -- a variable the checkpoint lacks is refused by name (exit 3);
2. variables -> constants, subgraph `input` -> `logits`, `probs`, written atomically;
3. the file as written is re-read and checked: no training/stateful/random/iterator ops, no placeholder
   but `input` (exit 7), and every constant equals the checkpoint's value of its variable (exit 7);
4. parity: the .pb run as written (its static batch) against the checkpoint restored in a separate
   session, on the same test images: max |Δlogit| over tolerance is exit 7. The .pb stays for
   inspection but the manifest says failed, so `convert` will not take it.
"""

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from mpltool.checkpoints import resolve_target
from mpltool.data.stage import load_test_set
from mpltool.errors import UsageError
from mpltool.freeze.fold import simplify_for_inference
from mpltool.freeze.graph import check_frozen_graph, check_weights_match_checkpoint, freeze_graph_def
from mpltool.manifest import Project
from mpltool.models import artifacts
from mpltool.manifest.files import atomic_write_bytes
from mpltool.models.inference import OUTPUT_NAMES
from mpltool.models.verify import parity_check, parity_count, parity_set, parity_tolerance, record_parity, whole_number

FROZEN_DIR = "frozen"
PARITY_REFERENCE_BATCH = 100
MAX_BATCH = 10000  # a static batch beyond a CIFAR test set is a typo, and it is allocated in full


def describe_io(frozen, spec: Dict[str, Any]) -> Dict[str, Any]:
    """What a deployer (and `convert`) needs to feed the graph and read its answer; `spec` is the network's
    input spec as recorded (models/__init__.py)."""
    from mpltool.models.inference import INPUT_NAME, OUTPUT_NAMES

    image = frozen.tensor(INPUT_NAME)
    outputs = [frozen.tensor(name) for name in OUTPUT_NAMES]
    low, high = spec["value_range"]
    return {
        "input_name": INPUT_NAME,
        "input_shape": image.shape.as_list(),
        "input_dtype": image.dtype.name,
        "input_range": "raw pixels {:g}..{:g}".format(low, high),
        "input_layout": "{}, {}".format(spec["layout"], spec["channel_order"]),
        "normalisation": {"inside_graph": True, "formula": "(x - {0:g}*mean) / ({0:g}*std)".format(high),
                          "mean": [float(v) for v in spec["mean"]], "std": [float(v) for v in spec["std"]]},
        "output_names": list(OUTPUT_NAMES),
        "output_shapes": [t.shape.as_list() for t in outputs],
        "output_dtypes": [t.dtype.name for t in outputs],
    }


def freeze(project_dir, checkpoint: str = "ckpt", target: Optional[str] = None, batch: int = 1, output=None,
           parity_images: int = 1000, tolerance: float = 1e-4, force: bool = False,
           progress: Optional[Callable[[int, int], None]] = None, fold: bool = True) -> Dict[str, Any]:
    """Freeze one network of a checkpoint to a .pb and prove it; recorded as stage `freeze`.

    `checkpoint`: "ckpt" = the train record's best for `target` (else its latest), "latest", or a path.
    `parity_images`: how many test images the parity check uses (0 = all). `progress(done, total)`
    follows the frozen graph's parity run, the slow part at batch 1. The .pb is written under a staging
    name and only renamed to `output` once it passed every check (a rejected one is kept beside it as
    `<name>.rejected.pb`); `force` allows replacing an existing file that no stage recorded. `fold`: batch
    norms folded into their convolutions and constant reads bypassed (freeze/fold.py), checked by the
    parity check like everything else.
    """
    from mpltool.models.inference import (CheckpointModel, FrozenModel, resolve_network,
                                          parse_graph_def)

    project = Project(project_dir)
    target = resolve_target(project, target)
    batch = whole_number(batch, "batch", 1)
    parity_images = whole_number(parity_images, "parity images", 0)
    tolerance = parity_tolerance(tolerance)
    if batch > MAX_BATCH:
        raise UsageError("--batch {} is above the limit of {}".format(batch, MAX_BATCH))
    images, _, test_files = load_test_set(project)
    count = parity_count(images.shape[0], parity_images)
    if batch > count:
        # The parity check runs the graph as written, at its static batch: a batch larger than the images
        # checked would pad with thousands of blank images (20,000 took 5.7 GB for a 20-image check).
        raise UsageError("--batch {} is larger than the {} images the parity check uses".format(batch, count),
                         hint="use --batch {} or less, or check more images with --parity-images {}".format(
                             count, batch if batch <= images.shape[0] else 0))
    source = artifacts.resolve(project, checkpoint, target, kinds=("checkpoint",), what="freeze's CHECKPOINT")
    prefix, step = source.path, source.step
    network = resolve_network(source.variables, target, prefix, source.network)
    model_name = network["model"]
    if output is None:
        output = project.path("{}/{}-{}-step{}.pb".format(
            FROZEN_DIR, model_name, target, "unknown" if step is None else step))
    output = Path(str(output)).expanduser().absolute()
    if output.is_dir():
        raise UsageError("output {} is a directory; give a file name ending in .pb".format(output))
    project.check_writable(output, "freeze", force)  # early: before minutes of work (again at staging)
    params = {"checkpoint": str(checkpoint), "target": target, "batch": batch, "output": project.relative(output),
              "parity_images": parity_images, "tolerance": tolerance, "fold": bool(fold)}

    started = time.perf_counter()
    with project.stage_run("freeze", params, force=force) as run:
        run.inputs["checkpoint"] = artifacts.input_record(project, source)
        run.inputs.update(test_files)
        run.record["source"] = {"prefix": project.relative(prefix), "step": step, "target": target,
                                "model": model_name, "chosen": source.chosen}
        staged = run.stage_output("pb", output)
        with CheckpointModel(prefix, target, source.variables, batch_size=batch, network=network) as model:
            graph_def = freeze_graph_def(model.session, model.graph)
            variable_names = model.variable_names
        # The checkpoint's values, proven on the graph as frozen, before any simplification changes them.
        run.record["weights_checked"] = check_weights_match_checkpoint(graph_def, prefix, variable_names,
                                                                       str(output))
        folded = []
        if fold:
            graph_def, folded = simplify_for_inference(graph_def, OUTPUT_NAMES)
        run.record["folded_batch_norms"] = len(folded)
        # deterministic: attribute maps in a fixed order, so the same checkpoint always gives the same bytes
        atomic_write_bytes(staged, graph_def.SerializeToString(deterministic=True))

        written = parse_graph_def(staged.read_bytes(), str(output))
        check_frozen_graph(written, str(output))
        # As written: every constant that is still a variable's (not folded away) holds its value.
        constants = set(node.name for node in written.node if node.op == "Const")
        check_weights_match_checkpoint(written, prefix, [n for n in variable_names if n in constants], str(output))
        with FrozenModel(written, str(output), any_batch=False) as frozen, \
                CheckpointModel(prefix, target, source.variables, network=network) as reference:
            run.record["io"] = describe_io(frozen, network["input_spec"])
            checked = parity_set(images, count, network["input_spec"]["shape"])
            parity = parity_check(frozen, reference.predict, checked, tolerance, progress)
        record_parity(run, parity, started, staged, output, "the frozen graph differs from checkpoint {}".format(
            prefix))
    return {"pb": str(output), "sha256": run.outputs["pb"]["sha256"], "size": run.outputs["pb"]["size"],
            "source": run.record["source"], "io": run.record["io"], "parity": parity,
            "weights_checked": run.record["weights_checked"], "folded_batch_norms": len(folded),
            "seconds": run.metrics["seconds"],
            "project": str(project.dir)}


