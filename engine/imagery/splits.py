"""Validation split by space: never random pixels or random overlapping chips.

Random pixels or overlapping chips would leak neighbouring pixels into
validation. :func:`spatial_split` therefore takes:

* several independent scenes (image pairs, L4S patches, GeoTIFFs in different
  CRSs): whole scenes go to validation;
* one scene, or tiles sharing one CRS (possibly overlapping, like the
  Chattogram tiles): the extent is cut into stripes across its longer axis,
  one stripe (with landslides) becomes validation, and every training chip
  that overlaps the validation chips' extent along that axis is dropped, so
  no training pixel lies inside a validation chip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.chips import chip_label_stats
from slidewise.engine.imagery.scenes import Chip, Scene


@dataclass
class Split:
    """A train/validation split of chips.

    Attributes:
        train: Training chips.
        valid: Validation chips.
        method: ``scenes`` (whole scenes), ``stripes`` (a stripe of one extent)
            or ``given`` (a separate validation dataset).
        detail: One line for the log.
        dropped: Training chips dropped because they overlap validation chips.
    """

    train: list[Chip]
    valid: list[Chip]
    method: str
    detail: str
    dropped: int = 0


def spatial_split(
    scenes: Sequence[Scene],
    train_chips: Sequence[Chip],
    valid_chips: Sequence[Chip],
    valid_fraction: float = 0.2,
    seed: int = 0,
    stats: np.ndarray | None = None,
) -> Split:
    """Split chips into training and validation by space (see the module doc).

    Args:
        scenes: The scenes.
        train_chips: Candidate training chips (any stride).
        valid_chips: Candidate validation chips (usually non-overlapping).
        valid_fraction: Share of the data for validation (0 < f < 1).
        seed: Seed of the choice of validation scenes or stripe.
        stats: :func:`chip_label_stats` of ``valid_chips`` (computed when omitted);
            used to give validation some landslides.

    Raises:
        InputError: fraction out of range or too little data to split.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise InputError(
            f"VALID_FRACTION must be between 0 and 1 (got {valid_fraction}): for example 0.2."
        )
    if stats is None:
        stats = chip_label_stats(scenes, valid_chips)
    rng = np.random.default_rng(seed)
    groups = sorted({s.group for s in scenes})
    if len(groups) >= 2:
        return _split_groups(scenes, train_chips, valid_chips, stats, groups, valid_fraction, rng)
    return _split_stripes(scenes, train_chips, valid_chips, stats, valid_fraction, rng)


def _split_groups(
    scenes: Sequence[Scene],
    train_chips: Sequence[Chip],
    valid_chips: Sequence[Chip],
    stats: np.ndarray,
    groups: list[str],
    fraction: float,
    rng: np.random.Generator,
) -> Split:
    group_of = [s.group for s in scenes]
    pixels = dict.fromkeys(groups, 0)
    slides = dict.fromkeys(groups, 0)
    for chip, (pos, n) in zip(valid_chips, stats, strict=True):
        g = group_of[chip.scene]
        pixels[g] += int(n)
        slides[g] += int(pos)
    total = max(1, sum(pixels.values()))
    order = [groups[i] for i in rng.permutation(len(groups))]
    chosen: list[str] = []
    share, has_slides = 0.0, False
    for g in order:
        if share >= fraction and has_slides:
            break
        if share >= fraction and slides[g] == 0:
            continue
        chosen.append(g)
        share += pixels[g] / total
        has_slides = has_slides or slides[g] > 0
    if len(chosen) >= len(groups):
        chosen = chosen[:-1] if len(chosen) > 1 else chosen
    if len(chosen) >= len(groups):
        raise InputError("Too few images to split off a validation set: give VALID_IMAGES.")
    val_groups = set(chosen)
    train = [c for c in train_chips if group_of[c.scene] not in val_groups]
    valid = [c for c in valid_chips if group_of[c.scene] in val_groups]
    names = sorted(scenes[i].name for i in {c.scene for c in valid})
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    detail = (
        f"validation = {len(val_groups)} of {len(groups)} whole images/areas "
        f"({share:.0%} of labelled pixels): {shown}"
    )
    return Split(train, valid, "scenes", detail)


def _split_stripes(
    scenes: Sequence[Scene],
    train_chips: Sequence[Chip],
    valid_chips: Sequence[Chip],
    stats: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
) -> Split:
    vb = np.array([scenes[c.scene].bounds(c) for c in valid_chips], dtype=float)
    tb = np.array([scenes[c.scene].bounds(c) for c in train_chips], dtype=float)
    x0, y0 = vb[:, 0].min(), vb[:, 1].min()
    x1, y1 = vb[:, 2].max(), vb[:, 3].max()
    axis = 0 if (x1 - x0) >= (y1 - y0) else 1  # stripes cut across the longer axis
    lo, hi = (x0, x1) if axis == 0 else (y0, y1)
    n_stripes = max(2, round(1.0 / fraction))
    centres = (vb[:, axis] + vb[:, axis + 2]) / 2.0
    stripe = np.minimum(
        ((centres - lo) / max(hi - lo, 1e-12) * n_stripes).astype(int), n_stripes - 1
    )
    candidates = [k for k in range(n_stripes) if np.any(stripe == k)]
    with_slides = [k for k in candidates if stats[stripe == k, 0].sum() > 0]
    pool = with_slides or candidates
    pick = pool[int(rng.integers(len(pool)))]
    valid_idx = np.flatnonzero(stripe == pick)
    v_lo = vb[valid_idx, axis].min()
    v_hi = vb[valid_idx, axis + 2].max()
    t_lo, t_hi = tb[:, axis], tb[:, axis + 2]
    keep = (t_hi <= v_lo) | (t_lo >= v_hi)  # no overlap with the validation extent
    train = [c for c, k in zip(train_chips, keep, strict=True) if k]
    if not train:
        raise InputError(
            "The data are too small to split off a validation stripe: use a smaller "
            "CHIP_SIZE or give VALID_IMAGES."
        )
    direction = "west-east" if axis == 0 else "south-north"
    detail = (
        f"validation = stripe {pick + 1} of {n_stripes} along the {direction} axis "
        f"({len(valid_idx)} chips); {int((~keep).sum())} training chips overlapping it dropped"
    )
    valid = [valid_chips[int(i)] for i in valid_idx]
    return Split(train, valid, "stripes", detail, int((~keep).sum()))
