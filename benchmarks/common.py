"""Shared by the benchmark scripts: timing with warm-up, peak RSS, running a measurement in a child process.

Each measurement runs in its own process so that its peak RSS is its own and one configuration's graph
never slows the next. Figures are printed; nothing here asserts a time (machines are shared and noisy).
"""

import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def timed(fn, warmup, repeat):
    """Median seconds per call of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2]


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(script, measurement, args, python=None, env=None, source=None):
    """Run `script --child measurement args` in a fresh interpreter and return its JSON result.

    `env`: variables added to this process's environment (e.g. mpltool/tuning.py's); `source`: another
    checkout whose mpltool the child imports instead of this one (a baseline measured side by side)."""
    command = [python or sys.executable, script, "--child", measurement, json.dumps(args)]
    path = [source] if source else []
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(path + [ROOT, os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if out.returncode != 0:
        raise RuntimeError("{} {} failed:\n{}".format(script, measurement, out.stderr.decode()[-3000:]))
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def child_main(measurements):
    """Entry point of a child: `--child NAME ARGS_JSON` runs measurements[NAME](**args), prints JSON."""
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        result = measurements[sys.argv[2]](**json.loads(sys.argv[3]))
        result["peak_rss_mib"] = round(peak_rss_mib(), 1)
        print(json.dumps(result))
        sys.exit(0)


def machine():
    import platform

    return "{} cores, {} {}".format(os.cpu_count(), platform.machine(), platform.processor() or "")


def mpltool(project, *args):
    """The real CLI in its own process, as a user types it; a failure ends the benchmark with its stderr."""
    command = [sys.executable, "-m", "mpltool", "--project", project] + list(args)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit("failed ({}): {}\n{}".format(done.returncode, " ".join(command),
                                                      done.stderr.decode()[-2000:]))


def demo_project(root, recipe, domains=False):
    """A project under `root` holding the embedded demo data (CIFAR format, or with `domains` the
    multi-domain image folders), prepared with `recipe`'s split or input size: the template each
    configuration copies."""
    kind = "domains" if domains else "cifar"
    template = os.path.join(root, "template-" + kind)
    data = os.path.join(root, "demo-" + kind)
    mpltool(template, "data", "demo", "--out", data, *(["--domains"] if domains else []))
    mpltool(template, "data", "prepare", "--images" if domains else "--cifar", data, "--recipe", recipe)
    return template
