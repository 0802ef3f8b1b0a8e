"""Align rasters of different CRS, resolution or extent onto one reference grid.

Factor rasters rarely share a grid: a 30 m DEM, a 10 m land-cover map, a
geology map in another projection. :class:`AlignedStack` presents them as one
multi-band raster on a reference grid (:class:`GridSpec`). Each input is wrapped
in a :class:`rasterio.vrt.WarpedVRT`, so a read warps only the pixels of the
requested window: memory is bounded by the window, never by the raster.
Continuous factors are resampled bilinearly, categorical ones (classes, masks)
with nearest neighbour so that no invented class values appear.

Two policies use the same comparison (:func:`grid_differences`): align
automatically (:class:`AlignedStack`), or refuse and name the raster that
differs (:func:`check_same_grid`, or ``AlignedStack(..., align=False)``).

Example:
    >>> sources = [FactorSource("dem.tif"), FactorSource("landcover.tif", kind="categorical")]
    >>> with AlignedStack(sources) as stack:  # doctest: +SKIP
    ...     for read, write, inner in iter_windows(stack.width, stack.height):
    ...         data, valid = stack.read(read)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.raster import (
    RasterInfo,
    create_raster,
    iter_windows,
    open_raster,
    output_profile,
    read_masked,
)

FactorKind = Literal["continuous", "categorical"]
KINDS: tuple[str, ...] = ("continuous", "categorical")
RESAMPLING: dict[str, Resampling] = {
    "continuous": Resampling.bilinear,
    "categorical": Resampling.nearest,
}
ALIGN_FIX = (
    "align them first (QGIS: Raster > Projections > Warp, or gdalwarp with the grid of "
    "the reference), or set ALIGN=true to align them on the fly"
)


@dataclass(frozen=True)
class GridSpec:
    """A raster grid: CRS, pixel-to-map transform and shape.

    Attributes:
        crs: Coordinate reference system (``None`` when unknown).
        transform: Affine transform of the upper-left pixel corner.
        width: Columns.
        height: Rows.
    """

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @classmethod
    def from_raster(cls, path: str | os.PathLike[str], what: str = "reference raster") -> GridSpec:
        """The grid of a raster file.

        Args:
            path: Raster file.
            what: How error messages name the file.

        Raises:
            InputError: the file is missing, not a raster or empty.
        """
        return cls.from_info(open_raster(path, what=what))

    @classmethod
    def from_info(cls, info: RasterInfo) -> GridSpec:
        """The grid of an opened raster's description."""
        return cls(crs=info.crs, transform=info.transform, width=info.width, height=info.height)

    @classmethod
    def from_bounds(
        cls,
        crs: CRS | str,
        bounds: tuple[float, float, float, float],
        resolution: float | tuple[float, float],
    ) -> GridSpec:
        """A north-up grid covering ``bounds`` with square or given pixels.

        Args:
            crs: CRS of the grid (``CRS`` or anything ``CRS.from_user_input`` takes).
            bounds: ``(left, bottom, right, top)`` in CRS units.
            resolution: Pixel size, one value or ``(x, y)``, positive.
        """
        if isinstance(resolution, (int, float)):
            rx = ry = float(resolution)
        else:
            rx, ry = float(resolution[0]), float(resolution[1])
        left, bottom, right, top = bounds
        width = max(1, int(np.ceil((right - left) / rx - 1e-9)))
        height = max(1, int(np.ceil((top - bottom) / ry - 1e-9)))
        return cls(
            crs=CRS.from_user_input(crs),
            transform=Affine(float(rx), 0.0, float(left), 0.0, -float(ry), float(top)),
            width=width,
            height=height,
        )

    def reprojected(
        self, crs: CRS | str, resolution: float | tuple[float, float] | None = None
    ) -> GridSpec:
        """The grid that covers this one in another CRS (as ``gdalwarp -t_srs`` picks it).

        Args:
            crs: Target CRS.
            resolution: Pixel size in target units; GDAL's estimate when omitted.

        Raises:
            InputError: this grid has no CRS.
        """
        from rasterio.warp import calculate_default_transform

        if self.crs is None:
            raise InputError(
                "The grid has no coordinate reference system: it cannot be reprojected."
            )
        left, bottom, right, top = self.bounds
        transform, width, height = calculate_default_transform(
            self.crs, crs, self.width, self.height, left, bottom, right, top, resolution=resolution
        )
        return GridSpec(CRS.from_user_input(crs), transform, int(width), int(height))

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return west, south, east, north

    def profile(self) -> dict[str, Any]:
        """The grid as the rasterio profile keys that ``output_profile`` takes."""
        return {
            "width": self.width,
            "height": self.height,
            "crs": self.crs,
            "transform": self.transform,
        }


@dataclass(frozen=True)
class GridDifference:
    """How one raster's grid differs from the reference grid.

    Attributes:
        path: The raster.
        properties: What differs: a subset of ``("CRS", "resolution", "extent")``.
        details: One phrase per property, for example ``"pixel size 10 x 10 instead
            of 30 x 30"``.
    """

    path: str
    properties: tuple[str, ...]
    details: tuple[str, ...]

    def describe(self) -> str:
        """The differences as one sentence fragment."""
        return "; ".join(self.details)


@dataclass(frozen=True)
class FactorSource:
    """One factor raster (or some of its bands) to put in a stack.

    Attributes:
        path: Raster file.
        band: Band to use (1-based); ``None`` uses every band of the file.
        name: Factor name; by default the band description, else the file stem
            (``<stem>_b<N>`` for multi-band files). With ``band=None`` on a
            multi-band file, ``name`` becomes a prefix: ``<name>_<description>``.
        kind: ``continuous`` (bilinear resampling) or ``categorical`` (nearest).
    """

    path: str | os.PathLike[str]
    band: int | None = None
    name: str | None = None
    kind: FactorKind = "continuous"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(
                f"Unknown factor kind '{self.kind}' for '{Path(self.path).name}': "
                f"use one of {', '.join(KINDS)}."
            )


@dataclass(frozen=True)
class StackBand:
    """One band of an :class:`AlignedStack` after expansion.

    Attributes:
        path: Raster file.
        band: Band index in that file (1-based).
        name: Unique factor name.
        kind: ``continuous`` or ``categorical``.
    """

    path: str
    band: int
    name: str
    kind: str


def grid_differences(grid: GridSpec, reference: GridSpec, path: str = "") -> GridDifference | None:
    """Compare a grid with the reference grid.

    Args:
        grid: The grid to check.
        reference: The reference grid.
        path: The raster's path (kept in the result).

    Returns:
        ``None`` when both grids are the same (to a millionth of a pixel), else what differs.
    """
    props: list[str] = []
    details: list[str] = []
    if (grid.crs is None) != (reference.crs is None) or (
        grid.crs is not None and reference.crs is not None and grid.crs != reference.crs
    ):
        props.append("CRS")
        details.append(f"CRS {_crs_name(grid.crs)} instead of {_crs_name(reference.crs)}")
    res, ref_res = grid.res, reference.res
    if not np.allclose(res, ref_res, rtol=1e-6, atol=0.0):
        props.append("resolution")
        details.append(
            f"pixel size {res[0]:.6g} x {res[1]:.6g} instead of {ref_res[0]:.6g} x {ref_res[1]:.6g}"
        )
    precision = 1e-6 * max(min(ref_res), 1e-12)
    if (grid.width, grid.height) != (reference.width, reference.height) or not (
        grid.transform.almost_equals(reference.transform, precision=precision)
    ):
        props.append("extent")
        details.append(
            f"extent {grid.width} x {grid.height} px from {_corner(grid)} instead of "
            f"{reference.width} x {reference.height} px from {_corner(reference)}"
        )
    if not props:
        return None
    return GridDifference(path=path, properties=tuple(props), details=tuple(details))


def check_same_grid(
    paths: Sequence[str | os.PathLike[str]], what: str = "input raster", fix: str = ALIGN_FIX
) -> None:
    """Refuse rasters that are not all on the grid of the first one.

    Args:
        paths: Raster files; the first is the reference.
        what: How messages name the rasters.
        fix: The advice that ends the message.

    Raises:
        InputError: a file is unusable, or names the first raster whose grid differs,
            how it differs, and the fix.
    """
    if not paths:
        return
    reference_path = Path(paths[0])
    reference = GridSpec.from_raster(reference_path, what=what)
    for path in paths[1:]:
        grid = GridSpec.from_raster(path, what=what)
        diff = grid_differences(grid, reference, str(path))
        if diff is not None:
            raise InputError(_differs_message(diff, f"'{reference_path.name}'", what, fix))


class AlignedStack:
    """Factor rasters read as one float32 stack on a reference grid.

    Inputs already on the reference grid are read directly; the others through a
    :class:`~rasterio.vrt.WarpedVRT` per file and resampling method, so every read
    is windowed. Use as a context manager.

    Args:
        sources: The factors, in band order.
        reference: The grid to align onto: a :class:`GridSpec` or a raster path.
            Default: the grid of the first source.
        align: ``False`` refuses inputs on another grid (InputError naming the first
            one and how it differs) instead of aligning them.
        warp_mem_limit: Working memory of each warp, in MB.

    Raises:
        InputError: no sources, an unreadable file, a band that does not exist,
            duplicate explicit names, an input without CRS that must be reprojected,
            or (``align=False``) an input on another grid.
    """

    def __init__(
        self,
        sources: Sequence[FactorSource],
        reference: GridSpec | str | os.PathLike[str] | None = None,
        align: bool = True,
        warp_mem_limit: int = 64,
    ) -> None:
        if not sources:
            raise InputError("No factor rasters were given: choose at least one raster.")
        infos: dict[str, RasterInfo] = {}
        for source in sources:
            key = str(source.path)
            if key not in infos:
                infos[key] = open_raster(key, what="factor raster")
        if reference is None:
            self.grid = GridSpec.from_info(infos[str(sources[0].path)])
            self._reference_name = f"'{Path(sources[0].path).name}'"
        elif isinstance(reference, GridSpec):
            self.grid = reference
            self._reference_name = "the reference grid"
        else:
            self.grid = GridSpec.from_raster(reference)
            self._reference_name = f"'{Path(reference).name}'"
        self.bands: list[StackBand] = _expand(sources, infos)
        self._infos = infos
        self._differences = {
            path: grid_differences(GridSpec.from_info(info), self.grid, path)
            for path, info in infos.items()
        }
        if not align:
            for diff in self._differences.values():
                if diff is not None:
                    raise InputError(
                        _differs_message(diff, self._reference_name, "factor raster", ALIGN_FIX)
                    )
        for path, diff in self._differences.items():
            if (
                diff is not None
                and _needs_warp(diff, infos[path], self.grid)
                and (infos[path].crs is None or self.grid.crs is None)
            ):
                lacking = "it" if infos[path].crs is None else "the reference"
                raise InputError(
                    f"The factor raster '{Path(path).name}' cannot be aligned with "
                    f"{self._reference_name}: {lacking} has no coordinate reference system. "
                    "Assign one (QGIS: Raster > "
                    "Projections > Assign Projection) and try again."
                )
        self._warp_mem_limit = warp_mem_limit
        self._stack = contextlib.ExitStack()
        self._readers: list[_Reader] = []

    # -- context management -------------------------------------------------
    def __enter__(self) -> AlignedStack:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every dataset and virtual warp."""
        self._readers = []
        self._stack.close()

    def _open(self) -> None:
        datasets: dict[str, Any] = {}
        readers: dict[tuple[str, str], _Reader] = {}
        for position, band in enumerate(self.bands):
            diff = self._differences[band.path]
            warp = diff is not None and _needs_warp(diff, self._infos[band.path], self.grid)
            key = (band.path, band.kind if warp else "direct")
            reader = readers.get(key)
            if reader is None:
                if band.path not in datasets:
                    datasets[band.path] = self._stack.enter_context(rasterio.open(band.path))
                src = datasets[band.path]
                if warp:
                    src = self._stack.enter_context(
                        WarpedVRT(
                            src,
                            crs=self.grid.crs,
                            transform=self.grid.transform,
                            width=self.grid.width,
                            height=self.grid.height,
                            resampling=RESAMPLING[band.kind],
                            dtype="float32",
                            nodata=float("nan"),
                            warp_mem_limit=self._warp_mem_limit,
                        )
                    )
                reader = readers[key] = _Reader(src)
            reader.indexes.append(band.band)
            reader.positions.append(position)
        self._readers = list(readers.values())

    # -- description --------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.bands)

    @property
    def names(self) -> list[str]:
        """Band (factor) names, unique, in order."""
        return [b.name for b in self.bands]

    @property
    def kinds(self) -> list[str]:
        """Band kinds (``continuous`` or ``categorical``), in order."""
        return [b.kind for b in self.bands]

    @property
    def width(self) -> int:
        """Columns of the reference grid."""
        return self.grid.width

    @property
    def height(self) -> int:
        """Rows of the reference grid."""
        return self.grid.height

    @property
    def transform(self) -> Affine:
        """Transform of the reference grid."""
        return self.grid.transform

    @property
    def crs(self) -> CRS | None:
        """CRS of the reference grid."""
        return self.grid.crs

    def same_grid_report(self) -> list[GridDifference]:
        """The input files whose grid differs from the reference, and how.

        Returns:
            One :class:`GridDifference` per differing file, in input order; empty
            when every input is on the reference grid.
        """
        return [d for d in self._differences.values() if d is not None]

    # -- reading ------------------------------------------------------------
    def read(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read every band of a window of the reference grid.

        Args:
            window: Window of the reference grid (inside it); ``None`` reads the whole
                grid (only for small rasters).

        Returns:
            ``(data, valid)``: data float32 ``(bands, rows, cols)`` with NaN where a
            pixel is nodata or outside an input in any band; valid ``(rows, cols)``
            bool, true where every band has a value.

        Raises:
            RuntimeError: the stack is not open.
            ValueError: the window is not inside the grid.
        """
        if not self._readers:
            raise RuntimeError("AlignedStack is not open: use it in a 'with' block.")
        if window is None:
            window = Window(0, 0, self.width, self.height)
        col, row = int(window.col_off), int(window.row_off)
        cols, rows = int(window.width), int(window.height)
        if col < 0 or row < 0 or col + cols > self.width or row + rows > self.height:
            raise ValueError(f"window {window} is outside the {self.width} x {self.height} grid")
        data = np.empty((self.count, rows, cols), dtype=np.float32)
        valid = np.ones((rows, cols), dtype=bool)
        for reader in self._readers:
            block, ok = read_masked(reader.dataset, window=window, indexes=reader.indexes)
            data[reader.positions] = block
            valid &= ok
        data[:, ~valid] = np.nan
        return data, valid

    def profile(self, dtype: str = "float32", block: int = 256) -> dict[str, Any]:
        """A tiled, compressed GeoTIFF profile for the stack on the reference grid."""
        return output_profile(self.grid.profile(), self.count, dtype=dtype, block=block)


def write_aligned_stack(
    sources: Sequence[FactorSource],
    reference: GridSpec | str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    block: int = 512,
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Write the aligned factors as one multi-band float32 GeoTIFF.

    The output is written window by window (memory bounded by ``block``) to a
    temporary file renamed when complete; band descriptions are the factor names;
    nodata is NaN.

    Args:
        sources: The factors, in band order.
        reference: The grid to align onto (see :class:`AlignedStack`).
        output: Output GeoTIFF path.
        block: Window side in pixels.
        progress: Called with the fraction done, in [0, 1].

    Returns:
        The output path.
    """
    with AlignedStack(sources, reference) as stack:
        profile = stack.profile(block=256)
        windows = list(iter_windows(stack.width, stack.height, block=block))
        with create_raster(output, profile, band_names=stack.names) as dst:
            for i, (_, write, _) in enumerate(windows):
                data, _ = stack.read(write)
                dst.write(data, window=write)
                if progress is not None:
                    progress((i + 1) / len(windows))
    return Path(output)


@dataclass
class _Reader:
    """One opened dataset (direct or warped) and the stack bands it supplies."""

    dataset: Any
    indexes: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


def _expand(sources: Sequence[FactorSource], infos: dict[str, RasterInfo]) -> list[StackBand]:
    """Expand sources into bands with unique names."""
    entries: list[tuple[str, int, str, str, bool]] = []
    for source in sources:
        path = str(source.path)
        info = infos[path]
        if source.band is not None and not 1 <= source.band <= info.count:
            raise InputError(
                f"The factor raster '{Path(path).name}' has {info.count} band(s), "
                f"there is no band {source.band}: choose a band from 1 to {info.count}."
            )
        indexes = [source.band] if source.band is not None else list(range(1, info.count + 1))
        for band in indexes:
            name, explicit = _band_name(source, info, band, expanded=source.band is None)
            entries.append((path, band, name, source.kind, explicit))
    explicit_names = [e[2] for e in entries if e[4]]
    for name in explicit_names:
        if explicit_names.count(name) > 1:
            raise InputError(
                f"Two factors are both named '{name}': give each factor a different name."
            )
    used = set(explicit_names)
    bands = []
    for path, band, name, kind, explicit in entries:
        if not explicit:
            base, k = name, 2
            while name in used:
                name, k = f"{base}_{k}", k + 1
            used.add(name)
        bands.append(StackBand(path=path, band=band, name=name, kind=kind))
    return bands


def _band_name(
    source: FactorSource, info: RasterInfo, band: int, expanded: bool
) -> tuple[str, bool]:
    """Name of one band and whether the user chose it verbatim."""
    description = (info.descriptions[band - 1] or "").strip()
    if source.name:
        if not expanded or info.count == 1:
            return source.name, True
        return f"{source.name}_{description or f'b{band}'}", True
    if description:
        return description, False
    stem = Path(info.path).stem
    return (stem if info.count == 1 else f"{stem}_b{band}"), False


def _needs_warp(diff: GridDifference, info: RasterInfo, grid: GridSpec) -> bool:
    """True when reading needs resampling (not when only a CRS label is missing)."""
    only_label = diff.properties == ("CRS",) and (info.crs is None or grid.crs is None)
    return not only_label


def _differs_message(diff: GridDifference, reference: str, what: str, fix: str) -> str:
    return (
        f"The {what} '{Path(diff.path).name}' is not on the grid of {reference} "
        f"({', '.join(diff.properties)} differ: {diff.describe()}): {fix}."
    )


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_string() or "custom")


def _corner(grid: GridSpec) -> str:
    return f"({grid.transform.c:.6g}, {grid.transform.f:.6g})"
