"""Pictures of an evaluation, drawn with OpenCV + numpy only (no matplotlib, no torch), so that
`igldt evaluate` (also `--engine` on an edge install) and validation in `igldt train` draw the same:

- confusion PNG: the row-normalised confusion matrix (row = ground-truth class, column = predicted
  class, each cell the % of the row's pixels), class names on both axes, each class's IoU beside its row;
- samples PNG: a few images as rows of image | ground truth | prediction | errors (wrong pixels red,
  ignore pixels black, correct pixels the dimmed image), over a legend of the class colours.

Both are written atomically (temp file, then `os.replace`), so a viewer never opens half a file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from igldt.io import atomic_open
from igldt.metrics import IGNORE, ConfusionMatrix
from igldt.palette import colorize, voc_palette

SAMPLES = 4             # sample images drawn by default
TILE_WIDTH = 320        # width of each image in the samples grid
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT = 0.45             # font scale of names and titles
PAD = 8
WHITE, BLACK, RED, EMPTY = (255, 255, 255), (0, 0, 0), (230, 25, 25), (215, 215, 215)
BLUES = np.array([[247, 251, 255], [107, 174, 214], [8, 48, 107]], np.float64)  # colours of 0, 0.5, 1


@dataclass
class Sample:
    image: np.ndarray       # HxWx3 uint8 RGB
    mask: np.ndarray        # HxW ground truth, IGNORE where unlabelled
    prediction: np.ndarray  # HxW labels


def spread(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total), first and last included (consecutive video
    frames look alike, so the first few images of a split say little)."""
    if count <= 0 or total <= 0:
        return []
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


class SampleKeeper:
    """The `observe` callback of the evaluation loops: keeps `count` of the `total` items scored."""

    def __init__(self, count: int, total: int):
        self.wanted = set(spread(total, count))
        self.samples: list[Sample] = []

    def __call__(self, index: int, image: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> None:
        if index in self.wanted:
            self.samples.append(Sample(np.array(image), np.array(mask), np.array(labels)))


# -- text ------------------------------------------------------------------------------------------
def text_size(text: str, scale: float = TEXT) -> tuple[int, int]:
    """(width, height) of `text`, descenders included."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    return w, h + base


def put_text(canvas: np.ndarray, text: str, x: int, y: int, color=BLACK, scale: float = TEXT) -> None:
    """`text` with the top-left corner of its box at (x, y)."""
    (_, h), _ = cv2.getTextSize(text, FONT, scale, 1)
    cv2.putText(canvas, text, (int(x), int(y + h)), FONT, scale, color, 1, cv2.LINE_AA)


def vertical_text(text: str, scale: float = TEXT) -> np.ndarray:
    """`text` on white, rotated to read bottom to top."""
    w, h = text_size(text, scale)
    strip = np.full((h + 2, w + 2, 3), 255, np.uint8)
    put_text(strip, text, 1, 1, BLACK, scale)
    return cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)


def paste(canvas: np.ndarray, tile: np.ndarray, x: int, y: int) -> None:
    canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile


# -- confusion matrix ------------------------------------------------------------------------------
def row_normalised(matrix) -> np.ndarray:
    """Each row divided by its sum: the share of a ground-truth class going to each prediction;
    NaN rows for classes absent from the ground truth."""
    m = np.asarray(matrix, np.float64)
    rows = m.sum(1, keepdims=True)
    return np.divide(m, rows, out=np.full_like(m, np.nan), where=rows > 0)


def cell_colour(value: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1); grey for NaN."""
    if not math.isfinite(value):
        return EMPTY
    t = min(max(value, 0.0), 1.0) * (len(BLUES) - 1)
    i = min(int(t), len(BLUES) - 2)
    c = BLUES[i] + (BLUES[i + 1] - BLUES[i]) * (t - i)
    return tuple(int(round(v)) for v in c)


def cell_size(n: int) -> int:
    """Cells large enough for a '100' up to about 21 classes; smaller, without numbers, beyond."""
    return int(np.clip(760 // max(n, 1), 12, 40))


def draw_cells(values: np.ndarray, cell: int, zeros: bool = False) -> np.ndarray:
    """A rows x cols grid of coloured cells, each with its percentage where it fits and is >= 1
    (or 0 too, with `zeros`); NaN cells grey and blank."""
    rows, cols = values.shape
    img = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            v = values[r, c]
            y, x = r * cell, c * cell
            img[y:y + cell - 1, x:x + cell - 1] = cell_colour(v)  # 1 px white grid line
            if cell >= 24 and math.isfinite(v) and (zeros or round(100 * v) >= 1):
                label = f"{100 * v:.0f}"
                w, h = text_size(label, 0.4)
                put_text(img, label, x + (cell - 1 - w) // 2, y + (cell - 1 - h) // 2,
                         WHITE if v > 0.5 else BLACK, 0.4)
    return img


def draw_confusion(cm: ConfusionMatrix, classes: Sequence[str]) -> np.ndarray:
    """RGB image of the row-normalised matrix with class names on both axes and the IoU column."""
    names = [str(c) for c in classes]
    n = cm.num_classes
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    cell = cell_size(n)
    scale = min(TEXT, cell / 32)
    name_w = max(text_size(s, scale)[0] for s in names)
    line_h = text_size("Ag")[1]
    titles = ["confusion matrix: % of each ground-truth class (row) predicted as each class (column)",
              f"mIoU {100 * cm.miou():.1f}%   pixel accuracy {100 * cm.pixel_accuracy():.1f}%   "
              f"{int(cm.matrix.sum())} labelled pixels"]
    y_axis = vertical_text("ground truth")
    x0 = PAD + y_axis.shape[1] + 6 + name_w + 6          # matrix left edge
    y0 = PAD + 2 * (line_h + 4) + 6 + line_h + 4          # matrix top edge (titles, then 'IoU')
    side = n * cell
    iou_x = x0 + side + 6
    width = max(iou_x + cell + PAD, max(text_size(t)[0] for t in titles) + 2 * PAD)
    height = y0 + side + 4 + name_w + 6 + line_h + PAD
    canvas = np.full((height, width, 3), 255, np.uint8)
    for k, t in enumerate(titles):
        put_text(canvas, t, PAD, PAD + k * (line_h + 4))
    paste(canvas, draw_cells(row_normalised(cm.matrix), cell), x0, y0)
    paste(canvas, draw_cells(cm.iou()[:, None], cell, zeros=True), iou_x, y0)
    put_text(canvas, "IoU", iou_x + (cell - text_size("IoU")[0]) // 2, y0 - line_h - 4)
    for i, name in enumerate(names):
        w, h = text_size(name, scale)
        put_text(canvas, name, x0 - 6 - w, y0 + i * cell + (cell - h) // 2, BLACK, scale)
        label = vertical_text(name, scale)
        paste(canvas, label, x0 + i * cell + (cell - label.shape[1]) // 2, y0 + side + 4)
    paste(canvas, y_axis, PAD, y0 + max(0, (side - y_axis.shape[0]) // 2))
    put_text(canvas, "prediction", x0 + (side - text_size("prediction")[0]) // 2, y0 + side + 4 + name_w + 6)
    return canvas


# -- sample predictions ----------------------------------------------------------------------------
def fit_width(img: np.ndarray, width: int, labels: bool = False) -> np.ndarray:
    """Resized to `width` keeping the aspect ratio; nearest neighbour for label maps."""
    h, w = img.shape[:2]
    size = (width, max(1, round(h * width / w)))
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if labels else cv2.INTER_AREA)


def error_tile(image: np.ndarray, mask: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The image dimmed to grey, wrong pixels red, ignore pixels black."""
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) // 2, cv2.COLOR_GRAY2RGB)
    grey[(prediction != mask) & (mask != IGNORE)] = RED
    grey[mask == IGNORE] = BLACK
    return grey


def error_rate(mask: np.ndarray, prediction: np.ndarray) -> float:
    labelled = mask != IGNORE
    return float((prediction[labelled] != mask[labelled]).mean()) if labelled.any() else float("nan")


def caption(tile: np.ndarray, text: str) -> np.ndarray:
    """`text` in white on a black box at the tile's top-left corner."""
    w, h = text_size(text)
    tile[:h + 6, :w + 8] = BLACK
    put_text(tile, text, 4, 3, WHITE)
    return tile


def sample_row(s: Sample, palette: np.ndarray, width: int) -> list[np.ndarray]:
    """The four tiles of one sample, each `width` wide."""
    wrong = error_rate(s.mask, s.prediction)
    errors = caption(fit_width(error_tile(s.image, s.mask, s.prediction), width, labels=True),
                     f"{100 * wrong:.1f}% wrong" if math.isfinite(wrong) else "no labelled pixel")
    return [fit_width(s.image, width), fit_width(colorize(s.mask, palette), width, labels=True),
            fit_width(colorize(s.prediction, palette), width, labels=True), errors]


def legend(classes: Sequence[str], palette: np.ndarray, width: int,
           extra: Sequence[tuple[str, tuple]] = (("ignore", BLACK), ("wrong", RED))) -> np.ndarray:
    """Colour swatches with class names (then `extra`: 'ignore' and 'wrong'), wrapped to `width`."""
    entries = [(str(c), tuple(int(v) for v in palette[i]) if i < len(palette) else BLACK)
               for i, c in enumerate(classes)] + list(extra)
    line_h = text_size("Ag")[1] + 6
    placed, x, y = [], 0, 0
    for name, colour in entries:
        w = line_h + 4 + text_size(name)[0] + 14
        if x and x + w > width:
            x, y = 0, y + line_h
        placed.append((name, colour, x, y))
        x += w
    canvas = np.full((y + line_h, width, 3), 255, np.uint8)
    for name, colour, x, y in placed:
        cv2.rectangle(canvas, (x, y + 2), (x + line_h - 6, y + line_h - 4), colour, -1)
        cv2.rectangle(canvas, (x, y + 2), (x + line_h - 6, y + line_h - 4), (128, 128, 128), 1)
        put_text(canvas, name, x + line_h, y + 2)
    return canvas


def draw_samples(samples: Sequence[Sample], classes: Sequence[str], palette, width: int = TILE_WIDTH
                 ) -> np.ndarray:
    """RGB grid: a header, one row per sample (image | ground truth | prediction | errors), a legend."""
    if not samples:
        raise ValueError("no samples to draw")
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    return draw_grid(("image", "ground truth", "prediction", "errors (red), ignore (black)"),
                     [sample_row(s, palette, width) for s in samples], legend(classes, palette, 4 * width + 3 * PAD),
                     width)


def draw_grid(titles: Sequence[str], rows: Sequence[Sequence[np.ndarray]], footer: np.ndarray | None,
              width: int = TILE_WIDTH) -> np.ndarray:
    """RGB grid of tiles `width` wide: a header of column titles, the rows, then `footer` (a legend)."""
    total_w = len(titles) * width + (len(titles) - 1) * PAD
    header = np.full((text_size("Ag")[1] + 6, total_w, 3), 255, np.uint8)
    for k, title in enumerate(titles):
        put_text(header, title, k * (width + PAD) + (width - text_size(title)[0]) // 2, 2)
    blocks = [header]
    for tiles in rows:
        row = np.full((max(t.shape[0] for t in tiles), total_w, 3), 255, np.uint8)
        for k, tile in enumerate(tiles):
            paste(row, tile, k * (width + PAD), 0)
        blocks += [row, np.full((PAD, total_w, 3), 255, np.uint8)]
    if footer is not None:
        blocks.append(footer)
    body = np.concatenate(blocks)
    return cv2.copyMakeBorder(body, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=WHITE)


# -- files -----------------------------------------------------------------------------------------
def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """An RGB image as PNG, atomically (temp file in the same folder, then os.replace)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the figure as PNG")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())
    return Path(path)


def figure_paths(report: str | Path) -> tuple[Path, Path]:
    """(confusion, samples) PNG paths beside a JSON report: <stem>.confusion.png, <stem>.samples.png."""
    report = Path(report)
    stem = report.name[: -len(report.suffix)] if report.suffix else report.name
    return report.with_name(f"{stem}.confusion.png"), report.with_name(f"{stem}.samples.png")


def run_figure_paths(folder: str | Path) -> tuple[Path, Path]:
    """(confusion, samples) PNG paths in a training run folder, overwritten at each validation."""
    return Path(folder) / "confusion.png", Path(folder) / "samples.png"


def write_figures(cm: ConfusionMatrix, samples: Sequence[Sample], classes: Sequence[str], palette,
                  confusion_png: str | Path, samples_png: str | Path) -> list[Path]:
    """The confusion PNG, and the samples PNG when samples were kept; the paths written."""
    palette = voc_palette(len(classes)) if palette is None else palette
    written = [write_png(confusion_png, draw_confusion(cm, classes))]
    if samples:
        written.append(write_png(samples_png, draw_samples(samples, classes, palette)))
    return written
