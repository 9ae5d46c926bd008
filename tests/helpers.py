"""What many test files need: the CLI in-process, the CLI as a real process, the tiny training settings,
and the manifest as data. Fixtures built on these are in conftest.py."""

import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from mpltool.cli import main
from mpltool.manifest import MANIFEST_NAME

# A run small enough to train in seconds on 2 cores: WRN-10-1, 4 labelled images a step.
TINY = ["model=wrn-10-1", "batch_size=4", "unlabelled_ratio=2", "eval_batch_size=16", "num_labelled=20",
        "lr_warmup_steps=2", "student_lr_wait_steps=1", "student_lr_warmup_steps=2", "uda_steps=4",
        "shuffle_buffer=64", "augment_magnitude=16"]


def invoke(*args):
    """mpltool in this process (click's runner): stdout and stderr apart, exceptions as the CLI ends them."""
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args], catch_exceptions=False)


def command(project, *args):
    return [sys.executable, "-m", "mpltool", "--project", str(project)] + [str(a) for a in args]


def mpltool(project, *args, timeout=600, **kwargs):
    """mpltool as a user runs it: its own process (signals, exit codes, TF start-up all real)."""
    return subprocess.run(command(project, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          **kwargs)


def read_by(algorithm, pairs):
    """The `k=v` pairs whose key `algorithm` reads (TINY holds MPL's keys; another algorithm refuses them)."""
    from mpltool.algorithms import algorithm_names, get_algorithm
    from mpltool.recipes import schema_of

    def readable(name):
        wanted = get_algorithm(name).reads
        return {k for k, f in schema_of(name).items() if not (f.optional and k not in wanted)}

    known = set().union(*(schema_of(name) for name in algorithm_names()))
    mine = readable(algorithm)
    return [p for p in pairs if p.split("=", 1)[0] in mine or p.split("=", 1)[0] not in known]


def sets(*pairs, base=TINY, algorithm=None):
    """`--set k=v` arguments for `base` (TINY) plus `pairs`; with `algorithm`, only the keys it reads."""
    chosen = list(base) + list(pairs)
    if algorithm is not None:
        chosen = read_by(algorithm, chosen)
    return [token for pair in chosen for token in ("--set", pair)]


def manifest(project):
    return yaml.safe_load((Path(project) / MANIFEST_NAME).read_text())


def graph_runner(graph_seed):
    """(run, close): run(build) builds tensors in one shared graph (seeded) and evaluates them in its session."""
    from mpltool.tfv1 import tf

    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(graph_seed)
    session = tf.Session(graph=graph, config=tf.ConfigProto(intra_op_parallelism_threads=2,
                                                            inter_op_parallelism_threads=2))

    def run(build):
        with graph.as_default():
            fetches = build()
        return session.run(fetches)

    return run, session.close


def run_once(build, graph_seed=1):
    """build() evaluated once in a fresh seeded graph and session."""
    run, close = graph_runner(graph_seed)
    try:
        return run(build)
    finally:
        close()


def dataset_samples(fn, image, count):
    """`count` independent results of fn(image), produced by Dataset.map as in the input pipeline."""
    from mpltool.tfv1 import tf

    dataset = tf.data.Dataset.from_tensors(tf.constant(image)).repeat(count).map(fn).batch(count)
    return tf.data.make_one_shot_iterator(dataset).get_next()


def freeze_and_check_conversion(project, parity_images=8):
    """The end of every algorithm's lifecycle: freeze the default target with parity, then convert --check-only."""
    import json

    frozen = invoke("--project", project, "--json", "freeze", "--parity-images", parity_images)
    assert frozen.exit_code == 0, frozen.stderr
    assert json.loads(frozen.stdout)["parity"]["passed"] is True
    checked = invoke("--project", project, "--json", "convert", "--check-only")
    assert checked.exit_code == 0, checked.stderr
    assert json.loads(checked.stdout)["precheck"]["ok"] is True


def one_error_line(result, code):
    """The one stderr line of a failed command, after checking its exit code and that nothing leaked."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
