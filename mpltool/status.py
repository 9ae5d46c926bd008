"""`mpltool status`: every stage's state, times, outputs (re-hashed) and metrics, in lifecycle order."""

from typing import Any, Dict, List

from mpltool.manifest import Project, sha256_file

STAGE_ORDER = ("data", "train", "eval", "freeze", "convert")
HEADLINE_METRICS = ("top1", "top5", "loss", "best_ema_top1", "steps_done", "images_per_second",
                    "max_abs_logit_diff", "top1_agreement", "train_records", "test_records", "labelled_records")


def _output_state(project: Project, record: Dict[str, Any]) -> str:
    """`ok`, or which recorded outputs are missing or changed since the stage wrote them."""
    problems = []
    for name, out in (record.get("outputs") or {}).items():
        path = project.path(out["path"])
        if not path.is_file():
            problems.append("{} missing".format(name))
        elif path.stat().st_size != out.get("size") or sha256_file(path) != out.get("sha256"):
            problems.append("{} changed".format(name))
    return "ok" if not problems else ", ".join(problems)


def _outputs_text(name: str, record: Dict[str, Any], state: str) -> str:
    """A short line: each output (path and hash prefix) when few, else a count; train names its checkpoints."""
    outputs = record.get("outputs") or {}
    parts = []
    if len(outputs) <= 2:
        parts = ["{} ({})".format(out["path"], out["sha256"][:12]) for out in outputs.values()]
    elif outputs:
        parts = ["{} files".format(len(outputs))]
    if outputs:
        parts.append(state)
    checkpoints = record.get("checkpoints") or {}
    if name == "train" and checkpoints.get("latest"):
        parts.append("latest {}".format(checkpoints["latest"]["prefix"]))
        best = (checkpoints.get("best") or {}).get("ema")
        if best:
            parts.append("best ema {} (top-1 {:.4f})".format(best["prefix"], best.get("top1", float("nan"))))
    return ", ".join(parts) or "-"


def project_status(project_dir) -> Dict[str, Any]:
    project = Project(project_dir)
    stages_data = project.load()["stages"]
    names = [n for n in STAGE_ORDER if n in stages_data] + sorted(n for n in stages_data if n not in STAGE_ORDER)
    stages = []  # type: List[Dict[str, Any]]
    for name in names:
        record = stages_data[name]
        metrics = dict(record.get("metrics") or {})
        headline = {k: metrics[k] for k in HEADLINE_METRICS if k in metrics}
        outputs = record.get("outputs") or {}
        state = _output_state(project, record)  # re-hashes every output: once per stage
        stages.append({
            "stage": name,
            "status": record.get("status"),
            "started": record.get("started"),
            "ended": record.get("ended"),
            "error": record.get("error"),
            "outputs": outputs,
            "outputs_state": state,
            "metrics": metrics,
            "outputs_text": _outputs_text(name, record, state),
            "metrics_text": " ".join("{}={}".format(k, _short(v)) for k, v in headline.items()) or "-",
        })
    notes = []
    for stage in stages:
        if stage["error"]:
            notes.append("{}: {}".format(stage["stage"], stage["error"]))
    convert = stages_data.get("convert") or {}
    if convert.get("outputs", {}).get("om"):
        notes.append("offline model: {}".format(project.path(convert["outputs"]["om"]["path"])))
    elif convert.get("command"):
        notes.append("to make the .om on a CANN host: {}".format(convert["command"]))
    if not stages:
        notes.append("no stages yet: start with `mpltool data prepare --cifar PATH` (or `mpltool data demo`)")
    return {"project": str(project.dir), "manifest": str(project.manifest_path), "stages": stages, "notes": notes}


def _short(value):
    if isinstance(value, float):
        return "{:.4f}".format(value)
    return value
