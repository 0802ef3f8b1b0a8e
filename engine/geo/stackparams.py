"""The factor-stack and sampling parameters of the jobs, declared and read once.

The jobs that read a factor stack (samplefactors, segmentblocks,
trainsusceptibility, predictsusceptibility) derive their ``JobParams``
dataclass from :class:`StackParams` or :class:`SamplingParams`, whose fields
are the groups ``FACTOR_STACK``, ``INVENTORY`` and ``SAMPLING_HIDDEN`` of
:mod:`slidewise.contract.specs.factors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.params import JobParams
from slidewise.engine.geo.align import AlignedStack
from slidewise.engine.geo.samples import SamplingOptions, open_factor_stack


@dataclass(frozen=True)
class StackParams(JobParams):
    """The factor stack group.

    Attributes:
        input: INPUT, one multi-band raster.
        factors: FACTORS, or single rasters (the first gives the grid).
        categorical: CATEGORICAL factor names.
        align: ALIGN rasters on other grids to the first one (else refuse them).
    """

    input: str | None = None
    factors: Sequence[str] = ()
    categorical: Sequence[str] = ()
    align: bool = False

    def open_stack(self, categorical: Sequence[str] | None = None) -> AlignedStack:
        """The factor stack (unopened: use it with ``with``).

        Args:
            categorical: Categorical factors (default: CATEGORICAL; a model's at prediction).
        """
        cats = self.categorical if categorical is None else categorical
        return open_factor_stack(
            self.input or None, list(self.factors) or None, list(cats), align=self.align
        )

    def stack_inputs(self) -> list[str]:
        """The factor rasters read (for the run manifest)."""
        return ([self.input] if self.input else []) + [str(f) for f in self.factors]


@dataclass(frozen=True)
class SamplingParams(StackParams):
    """The factor stack plus the inventory and sampling groups.

    Attributes:
        inventory: INVENTORY: landslide points, polygons or table.
        label_field: LABEL_FIELD, 1 landslide / 0 not.
        negatives: NEGATIVES: non-landslide points or polygons.
        negative_ratio: NEGATIVE_RATIO: random non-landslides per landslide.
        buffer: BUFFER in map units (``None``: 2 pixels).
        per_polygon: PER_POLYGON: pixels per polygon (0 = every pixel inside).
        x_field: X_FIELD of tables.
        y_field: Y_FIELD of tables.
        inventory_crs: INVENTORY_CRS of tables (empty: the stack's).
        seed: SEED of random draws (``None``: the run seed).
    """

    inventory: str | None = None
    label_field: str | None = None
    negatives: str | None = None
    negative_ratio: float = 1.0
    buffer: float | None = None
    per_polygon: int = 0
    x_field: str = "x"
    y_field: str = "y"
    inventory_crs: str = ""
    seed: int | None = None

    def seed_or(self, run_seed: int) -> int:
        """SEED, or the run seed when unset."""
        return run_seed if self.seed is None else self.seed

    def sampling_options(self, run_seed: int) -> SamplingOptions:
        """How the inventory is sampled.

        Raises:
            InputError: INVENTORY is not given.
        """
        if not self.inventory:
            raise InputError("Missing required parameter(s): INVENTORY.")
        return SamplingOptions(
            inventory=self.inventory,
            negatives=self.negatives or "",
            negative_ratio=self.negative_ratio,
            buffer=self.buffer,
            per_polygon=self.per_polygon,
            x_field=self.x_field,
            y_field=self.y_field,
            label_field=self.label_field or "",
            inventory_crs=self.inventory_crs,
            seed=self.seed_or(run_seed),
        )

    def sample_inputs(self, *others: str | None) -> list[str]:
        """The files read (for the run manifest): stack, inventory, non-landslides, ``others``.

        The single factor rasters come last.
        """
        files = [self.input, self.inventory, self.negatives, *others]
        return [str(f) for f in files if f] + [str(f) for f in self.factors]
