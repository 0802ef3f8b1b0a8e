"""Which bands of a raster feed a model: matched by name, or by position when unnamed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.raster import RasterInfo


def _is_generic(name: str | None) -> bool:
    return not name or bool(_GENERIC_BAND.fullmatch(name.strip()))


@dataclass(frozen=True)
class BandChoice:
    """Which raster bands feed the model.

    Attributes:
        indexes: 1-based raster band indexes, in the model's band order.
        warning: A note for the user when the match could only be partly checked.
    """

    indexes: list[int]
    warning: str | None = None


def match_bands(
    info: RasterInfo,
    model_bands: Sequence[str],
    value: Any = None,
    trained_indexes: Sequence[int] | None = None,
) -> BandChoice:
    """Choose the raster bands for a model, or refuse with the expected bands.

    Args:
        info: The input raster.
        model_bands: The model's band names, in order.
        value: ``BANDS``: empty (the raster's bands as they are), or 1-based
            numbers / band descriptions in the model's order (e.g. ``"4,3,2,8"``).
        trained_indexes: The 1-based bands the model was trained on (named in
            the message when the count does not match).

    Raises:
        InputError: band count or band order does not match the model.
    """
    from slidewise.engine.imagery.datasets import resolve_bands

    expected = ", ".join(model_bands)
    n = len(model_bands)
    names = info.band_names()
    if value not in (None, "", []):
        indexes = [i + 1 for i in resolve_bands(value, names)]
        if len(indexes) != n:
            raise InputError(
                f"BANDS selects {len(indexes)} band(s) but the model needs {n}: "
                f"give {n} bands in the model's order ({expected})."
            )
        return BandChoice(indexes)
    described = all(d and d.strip() for d in info.descriptions)
    model_named = not all(_is_generic(b) for b in model_bands)
    if described and model_named:
        lower = [d.strip().lower() for d in names]
        wanted = [b.strip().lower() for b in model_bands]
        if lower == wanted:
            return BandChoice(list(range(1, n + 1)))
        missing = [b for b, w in zip(model_bands, wanted, strict=True) if w not in lower]
        if missing:
            raise InputError(
                f"The input raster's bands ({', '.join(names)}) do not match the model, "
                f"which expects {n} band(s): {expected}; missing: {', '.join(missing)}. "
                "Choose a raster with these bands, or set BANDS to the raster bands to use "
                "in the model's order (1-based numbers or names)."
            )
        suggestion = ",".join(str(lower.index(w) + 1) for w in wanted)
        raise InputError(
            f"The input raster's band order ({', '.join(names)}) does not match the model, "
            f"which expects {n} band(s): {expected}. Set BANDS={suggestion} to feed them "
            "in the model's order."
        )
    if info.count != n:
        hint = ""
        if trained_indexes and len(trained_indexes) == n:
            hint = (
                f" (the model was trained on bands {','.join(str(i) for i in trained_indexes)}"
                " of its images)"
            )
        raise InputError(
            f"The input raster has {info.count} band(s) but the model expects {n}: "
            f"{expected}{hint}. Choose a raster with these bands, or set BANDS to pick {n} "
            "of its bands in this order."
        )
    what = "no band descriptions" if not described else "a model without band names"
    return BandChoice(
        list(range(1, n + 1)),
        warning=(
            f"The input raster has {what}: only the band count ({n}) could be checked. "
            f"Make sure its bands are, in order: {expected}."
        ),
    )


_GENERIC_BAND = re.compile(r"band_?\d+", re.IGNORECASE)
