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
from mpltool.manifest.files import FileChecker, stage_files
from mpltool.manifest.lock import pid_alive

STAGE_ORDER = ("data", "train", "eval", "freeze", "export", "convert-check", "convert")
HEADLINE_METRICS = ("top1", "top5", "loss", "best_ema_top1", "steps_done", "images_per_second",
                    "max_abs_logit_diff", "top1_agreement", "train_records", "test_records", "labelled_records")


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


def _outputs_text(name: str, record: Dict[str, Any], state: str, checked: int) -> str:
    """A short line: each output (path and hash prefix) when few, else a count; train names its checkpoints;
    then `ok` or what is wrong with the stage's recorded files."""
    outputs = record.get("outputs") or {}
    parts = []
    if len(outputs) <= 2:
        parts = ["{} ({})".format(out.get("path"), str(out.get("sha256", ""))[:12]) for out in outputs.values()
                 if isinstance(out, dict)]
    elif outputs:
        parts = ["{} files".format(len(outputs))]
    checkpoints = record.get("checkpoints") or {}
    if name == "train" and checkpoints.get("latest"):
        parts.append("latest {}".format(checkpoints["latest"].get("prefix")))
        target = (record.get("algorithm") or {}).get("default_target") or "ema"
        best = (checkpoints.get("best") or {}).get(target)
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
    names = [n for n in STAGE_ORDER if n in stages_data] + sorted(n for n in stages_data if n not in STAGE_ORDER)
    checker = FileChecker(project.path, manifest.get("pending"))  # one per call: each distinct file hashed once
    stages = []  # type: List[Dict[str, Any]]
    problems = []  # type: List[str]
    for name in names:
        record = stages_data[name] if isinstance(stages_data[name], dict) else {}
        metrics = dict(record.get("metrics") or {})
        headline = {k: metrics[k] for k in HEADLINE_METRICS if k in metrics}
        outputs = record.get("outputs") or {}
        shown_status, run_problem = _run_state(record)
        checked, short, full = _check_files(checker, record)
        state = "ok" if not short else ", ".join(short)
        stage_problems = ([run_problem] if run_problem else []) + full
        problems.extend("{}: {}".format(name, text) for text in stage_problems)
        stages.append({
            "stage": name,
            "status": record.get("status"),  # as recorded: what JSON readers compare against
            "status_text": shown_status,       # for people: says when a `running` process is gone
            "started": record.get("started"),
            "ended": record.get("ended"),
            "error": record.get("error"),
            "outputs": outputs,
            "outputs_state": state,
            "problems": ["{}: {}".format(name, text) for text in stage_problems],
            "metrics": metrics,
            "outputs_text": _outputs_text(name, record, state, checked),
            "metrics_text": " ".join("{}={}".format(k, _short(v)) for k, v in headline.items()) or "-",
        })
    notes = []
    for stage in stages:
        if stage["error"]:
            notes.append("{}: {}".format(stage["stage"], stage["error"]))
    convert = stages_data.get("convert") or {}
    command = convert.get("command") or (stages_data.get("convert-check") or {}).get("command")
    if (convert.get("outputs") or {}).get("om"):
        notes.append("offline model: {}".format(project.path(convert["outputs"]["om"]["path"])))
    elif command:
        notes.append("to make the .om on a CANN host: {}".format(command))
    if checker.staged_in_use:
        notes.append("{} recorded file(s) still under their staging names (an interrupted commit): the next "
                     "mpltool command on this project renames them into place".format(len(checker.staged_in_use)))
    if not stages:  # nothing to show is not a healthy project: a CI gate on `status` must not pass
        empty = "no stages yet: start with `mpltool data prepare --cifar PATH` (or `mpltool data demo`)"
        notes.append(empty)
        problems.append(empty)
    return {"project": str(project.dir), "manifest": str(project.manifest_path), "stages": stages, "notes": notes,
            "ok": bool(stages) and not problems, "problems": problems}


def _short(value):
    if isinstance(value, float):
        return "{:.4f}".format(value)
    return value
