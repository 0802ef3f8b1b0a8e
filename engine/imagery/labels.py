"""Landslide labels: how raw mask or label values become 1, 0 or :data:`IGNORE`.

One convention throughout: 1 = landslide, 0 = not landslide, :data:`IGNORE`
(255) = not counted (unlabelled or nodata). :class:`LabelMapping` says which raw
values mean what (for example Chattogram: 2 = landslide, 1 = not landslide,
0 = unlabelled and ignored); :func:`decode_mask` also reads colour masks
(Bijie: yellow (255, 255, 0) on black).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError

#: Label value of pixels that do not count (unlabelled, nodata, padding).
IGNORE = 255


@dataclass(frozen=True)
class LabelMapping:
    """How raw mask or label values become 1 (landslide), 0 or :data:`IGNORE`.

    Attributes:
        landslide: Raw values that mean landslide; ``None`` = detect (0/1 masks:
            1; 0/255 masks: 255; other grey masks: values above 127).
        ignore: Raw values that are not counted (for example 0 = unlabelled).
        mask_color: RGB colour of landslide pixels in colour masks; ``None`` =
            detect (black background, every bright pixel is landslide).
    """

    landslide: tuple[int, ...] | None = None
    ignore: tuple[int, ...] = ()
    mask_color: tuple[int, int, int] | None = None


def parse_values(value: Any, name: str) -> tuple[int, ...] | None:
    """Parse a list of integer label values (``"2"``, ``"1,2"``, ``[1, 2]``)."""
    if value is None or value == "" or value == []:
        return None
    items = value if isinstance(value, (list, tuple)) else re.split(r"[,;\s]+", str(value).strip())
    try:
        return tuple(int(float(v)) for v in items if str(v) != "")
    except ValueError:
        raise InputError(
            f"{name} must be whole numbers separated by commas (for example 2 or 1,2), "
            f"got '{value}'."
        ) from None


def parse_color(value: Any) -> tuple[int, int, int] | None:
    """Parse ``MASK_COLOR``: ``"255,255,0"``, ``"#ffff00"`` or a 3-item list."""
    if value is None or value == "" or value == []:
        return None
    text = value if isinstance(value, (list, tuple)) else str(value).strip()
    try:
        if isinstance(text, str) and text.startswith("#") and len(text) == 7:
            rgb = tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
        else:
            items = text if isinstance(text, (list, tuple)) else re.split(r"[,;\s]+", text)
            rgb = tuple(int(float(v)) for v in items)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise InputError(
            f"MASK_COLOR must be an RGB colour such as 255,255,0 or #ffff00, got '{value}'."
        )
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def decode_mask(raw: np.ndarray, mapping: LabelMapping, source: str = "mask") -> np.ndarray:
    """Turn a raw mask (H, W) or colour mask (H, W, 3/4) into 0/1/:data:`IGNORE` labels.

    Args:
        raw: Mask values.
        mapping: Value mapping (see :class:`LabelMapping`).
        source: Name used in error messages.

    Raises:
        InputError: the values cannot be read as landslide labels without
            ``LANDSLIDE_VALUES`` or ``MASK_COLOR``.
    """
    a = np.asarray(raw)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[..., :3].astype(np.int16)
        if mapping.mask_color is None and np.all(rgb == rgb[..., :1]):
            a = a[..., 0]  # grey stored as RGB
        else:
            return _decode_colour(rgb, mapping, source)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"The {source} has shape {a.shape}: masks must have one band or be RGB.")
    if mapping.mask_color is not None:
        raise InputError(
            f"MASK_COLOR is set but the {source} is not a colour mask: leave MASK_COLOR empty."
        )
    out = np.zeros(a.shape, dtype=np.uint8)
    if mapping.landslide is not None:
        out[np.isin(a, mapping.landslide)] = 1
    else:
        values = np.unique(a[~np.isin(a, mapping.ignore)]) if mapping.ignore else np.unique(a)
        if values.size <= 2 and set(values.tolist()) <= {0, 1}:
            out[a == 1] = 1
        elif set(values.tolist()) <= {0, 255}:
            out[a == 255] = 1
        elif values.size and values.min() >= 0 and values.max() == 255:
            out[a > 127] = 1  # anti-aliased 0..255 mask
        else:
            shown = ", ".join(str(v) for v in values[:8].tolist())
            raise InputError(
                f"The {source} has label values {shown}{'...' if values.size > 8 else ''}: "
                "set LANDSLIDE_VALUES to the value(s) that mean landslide (and IGNORE_VALUES "
                "for unlabelled ones)."
            )
    if mapping.ignore:
        out[np.isin(a, mapping.ignore)] = IGNORE
    return out


def colour_matches(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Pixels of ``colour``: within 40 per channel, and nearer to it than to black or white.

    The second rule keeps a MASK_COLOR close to the black (or white) background, such as
    1,2,3, from taking the background for landslide; black or white themselves still match.
    """
    rgb = rgb.astype(np.int16)
    diff = np.abs(rgb - np.asarray(colour, dtype=np.int16)).max(axis=2)
    match = diff <= 40
    if max(colour) > 0:
        match &= diff < rgb.max(axis=2)  # nearer than black
    if min(colour) < 255:
        match &= diff < 255 - rgb.min(axis=2)  # nearer than white
    return match


def major_colours(rgb: np.ndarray, share: float = 0.01) -> list[tuple[int, int, int]]:
    """The colours covering more than ``share`` of an (H, W, 3) picture, most common first."""
    px = rgb.reshape(-1, rgb.shape[-1])[:, :3].astype(np.int32)
    codes, counts = np.unique((px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    keep = [int(c) for c, n in zip(codes[order], counts[order], strict=True) if n > share * len(px)]
    return [(c >> 16, (c >> 8) & 255, c & 255) for c in keep]


def _decode_colour(rgb: np.ndarray, mapping: LabelMapping, source: str) -> np.ndarray:
    out = np.zeros(rgb.shape[:2], dtype=np.uint8)
    if mapping.mask_color is not None:
        out[colour_matches(rgb, mapping.mask_color)] = 1
        return out
    bright = rgb.max(axis=2) > 127
    px = rgb[bright].astype(np.int32)
    codes, counts = np.unique((px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2], return_counts=True)
    major_codes = codes[counts > 0.01 * max(1, len(px))]
    major = np.stack([major_codes >> 16, (major_codes >> 8) & 255, major_codes & 255], axis=1)
    if len(major) > 1 and np.abs(major[:, None, :] - major[None, :, :]).max() > 80:
        shown = "; ".join(",".join(str(int(c)) for c in col) for col in major[:4])
        raise InputError(
            f"The colour {source} has several colours ({shown}): set MASK_COLOR to the "
            "colour of landslide pixels, for example 255,255,0."
        )
    out[bright] = 1
    return out
