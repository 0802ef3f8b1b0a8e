"""Model card: what a Slidewise ``.safetensors`` model file says about its model.

The metadata is read with the standard library only (no engine, no torch): a
safetensors file starts with an 8-byte little-endian header length, then a JSON
header whose ``__metadata__`` entry maps ``slidewise`` to Slidewise's metadata
JSON (engine: :mod:`slidewise.engine.core.modelfile`). :func:`read_model_metadata`
and :func:`card_sections` have no Qt; :class:`ModelCardDialog` shows the card.
"""

from __future__ import annotations

import html
import json
import struct
from pathlib import Path
from typing import Any

#: Key of the Slidewise JSON in the safetensors metadata.
METADATA_KEY = "slidewise"
#: Name written by Slidewise in the metadata's ``format``.
FORMAT_NAME = "slidewise-model"
#: Largest header read (safetensors caps headers at 100 MB).
MAX_HEADER = 100 * 1024 * 1024

TASK_LABELS = {
    "susceptibility": "Landslide susceptibility",
    "mapping": "Landslide mapping (segmentation)",
    "multiregion": "Landslide mapping, several regions",
    "detection": "Landslide detection (boxes)",
    "encoder": "Pre-trained encoder",
}
#: Metrics shown first (in this order) when a model has them.
MAIN_METRICS = ("f1", "iou", "precision", "recall", "mcc", "map50", "map", "threshold", "epoch")


class ModelCardError(ValueError):
    """The file is not a readable Slidewise model; the message says why and what to do."""


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The Slidewise metadata of a model file, read from its safetensors header.

    Raises:
        ModelCardError: missing file, not safetensors, or no Slidewise metadata.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelCardError(f"The model file '{file}' does not exist.")
    try:
        with file.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise ModelCardError(f"'{file.name}' is too short to be a safetensors file.")
            (length,) = struct.unpack("<Q", raw)
            if length <= 0 or length > MAX_HEADER:
                raise ModelCardError(f"'{file.name}' is not a safetensors file.")
            header = json.loads(handle.read(length).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"'{file.name}' is not a safetensors file ({exc}).") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise ModelCardError(
            f"'{file.name}' has no Slidewise metadata: it was not written by Slidewise."
        )
    try:
        doc = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"'{file.name}' has corrupted Slidewise metadata ({exc}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ModelCardError(f"'{file.name}' is not a Slidewise model file.")
    return doc


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_number(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_number(v)}" for k, v in value.items())
    return str(value)


def band_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """One row per input band, in order, with its normalisation."""
    bands = [str(b) for b in meta.get("bands") or []]
    norm = meta.get("normalisation") or {}
    mean, std = norm.get("mean"), norm.get("std")
    kind = norm.get("kind", "")
    indices = (meta.get("extra") or {}).get("band_indices") or []
    rows = []
    for index, band in enumerate(bands):
        parts = []
        if index < len(indices):
            parts.append(f"raster band {indices[index]}")
        if isinstance(mean, list) and index < len(mean):
            parts.append(f"mean {_number(mean[index])}")
        elif isinstance(mean, dict) and band in mean:
            parts.append(f"mean {_number(mean[band])}")
        if isinstance(std, list) and index < len(std):
            parts.append(f"std {_number(std[index])}")
        elif isinstance(std, dict) and band in std:
            parts.append(f"std {_number(std[band])}")
        if kind and not parts:
            parts.append(str(kind))
        rows.append((f"{index + 1}. {band}", ", ".join(parts) or "as read"))
    return rows


def _regions(meta: dict[str, Any]) -> list[str]:
    extra = meta.get("extra") or {}
    regions = extra.get("regions") or (meta.get("metrics") or {}).get("regions") or {}
    return list(regions) if isinstance(regions, dict) else [str(r) for r in regions]


def _threshold(meta: dict[str, Any]) -> str:
    extra = meta.get("extra") or {}
    if "threshold" in extra:
        return _number(extra["threshold"])
    regions = extra.get("regions")
    if isinstance(regions, dict):
        return ", ".join(
            f"{name}: {_number(r.get('threshold'))}"
            for name, r in regions.items()
            if isinstance(r, dict) and "threshold" in r
        )
    return ""


def _metric_rows(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in metrics.items():
        if key == "history":
            continue
        label = f"{prefix}{key}"
        if isinstance(value, dict):
            ordered = {k: value[k] for k in MAIN_METRICS if k in value}
            ordered.update({k: v for k, v in value.items() if k not in ordered})
            rows.extend(_metric_rows(ordered, prefix=f"{label} › "))
        elif isinstance(value, int | float | str | bool):
            rows.append((label, _number(value)))
    return rows


def _training_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    prov = meta.get("provenance") or {}
    rows = []
    for key, label in (
        ("job", "Trained by"),
        ("created_utc", "Date (UTC)"),
        ("dataset_type", "Dataset type"),
        ("train_images", "Training images"),
        ("train_masks", "Training masks"),
        ("images", "Images"),
        ("label_polygons", "Landslide polygons"),
        ("inputs", "Inputs"),
        ("split", "Validation split"),
        ("epochs", "Epochs"),
        ("batch_size", "Batch size"),
        ("select_metric", "Selected on"),
        ("seed", "Seed"),
        ("device", "Device"),
        ("converted_from", "Converted from"),
    ):
        value = prov.get(key)
        if value not in (None, "", [], {}):
            rows.append((label, _number(value)))
    recipe = prov.get("recipe")
    if isinstance(recipe, dict) and recipe.get("name"):
        rows.append(("Recipe", str(recipe["name"])))
    return rows


def card_sections(meta: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The card as titled sections of (label, value) rows."""
    config = meta.get("config") or {}
    task = str(meta.get("task", ""))
    pixel = meta.get("pixel_size")
    model = [
        ("Task", TASK_LABELS.get(task, task)),
        ("Architecture", str(meta.get("architecture", ""))),
    ]
    for key in ("encoder", "backbone", "method", "encoder_depth", "in_channels"):
        if key in config:
            model.append((key.replace("_", " ").capitalize(), _number(config[key])))
    model.append(("Pixel size", _number(pixel) + " (CRS units)" if pixel else "not recorded"))
    if meta.get("tile_size"):
        model.append(("Tile size", f"{meta['tile_size']} px"))
    classes = meta.get("class_names") or []
    if classes:
        model.append(("Classes", ", ".join(f"{i} = {c}" for i, c in enumerate(classes))))
    threshold = _threshold(meta)
    if threshold:
        model.append(("Threshold", threshold))
    regions = _regions(meta)
    if regions:
        model.append(("Regions", ", ".join(regions)))
    norm = meta.get("normalisation") or {}
    sections = [("Model", model)]
    bands = band_rows(meta)
    if bands:
        title = "Bands in order"
        if norm.get("kind"):
            title += f" (normalisation: {norm['kind']})"
        sections.append((title, bands))
    sections.append(("Training", _training_rows(meta) or [("Provenance", "not recorded")]))
    sections.append(("Metrics", _metric_rows(meta.get("metrics") or {}) or [("", "none")]))
    return sections


def card_html(meta: dict[str, Any], path: str | Path) -> str:
    """The card as simple HTML (rendered by QTextBrowser)."""
    esc = html.escape
    parts = [f"<h2>{esc(Path(path).name)}</h2>", f"<p><small>{esc(str(path))}</small></p>"]
    for title, rows in card_sections(meta):
        parts.append(f"<h3>{esc(title)}</h3><table cellspacing='0' cellpadding='3'>")
        for label, value in rows:
            parts.append(f"<tr><td><b>{esc(label)}</b></td><td>{esc(value)}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts)


def _dialog_class():
    from qgis.PyQt.QtWidgets import (
        QApplication,
        QDialog,
        QDialogButtonBox,
        QPlainTextEdit,
        QPushButton,
        QTabWidget,
        QTextBrowser,
        QVBoxLayout,
    )

    from slidewise.processing_provider.algorithms.base import tr

    class ModelCardDialog(QDialog):
        """The model card of one file: a readable card and the raw metadata."""

        def __init__(self, path: str | Path, parent=None) -> None:
            super().__init__(parent)
            self.path = Path(path)
            self.setWindowTitle(tr("Model card: {name}").format(name=self.path.name))
            self.resize(620, 640)
            layout = QVBoxLayout(self)
            tabs = QTabWidget()
            self.browser = QTextBrowser()
            self.raw = QPlainTextEdit()
            self.raw.setReadOnly(True)
            tabs.addTab(self.browser, tr("Card"))
            tabs.addTab(self.raw, tr("Metadata (JSON)"))
            layout.addWidget(tabs)
            buttons = QDialogButtonBox(QDialogButtonBox.Close)
            copy = QPushButton(tr("Copy metadata"))
            copy.clicked.connect(lambda: QApplication.clipboard().setText(self.raw.toPlainText()))
            buttons.addButton(copy, QDialogButtonBox.ActionRole)
            buttons.rejected.connect(self.reject)
            layout.addWidget(buttons)
            try:
                meta = read_model_metadata(self.path)
            except ModelCardError as exc:
                self.meta: dict[str, Any] = {}
                self.browser.setHtml(f"<p>{html.escape(str(exc))}</p>")
                return
            self.meta = meta
            self.browser.setHtml(card_html(meta, self.path))
            self.raw.setPlainText(json.dumps(meta, indent=2))

    return ModelCardDialog


def show_model_card(path: str | Path, parent=None):
    """Open (non-modal) the model card of ``path`` and return the dialog."""
    dialog = _dialog_class()(path, parent)
    dialog.show()
    return dialog
