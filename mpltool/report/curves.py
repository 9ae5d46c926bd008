"""The training curves of `logs/metrics.csv`: every column the CSV has, grouped into figures by family.

Nothing here knows an algorithm: the columns are read from the CSV header (csv_columns in
train/trainer.py writes them: step, time, steps_per_second, the algorithm's metric_names, then per
evaluated network `<target>_top1/_top5/_loss_eval` and `<target>_valid_top1`), and each column lands in
the first family whose rule matches its name. A column no rule names goes to "other", so a metric a new
algorithm adds is plotted without a line changing here.
"""

import csv
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

METRICS_CSV = "logs/metrics.csv"
NOT_PLOTTED = ("step", "time")  # the x axis, and wall-clock seconds since 1970 (no curve to look at)

_EVAL_ACCURACY = re.compile(r"^(?P<target>.+?)_(?P<valid>valid_)?top(?P<k>\d+)$")


def _tokens(name: str) -> List[str]:
    return name.lower().split("_")


class Family(NamedTuple):
    key: str              # figure file: curves-<key>.png
    title: str
    ylabel: str
    matches: Callable[[str], bool]
    panels: bool          # one small panel per column (scales differ) instead of one shared axes


FAMILIES = (
    Family("accuracy", "Accuracy of every evaluated network (test, and validation when the split has one)",
           "accuracy", lambda n: bool(_EVAL_ACCURACY.match(n)), False),
    Family("eval-loss", "Test loss of every evaluated network", "loss", lambda n: n.endswith("_loss_eval"), False),
    Family("learning-rates", "Learning rates", "learning rate",
           lambda n: "lr" in _tokens(n) or "learning_rate" in n.lower(), False),
    Family("losses", "Training losses", "loss",
           lambda n: "loss" in n.lower() or "ce" in _tokens(n), False),  # labelled_ce, student_ce_old...
    Family("train-accuracy", "Accuracy on the training batches", "accuracy", lambda n: "accuracy" in n.lower(),
           False),
    Family("other", "Other training metrics", "", lambda n: True, True),
)


def family_of(column: str) -> Family:
    return next(f for f in FAMILIES if f.matches(column))


def group_columns(columns: Sequence[str]) -> "OrderedDict[str, List[str]]":
    """Family key -> its columns (CSV order), families in FAMILIES order, empty families left out.
    Every column but step and time is in exactly one family."""
    groups = OrderedDict((f.key, []) for f in FAMILIES)  # type: OrderedDict[str, List[str]]
    for column in columns:
        if column in NOT_PLOTTED:
            continue
        groups[family_of(column).key].append(column)
    return OrderedDict((k, v) for k, v in groups.items() if v)


class Curves(NamedTuple):
    columns: List[str]                 # as the header has them
    steps: List[float]
    values: Dict[str, List[float]]     # column -> one value per row, NaN where the cell is empty
    rows: int


def read_metrics_csv(path) -> Optional[Curves]:
    """The CSV as columns of floats (an empty or unparseable cell is NaN); None when there is no file."""
    path = Path(str(path))
    if not path.is_file():
        return None
    with open(str(path), newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        rows = [row for row in reader if row]
    columns = [c.strip() for c in header]
    values = {c: [] for c in columns}  # type: Dict[str, List[float]]
    for row in rows:
        for index, column in enumerate(columns):
            values[column].append(_number(row[index]) if index < len(row) else math.nan)
    steps = values.get("step") or [float(k) for k in range(len(rows))]
    return Curves(columns, steps, values, len(rows))


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def plotted_groups(curves: Curves) -> "OrderedDict[str, List[str]]":
    """group_columns over the columns that hold at least one finite value (a `<target>_valid_top1` of a
    split without validation records is empty in every row)."""
    return group_columns([c for c in curves.columns if c not in NOT_PLOTTED and has_values(curves, c)])


def has_values(curves: Curves, column: str) -> bool:
    return any(math.isfinite(v) for v in curves.values.get(column, ()))


def series(curves: Curves, column: str):
    """(steps, values) of a column's finite cells."""
    pairs = [(s, v) for s, v in zip(curves.steps, curves.values[column]) if math.isfinite(v) and math.isfinite(s)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def last_values(curves: Curves) -> Dict[str, Any]:
    """Each column's last finite value and the step it was logged at (the report's table under the curves)."""
    last = OrderedDict()  # type: Dict[str, Any]
    for column in curves.columns:
        if column in NOT_PLOTTED:
            continue
        steps, values = series(curves, column)
        if values:
            last[column] = {"step": int(steps[-1]), "value": values[-1], "points": len(values)}
    return last
