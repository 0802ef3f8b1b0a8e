"""Factor values at landslides and non-landslide places: the ``samplefactors`` engine job.

The table (CSV: ``factors..., X, Y, label``; or GeoPackage points with the
factor fields, ``label`` and ``origin``) feeds ``trainsusceptibility`` with
``TABLE`` and the benchmark. Label convention: 1 = landslide, 0 = not landslide.
Sampling itself (inventory reading, polygons, random non-landslides outside a
buffer) is :func:`slidewise.engine.geo.samples.collect_samples`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.specs.samplefactors import SPEC as SAMPLE_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.geo.collinearity import CollinearityParams, report_collinearity
from slidewise.engine.geo.samples import SampleSet, collect_samples
from slidewise.engine.geo.stackparams import SamplingParams


@dataclass(frozen=True)
class SampleFactorsParams(SamplingParams, CollinearityParams):
    """Parameters of the ``samplefactors`` job (``contract/specs/samplefactors.py``).

    The stack and sampling fields are those of :class:`SamplingParams`, the
    multicollinearity thresholds those of :class:`CollinearityParams`.

    Attributes:
        output: ``.csv`` table or ``.gpkg`` points.
    """

    SPEC = SAMPLE_SPEC

    output: str = ""


def run_sample_factors(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Sample a factor stack at landslides and non-landslide places.

    Parameters: the factor stack (INPUT or FACTORS, CATEGORICAL, ALIGN), the
    inventory and sampling options (INVENTORY, LABEL_FIELD, NEGATIVES,
    NEGATIVE_RATIO, BUFFER, PER_POLYGON, X_FIELD, Y_FIELD, INVENTORY_CRS, SEED)
    and OUTPUT (see ``contract/specs/samplefactors.py``).

    Raises:
        InputError: a refused parameter, an OUTPUT that is neither .csv nor .gpkg, or
            inputs that give no landslide or no non-landslide sample.
    """
    options = SampleFactorsParams.from_params(params)
    sampling = options.sampling_options(ctx.options.seed)
    output = options.output
    check_writable(output)
    if Path(output).suffix.lower() not in (".csv", ".gpkg"):
        raise InputError(f"OUTPUT '{Path(output).name}' must be a .csv table or a .gpkg layer.")
    with options.open_stack() as stack:
        ctx.progress(10)
        samples = collect_samples(stack, sampling, warn=ctx.warn)
        crs = stack.crs
    write_samples(output, samples, crs)
    ctx.log(
        f"{samples.counts['landslides']} landslide and {samples.counts['non_landslides']} "
        f"non-landslide samples of {len(samples.bands)} factors written to {output}."
    )
    return JobResult(
        outputs={"OUTPUT": output},
        figures={
            "counts": samples.counts,
            "bands": samples.bands,
            "collinearity": report_collinearity(
                samples.values,
                samples.bands,
                options.categorical,
                options.collinearity_thresholds(),
                ctx.log,
                ctx.warn,
            ),
        },
        inputs=options.sample_inputs(),
    )


def write_samples(output: str, samples: SampleSet, crs: Any) -> None:
    """Write samples as a CSV table (``factors..., X, Y, label``) or GeoPackage points."""
    import csv

    from slidewise.engine.core.outputs import atomic_output

    if output.lower().endswith(".csv"):
        with atomic_output(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow([*samples.bands, "X", "Y", "label"])
            for row, x, y, lab in zip(
                samples.values, samples.xs, samples.ys, samples.labels, strict=False
            ):
                writer.writerow([*(f"{v:.9g}" for v in row), f"{x:.6f}", f"{y:.6f}", int(lab)])
        return
    import shapely

    from slidewise.engine.geo.vectors import write_vector

    fields = {name: samples.values[:, j].astype(np.float64) for j, name in enumerate(samples.bands)}
    fields.update(label=samples.labels.astype(np.int32), origin=samples.origin.astype(str))
    write_vector(output, shapely.points(samples.xs, samples.ys), fields, crs, geometry_type="Point")
