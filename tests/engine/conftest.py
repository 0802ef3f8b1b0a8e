"""Engine tests: shared fixtures, and the helper module made importable (importlib mode)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One PyTorch thread for a test: quicker and steadier on a shared machine; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
