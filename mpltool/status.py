"""`mpltool status`: every stage's state, times, files (re-verified) and metrics, in lifecycle order.

Every file the manifest records is checked by size and sha256: each stage's outputs and inputs and the
train record's checkpoints (latest and each best). Each distinct file is read at most once per call, so
the data files that `data` wrote and `train` read cost one hash each. Anything wrong -- a missing or
changed file, a failed or interrupted stage, a stage still marked `running` whose process is gone --
is one line in `problems`; `ok` is true only for a project with at least one stage and no problem.
"""

import socket
from typing import Any, Dict, List, Optional, Tuple

from mpltool.manifest import Project
from mpltool.manifest import stages as stage_table
from mpltool.manifest.files import FileChecker, stage_files
from mpltool.manifest.lock import pid_alive
from mpltool.manifest.records import StageRecord, TrainRecord, typed

STAGE_ORDER = stage_table.STAGE_ORDER


def _default_target(record: TrainRecord) -> str:
    """The network eval takes by default: as recorded, else (a record from before algorithms were
    recorded) its algorithm's, from the registry."""
    if record.algorithm.default_target:
        return record.algorithm.default_target
    from mpltool.algorithms import DEFAULT_ALGORITHM, get_algorithm

    return get_algorithm(record.params.get("algorithm") or DEFAULT_ALGORITHM).default_target


def headline(record: StageRecord) -> Dict[str, Any]:
    """The metrics `status` shows for a stage: its table entry's, and for training the best checkpoint's
    score of the network the algorithm evaluates by default."""
    keys = list(stage_table.stage(record.name).headline) if record.name in stage_table.BY_NAME else []
    if isinstance(record, TrainRecord):
        target = _default_target(record)
        keys[1:1] = ["best_{}_top1".format(target), "best_{}_valid_top1".format(target)]
    metrics = record.metrics
    return {k: metrics[k] for k in keys if k in metrics}


def _check_files(checker: FileChecker, record: Dict[str, Any]) -> Tuple[int, List[str], List[str]]:
    """(files named, short states for the outputs column, full problem texts without the stage name)."""
    entries = stage_files(record)
    short, full = [], []
    for label, shown, file_record in entries:
        if file_record is None:
            short.append("{} has no files".format(label))
            full.append("{} {} has no recorded files".format(label, shown))
            continue
        problem = checker.problem(file_record)
        if problem is None:
            continue
        word = problem.split(" ", 1)[0]
        if word not in ("missing", "changed", "unreadable"):
            word = problem
        if label.endswith("checkpoint"):  # a checkpoint is several files: say which one
            short.append("{} {} {}".format(label, shown.rsplit("/", 1)[-1], word))
        else:
            short.append("{} {}".format(label, word))
        full.append("{} {} {}".format(label, shown, problem))
    return len(entries), short, full


def _run_state(record: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """(status as shown, the problem it is or None): `running` whose process is gone is a problem."""
    status = record.get("status")
    if status == "done":
        return "done", None
    if status == "running":
        pid, host = record.get("pid"), record.get("host")
        if isinstance(pid, int) and not isinstance(pid, bool) and host == socket.gethostname() \
                and not pid_alive(pid):
            shown = "running (process {} gone)".format(pid)
            return shown, shown
        return "running", None
    if status in ("failed", "interrupted"):
        error = record.get("error")
        return status, "{}: {}".format(status, error) if error else status
    return str(status), "unknown status {!r}".format(status)


def _outputs_text(record: StageRecord, state: str, checked: int) -> str:
    """A short line: each output (path and hash prefix) when few, else a count; checkpoints by name (the
    latest, the default network's best); then `ok` or what is wrong with the stage's recorded files."""
    outputs = record.outputs
    parts = []
    if len(outputs) <= 2:
        parts = ["{} ({})".format(out.get("path"), str(out.get("sha256", ""))[:12]) for out in outputs.values()
                 if isinstance(out, dict)]
    elif outputs:
        parts = ["{} files".format(len(outputs))]
    if isinstance(record, TrainRecord) and record.checkpoints.latest:
        parts.append("latest {}".format(record.checkpoints.latest.get("prefix")))
        target = _default_target(record)
        best = record.checkpoints.best.get(target)
        if best:
            top1 = best.get("top1")
            parts.append("best {} {}{}".format(target, best.get("prefix"), " (top-1 {:.4f})".format(top1)
                                               if isinstance(top1, (int, float)) else ""))
    if checked:
        parts.append(state if parts or state != "ok" else "inputs ok")
    return ", ".join(parts) or "-"


def project_status(project_dir) -> Dict[str, Any]:
    project = Project(project_dir)
    manifest = project.load()
    stages_data = manifest["stages"]
    names = stage_table.ordered(list(stages_data))
    checker = FileChecker(project.path, manifest.get("pending"))  # one per call: each distinct file hashed once
    stages = []  # type: List[Dict[str, Any]]
    problems = []  # type: List[str]
    for name in names:
        raw = stages_data[name] if isinstance(stages_data[name], dict) else {}
        record = typed(name, raw)
        shown = headline(record)
        shown_status, run_problem = _run_state(raw)
        checked, short, full = _check_files(checker, raw)
        state = "ok" if not short else ", ".join(short)
        stage_problems = ([run_problem] if run_problem else []) + full
        problems.extend("{}: {}".format(name, text) for text in stage_problems)
        stages.append({
            "stage": name,
            "status": record.status,  # as recorded: what JSON readers compare against
            "status_text": shown_status,       # for people: says when a `running` process is gone
            "started": record.started,
            "ended": record.ended,
            "error": record.error,
            "outputs": record.outputs,
            "outputs_state": state,
            "problems": ["{}: {}".format(name, text) for text in stage_problems],
            "metrics": dict(record.metrics),
            "outputs_text": _outputs_text(record, state, checked),
            "metrics_text": " ".join("{}={}".format(k, _short(v)) for k, v in shown.items()) or "-",
        })
    notes = []
    for stage in stages:
        if stage["error"]:
            notes.append("{}: {}".format(stage["stage"], stage["error"]))
    convert = typed("convert", stages_data.get("convert"))
    command = convert.command or typed("convert-check", stages_data.get("convert-check")).command
    if convert.output("om"):
        from mpltool.convert.stage import verification_line

        notes.append("offline model: {}, {}".format(project.path(convert.output("om")["path"]),
                                                     verification_line(convert.raw.get("verification"))))
    elif command:
        notes.append("to make the .om on a CANN host: {}".format(command))
    if checker.staged_in_use:
        notes.append("{} recorded file(s) still under their staging names (an interrupted commit): the next "
                     "mpltool command on this project renames them into place".format(len(checker.staged_in_use)))
    if not stages:  # nothing to show is not a healthy project: a CI gate on `status` must not pass
        empty = "no stages yet: start with `{}` (or `mpltool data demo`)".format(stage_table.command("data"))
        notes.append(empty)
        problems.append(empty)
    return {"project": str(project.dir), "manifest": str(project.manifest_path), "stages": stages, "notes": notes,
            "ok": bool(stages) and not problems, "problems": problems}


def _short(value):
    if isinstance(value, float):
        return "{:.4f}".format(value)
    return value
