"""Forgetting of the old regions: their validation chips, before/after table, data records.

When a region is added, every old region is measured before and after on
labelled chips: those named in OLD_REGION_DATA (:func:`parse_old_region_data`),
else its stored validation images, else the validation split of its stored
training data rebuilt exactly (:func:`region_eval_data`). The results make the
forgetting table (:func:`forgetting_table`, :func:`format_table`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.chips import ChipDataset, make_chips
from slidewise.engine.imagery.datasets import (
    DATASET_TYPES,
    ChipRequest,
    DatasetSpec,
    MappingData,
    load_scenes,
    prepare_mapping_data,
)
from slidewise.engine.imagery.labels import LabelMapping, parse_color, parse_values


def data_record(request: ChipRequest, data: MappingData) -> dict[str, Any]:
    """Where a region's data came from: enough to rebuild its validation chips."""
    spec, valid = request.train, request.valid
    return {
        "dataset_type": spec.kind,
        "train_images": spec.images,
        "train_masks": spec.masks or "",
        "label_polygons": spec.polygons or "",
        "valid_images": valid.images if valid else "",
        "valid_masks": (valid.masks or "") if valid else "",
        "label_mapping": asdict(spec.mapping),
        "band_indices": list(data.band_indices),
        "chip_size": int(request.chip_size),
        "stride": request.stride,
        "valid_fraction": request.valid_fraction,
        "seed": request.seed,
        "split": data.split.detail,
    }


def mapping_from(value: Any) -> LabelMapping:
    """A stored label mapping (dict) as a :class:`LabelMapping`."""
    if isinstance(value, LabelMapping):
        return value
    value = dict(value or {})
    color = value.get("mask_color")
    return LabelMapping(
        landslide=tuple(value["landslide"]) if value.get("landslide") is not None else None,
        ignore=tuple(value.get("ignore") or ()),
        mask_color=(int(color[0]), int(color[1]), int(color[2])) if color else None,
    )


def eval_chips(spec: DatasetSpec, record: dict[str, Any], what: str) -> ChipDataset:
    """Every chip of a given validation dataset, with the region's bands and normalisation."""
    scenes = load_scenes(spec, what)
    n_bands = len(scenes[0].band_names)
    indices = [int(b) for b in record.get("band_indices") or range(1, n_bands + 1)]
    bad = [b for b in indices if not 1 <= b <= n_bands]
    if bad:
        raise InputError(
            f"The {what} images have {n_bands} band(s) but the region uses band(s) {indices}: "
            "give images with the region's bands."
        )
    size = int(record.get("tile_size") or (record.get("data") or {}).get("chip_size") or 256)
    largest = max(max(s.height, s.width) for s in scenes)
    size = min(size, -(-largest // 32) * 32)
    chips = make_chips(scenes, size, size, exclusive=True)
    return ChipDataset(
        scenes, chips, [b - 1 for b in indices], dict(record.get("normalisation") or {}), size
    )


def region_eval_data(
    region: str, record: dict[str, Any], given: dict[str, Any] | None = None
) -> tuple[ChipDataset, str]:
    """Labelled chips to measure ``region`` on, and where they come from.

    ``given`` (from OLD_REGION_DATA) names images and masks (every chip is
    used). Without it, the region's stored validation images are used, or its
    training data's validation split is rebuilt from the stored dataset,
    chip size, fraction and seed (and checked against the stored split).

    Raises:
        InputError: no usable data (missing files, split differs, nothing stored).
    """
    data = dict(record.get("data") or {})
    mapping = mapping_from(data.get("label_mapping"))
    what = f"validation data of region '{region}'"
    if given:
        spec = given_spec(given, data, mapping)
        return eval_chips(spec, record, what), f"OLD_REGION_DATA ({spec.images})"
    kind = str(data.get("dataset_type") or "")
    if data.get("valid_images"):
        spec = DatasetSpec(
            kind,
            str(data["valid_images"]),
            data.get("valid_masks") or None,
            data.get("label_polygons") or None,
            mapping,
        )
        return eval_chips(spec, record, what), f"stored validation images ({spec.images})"
    if not data.get("train_images") or kind not in DATASET_TYPES:
        raise InputError(
            f"The model does not record the data of region '{region}': give its validation "
            "data in OLD_REGION_DATA."
        )
    return rebuilt_validation(region, record, data, mapping)


def given_spec(given: dict[str, Any], data: dict[str, Any], mapping: LabelMapping) -> DatasetSpec:
    """The dataset an OLD_REGION_DATA entry names (label reading: its own, else the stored)."""
    kind = str(given.get("dataset_type") or data.get("dataset_type") or "").lower()
    if given.get("landslide_values") or given.get("ignore_values") or given.get("mask_color"):
        mapping = LabelMapping(
            landslide=parse_values(given.get("landslide_values"), "landslide_values"),
            ignore=parse_values(given.get("ignore_values"), "ignore_values") or (),
            mask_color=parse_color(given.get("mask_color")),
        )
    return DatasetSpec(
        kind,
        str(given.get("images") or ""),
        given.get("masks") or None,
        given.get("label_polygons") or None,
        mapping,
    )


def rebuilt_validation(
    region: str, record: dict[str, Any], data: dict[str, Any], mapping: LabelMapping
) -> tuple[ChipDataset, str]:
    """The validation split of the region's stored training data, rebuilt exactly.

    Raises:
        InputError: the rebuilt split differs from the stored one (the data changed).
    """
    spec = DatasetSpec(
        str(data.get("dataset_type") or ""),
        str(data["train_images"]),
        data.get("train_masks") or None,
        data.get("label_polygons") or None,
        mapping,
    )
    rebuilt = prepare_mapping_data(
        ChipRequest(
            spec,
            None,
            chip_size=int(data.get("chip_size") or record.get("tile_size") or 256),
            stride=data.get("stride"),
            valid_fraction=float(data.get("valid_fraction") or 0.2),
            bands=data.get("band_indices") or record.get("band_indices"),
            normalisation="none",
            seed=int(data.get("seed") or 0),
        )
    )
    stored = str(data.get("split") or "")
    if stored and rebuilt.split.detail != stored:
        raise InputError(
            f"The validation split of region '{region}' cannot be rebuilt (the training data "
            f"changed: now '{rebuilt.split.detail}'): give its validation data in "
            "OLD_REGION_DATA."
        )
    chips = ChipDataset(
        rebuilt.valid.scenes,
        rebuilt.valid.chips,
        rebuilt.valid.bands,
        dict(record.get("normalisation") or {}),
        rebuilt.chip_size,
    )
    return chips, f"validation split of its training data ({rebuilt.split.detail})"


def parse_old_region_data(value: Any, regions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse OLD_REGION_DATA: region -> {images, masks, dataset_type, ...}.

    Accepts a JSON object (or dict) ``{"bijie": {"images": ..., "masks": ...}}``
    or a JSON list of objects with a ``region`` key. Keys are case-insensitive.

    Raises:
        InputError: not JSON, wrong structure, unknown region, no images.
    """
    if value in (None, "", {}, []):
        return {}
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
    if isinstance(parsed, list):
        items = {}
        for item in parsed:
            if not isinstance(item, dict) or "region" not in {str(k).lower() for k in item}:
                parsed = None
                break
            low = {str(k).lower(): v for k, v in item.items()}
            items[str(low.pop("region"))] = low
        else:
            parsed = items
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise InputError(
            "OLD_REGION_DATA must be a JSON object such as "
            '{"bijie": {"images": "/data/bijie/valid/images", "masks": "/data/bijie/valid/masks"}} '
            f"(optional keys: dataset_type, label_polygons, landslide_values, ignore_values, "
            f"mask_color), got '{value}'."
        )
    out: dict[str, dict[str, Any]] = {}
    known = {"images", "masks", "dataset_type", "label_polygons"} | {
        "landslide_values",
        "ignore_values",
        "mask_color",
    }
    for region, spec in parsed.items():
        if region not in regions:
            raise InputError(
                f"OLD_REGION_DATA names the region '{region}', which the model does not have: "
                f"its regions are {', '.join(regions)}."
            )
        low = {str(k).lower(): v for k, v in spec.items()}
        unknown = sorted(set(low) - known)
        if unknown or not low.get("images"):
            raise InputError(
                f"OLD_REGION_DATA for region '{region}' needs 'images' (and 'masks'); "
                f"unknown key(s): {', '.join(unknown) or 'none'}."
            )
        out[str(region)] = low
    return out


def forgetting_table(
    before: dict[str, dict[str, Any] | None],
    after: dict[str, dict[str, Any] | None],
    new_region: str | None = None,
) -> list[dict[str, Any]]:
    """Rows ``region, f1_before, f1_after, f1_delta, iou_before, iou_after, iou_delta``.

    ``None`` where a value is not available (no data, or a new region without
    a starting decoder).
    """
    rows = []
    for region in after:
        b, a = before.get(region), after.get(region)
        row: dict[str, Any] = {"region": region, "new": region == new_region}
        for key in ("f1", "iou"):
            vb = None if b is None else float(b[key])
            va = None if a is None else float(a[key])
            row[f"{key}_before"] = vb
            row[f"{key}_after"] = va
            row[f"{key}_delta"] = None if vb is None or va is None else va - vb
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The forgetting table as aligned text."""

    def num(v: Any, signed: bool = False) -> str:
        if v is None:
            return "   -  "
        return f"{v:+.3f}" if signed else f"{v:.3f}"

    width = max([len("region")] + [len(str(r["region"])) + (6 if r["new"] else 0) for r in rows])
    lines = [
        f"{'region':<{width}}  F1 before  F1 after  F1 delta  IoU before  IoU after  IoU delta"
    ]
    for r in rows:
        name = f"{r['region']} (new)" if r["new"] else str(r["region"])
        lines.append(
            f"{name:<{width}}  {num(r['f1_before']):>9}  {num(r['f1_after']):>8}  "
            f"{num(r['f1_delta'], True):>8}  {num(r['iou_before']):>10}  "
            f"{num(r['iou_after']):>9}  {num(r['iou_delta'], True):>9}"
        )
    return "\n".join(lines)
