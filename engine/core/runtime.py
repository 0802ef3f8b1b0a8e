"""Runtime options shared by every job: device choice, seeds, determinism."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slidewise.engine.core.allocator import reuse_freed_memory
from slidewise.engine.core.errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class RuntimeOptions:
    """Options that every engine job honours.

    Attributes:
        device: ``auto`` (CUDA, then MPS, then CPU), or ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        seed: Seed for Python, NumPy and PyTorch random generators.
        deterministic: Ask PyTorch for deterministic kernels (slower on GPU).
        threads: CPU threads for PyTorch; 0 keeps PyTorch's default.
    """

    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    threads: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RuntimeOptions:
        """Build options from a job's ``options`` object, validating values."""
        data = dict(data or {})
        unknown = set(data) - {"device", "seed", "deterministic", "threads"}
        if unknown:
            raise InputError(
                f"Unknown runtime option(s) {sorted(unknown)}: "
                "use device, seed, deterministic or threads."
            )
        options = cls(
            device=str(data.get("device", "auto")).strip().lower() or "auto",
            seed=int(data.get("seed", 0)),
            deterministic=bool(data.get("deterministic", False)),
            threads=int(data.get("threads", 0)),
        )
        base = options.device.split(":")[0]
        if base not in DEVICE_CHOICES:
            raise InputError(
                f"Unknown device '{options.device}': use one of {', '.join(DEVICE_CHOICES)}."
            )
        return options


def select_device(preference: str = "auto") -> torch.device:
    """Pick the torch device for ``preference``.

    Args:
        preference: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        The device to run on.

    Raises:
        InputError: the requested device is not available on this machine.
    """
    import torch

    preference = (preference or "auto").lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            "Device 'cuda' was requested but this engine has no CUDA GPU: "
            "choose device 'auto' or 'cpu', or install a CUDA build of PyTorch."
        )
    if preference == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise InputError("Device 'mps' was requested but is not available: choose 'auto' or 'cpu'.")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported or importable) PyTorch."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_deterministic(enabled: bool) -> None:
    """Switch PyTorch's deterministic algorithms on or off."""
    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


def apply(options: RuntimeOptions, uses_torch: bool = True) -> None:
    """Apply seeds, determinism and thread count for a job.

    Jobs that use PyTorch also keep freed memory for reuse
    (:func:`slidewise.engine.core.allocator.reuse_freed_memory`): each job runs in
    its own worker process, whose large tensors then skip the page faults of
    fresh memory.
    """
    import numpy as np

    random.seed(options.seed)
    np.random.seed(options.seed % (2**32))
    if not uses_torch:
        return
    reuse_freed_memory()
    seed_everything(options.seed)
    set_deterministic(options.deterministic)
    if options.threads > 0:
        import torch

        torch.set_num_threads(options.threads)
