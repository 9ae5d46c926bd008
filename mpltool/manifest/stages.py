"""The lifecycle's stages, in order: the one table `status`, the report, the CLI's `next:` hints and every
"run X first" hint read.

Each entry: the stage's manifest name, its title, the command that runs it (as a user types it; the words
after `mpltool`), the metrics `status` shows for it, the stage whose command comes next, and the report
section that shows it. `convert-check` is where `convert --check-only` is recorded (it converts nothing);
the report shows it in the convert section.
"""

import collections
from typing import List, Optional, Sequence

Stage = collections.namedtuple("Stage", ["name", "title", "command", "headline", "next", "section"])

STAGES = (
    Stage("data", "Data", ("data", "prepare", "--cifar", "PATH"),
          ("train_records", "test_records", "labelled_records", "records", "domains"), "train", "data"),
    Stage("train", "Training", ("train", "--recipe", "NAME"), ("top1", "steps_done"), "eval", "train"),
    Stage("eval", "Evaluation", ("eval",), ("top1", "top5", "loss", "images_per_second"), "freeze", "eval"),
    Stage("freeze", "Freeze", ("freeze",), ("max_abs_logit_diff", "top1_agreement"), "convert", "freeze"),
    Stage("export", "Export", ("export", "--format", "onnx"), ("max_abs_logit_diff", "top1_agreement"), "convert",
          "export"),
    Stage("convert-check", "Pre-check", ("convert", "--check-only"), (), "convert", "convert"),
    Stage("convert", "Convert", ("convert",), ("atc_seconds",), None, "convert"),
)
BY_NAME = collections.OrderedDict((stage.name, stage) for stage in STAGES)
STAGE_ORDER = tuple(BY_NAME)


def stage(name: str) -> Stage:
    return BY_NAME[name]


def command(name: str) -> str:
    """`mpltool <words>` of a stage, as a hint shows it."""
    return " ".join(("mpltool",) + tuple(BY_NAME[name].command))


def next_stage(name: str) -> Optional[Stage]:
    following = BY_NAME[name].next
    return BY_NAME[following] if following else None


def ordered(names: Sequence[str]) -> List[str]:
    """Recorded stage names in lifecycle order, unknown ones (a newer mpltool's) after them by name."""
    return [n for n in STAGE_ORDER if n in names] + sorted(n for n in names if n not in BY_NAME)


def sections() -> List[str]:
    """The report's sections, in order (each once)."""
    seen = []
    for entry in STAGES:
        if entry.section not in seen:
            seen.append(entry.section)
    return seen
