"""How fast is the .om on this host's Ascend device, beside the .pb on its CPU?

For a project that has been frozen and converted, this runs the recorded .om (`converted`), and any
further .om given with --om (each at its own static batch), over the project's test images on device
$ASCEND_DEVICE_ID (default 0), and the frozen .pb in TensorFlow at the same batch. For each it prints
images/s end to end (pixels in, logits out, host copies included), the device's own execute time where the
runtime reports it, and the .om / .pb ratio. The seed's figure to compare with: 10,000 CIFAR test images in
1.21 s on Ascend 910 (8,264 images/s) against 2.08 s on a GPU.

An .om at the recipe's eval batch B (the recorded one is at batch 1, as the seed converts), made in a copy of
the project (freeze and convert record what they write):
    mpltool freeze --batch B --output frozen/model-bB.pb
    mpltool convert --model frozen/model-bB.pb --output om/model-bB

Re-measure: .venv/bin/python benchmarks/om.py --project P [--om om/model-b64.om] [--images N] [--repeat 3]
Needs CANN's runtime (ais_bench or pyACL) and a device: without them it says so and exits 5. A smoke run
here, through the fake runtime the tests use: PYTHONPATH=tests/fakes .venv/bin/python benchmarks/om.py ...
"""

import argparse
import sys
import time

import numpy as np

import common


def rate(predict, images, batch, repeat):
    """Images/s of predict over `images` in chunks of `batch` (median of `repeat` passes after one warm-up)."""
    def one_pass():
        for start in range(0, len(images), batch):
            predict(images[start:start + batch])

    seconds = common.timed(one_pass, warmup=1, repeat=repeat)
    return len(images) / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--om", action="append", default=[], help="a further .om (its static batch is read from it)")
    parser.add_argument("--images", type=int, default=1000, help="test images per pass (0: all)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from mpltool.data.records import at_input_size
    from mpltool.data.stage import load_test_set
    from mpltool.errors import MpltoolError
    from mpltool.graphdef import read_graph_def
    from mpltool.manifest import Project
    from mpltool.models import artifacts
    from mpltool.models.inference import FrozenModel
    from mpltool.models.om_runtime import OmModel

    project = Project(args.project)
    try:
        recorded = artifacts.resolve(project, "converted", kinds=("om",), what="the benchmark's .om")
        frozen = artifacts.resolve(project, "frozen", kinds=("pb",), what="the benchmark's .pb")
        images = load_test_set(project)[0]
        oms = [recorded.path] + list(args.om)
        count = len(images) if args.images == 0 else min(args.images, len(images))
        rows = []
        with FrozenModel(read_graph_def(frozen.path), str(frozen.path), any_batch=True) as pb:
            pixels = np.asarray(at_input_size(images[:count], pb.image_shape), np.float32)
            for path in oms:
                with OmModel(path, artifacts.device_id()) as om:
                    batch = om.static_batch
                    om_rate = rate(om.predict, pixels, batch, args.repeat)
                    executes = om.execute_ms()
                    rows.append((str(path), batch, om.runtime, om_rate, rate(pb.predict, pixels, batch, args.repeat),
                                 float(np.median(executes)) if executes else None))
    except MpltoolError as exc:
        print("error: {}{}".format(exc.message, " ({})".format(exc.hint) if exc.hint else ""), file=sys.stderr)
        sys.exit(exc.exit_code)
    print("machine: {}; {} test images a pass, device {}; {}".format(
        common.machine(), count, artifacts.device_id(), time.strftime("%Y-%m-%d")))
    print("| .om | batch | runtime | .om images/s | .pb images/s (CPU) | .om / .pb | device ms per execute |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for path, batch, runtime, om_rate, pb_rate, execute in rows:
        print("| {} | {} | {} | {:.0f} | {:.0f} | {:.2f} | {} |".format(
            path, batch, runtime, om_rate, pb_rate, om_rate / pb_rate,
            "{:.3f}".format(execute) if execute is not None else "-"))


if __name__ == "__main__":
    main()
