"""`mpltool report`: one HTML page and its PNG figures in `<project>/report/`, from whatever the project holds.

Read, never changed: the manifest (each stage's record, and `status`'s re-verification of every recorded
file), `logs/metrics.csv`, the test set and the network eval ran (predictions.py). A stage that has not
run is shown as "not run"; a project with only its data stage still gets a page.

The report is a view, not a lifecycle stage: it records nothing in the manifest and takes no project lock,
so it can be written while training runs (to look at the curves so far) and re-written as often as
wanted without changing what `status` reports.

Atomic: every file is written into a scratch folder inside the project (`.report-tmp-<pid>-*`), and the
folder is renamed to `report/` only when complete (the previous report is moved aside first and
removed after), so `report/` is never half-written. Leftover scratch folders of dead processes are swept.
"""

import datetime
import html
import os
import re
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from mpltool import __version__
from mpltool.data.sources import get_source
from mpltool.data.stage import class_names
from mpltool.errors import MpltoolError, PrerequisiteError, UsageError
from mpltool.manifest import MANIFEST_NAME, Project
from mpltool.manifest.files import atomic_write_bytes, current_umask, fsync_dir
from mpltool.manifest import stages as stage_table
from mpltool.manifest.lock import pid_alive
from mpltool.manifest.records import typed
from mpltool.report import curves as curve_data
from mpltool.report import predictions as prediction_data
from mpltool.signals import critical_section

REPORT_DIR = "report"
INDEX_NAME = "index.html"
GENERATOR = "mpltool report"
SCRATCH_PREFIX = ".report-tmp-"
OLD_PREFIX = ".report-old-"
DEFAULT_SAMPLES = 24
MAX_SAMPLES = 600
START_HINT = ("start one with `mpltool --project DIR data prepare --cifar PATH` (`mpltool data demo` writes demo "
              "data), or point --project at an existing project")


def write_report(project_dir, samples: int = DEFAULT_SAMPLES, force: bool = False,
                 log: Callable[[str], None] = lambda line: None) -> Dict[str, Any]:
    """Write `<project>/report/index.html` and its PNG files; return what was written and shown.

    `samples`: how many test images the predictions figure shows (worst mistakes first; 0: none).
    `force`: replace a `report/` folder that mpltool did not write. `log(line)` receives progress notes.
    """
    from mpltool.report.figures import require_matplotlib

    project = Project(project_dir)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= MAX_SAMPLES:
        raise UsageError("--samples must be a whole number from 0 to {}, got {!r}".format(MAX_SAMPLES, samples))
    if not project.manifest_path.is_file():
        raise PrerequisiteError("no mpltool project in {} (no {})".format(project.dir, MANIFEST_NAME),
                                hint=START_HINT)
    manifest = project.load()  # a corrupt manifest is exit 3 before anything is drawn
    require_matplotlib()  # exit 5 naming the extra, before any work
    report_dir = project.path(REPORT_DIR)
    _check_report_dir(report_dir, force)
    _sweep_leftovers(project.dir)

    from mpltool.status import project_status

    builder = _Builder(project, manifest, project_status(project.dir), log)
    scratch = Path(tempfile.mkdtemp(prefix="{}{}-".format(SCRATCH_PREFIX, os.getpid()), dir=str(project.dir)))
    try:
        builder.scratch = scratch
        builder.build(samples, report_dir / prediction_data.CACHE_NAME)
        page = builder.page()
        builder.add_file(INDEX_NAME, page.encode("utf-8"))
        _replace_dir(scratch, report_dir, project.dir)
    finally:
        if scratch.exists():
            shutil.rmtree(str(scratch), ignore_errors=True)
    index = report_dir / INDEX_NAME
    return OrderedDict([
        ("project", str(project.dir)), ("report_dir", str(report_dir)), ("index", str(index)),
        ("files", sorted(builder.files)), ("figures", builder.figures), ("stages", builder.stage_rows),
        ("curves", builder.curves_summary), ("predictions", builder.prediction_summary),
        ("freeze_ops", builder.freeze_ops), ("warnings", builder.warnings)])


# -- the report folder --------------------------------------------------------------------------------

def _is_ours(report_dir: Path) -> bool:
    index = report_dir / INDEX_NAME
    try:
        head = index.read_bytes()[:2000].decode("utf-8", "replace")
    except OSError:
        return False
    return 'name="generator" content="{}'.format(GENERATOR) in head


def _check_report_dir(report_dir: Path, force: bool) -> None:
    if report_dir.exists() and not report_dir.is_dir():
        raise UsageError("{} is a file, not the report folder".format(report_dir), hint="move it away and re-run")
    if report_dir.is_dir() and any(report_dir.iterdir()) and not _is_ours(report_dir) and not force:
        raise UsageError("refusing to replace {}: it holds files and no earlier `mpltool report` wrote it".format(
            report_dir), hint="move it away, or pass --force to replace it")


def _sweep_leftovers(project_dir: Path) -> None:
    """Scratch and set-aside folders of report runs that died before cleaning up."""
    for folder in project_dir.glob(".report-*"):
        match = re.match(r"^\.report-(?:tmp|old)-(\d+)-", folder.name)
        if folder.is_dir() and match and not (int(match.group(1)) == os.getpid() or pid_alive(int(match.group(1)))):
            shutil.rmtree(str(folder), ignore_errors=True)


def _replace_dir(scratch: Path, final: Path, parent: Path) -> None:
    """`scratch` becomes `final`; a previous `final` is set aside first and removed after. Signals are held
    back meanwhile, so an interrupt cannot leave the project without its previous report and without the new one."""
    old = None
    with critical_section():
        os.chmod(str(scratch), 0o777 & ~current_umask())  # mkdtemp makes it 0700: a report is meant to be shared
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix="{}{}-".format(OLD_PREFIX, os.getpid()), dir=str(parent)))
            os.rename(str(final), str(old / REPORT_DIR))
        try:
            os.rename(str(scratch), str(final))
        except BaseException:
            if old is not None:
                os.rename(str(old / REPORT_DIR), str(final))
            raise
        fsync_dir(parent)
    if old is not None:
        shutil.rmtree(str(old), ignore_errors=True)


# -- facts --------------------------------------------------------------------------------------------

def _utc(text) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return None


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return "{}h {:02d}m {:02d}s".format(hours, minutes, secs)
    if minutes:
        return "{}m {:02d}s".format(minutes, secs)
    return "{}s".format(secs)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "{:.6g}".format(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join("{} {}".format(k, _fmt(v)) for k, v in value.items()) if value else "-"
    return str(value)


class _Builder:
    """Collects every section's facts and figures, then renders the page (page())."""

    def __init__(self, project: Project, manifest: Dict[str, Any], status: Dict[str, Any],
                 log: Callable[[str], None]):
        self.project = project
        self.manifest = manifest
        self.stages = manifest.get("stages") or {}
        self.status = status
        self.log = log
        self.scratch = None  # type: Optional[Path]
        self.files = []  # type: List[str]
        self.figures = []  # type: List[Dict[str, Any]]
        self.warnings = []  # type: List[str]
        self.sections = []  # type: List[str]
        self.stage_rows = []  # type: List[Dict[str, Any]]
        self.curves_summary = {}  # type: Dict[str, Any]
        self.prediction_summary = {}  # type: Dict[str, Any]
        self.freeze_ops = {}  # type: Dict[str, int]

    # -- files --
    def add_png(self, name: str, rendered, title: str, **extra) -> str:
        from mpltool.report.figures import check_size

        data, width, height = rendered
        check_size(data, width, height)
        atomic_write_bytes(self.scratch / name, data)
        self.files.append(name)
        figure = OrderedDict([("file", name), ("title", title), ("width", width), ("height", height)])
        figure.update(extra)
        self.figures.append(figure)
        return '<figure><img src="{}" width="{}" height="{}" alt="{}"><figcaption>{}</figcaption></figure>'.format(
            html.escape(name), width, height, html.escape(title), html.escape(title))

    def add_file(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.scratch / name, data)
        self.files.append(name)

    def record(self, name: str):
        """The typed record of stage `name` (false when the stage has not run)."""
        return typed(name, self.stages.get(name))

    # -- sections --
    def build(self, samples: int, cache_path: Path) -> None:
        """The stages table, then one section per section of the stage table (manifest/stages.py): the
        method `<section>_section` where there is one, else the generic record view."""
        self.samples, self.cache_path = samples, cache_path
        self.sections.append(self.stages_section())
        for section in stage_table.sections():
            render = getattr(self, "{}_section".format(section.replace("-", "_")), None)
            self.sections.append(render() if render else self.generic_section(section))

    def generic_section(self, section: str) -> str:
        """A stage this report has no dedicated view of: its state, parameters and metrics."""
        parts = []
        for entry in stage_table.STAGES:
            record = self.record(entry.name) if entry.section == section else None
            if record:
                parts.append(_facts(OrderedDict([("status", record.status), ("error", record.error)] +
                                                 list(record.params.items()) + list(record.metrics.items()))))
        return _section(section, _section_title(section), "".join(parts) or _not_run(section))

    def stages_section(self) -> str:
        by_name = {s["stage"]: s for s in self.status["stages"]}
        names = stage_table.ordered(list(set(by_name) | set(stage_table.STAGE_ORDER)))
        rows = []
        for name in names:
            stage = by_name.get(name)
            if stage is None:
                row = OrderedDict([("stage", name), ("status", "not run"), ("started", None), ("ended", None),
                                   ("seconds", None), ("outputs", "-"), ("metrics", "-"), ("error", None)])
            else:
                started, ended = _utc(stage["started"]), _utc(stage["ended"])
                seconds = (ended - started).total_seconds() if started and ended else None
                if seconds is None and started and stage["status"] == "running":
                    seconds = (datetime.datetime.utcnow() - started).total_seconds()
                row = OrderedDict([("stage", name), ("status", stage["status_text"]), ("started", stage["started"]),
                                   ("ended", stage["ended"]), ("seconds", seconds),
                                   ("outputs", stage["outputs_text"]), ("metrics", stage["metrics_text"]),
                                   ("error", stage["error"])])
            self.stage_rows.append(row)
            rows.append([row["stage"], _status_cell(row["status"]), _fmt(row["started"]), _fmt(row["ended"]),
                         _duration(row["seconds"]) + (" so far" if row["status"] == "running" else ""),
                         html.escape(row["outputs"]), html.escape(row["metrics"])])
        body = _table(["stage", "status", "started (UTC)", "ended (UTC)", "time", "outputs", "headline metrics"],
                      rows, raw=True)
        problems = self.status.get("problems") or []
        notes = [n for n in self.status.get("notes") or [] if n not in problems]
        if problems:
            body += "<p class=bad>Problems (as <code>mpltool status</code> reports them):</p>" + _list(problems)
        if notes:
            body += _list(notes)
        return _section("stages", "Stages", body)

    def data_section(self) -> str:
        typed_record = self.record("data")
        if not typed_record:
            return _section("data", "Data", _not_run("data"))
        record = typed_record.raw
        metrics = typed_record.metrics
        try:
            source = get_source(typed_record.source)
        except MpltoolError as exc:  # a record of a source this mpltool does not know: say so, show the rest
            source = None
            self.warnings.append(str(exc))
        facts = OrderedDict([("status", typed_record.status), ("source", source.name if source else
                                                                 typed_record.source),
                             ("imported from", typed_record.params.get("source"))])
        train_params = self.record("train").params
        if source is not None:
            facts.update(source.facts(record, train_params))
        for key, value in metrics.items():
            facts[key.replace("_", " ")] = value
        files = typed_record.files
        count = max([len(f.get("label_counts") or []) for f in files] + [int(train_params.get("num_classes") or 0)])
        facts["classes"] = ", ".join(class_names(self.project, count)[0])
        body = _facts(facts)
        if files:
            rows = [[f.get("name"), f.get("domain", ""), f.get("records"), _fmt(f.get("label_counts"))] for f in files]
            body += _table(["file", "domain", "records", "images per class"], rows)
        return _section("data", "Data", body)

    def train_section(self) -> str:
        record = self.record("train")
        parts = []
        if not record:
            parts.append(_not_run("train"))
        else:
            facts = OrderedDict([
                ("status", record.status), ("recipe", record.recipe), ("algorithm", record.algorithm_name),
                ("model", record.model), ("device", record.device),
                ("steps", "{} of {}".format(record.steps_done, record.num_train_steps)),
                ("replicas", record.replicas), ("overrides", record.overrides or None), ("error", record.error)])
            parts.append(_facts(OrderedDict((k, v) for k, v in facts.items() if v not in (None, "", {}))))
            best = record.checkpoints.best
            if best:
                rows = [[target, b.get("step"), _fmt(b.get("top1")), _fmt(b.get("valid_top1")), b.get("prefix")]
                        for target, b in best.items()]
                parts.append("<h3>Best checkpoints</h3>" + _table(
                    ["network", "step", "test top-1", "valid top-1", "checkpoint"], rows))
            metrics = record.metrics
            if metrics:
                parts.append("<h3>Final metrics</h3>" + _facts(metrics))
        parts.append(self.curves_part())
        return _section("train", "Training", "".join(parts))

    def curves_part(self) -> str:
        from mpltool.report import figures

        path = self.project.path(curve_data.METRICS_CSV)
        curves = curve_data.read_metrics_csv(path)
        if curves is None or curves.rows == 0:
            self.curves_summary = {"csv": None if curves is None else str(path), "rows": 0, "figures": []}
            return "<h3>Training curves</h3><p class=muted>No training metrics yet ({} {}).</p>".format(
                html.escape(curve_data.METRICS_CSV), "is missing" if curves is None else "has no rows")
        groups = curve_data.plotted_groups(curves)
        family = {f.key: f for f in curve_data.FAMILIES}
        parts = ["<h3>Training curves</h3><p class=muted>{} rows of {}, steps {:g} to {:g}; every column is "
                 "plotted, grouped by family.</p>".format(curves.rows, html.escape(curve_data.METRICS_CSV),
                                                          min(curves.steps), max(curves.steps))]
        for key, columns in groups.items():
            lines = [(c,) + tuple(curve_data.series(curves, c)) for c in columns]
            parts.append(self.add_png("curves-{}.png".format(key), figures.curve_figure(
                family[key].title, family[key].ylabel, lines, family[key].panels), family[key].title,
                columns=list(columns)))
        empty = [c for c in curves.columns if c not in curve_data.NOT_PLOTTED and not curve_data.has_values(curves, c)]
        if empty:
            parts.append("<p class=muted>Columns without any value (not plotted): {}</p>".format(
                html.escape(", ".join(empty))))
        last = curve_data.last_values(curves)
        parts.append("<details><summary>Last logged value of every column</summary>" + _table(
            ["column", "figure", "step", "value", "points"],
            [[c, "curves-{}.png".format(curve_data.family_of(c).key), v["step"], _fmt(v["value"]), v["points"]]
             for c, v in last.items()]) + "</details>")
        self.curves_summary = {"csv": str(path), "rows": curves.rows, "columns": list(curves.columns),
                               "groups": groups, "empty_columns": empty}
        return "".join(parts)

    def eval_section(self) -> str:
        record = self.record("eval")
        parts = []
        if not record:
            parts.append(_not_run("eval"))
        else:
            facts = OrderedDict([("status", record.status), ("model", _source_text(record.source))])
            facts.update(record.metrics)
            if record.error:
                facts["error"] = record.error
            parts.append(_facts(facts))
        parts.append(self.predictions_part(self.samples, self.cache_path))
        return _section("eval", "Evaluation", "".join(parts))

    def predictions_part(self, samples: int, cache_path: Path) -> str:
        from mpltool.eval.metrics import metrics_from_logits
        from mpltool.report import figures

        try:
            found = prediction_data.predictions(self.project, self.manifest, cache_path, self.log)
        except prediction_data.Unavailable as exc:
            self.prediction_summary = {"available": False, "reason": str(exc)}
            return "<h3>Predictions</h3><p class=muted>No per-image predictions: {}</p>".format(html.escape(str(exc)))
        source, labels, logits = found["source"], found["labels"], found["logits"]
        self.add_file(prediction_data.CACHE_NAME, prediction_data.cache_bytes(found["key"], logits, labels))
        try:
            scores = metrics_from_logits(logits, labels, source["label_smoothing"])
        except MpltoolError as exc:  # NaN logits: nothing to draw from them
            self.prediction_summary = {"available": False, "reason": str(exc)}
            return "<h3>Predictions</h3><p class=bad>{}</p>".format(html.escape(str(exc)))
        num_classes = int(logits.shape[1])
        names = class_names(self.project, num_classes)[0]
        predicted = logits.argmax(axis=1)
        confidence = prediction_data.softmax(logits).max(axis=1)
        matrix = prediction_data.confusion_matrix(labels, predicted, num_classes)
        support = matrix.sum(axis=1)
        per_class = [OrderedDict([("label", k), ("name", names[k]), ("images", int(support[k])),
                                  ("correct", int(matrix[k, k])),
                                  ("accuracy", float(matrix[k, k]) / float(support[k]) if support[k] else None)])
                     for k in range(num_classes)]
        top1 = float(np.trace(matrix)) / labels.shape[0]
        notes = []
        if source.get("note"):
            notes.append(source["note"])
        if found["changed"]:
            text = ("the model files changed since the {} stage recorded them (sha256 differs): these predictions "
                    "are of the files as they are now".format(source["origin"]))
            notes.append(text)
            self.warnings.append(text)
        eval_top1 = source.get("eval_top1")
        matches = None if eval_top1 is None else bool(abs(top1 - float(eval_top1)) < 1e-12)
        if matches is False:
            text = "the report's top-1 {:.4f} differs from the eval record's {:.4f}".format(top1, float(eval_top1))
            notes.append(text)
            self.warnings.append(text)
        if found["cached"]:
            self.log("predictions of {} read from the previous report (model and test files unchanged)".format(
                prediction_data.describe(source)))
        order = prediction_data.sample_order(labels, predicted, confidence, samples)
        shown = [OrderedDict([("index", i), ("label", int(labels[i])), ("label_name", names[int(labels[i])]),
                              ("prediction", int(predicted[i])), ("prediction_name", names[int(predicted[i])]),
                              ("confidence", float(confidence[i])), ("correct", bool(predicted[i] == labels[i]))])
                 for i in order]
        self.prediction_summary = OrderedDict([
            ("available", True), ("origin", source["origin"]), ("kind", source["kind"]),
            ("target", source.get("target")), ("model", prediction_data.describe(source)),
            ("model_files", [f for f, _ in found["model_files"]]), ("cached", found["cached"]),
            ("model_changed", found["changed"]), ("images", int(labels.shape[0])), ("top1", top1),
            ("top5", scores["top5"]), ("loss", scores["loss"]), ("correct_top1", int(np.trace(matrix))),
            ("eval_top1", eval_top1), ("matches_eval", matches), ("classes", names),
            ("confusion", matrix.tolist()), ("per_class", per_class), ("samples", shown)])

        facts = OrderedDict([("network", prediction_data.describe(source)),
                             ("from", "the eval record" if source["origin"] == "eval"
                              else "the train record (eval has not run)"),
                             ("test images", int(labels.shape[0])),
                             ("top-1", "{:.4f} ({} right)".format(top1, int(np.trace(matrix)))),
                             ("top-5", "{:.4f}".format(scores["top5"])), ("loss", "{:.4f}".format(scores["loss"])),
                             ("eval record's top-1", eval_top1),
                             ("computed", "cached (no network run)" if found["cached"] else "now")])
        parts = ["<h3>Predictions on the test set</h3>", _facts(facts)]
        if notes:
            parts.append("<p class=bad>" + "<br>".join(html.escape(n) for n in notes) + "</p>")
        parts.append(self.add_png("confusion.png", figures.confusion_figure(
            matrix, names, "Confusion matrix ({} test images, top-1 {:.4f})".format(labels.shape[0], top1)),
            "Confusion matrix: rows are true classes, columns predictions (shade: share of the row)"))
        parts.append(self.add_png("per-class.png", figures.per_class_figure(
            names, [c["accuracy"] for c in per_class], top1), "Per-class accuracy"))
        parts.append(_table(["label", "class", "test images", "right", "accuracy"],
                            [[c["label"], c["name"], c["images"], c["correct"],
                              "-" if c["accuracy"] is None else "{:.4f}".format(c["accuracy"])] for c in per_class]))
        if shown:
            wrong = sum(1 for s in shown if not s["correct"])
            caption = ("{} test images: {} wrong predictions, most confident first (the worst mistakes), then {} "
                       "right ones, least confident first".format(len(shown), wrong, len(shown) - wrong))
            parts.append("<h3>Sample predictions</h3>")
            parts.append(self.add_png("samples.png", figures.samples_figure(found["images"], shown), caption,
                                      indices=[s["index"] for s in shown]))
        parts.append('<p class=muted>Raw logits and labels: <a href="{0}">{0}</a> (numpy .npz; also the cache a '
                     're-run reads instead of running the network while the model and test files are '
                     'unchanged).</p>'.format(prediction_data.CACHE_NAME))
        return "".join(parts)

    def freeze_section(self) -> str:
        record = self.record("freeze")
        if not record:
            return _section("freeze", "Freeze", _not_run("freeze"))
        source = record.source
        body = self.model_file_part(record, "pb", "frozen graph", "checkpoint", OrderedDict([
            ("from", "{} {} step {} ({})".format(source.get("target"), source.get("prefix"), source.get("step"),
                                                 source.get("chosen")) if source else None),
            ("weights checked", record.raw.get("weights_checked"))]))
        body += self.op_summary(record.output("pb"))
        return _section("freeze", "Freeze", body)

    def export_section(self) -> str:
        record = self.record("export")
        if not record:
            return _section("export", "Export", _not_run("export"))
        stack = record.section("onnx_stack")
        model = record.section("onnx")
        body = self.model_file_part(record, "onnx", "ONNX model", "frozen graph", OrderedDict([
            ("format", record.params.get("format")), ("from", record.source.get("pb")),
            ("opset", model.get("opset")), ("nodes", model.get("nodes")),
            ("converted by", ", ".join("{} {}".format(k, v) for k, v in stack.items() if v) or None)]))
        return _section("export", "Export", body)

    def model_file_part(self, record, key: str, what: str, reference: str, extra: Dict[str, Any]) -> str:
        """A model file a stage wrote and proved: where it is, its input and outputs, and its parity with
        the model it came from (freeze: the checkpoint; export: the frozen graph)."""
        io, parity, written = record.io, record.parity, record.output(key)
        facts = OrderedDict([
            ("status", record.status), (what, written.get("path") or record.params.get("output")),
            ("sha256", written.get("sha256")),
            ("size", "{:,} bytes".format(written["size"]) if written.get("size") else None)])
        facts.update(extra)
        facts.update([
            ("input", "{} {} {}{}".format(io.get("input_name"), io.get("input_shape"), io.get("input_dtype"),
                                          " ({})".format(io["input_range"]) if io.get("input_range") else "")
             if io else None),
            ("outputs", ", ".join("{} {}".format(n, s) for n, s in zip(io.get("output_names") or [],
                                                                       io.get("output_shapes") or [])) or None),
            ("error", record.error)])
        body = _facts(OrderedDict((k, v) for k, v in facts.items() if v is not None))
        if parity:
            body += "<h3>Parity: {} vs {}</h3>".format(html.escape(what), html.escape(reference)) + _facts(
                OrderedDict([("result", "passed" if parity.get("passed") else "FAILED"),
                             ("test images", parity.get("images")),
                             ("max |logit difference|", parity.get("max_abs_logit_diff")),
                             ("tolerance", parity.get("tolerance")), ("top-1 agreement", parity.get("top1_agreement"))]))
        return body

    def op_summary(self, pb: Dict[str, Any]) -> str:
        """Op types of the frozen graph: from a convert pre-check of the same .pb (sha256) when one is
        recorded, else read from the file."""
        counts, origin = None, None
        for name in ("convert", "convert-check"):
            record = self.record(name)
            checked = record.input("pb")
            if pb.get("sha256") and checked.get("sha256") == pb["sha256"] and record.precheck.get("op_counts"):
                counts, origin = record.precheck["op_counts"], "the {} pre-check of this .pb".format(name)
                break
        if counts is None and pb.get("path"):
            path = self.project.path(pb["path"])
            try:
                from mpltool import graphdef

                graph_def = graphdef.read_graph_def(path)
            except (MpltoolError, OSError) as exc:
                return "<p class=muted>Op summary unavailable: {}</p>".format(html.escape(str(exc)))
            counts = {}
            for node in graph_def.node:
                counts[node.op] = counts.get(node.op, 0) + 1
            origin = "read from {}".format(pb["path"])
        if not counts:
            return ""
        rows = sorted(counts.items(), key=lambda item: (-int(item[1]), item[0]))
        self.freeze_ops = OrderedDict((op, int(n)) for op, n in rows)
        return "<h3>Op summary</h3><p class=muted>{} nodes, {} op types ({})</p>".format(
            sum(int(v) for v in counts.values()), len(counts), html.escape(origin)) + _table(["op", "nodes"], rows)

    def convert_section(self) -> str:
        parts = []
        for name in ("convert", "convert-check"):
            typed_record = self.record(name)
            if not typed_record:
                continue
            record, precheck, om = typed_record.raw, typed_record.precheck, typed_record.output("om")
            model = typed_record.input("pb") or typed_record.input("onnx")
            facts = OrderedDict([
                ("stage", name), ("status", record.get("status")), ("mode", record.get("mode")),
                ("model", model.get("path")),
                ("soc_version", "{} ({})".format(record.get("soc_version"), record.get("soc_rule"))),
                ("atc", "{} ({})".format(record.get("atc_path"), record.get("atc_rule")) if record.get("atc_path")
                 else "not found"),
                ("atc version", record.get("atc_version")), ("exit status", record.get("exit_status")),
                ("offline model", "{} (sha256 {})".format(om.get("path"), om.get("sha256")) if om else None),
                ("verification", _verification(record) if name == "convert" and record.get("mode") == "convert"
                 else None),
                ("atc seconds", typed_record.metrics.get("atc_seconds")), ("log", record.get("log")),
                ("pre-check", "passed" if precheck.get("ok") else ("FAILED" if precheck else None)),
                ("graph nodes", precheck.get("nodes")), ("error", record.get("error"))])
            body = _facts(OrderedDict((k, v) for k, v in facts.items() if v is not None))
            if record.get("command"):
                body += "<p>atc command:</p><pre>{}</pre>".format(html.escape(str(record["command"])))
            problems = precheck.get("problems") or []
            if problems:
                body += _list(["{}: {}".format(p.get("kind"), p.get("message")) for p in problems])
            parts.append("<h3>{}</h3>".format("Conversion" if name == "convert" else "Pre-check only "
                                               "(convert --check-only)") + body)
        if not parts:
            parts.append(_not_run("convert"))
        return _section("convert", "Convert", "".join(parts))

    # -- the page --
    def page(self) -> str:
        train = self.record("train")
        title = "mpltool report: {}".format(self.project.dir.name)
        generated = datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z"
        subtitle = "{} &middot; {}{} &middot; written {} by mpltool {}".format(
            html.escape(str(self.project.dir)), html.escape(str(train.recipe or "no training yet")),
            " ({})".format(html.escape(str(train.algorithm_name))) if train.algorithm_name else "", generated,
            html.escape(__version__))
        nav = " &middot; ".join('<a href="#{0}">{1}</a>'.format(k, html.escape(t)) for k, t in
                                [("stages", "Stages")] + [(s, _section_title(s)) for s in stage_table.sections()])
        warnings = ""
        if self.warnings:
            warnings = "<div class=warn>" + "<br>".join(html.escape(w) for w in self.warnings) + "</div>"
        return PAGE.format(generator=GENERATOR, version=html.escape(__version__), title=html.escape(title),
                           subtitle=subtitle, nav=nav, warnings=warnings, style=STYLE,
                           sections="\n".join(self.sections))


def _source_text(source: Dict[str, Any]) -> str:
    if source.get("kind") in ("pb", "onnx", "om"):
        from mpltool.models.artifacts import FILE_WORDS

        return "{} {}".format(FILE_WORDS[source["kind"]], source.get("path"))
    if source:
        return "{} {} (step {}, {})".format(source.get("target"), source.get("prefix"), source.get("step"),
                                            source.get("chosen"))
    return "-"


# -- HTML pieces ----------------------------------------------------------------------------------------

def _section(anchor: str, title: str, body: str) -> str:
    return '<section id="{}"><h2>{}</h2>{}</section>'.format(anchor, html.escape(title), body)


def _not_run(stage: str) -> str:
    return "<p class=notrun>not run: no '{}' stage yet (<code>{}</code>)</p>".format(
        html.escape(stage), html.escape(stage_table.command(stage) if stage in stage_table.BY_NAME else stage))


def _section_title(section: str) -> str:
    """The title of the first stage the section shows."""
    return next(s.title for s in stage_table.STAGES if s.section == section)


def _status_cell(status: str) -> str:
    css = {"done": "ok", "not run": "notrun", "running": "run"}.get(status, "bad")
    return '<span class="st {}">{}</span>'.format(css, html.escape(status))


def _facts(facts: Dict[str, Any]) -> str:
    return "<table class=facts>" + "".join("<tr><th>{}</th><td>{}</td></tr>".format(
        html.escape(str(k)), html.escape(_fmt(v))) for k, v in facts.items()) + "</table>"


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """A table; cells escaped unless `raw` (then the caller escaped them)."""
    head = "".join("<th>{}</th>".format(html.escape(c)) for c in columns)
    body = "".join("<tr>{}</tr>".format("".join("<td>{}</td>".format(
        c if raw else html.escape(_fmt(c))) for c in row)) for row in rows)
    return "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>".format(head, body)


def _list(items: Sequence[str]) -> str:
    return "<ul>" + "".join("<li>{}</li>".format(html.escape(str(i))) for i in items) + "</ul>"


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1000px;
       padding: 0 20px 40px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 22px 0 2px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 3px; margin-top: 30px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { padding: 3px 9px; text-align: left;
       vertical-align: top; border-bottom: 1px solid #e3e3e3; font-size: 13px; }
thead th { background: #f3f3f3; } table.facts th { font-weight: 600; color: #444; white-space: nowrap; }
td { word-break: break-word; }
figure { margin: 10px 0 16px; } figcaption { color: #555; font-size: 12px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 8px; white-space: pre-wrap; word-break: break-all; font-size: 12px; }
.muted { color: #666; } .ok { color: #1a7f37; font-weight: 600; } .bad { color: #b42318; }
.notrun { color: #777; font-style: italic; } .run { color: #9a6700; font-weight: 600; }
.warn { background: #fff4e5; border: 1px solid #f0c36d; padding: 8px 12px; margin: 12px 0; }
nav { margin: 6px 0 0; } .sub { color: #666; font-size: 12px; } .st { white-space: nowrap; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{generator} {version}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<div class=sub>{subtitle}</div>
<nav>{nav}</nav>
{warnings}
{sections}
</body>
</html>
"""


def _verification(record: Dict[str, Any]) -> str:
    """The convert record's .om verification, as `status` says it."""
    from mpltool.convert.stage import verification_line

    return verification_line(record.get("verification"))
