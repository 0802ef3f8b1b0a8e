"""Run manifests: a JSON record written next to a job's outputs."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from slidewise.engine.core.outputs import atomic_output

TRACKED_PACKAGES = (
    "slidewise",
    "numpy",
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "timm",
    "safetensors",
    "rasterio",
    "h5py",
    "scikit-learn",
    "scikit-image",
    "scipy",
    "matplotlib",
    "pyflwdir",
    "numba",
    "pyogrio",
    "shapely",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when a package is absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(paths: list[str]) -> dict[str, str | None]:
    """Hashes of input files; folders are hashed file by file in sorted order."""
    hashes: dict[str, str | None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            hashes[str(path)] = file_sha256(path)
        elif path.is_dir():
            digest = hashlib.sha256()
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(str(child.relative_to(path)).encode())
                digest.update(file_sha256(child).encode())
            hashes[str(path)] = "dir:" + digest.hexdigest()
        else:
            hashes[str(path)] = None
    return hashes


def build_manifest(
    algorithm: str,
    parameters: dict[str, Any],
    inputs: list[str],
    outputs: dict[str, str],
    device: str,
    seed: int,
    started: float,
    figures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the manifest record of a finished run."""
    return {
        "algorithm": algorithm,
        "parameters": parameters,
        "inputs": input_hashes(inputs),
        "outputs": outputs,
        "figures": figures or {},
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "seed": seed,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 3),
    }


def write_manifest(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` as pretty JSON to ``path`` atomically."""
    from slidewise.engine.core.protocol import json_safe

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n")
    return Path(path)
