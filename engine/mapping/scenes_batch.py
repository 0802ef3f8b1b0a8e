"""The ``mapscenes`` job: many scenes mapped into one landslide inventory.

Each scene is mapped by the ``maplandslides`` job itself
(:func:`slidewise.engine.mapping.apply.run_map`, same parameters, same code
path: tiling, backends, Dask workers, resumable tile rows) into its own
probability raster and polygons in OUTPUT_FOLDER. Its polygons are then added
to one inventory (:mod:`slidewise.engine.mapping.inventory`): reprojected to
the inventory's CRS, merged with the polygons of other scenes they overlap,
and committed with the scene's row in the table of mapped scenes in one
atomic rewrite.

* A scene already in the inventory with the same key (its path, size and
  modification time, and the hash of the mapping parameters and the model) is
  skipped: running the job again maps only what is new or changed, and a run
  killed between scenes resumes with the next one (a run killed inside a scene
  resumes that scene's tile rows, as Map landslides does).
* A scene that fails (unreadable raster, no CRS, bands that do not match the
  model...) is reported by name; the others go on; the summary lists it.
* Cancel stops the job; the inventory keeps the scenes committed before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.spec import is_unset
from slidewise.contract.specs.mapscenes import MAPPING_NAMES, PLACEMENT_NAMES
from slidewise.contract.specs.mapscenes import SPEC as SCENES_SPEC
from slidewise.engine.core.errors import EngineError, InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.params import field_name
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.mapping.apply import MappingSettings
from slidewise.engine.mapping.inventory import (
    Inventory,
    SceneRecord,
    SceneTags,
    open_inventory,
)
from slidewise.engine.mapping.scenes_list import Scene, SceneFields, list_scenes

#: Test hook: the job SIGKILLs itself after committing this many scenes (tests only).
KILL_AFTER_SCENES_ENV = "SLIDEWISE_TEST_KILL_AFTER_SCENES"


@dataclass(frozen=True)
class MapScenesParams(MappingSettings):
    """Parameters of the ``mapscenes`` job (declared in ``contract/specs/mapscenes.py``).

    The mapping settings (``model`` ... ``scheduler``) are Map landslides' own
    (:class:`slidewise.engine.mapping.apply.MappingSettings`) and mean the same.

    Attributes:
        scene_folder: Folder whose rasters are the scenes.
        scene_list: Text file (one path per line) or CSV table of scenes.
        footprints: Layer with one feature per scene.
        path_field, scene_region_field, date_field: Fields (or CSV columns) of the
            path, region and acquisition date.
        inventory_crs: CRS of the inventory; ``None``: the existing inventory's,
            else the first scene's.
        inventory_layer: Name of the inventory's polygon layer.
        output_folder: Folder of each scene's probability and polygons.
        inventory: The inventory GeoPackage (created, or added to).
    """

    SPEC = SCENES_SPEC

    scene_folder: str | None = None
    scene_list: str | None = None
    footprints: str | None = None
    path_field: str = "path"
    scene_region_field: str = "region"
    date_field: str = "date"
    inventory_crs: str | None = None
    inventory_layer: str = "landslide_inventory"
    output_folder: str = ""
    inventory: str = ""

    def mapping(self) -> dict[str, Any]:
        """Map landslides' parameters set in this run (without INPUT and outputs)."""
        values = {name: getattr(self, field_name(name)) for name in MAPPING_NAMES}
        return {k: v for k, v in values.items() if not is_unset(v)}


@dataclass(frozen=True)
class ModelIdentity:
    """The model every scene is mapped with.

    Attributes:
        path: The model file (the shipped model when MODEL is empty).
        sha256: Its SHA-256 (hex).
        regions: Region decoders of a multi-region model (empty for one decoder).
        architecture: The architecture (the decoder name of one-decoder models).
    """

    path: str
    sha256: str
    regions: tuple[str, ...]
    architecture: str


@dataclass
class RunSummary:
    """What happened to each scene.

    Attributes:
        mapped: Scene name -> figures of the scenes mapped in this run.
        skipped: Scenes already in the inventory.
        failed: Scene name -> why it failed.
    """

    mapped: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class SceneReporter(Reporter):
    """The protocol of one scene's Map landslides run: its progress is a slice of the job's.

    Attributes:
        parent: The job's reporter.
        start: Job progress (percent) when the scene starts.
        end: Job progress when the scene ends.
    """

    parent: Reporter | None = None
    start: float = 0.0
    end: float = 100.0

    def send(self, message: dict[str, Any]) -> None:
        """Pass logs on to the job's protocol (results stay with the scene)."""
        if self.parent is not None and message.get("type") == "log":
            self.parent.send(message)

    def progress(self, value: float) -> None:
        """The scene's progress (0-100) as the job's."""
        if self.parent is not None:
            share = min(100.0, max(0.0, float(value))) / 100.0
            self.parent.progress(self.start + (self.end - self.start) * share)


@dataclass(frozen=True)
class SceneJob:
    """What every scene of the run is mapped with.

    Attributes:
        options: The job's parameters.
        model: The model.
        params_hash: Hash of the mapping parameters and the model (:func:`parameter_hash`).
        folder: OUTPUT_FOLDER.
        cog: Write the probability raster as a Cloud-Optimized GeoTIFF.
    """

    options: MapScenesParams
    model: ModelIdentity
    params_hash: str
    folder: Path
    cog: bool = False

    def outputs(self, scene: Scene) -> tuple[str, str]:
        """The scene's probability raster and polygons."""
        return (
            str(self.folder / f"{scene.name}_probability.tif"),
            str(self.folder / f"{scene.name}_polygons.gpkg"),
        )

    def decoder(self, scene: Scene) -> str:
        """The decoder that maps ``scene``: its region's (multi-region models), else the model's."""
        if not self.model.regions:
            return self.model.architecture
        if scene.region in self.model.regions:
            return scene.region
        return self.options.region or ""


def run_map_scenes(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Map every scene into its own outputs and into one landslide inventory.

    The parameters are those of :class:`MapScenesParams` (and COG).

    Raises:
        InputError: bad parameters, no scene, an inventory that cannot be added to,
            or no scene that could be mapped.
    """
    from slidewise.engine.mapping.shipped import resolve_model

    options = MapScenesParams.from_params(params)
    cog = not is_unset(params.get("COG")) and bool(SCENES_SPEC["COG"].read(params["COG"]))
    inventory = open_inventory(options.inventory, options.inventory_layer, options.inventory_crs)
    names = SceneFields(options.path_field, options.scene_region_field, options.date_field)
    scenes = list_scenes(options.scene_folder, options.scene_list, options.footprints, names)
    model = model_identity(resolve_model(options.model, ctx.log))
    folder = checked_folder(options.output_folder, options.scene_folder)
    ctx.log(
        f"{len(scenes)} scene(s) to map into '{Path(options.inventory).name}' (now "
        f"{len(inventory)} polygon(s) from {len(inventory.scenes)} scene(s))."
    )
    job = SceneJob(options, model, parameter_hash(options, model), folder, cog)
    summary = RunSummary()
    for index, scene in enumerate(scenes):
        span = (100.0 * index / len(scenes), 100.0 * (index + 1) / len(scenes))
        ctx.log(f"Scene {index + 1} of {len(scenes)}: {scene.name} ({scene.path}).")
        ctx.progress(span[0])
        run_scene(job, scene, inventory, summary, ctx, span)
    return finish_run(job, inventory, scenes, summary, ctx)


def model_identity(path: str) -> ModelIdentity:
    """The model's hash, regions and architecture (read once for the run)."""
    from slidewise.engine.core.manifest import file_sha256
    from slidewise.engine.core.modelfile import read_metadata

    meta = read_metadata(path)
    regions = tuple(str(r) for r in (meta.extra or {}).get("region_order") or ())
    if meta.task != "multiregion":
        regions = ()
    return ModelIdentity(path, file_sha256(path), regions, str(meta.architecture))


def checked_folder(folder: str, scenes: str | None = None) -> Path:
    """OUTPUT_FOLDER, created when missing.

    Args:
        folder: OUTPUT_FOLDER.
        scenes: SCENE_FOLDER, if given.

    Raises:
        InputError: it is the scene folder, or it cannot be created.
    """
    p = Path(folder)
    if scenes and p.resolve() == Path(scenes).resolve():
        raise InputError(
            "OUTPUT_FOLDER is the SCENE_FOLDER: the scenes' probability rasters would be taken "
            "for scenes in the next run. Choose another OUTPUT_FOLDER."
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"OUTPUT_FOLDER '{p}' cannot be created ({exc.strerror}): choose a folder you "
            "can write to."
        ) from None
    return p


def parameter_hash(options: MapScenesParams, model: ModelIdentity) -> str:
    """Hash of what decides a scene's polygons: mapping parameters, model and DEM files."""
    values = {k: v for k, v in options.mapping().items() if k not in PLACEMENT_NAMES}
    values["MODEL"] = model.sha256
    if options.dem and Path(options.dem).is_file():
        stat = Path(options.dem).stat()
        values["DEM"] = [str(Path(options.dem).resolve()), stat.st_size, stat.st_mtime_ns]
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def scene_record(scene: Scene, params_hash: str) -> SceneRecord:
    """The scene's row (not yet counted): key from its path, size, time and the parameters.

    Raises:
        InputError: the raster does not exist.
    """
    remote = scene.path.startswith("/vsi") or "://" in scene.path
    p = Path(scene.path)
    if not remote and not p.is_file():
        raise InputError(f"the raster '{scene.path}' does not exist")
    stat = p.stat() if not remote else None
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (0, 0)
    resolved = scene.path if remote else str(p.resolve())
    parts = [resolved, size, mtime, params_hash, scene.region, scene.date]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    return SceneRecord(
        key, scene.name, resolved, size, mtime, params_hash, scene.date, scene.region
    )


def run_scene(
    job: SceneJob,
    scene: Scene,
    inventory: Inventory,
    summary: RunSummary,
    ctx: JobContext,
    span: tuple[float, float],
) -> None:
    """Map one scene and commit it to the inventory; skip it if done; note a failure.

    ``span`` is the job's progress (percent) at the scene's start and end.
    """
    started = time.perf_counter()
    try:
        record = scene_record(scene, job.params_hash)
        if record.key in inventory.done:
            summary.skipped.append(scene.name)
            ctx.log(f"Scene {scene.name}: already in the inventory with these parameters, skipped.")
            return
        figures, (geoms, values, crs) = map_scene(job, scene, ctx, span)
        tags = SceneTags(
            scene.name, scene.date, scene.region, job.decoder(scene), Path(job.model.path).name,
            job.model.sha256[:12],
        )  # fmt: skip
        merged = inventory.add_scene(geoms, values, crs, tags)  # in memory until the commit
    except Exception as exc:  # the scene fails; the others go on (a Cancel is not an Exception)
        reason = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        summary.failed[scene.name] = reason
        ctx.warn(f"Scene {scene.name} failed and was left out: {reason}")
        return
    finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    inventory.record(
        SceneRecord(
            **{**asdict(record), "polygons": len(geoms), "merged": merged, "finished": finished}
        )
    )
    inventory.commit()
    summary.mapped[scene.name] = {
        "polygons": len(geoms),
        "merged": merged,
        "landslide_pixels": figures.get("landslide_pixels"),
        "seconds": round(time.perf_counter() - started, 2),
    }
    ctx.log(
        f"Scene {scene.name}: {len(geoms)} polygon(s), {merged} merged with polygons of "
        f"other scenes; the inventory holds {len(inventory)} polygon(s)."
    )
    kill_after_scenes(len(summary.mapped))


def map_scene(
    job: SceneJob, scene: Scene, ctx: JobContext, span: tuple[float, float]
) -> tuple[dict[str, Any], tuple[np.ndarray, dict[str, np.ndarray], Any]]:
    """Run Map landslides on the scene; its figures and its polygons (with their CRS).

    Raises:
        InputError: the raster has no CRS, or Map landslides refused it.
    """
    from slidewise.engine.geo.raster import open_raster
    from slidewise.engine.mapping.apply import run_map

    if open_raster(scene.path, what=f"raster of scene {scene.name}").crs is None:
        raise InputError(
            "the raster has no coordinate reference system, so its polygons cannot be placed "
            "in the inventory: assign its CRS (Raster › Projections › Assign Projection)"
        )
    probability, polygons = job.outputs(scene)
    params = {
        **job.options.mapping(),
        "MODEL": job.model.path,
        "INPUT": scene.path,
        "OUTPUT_PROBABILITY": probability,
        "OUTPUT_POLYGONS": polygons,
    }
    if job.model.regions and job.decoder(scene):
        params["REGION"] = job.decoder(scene)
    reporter = SceneReporter(ctx.reporter.stream, parent=ctx.reporter, start=span[0], end=span[1])
    result = run_map(params, JobContext("maplandslides", ctx.options, reporter))
    if job.cog:
        from slidewise.engine.geo.cog import write_cog

        write_cog(probability)
    return result.figures, read_polygons(polygons)


def read_polygons(path: str) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    """The polygons Map landslides wrote (none is fine), their fields and CRS."""
    import pyogrio
    import shapely

    meta, _, wkb, values = pyogrio.raw.read(path)
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    fields = {str(n): np.asarray(v) for n, v in zip(meta["fields"], values, strict=True)}
    return np.asarray(geoms, dtype=object), fields, meta.get("crs")


def kill_after_scenes(committed: int) -> None:
    """The test hook: SIGKILL this process after :data:`KILL_AFTER_SCENES_ENV` scenes."""
    after = os.environ.get(KILL_AFTER_SCENES_ENV)
    if after and committed == int(after):
        os.kill(os.getpid(), signal.SIGKILL)


def finish_run(
    job: SceneJob,
    inventory: Inventory,
    scenes: list[Scene],
    summary: RunSummary,
    ctx: JobContext,
) -> JobResult:
    """The summary in the log, the figures and the outputs.

    Raises:
        InputError: no scene was mapped or skipped (every scene failed).
    """
    options, model = job.options, job.model
    if not summary.mapped and not summary.skipped:
        raise InputError(
            "No scene could be mapped: "
            + "; ".join(f"{name}: {why}" for name, why in summary.failed.items())
        )
    ctx.log(
        f"Scenes: {len(summary.mapped)} mapped, {len(summary.skipped)} skipped (already in the "
        f"inventory), {len(summary.failed)} failed; the inventory holds {len(inventory)} "
        f"polygon(s) from {len(inventory.scenes)} scene(s)."
    )
    if summary.failed:
        ctx.warn(
            "Scenes left out (fix them and run again: the others are skipped): "
            + "; ".join(f"{name}: {why}" for name, why in summary.failed.items())
        )
    figures = {
        "scenes": len(scenes),
        "scenes_mapped": len(summary.mapped),
        "scenes_skipped": len(summary.skipped),
        "scenes_failed": dict(summary.failed),
        "mapped": summary.mapped,
        "skipped": list(summary.skipped),
        "inventory_polygons": len(inventory),
        "inventory_scenes": len(inventory.scenes),
        "polygons_merged": sum(int(f["merged"]) for f in summary.mapped.values()),
    }
    # The manifest hashes the model and the DEM; the scenes (possibly hundreds of large
    # rasters) are recorded by path, size and time in the inventory's table instead.
    return JobResult(
        outputs={"INVENTORY": options.inventory, "OUTPUT_FOLDER": options.output_folder},
        figures=figures,
        inputs=[model.path, *([options.dem] if options.dem else [])],
    )
