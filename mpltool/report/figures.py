"""The report's PNG figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no GUI
backend, no global state): each function returns PNG bytes and the image's size in pixels.

Sizes are whole pixels chosen here (figsize = pixels / DPI, saved without bbox cropping), so a figure's
PNG has exactly the width and height the report writes into its <img> tag.
"""

import io
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mpltool.errors import ToolMissingError

DPI = 100
WIDTH = 900
CURVE_HEIGHT = 420
PANEL_HEIGHT = 240
PANEL_COLUMNS = 3
MIN_CONFUSION = 480
CELL = 44            # pixels per class in the confusion matrix (up to MAX_CONFUSION)
MAX_CONFUSION = 1400
SAMPLE_COLUMNS = 6
SAMPLE_CELL = (150, 185)  # one test image and its two-line caption
REPORT_EXTRA = "report"
INSTALL_HINT = "pip install 'mpltool[report]' (in a checkout: make venv, whose default EXTRAS include report)"


def require_matplotlib():
    """matplotlib's Figure and Agg canvas classes, or exit 5 naming the extra that installs them."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ToolMissingError("`mpltool report` draws its figures with matplotlib, which is not installed ({})"
                               .format(exc), hint="install the '{}' extra: {}".format(REPORT_EXTRA, INSTALL_HINT))
    return matplotlib, Figure, FigureCanvasAgg


def _figure(width: int, height: int):
    _, Figure, FigureCanvasAgg = require_matplotlib()
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure, width: int, height: int) -> Tuple[bytes, int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue(), width, height


def _network_of(column: str) -> str:
    for suffix in ("_valid_top1", "_top1", "_top5", "_loss_eval"):
        if column.endswith(suffix):
            return column[:-len(suffix)]
    return column


def _compact(value: float) -> str:
    if value == 0 or (1e-3 <= abs(value) < 1e4):
        return "{:.4g}".format(value)
    return "{:.3e}".format(value)


def curve_figure(title: str, ylabel: str, lines: Sequence[Tuple[str, Sequence[float], Sequence[float]]],
                 panels: bool) -> Tuple[bytes, int, int]:
    """One shared axes of several lines (`panels` False) or one small panel per line (scales differ).
    `lines`: (column name, steps, values). Sparse series (evaluations) get markers."""
    if not panels:
        width, height = WIDTH, CURVE_HEIGHT
        figure = _figure(width, height)
        axes = figure.add_subplot(1, 1, 1)
        colors = {}  # type: Dict[str, str]
        for name, steps, values in lines:
            network = _network_of(name)  # one colour per network: its top-1, top-5 and validation lines
            color = colors.setdefault(network, "C{}".format(len(colors) % 10))
            style = "--" if name.endswith("top5") else (":" if "_valid_" in name else "-")
            marker = "o" if len(values) <= 40 else None
            axes.plot(steps, values, style, marker=marker, markersize=3, linewidth=1.3, label=name, color=color)
        axes.set_title(title, fontsize=11)
        axes.set_xlabel("step")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, loc="best", ncol=2 if len(lines) > 4 else 1)
        figure.tight_layout()
        return _png(figure, width, height)
    rows = int(math.ceil(len(lines) / float(PANEL_COLUMNS)))
    width, height = WIDTH, PANEL_HEIGHT * rows
    figure = _figure(width, height)
    for index, (name, steps, values) in enumerate(lines):
        axes = figure.add_subplot(rows, PANEL_COLUMNS, index + 1)
        axes.plot(steps, values, "-", marker="o" if len(values) <= 40 else None, markersize=3, linewidth=1.2,
                  color="C{}".format(index % 10))
        axes.set_title("{} (last {})".format(name, _compact(values[-1])), fontsize=9)
        axes.tick_params(labelsize=7)
        axes.grid(True, alpha=0.3)
        axes.set_xlabel("step", fontsize=7)
    figure.tight_layout()
    return _png(figure, width, height)


def confusion_size(num_classes: int) -> int:
    return int(min(MAX_CONFUSION, max(MIN_CONFUSION, CELL * num_classes + 200)))


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str) -> Tuple[bytes, int, int]:
    """Counts per (true, predicted) class, each row shaded by its share of the class (so a small class's
    mistakes show as well as a big one's); counts printed while the cells are large enough."""
    count = matrix.shape[0]
    side = confusion_size(count)
    figure = _figure(side, side)
    axes = figure.add_subplot(1, 1, 1)
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, np.float64), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    labels = [_short_name(n) for n in names]
    font = 8 if count <= 12 else (6 if count <= 24 else 4)
    axes.set_xticks(range(count))
    axes.set_yticks(range(count))
    axes.set_xticklabels(labels, rotation=60, ha="right", fontsize=font)
    axes.set_yticklabels(labels, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=10)
    if count <= 24:
        for true in range(count):
            for predicted in range(count):
                value = int(matrix[true, predicted])
                if value:
                    axes.text(predicted, true, str(value), ha="center", va="center", fontsize=font,
                              color="white" if shares[true, predicted] > 0.5 else "black")
    figure.tight_layout()
    return _png(figure, side, side)


def per_class_size(num_classes: int) -> Tuple[int, int]:
    return WIDTH, int(min(1600, max(260, 22 * num_classes + 120)))


def per_class_figure(names: Sequence[str], accuracy: Sequence[Optional[float]], overall: float
                     ) -> Tuple[bytes, int, int]:
    width, height = per_class_size(len(names))
    figure = _figure(width, height)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(names))
    values = [a if a is not None else 0.0 for a in accuracy]
    axes.barh(positions, values, color=["C0" if a is not None else "0.8" for a in accuracy])
    axes.axvline(overall, color="C3", linestyle="--", linewidth=1, label="top-1 {:.4f}".format(overall))
    axes.set_yticks(positions)
    axes.set_yticklabels([_short_name(n) for n in names], fontsize=8 if len(names) <= 30 else 5)
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("top-1 accuracy of the class's test images")
    axes.set_title("Per-class accuracy", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    return _png(figure, width, height)


def samples_size(count: int) -> Tuple[int, int]:
    columns = min(SAMPLE_COLUMNS, max(count, 1))
    rows = int(math.ceil(count / float(SAMPLE_COLUMNS)))
    return SAMPLE_CELL[0] * columns, SAMPLE_CELL[1] * rows


def samples_figure(images: np.ndarray, items: Sequence[Dict[str, Any]]) -> Tuple[bytes, int, int]:
    """A grid of test images, each captioned `true` / `predicted (confidence)`, red when wrong."""
    width, height = samples_size(len(items))
    figure = _figure(width, height)
    cell_w, cell_h = SAMPLE_CELL
    side = cell_w - 20  # the image: a square with a 10 px margin left and right, the caption above it
    for position, item in enumerate(items):
        row, column = divmod(position, SAMPLE_COLUMNS)
        left = column * cell_w + 10
        bottom = height - (row + 1) * cell_h + 8
        axes = figure.add_axes([left / width, bottom / height, side / width, side / height])
        image = images[item["index"]]
        if image.ndim == 3 and image.shape[-1] == 1:
            axes.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
        else:
            axes.imshow(image, interpolation="nearest", aspect="auto")
        axes.set_xticks([])
        axes.set_yticks([])
        color = "C2" if item["correct"] else "C3"
        for spine in axes.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2)
        axes.set_title("#{} true: {}\npred: {} ({:.2f})".format(
            item["index"], _short_name(item["label_name"], 14), _short_name(item["prediction_name"], 14),
            item["confidence"]), fontsize=7, color=color)
    return _png(figure, width, height)


def _short_name(name: str, limit: int = 18) -> str:
    name = str(name)
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def png_size(data: bytes) -> Tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_size(data: bytes, width: int, height: int) -> List[int]:
    actual = png_size(data)
    if actual != (width, height):  # the <img> tag would stretch it: a bug here, not the user's
        raise RuntimeError("figure rendered at {}x{} pixels, expected {}x{}".format(actual[0], actual[1], width,
                                                                                    height))
    return [width, height]
