"""soc_version: validate the user's choice, or find it from the NPU on this host or the toolkit installed.

ATC builds an .om for exactly one chip, and a wrong guess produces a model that will not load on the
target, so every answer says which rule decided it (docs/atc.md §2).
"""

import difflib
import re
import shutil
import subprocess
from collections import OrderedDict, namedtuple
from pathlib import Path
from typing import Dict, List, Optional

from mpltool.errors import PrerequisiteError, UsageError

# Chip strings accepted by ATC's --soc_version when no toolkit is present to ask (docs/atc.md §2: torch_npu
# NpuVariables.h, plus Ascend310 and the A3 names seen in CANN 8.1's platform_config set).
KNOWN_SOC_VERSIONS = (
    "Ascend910PremiumA", "Ascend910ProA", "Ascend910A", "Ascend910ProB", "Ascend910B",
    "Ascend310",
    "Ascend310P1", "Ascend310P2", "Ascend310P3", "Ascend310P4", "Ascend310P5", "Ascend310P7",
    "Ascend910B1", "Ascend910B2", "Ascend910B2C", "Ascend910B3", "Ascend910B4",
    "Ascend310B1", "Ascend310B2", "Ascend310B3", "Ascend310B4",
    "Ascend910C1", "Ascend910C2", "Ascend910C3", "Ascend910C4",
    "Ascend910_9362", "Ascend910_9391",
)

# Where each CANN generation keeps one ini per chip: CANN 5 `atc/data/...`, CANN 7/8/9 `<arch>-linux/data/...`.
PLATFORM_CONFIG_GLOBS = (
    "atc/data/platform_config/*.ini",
    "*-linux/data/platform_config/*.ini",
    "data/platform_config/*.ini",
)

DEFAULT_NPU_SMI = "npu-smi"
NPU_SMI_TIMEOUT_S = 10

SocChoice = namedtuple("SocChoice", "soc_version rule")

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def platform_config_files(root) -> List[Path]:
    """Every platform_config ini under a toolkit root, in a stable order."""
    if root is None:
        return []
    root = Path(str(root))
    files = set()
    for pattern in PLATFORM_CONFIG_GLOBS:
        files.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(files)


def ini_soc_version(path) -> str:
    """`SoC_version=` of the `[version]` section (CANN 9 files like Ascend910B4-1.ini), else the file stem."""
    path = Path(str(path))
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return path.stem
    section = None
    for line in text.splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1).strip().lower()
            continue
        if section == "version" and "=" in line:
            key, value = line.split("=", 1)
            if key.strip() == "SoC_version" and value.strip():
                return value.strip()
    return path.stem


def platform_config_socs(root) -> Dict[str, Path]:
    """soc_version -> the ini that defines it, for one toolkit root (empty when there is none)."""
    socs = OrderedDict()  # type: Dict[str, Path]
    for path in platform_config_files(root):
        socs.setdefault(ini_soc_version(path), path)
    return OrderedDict(sorted(socs.items()))


def valid_soc_versions(toolkit_root=None) -> List[str]:
    """The toolkit's own list when a toolkit is there (it varies by version and arch), else the known list."""
    socs = list(platform_config_socs(toolkit_root))
    return socs if socs else list(KNOWN_SOC_VERSIONS)


def closest_soc(soc: str, valid: List[str]) -> Optional[str]:
    """The valid name the user most likely meant: case slips and a missing `Ascend` first, then difflib."""
    lowered = OrderedDict((v.lower(), v) for v in valid)
    for candidate in (soc, "ascend" + soc):
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    close = difflib.get_close_matches(soc.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[close[0]] if close else None


def validate_soc(soc: str, toolkit_root=None) -> str:
    valid = valid_soc_versions(toolkit_root)
    if soc in valid:
        return soc
    source = "the toolkit at {}".format(toolkit_root) if platform_config_socs(toolkit_root) else "ATC"
    close = closest_soc(soc, valid)
    suggestion = "did you mean --soc {}? ".format(close) if close else ""
    raise UsageError("unknown soc_version {!r} for {}; {}valid: {}".format(
        soc, source, suggestion, ", ".join(valid)))


def parse_npu_smi(text: str) -> List[str]:
    """Chip names from `npu-smi info`, one per NPU: the 2nd token of the first row of each NPU block.

    That row is `| <id>  <Name>  | <Health> | ...`; the second row of a block (`| <chip> [<device>] | Bus-Id`)
    and the process table (`| <npu> <chip> | <pid> | ...`) have a number where the name would be.
    """
    names = []
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) < 4 or cells[0].strip():
            continue
        tokens = cells[1].split()
        if (len(tokens) == 2 and tokens[0].isdigit() and not tokens[1].isdigit()
                and re.match(r"^[A-Za-z0-9_]+$", tokens[1]) and re.search(r"\d", tokens[1])):
            names.append(tokens[1])
    return names


def soc_from_chip_name(name: str) -> str:
    return name if name.startswith("Ascend") else "Ascend" + name


def run_npu_smi(command: Optional[str] = None, timeout: float = NPU_SMI_TIMEOUT_S) -> Optional[str]:
    """`npu-smi info` output, or None on a host without the driver (absent, failing or hanging tool)."""
    command = command or DEFAULT_NPU_SMI
    executable = shutil.which(command)
    if executable is None:
        return None
    try:
        done = subprocess.run([executable, "info"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", errors="replace")


def resolve_soc(soc: Optional[str] = None, npu_smi: Optional[str] = None, toolkit_root=None,
                timeout: float = NPU_SMI_TIMEOUT_S) -> SocChoice:
    """The soc_version and the rule that decided it: `--soc`, then `npu-smi`, then `platform_config`."""
    if soc:
        return SocChoice(validate_soc(soc, toolkit_root), "--soc")
    toolkit_socs = platform_config_socs(toolkit_root)
    output = run_npu_smi(npu_smi, timeout=timeout)
    if output is not None:
        detected = list(OrderedDict.fromkeys(soc_from_chip_name(n) for n in parse_npu_smi(output)))
        if len(detected) > 1:
            raise PrerequisiteError(
                "cannot choose a soc_version: npu-smi reports different chips on this host: {}".format(
                    ", ".join(detected)),
                hint="pass --soc with the target chip, e.g. --soc {}".format(detected[0]))
        if detected:
            valid = list(toolkit_socs) or list(KNOWN_SOC_VERSIONS)
            if detected[0] not in valid:
                raise PrerequisiteError(
                    "npu-smi reports {} but {} does not know that soc_version (it knows: {})".format(
                        detected[0], "the toolkit at {}".format(toolkit_root) if toolkit_socs else "mpltool",
                        ", ".join(valid)),
                    hint="pass --soc with the target chip")
            return SocChoice(detected[0], "npu-smi")
    if len(toolkit_socs) == 1:
        return SocChoice(next(iter(toolkit_socs)), "platform_config")
    if toolkit_socs:
        raise PrerequisiteError(
            "cannot choose a soc_version: no NPU found by npu-smi and the toolkit at {} supports {} chips: {}".format(
                toolkit_root, len(toolkit_socs), ", ".join(toolkit_socs)),
            hint="pass --soc with the target chip")
    raise PrerequisiteError(
        "cannot choose a soc_version: no NPU found by npu-smi and no toolkit platform_config found; "
        "candidates: {}".format(", ".join(KNOWN_SOC_VERSIONS)),
        hint="pass --soc with the target chip, e.g. --soc Ascend910A")
