"""The process settings `mpltool train` runs with: a memory allocator and thread pools sized for the host.

Why (measured, docs/performance.md): a training step allocates and frees gigabytes of activations. With
glibc's malloc, blocks that large are mmap'ed and unmapped every step, so each step page-faults its whole
working set in again; an allocator that keeps freed pages (jemalloc with decay off, or tcmalloc) does
not. And TensorFlow's default inter-op pool runs two oneDNN ops at once, each with an OpenMP team as big
as the machine, which oversubscribes the cores.

Both must be in place before the process starts (the dynamic loader reads LD_PRELOAD, OpenMP and
TensorFlow read their variables once), so `train` re-executes itself once with them in its environment.
A variable the user set is never changed, and an allocator is preloaded only where it is installed:
nothing to remember, nothing downloaded. `MPLTOOL_TUNING=off` (or `train --no-tuning`) leaves the process
exactly as started.
"""

import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

TUNING_ENV = "MPLTOOL_TUNING"            # off / 0 / false / no: run as started
APPLIED_ENV = "MPLTOOL_TUNING_APPLIED"   # set in the re-executed process (so it execs only once)
NO_TUNING_FLAG = "--no-tuning"
OFF_VALUES = ("0", "off", "false", "no")

JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always"
# In order of preference; each with the settings that make it keep freed memory for the next step.
ALLOCATORS = (
    ("jemalloc", ("libjemalloc.so.2", "libjemalloc.so.1", "libjemalloc.so"),
     # decay off: freed pages stay mapped for the next step's identical allocations (no page faults);
     # the process's footprint is its peak either way, since every step reaches it again. thp: its
     # extents in transparent huge pages (fewer TLB misses in the memory-bound element-wise ops).
     {"MALLOC_CONF": JEMALLOC_CONF}),
    ("tcmalloc", ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
     # tcmalloc reports every allocation above 1 GiB on stderr by default; activations are that large.
     {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}),
)


def library_dirs() -> List[str]:
    """Where distributions and environments install shared libraries (Debian multiarch, RPM, conda)."""
    dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
            "/usr/local/lib", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", os.path.join(sys.prefix, "lib")]
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        dirs.insert(0, os.path.join(conda, "lib"))
    return dirs


def find_allocator(dirs: Optional[Sequence[str]] = None) -> Optional[Tuple[str, str, Dict[str, str]]]:
    """(name, library path, its settings) of the first allocator of ALLOCATORS installed, or None."""
    for name, files, settings in ALLOCATORS:
        for directory in dirs if dirs is not None else library_dirs():
            for filename in files:
                path = os.path.join(directory, filename)
                if os.path.isfile(path):
                    return name, path, dict(settings)
    return None


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: a container or taskset may allow fewer)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_process(processes: int, cores: Optional[int] = None) -> int:
    """This host's cores shared among `processes` processes on it, instead of each taking all of them."""
    return max(1, (cores or available_cores()) // max(1, processes))


def job_processes_on_host() -> int:
    """How many processes of this job run on this host (horovodrun says; 1 otherwise)."""
    return int(os.environ.get("HOROVOD_LOCAL_SIZE") or 1)


def disabled(environ: Mapping[str, str]) -> bool:
    return environ.get(TUNING_ENV, "").strip().lower() in OFF_VALUES


def _allocator_in(names: Sequence[str]) -> Optional[str]:
    """The allocator of ALLOCATORS one of these library paths is (any version suffix), if any."""
    basenames = [os.path.basename(path) for path in names]
    for name, files, _ in ALLOCATORS:
        stems = set(f.split(".so")[0] + ".so" for f in files)  # libjemalloc.so.2 -> libjemalloc.so
        if any(base.startswith(stem) for base in basenames for stem in stems):
            return name
    return None


def preloaded_allocator(environ: Mapping[str, str]) -> Optional[str]:
    """The allocator LD_PRELOAD already names (the user's, or ours), if any."""
    return _allocator_in(environ.get("LD_PRELOAD", "").split(":"))


def tuned_environment(environ: Mapping[str, str], processes: int = 1, cores: Optional[int] = None,
                      allocator=None) -> Dict[str, str]:
    """The variables to add to `environ` (never one it already has).

    Threads: each of `processes` local processes gets cores // processes for TensorFlow's intra-op pool
    and OpenMP's team (TensorFlow's inter-op pool keeps its default: one op at a time measured slower).
    KMP_BLOCKTIME=1: OpenMP threads sleep 1 ms after a parallel region instead of spinning 200 ms on the
    core the next op's threads need. `allocator`: find_allocator()'s answer (default: look it up; False:
    none).
    """
    threads = threads_per_process(processes, cores)
    wanted = {
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "KMP_BLOCKTIME": "1",
    }
    found = find_allocator() if allocator is None else allocator
    if found and not preloaded_allocator(environ):
        name, path, settings = found
        preload = environ.get("LD_PRELOAD", "")
        wanted["LD_PRELOAD"] = path + (":" + preload if preload else "")
        wanted.update(settings)
    return {key: value for key, value in wanted.items() if key not in environ or key == "LD_PRELOAD"}


def command_of(argv: Sequence[str]) -> Optional[str]:
    """The subcommand of an mpltool command line (global options may come before it)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--project":
            skip = True
            continue
        if token.startswith("-"):
            continue
        return token
    return None


def processes_of_command(argv: Sequence[str]) -> int:
    """`train --nproc N` runs N processes on this host, which share its cores."""
    for index, token in enumerate(argv):
        value = None
        if token == "--nproc" and index + 1 < len(argv):
            value = argv[index + 1]
        elif token.startswith("--nproc="):
            value = token.split("=", 1)[1]
        if value is not None:
            try:
                return max(1, int(value))
            except ValueError:
                return 1  # click reports the bad value
    return 1


def reexec_tuned(argv: Sequence[str], environ=None) -> None:
    """For `train`: re-execute this command once with tuned_environment() added (the process keeps its
    pid, so a launcher's signals still reach it). Returns when there is nothing to do."""
    environ = os.environ if environ is None else environ
    if command_of(argv) != "train" or NO_TUNING_FLAG in argv or disabled(environ) or environ.get(APPLIED_ENV):
        return
    added = tuned_environment(environ, processes=processes_of_command(argv))
    if not added:
        return
    env = dict(environ, **added)
    env[APPLIED_ENV] = ",".join(sorted(added))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "mpltool"] + list(argv), env)
    except OSError:
        return  # the interpreter cannot be executed again (removed, no permission): train as started


def loaded_allocator(maps_path: str = "/proc/self/maps") -> Optional[str]:
    """The allocator of ALLOCATORS mapped into this process (what the loader really did), if any."""
    try:
        with open(maps_path) as handle:
            mapped = handle.read()
    except OSError:
        return None
    return _allocator_in([line.split()[-1] for line in mapped.splitlines() if "/" in line])


def describe(environ=None) -> Dict[str, object]:
    """What this process runs with, for the train record."""
    environ = os.environ if environ is None else environ
    applied = environ.get(APPLIED_ENV, "")
    return {
        "tuning": "off" if disabled(environ) else ("applied" if applied else "not applied"),
        "allocator": loaded_allocator() or "system malloc",
        "intra_op_threads": environ.get("TF_NUM_INTRAOP_THREADS", "default"),
        "inter_op_threads": environ.get("TF_NUM_INTEROP_THREADS", "default"),
        "omp_threads": environ.get("OMP_NUM_THREADS", "default"),
    }
