"""Where this process stands in a ``torchrun`` launch, read without importing PyTorch.

The worker reads its placement before anything else (a job that is not
data-parallel never needs :mod:`torch.distributed`), so that it can watch its
parent from its first second; :mod:`slidewise.engine.core.distributed` joins
the process group when the placement says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: Environment variables that ``torchrun`` sets for every process it starts.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Placement:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: Global rank (0 is the writer).
        world_size: Number of processes.
        local_rank: Rank on this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def writer(self) -> bool:
        """True for the one process that writes outputs, checkpoints and the protocol."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Placement:
        """The placement ``torchrun`` gave this process (rank 0 of 1 without it)."""
        env = os.environ if environ is None else environ
        if not all(name in env for name in TORCHRUN_VARS):
            return cls()
        return cls(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )


#: Jobs that train data-parallel under ``torchrun``; the others refuse it.
DATA_PARALLEL_JOBS = frozenset({"trainmapping", "addregion", "pretrainencoder", "traindetection"})


#: Outputs every process keeps at the user's path: the job reads them too and
#: lets only the writer write them (a checkpoint is read on resume).
SHARED_OUTPUTS = frozenset({"CHECKPOINT"})


def private_outputs(job_name: str, params: Mapping[str, object], folder: str) -> dict[str, object]:
    """``params`` with every output path moved into ``folder`` (for ranks other than 0).

    Every process runs the same job; only the writer may write the user's
    files, so the others write theirs into a private folder that is removed.
    Outputs in :data:`SHARED_OUTPUTS` keep their path.
    """
    from slidewise.contract.spec import OUTPUTS
    from slidewise.contract.specs import spec_of

    moved = dict(params)
    for param in spec_of(job_name).params:
        value = moved.get(param.name)
        if param.name in SHARED_OUTPUTS:
            continue
        if param.kind in OUTPUTS and isinstance(value, str) and value:
            moved[param.name] = os.path.join(folder, f"{param.name}{os.path.splitext(value)[1]}")
    return moved
