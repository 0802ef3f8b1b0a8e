"""Keep torchvision importable and its detection operators usable.

torchvision ships a compiled library that registers the ``torchvision::*``
operators (``nms``, ``roi_align`` ...): ``torchvision/_C`` up to 0.28,
``torchvision/_C_stable`` (built against torch's stable ABI) from 0.29, with an
extension suffix such as ``.so``, ``.cpython-311-x86_64-linux-gnu.so`` or
``.pyd``. It only loads into a PyTorch build it is compatible with: a CUDA
torchvision wheel next to a CPU torch, or versions that do not match, make
``torch.ops.load_library`` fail, and recent torchvision releases then fail on
``import torchvision`` itself (``RuntimeError: operator torchvision::nms does
not exist``).

:func:`ensure_torchvision_ops` repairs that before torchvision is imported:

1. It finds, without importing torchvision, the compiled libraries that
   torchvision's loader (``torchvision/extension.py``) loads, and loads them
   the same way (:func:`_load_native_ops`; the libraries are found by
   :mod:`slidewise.engine.imagery.tvlibraries`). If any ``torchvision::*`` operator
   then exists, the native library wins entirely: the mode is ``"native"``
   when ``torchvision::nms`` works, and :class:`TorchvisionUnavailableError`
   is raised when it does not (fallback operators are never mixed with native
   ones).
2. Otherwise it defines the ``torchvision::*`` operator schemas itself with
   :class:`torch.library.Library` and registers pure-PyTorch kernels
   (``CompositeExplicitAutograd``, so CPU, CUDA and MPS tensors all work):
   :func:`nms` (:mod:`slidewise.engine.imagery.tvops_nms`), :func:`roi_align`,
   :func:`roi_pool` and the backward operators of the last two
   (:mod:`slidewise.engine.imagery.tvops_roi`). The remaining operators
   (``ps_roi_align``, ``ps_roi_pool``, ``deform_conv2d``, ``qnms``,
   ``qroi_align``, ``box_iou_rotated``) raise
   :class:`NotImplementedError` saying that the native operators are missing.
3. It imports torchvision while ``torch.ops.load_library`` skips every
   operator library of torchvision (whatever its name), so that torchvision
   believes its operators are present and registers its own fake (meta),
   autograd and autocast formulas on top of the fallback kernels, exactly as it
   does for the native library. The mode is ``"fallback"``.

A compiled library that defines an operator schema which already exists
aborts the whole process (the error is thrown from a C++ static initializer),
so step 2 only runs when the native libraries failed to load, and step 3 never
lets one of them load after the fallback schemas are defined.

Only the :class:`torch.library.Library` objects that hold the registrations are
kept at module level; torch.library removes the registrations when they are
garbage collected.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from slidewise.engine.imagery.tvlibraries import (
    TorchvisionUnavailableError,
    find_native_libraries,
    is_ops_library,
)
from slidewise.engine.imagery.tvops_nms import nms
from slidewise.engine.imagery.tvops_roi import (
    roi_align,
    roi_align_backward,
    roi_pool,
    roi_pool_backward,
)

__all__ = [
    "FALLBACK",
    "FALLBACK_OPS",
    "NATIVE",
    "TorchvisionUnavailableError",
    "ensure_torchvision_ops",
    "find_native_libraries",
    "import_torchvision",
    "nms",
    "roi_align",
    "roi_align_backward",
    "roi_pool",
    "roi_pool_backward",
    "torchvision_status",
]

NATIVE = "native"
FALLBACK = "fallback"

_NAMESPACE = "torchvision"

# Schemas of the operators that torchvision's compiled library defines
# (torchvision/csrc/ops/*.cpp, checked against torchvision 0.28 and 0.29). torchvision's
# Python code (_meta_registrations, _autograd_registrations, ops/, extension)
# looks all of them up when it believes the library is loaded.
_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": (
        "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "_roi_align_backward": (
        "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "qroi_align": (
        "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, "
        "float rois_scale, int rois_zero_point, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "roi_pool": (
        "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_roi_pool_backward": (
        "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width) -> Tensor"
    ),
    "ps_roi_align": (
        "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)"
    ),
    "_ps_roi_align_backward": (
        "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
        "float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
        "SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor"
    ),
    "ps_roi_pool": (
        "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_ps_roi_pool_backward": (
        "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
        "float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
        "SymInt channels, SymInt height, SymInt width) -> Tensor"
    ),
    "deform_conv2d": (
        "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
        "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
        "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor"
    ),
    "_deform_conv2d_backward": (
        "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, "
        "Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, "
        "SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
        "SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "box_iou_rotated": "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    "_cuda_version": "_cuda_version() -> int",
}

# Operators with a pure-PyTorch fallback (the others raise NotImplementedError).
FALLBACK_OPS: tuple[str, ...] = (
    "nms",
    "roi_align",
    "_roi_align_backward",
    "roi_pool",
    "_roi_pool_backward",
)

# Libraries that hold the fallback registrations; torch.library unregisters
# them when the objects are garbage collected, so they must stay referenced.
_FALLBACK_LIBRARIES: list[torch.library.Library] = []
_LOCK = threading.RLock()


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def ensure_torchvision_ops() -> str:
    """Make ``torchvision`` importable with working ``torchvision::*`` operators.

    Call it before torchvision is imported anywhere (directly or through
    segmentation-models-pytorch, timm ...). It is idempotent and also safe to
    call after torchvision was imported successfully.

    In fallback mode this function imports torchvision itself, so that
    torchvision registers its autograd, autocast and fake-tensor formulas on
    top of the fallback kernels. In native mode it only loads the compiled
    library (as torchvision's own import would) and leaves the import to the
    caller.

    Returns:
        ``"native"`` when torchvision's compiled operators load and work,
        ``"fallback"`` when the pure-PyTorch operators of this module stand in.

    Raises:
        TorchvisionUnavailableError: torchvision is not installed, was imported
            without its operators before this call, fails to import, or its
            compiled library loads but its operators do not work.
    """
    with _LOCK:
        if _FALLBACK_LIBRARIES:
            _import_with_fallback()
            return FALLBACK
        imported = sys.modules.get("torchvision")
        if imported is not None:
            if _imported_has_ops(imported):
                return NATIVE
            raise TorchvisionUnavailableError(
                "torchvision was imported before ensure_torchvision_ops() and its compiled "
                "operators are missing; call ensure_torchvision_ops() before anything imports "
                "torchvision, or install a torchvision build that matches torch "
                f"{torch.__version__}."
            )
        if _load_native_ops(find_native_libraries()):
            return NATIVE
        _install_fallback()
        _import_with_fallback()
        return FALLBACK


def import_torchvision() -> ModuleType:
    """Import torchvision after :func:`ensure_torchvision_ops`.

    Returns:
        The ``torchvision`` module.

    Raises:
        TorchvisionUnavailableError: See :func:`ensure_torchvision_ops`.
    """
    ensure_torchvision_ops()
    return importlib.import_module("torchvision")


def torchvision_status() -> str:
    """Describe how torchvision's operators are provided (calls the ensure step).

    Returns:
        ``"native"``, ``"fallback"`` or ``"unavailable: <reason>"``.
    """
    try:
        return ensure_torchvision_ops()
    except TorchvisionUnavailableError as exc:
        return f"unavailable: {exc}"


# --------------------------------------------------------------------------
# The native step
# --------------------------------------------------------------------------


def _load_native_ops(libraries: Sequence[Path]) -> bool:
    """Load torchvision's compiled operators (the "native" step).

    Every library is loaded as torchvision's loader does; one that fails is
    skipped. If any ``torchvision::*`` operator exists afterwards, the native
    operators are used entirely: the fallback must never define a schema
    next to (or before) a native library.

    Args:
        libraries: The files found by :func:`find_native_libraries`.

    Returns:
        True when ``torchvision::*`` operators exist and ``torchvision::nms``
        works; False when there are none (the fallback may stand in).

    Raises:
        TorchvisionUnavailableError: ``torchvision::*`` operators exist but
            ``torchvision::nms`` does not work; the fallback cannot replace
            operators that a native library already defined.
    """
    failures: list[str] = []
    for library in libraries:
        try:
            with _dll_directory(library.parent):
                torch.ops.load_library(str(library))
        except (OSError, RuntimeError, ImportError) as exc:
            failures.append(f"{library.name}: {type(exc).__name__}: {exc}")
    defined = _defined_ops()
    if not defined:
        return False
    error = _native_ops_error()
    if error is None:
        return True
    loaded = ", ".join(path.name for path in libraries) or "another library"
    detail = f" (load failures: {'; '.join(failures)})" if failures else ""
    raise TorchvisionUnavailableError(
        f"torchvision's compiled operators were registered (by {loaded}) but "
        f"torchvision::nms does not work: {error}{detail}. The pure-PyTorch fallback cannot "
        "replace operators that a compiled library already defined; install the torchvision "
        f"build that matches torch {torch.__version__}."
    )


def _native_ops_error() -> str | None:
    """Run ``torchvision::nms`` on one box; ``None`` when it works, else the problem."""
    try:
        keep = torch.ops.torchvision.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.ones(1), 0.5)
    except (AttributeError, RuntimeError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if keep.tolist() != [0]:
        return f"nms of one box returned {keep.tolist()} instead of [0]"
    return None


@contextlib.contextmanager
def _dll_directory(directory: Path) -> Iterator[None]:
    """On Windows, let the loader find DLLs next to torchvision (as torchvision does)."""
    if os.name == "nt" and hasattr(os, "add_dll_directory"):
        with os.add_dll_directory(str(directory)):
            yield
    else:
        yield


def _op_exists(name: str) -> bool:
    """Whether ``torchvision::<name>`` is already defined (has a schema)."""
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _defined_ops() -> list[str]:
    """The ``torchvision::*`` operators that are defined (with a schema) right now."""
    names = set(_SCHEMAS)
    all_names = getattr(torch._C, "_dispatch_get_all_op_names", None)
    if callable(all_names):
        prefix = f"{_NAMESPACE}::"
        names.update(
            name[len(prefix) :].split(".", 1)[0] for name in all_names() if name.startswith(prefix)
        )
    return sorted(name for name in names if _op_exists(name))


# --------------------------------------------------------------------------
# The fallback step
# --------------------------------------------------------------------------


def _install_fallback() -> None:
    """Define the ``torchvision::*`` operators with pure-PyTorch kernels.

    Raises:
        TorchvisionUnavailableError: Some ``torchvision::*`` operator is already
            defined (native and fallback operators are never mixed), or the
            registration fails.
    """
    defined = _defined_ops()
    if defined:
        raise TorchvisionUnavailableError(
            f"torchvision operators are already defined ({', '.join(defined)}) but "
            "torchvision's compiled library is not usable; the pure-PyTorch fallback cannot "
            "be mixed with them. Install the torchvision build that matches torch "
            f"{torch.__version__}."
        )
    kernels: dict[str, Callable[..., Any]] = {
        "nms": nms,
        "roi_align": roi_align,
        "_roi_align_backward": roi_align_backward,
        "roi_pool": roi_pool,
        "_roi_pool_backward": roi_pool_backward,
        "_cuda_version": _no_cuda_version,
    }
    library = torch.library.Library(_NAMESPACE, "FRAGMENT")
    try:
        for name, schema in _SCHEMAS.items():
            library.define(schema)
            kernel = kernels.get(name) or _missing_kernel(name)
            library.impl(name, kernel, "CompositeExplicitAutograd")
    except Exception as exc:
        raise TorchvisionUnavailableError(
            f"the fallback torchvision operators could not be registered: {exc}"
        ) from exc
    _FALLBACK_LIBRARIES.append(library)


def _no_cuda_version() -> int:
    """Kernel of ``torchvision::_cuda_version``: no CUDA build of torchvision."""
    return -1


def _missing_kernel(name: str) -> Callable[..., Any]:
    """A kernel for an operator without fallback: it raises NotImplementedError."""

    def kernel(*args: Any) -> Any:
        raise NotImplementedError(
            f"torchvision::{name} needs torchvision's native compiled operators, which are "
            f"missing (they do not load for torch {torch.__version__}); Slidewise only "
            f"provides pure-PyTorch fallbacks for {', '.join(FALLBACK_OPS)}. Install the "
            "torchvision build that matches this torch to use it."
        )

    kernel.__name__ = f"missing_{name}"
    return kernel


@contextlib.contextmanager
def _native_load_skipped() -> Iterator[None]:
    """Make ``torch.ops.load_library`` a no-op for torchvision's operator libraries.

    torchvision decides once, when ``torchvision.extension`` is imported, whether
    its operators exist (by loading its operator library, ``_C`` or
    ``_C_stable`` ...); the fallback operators stand in for that library, so
    every load of one of them (see
    :func:`~slidewise.engine.imagery.tvlibraries.is_ops_library`) is skipped while
    torchvision is imported: a library that defined the same schemas would
    abort the process. Other libraries (torchvision's ``image`` extension ...)
    load as usual.
    """
    ops = torch.ops
    own = vars(ops).get("load_library")
    original = ops.load_library

    def load_library(path: str) -> None:
        if is_ops_library(path):
            return
        original(path)

    ops.load_library = load_library  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del ops.load_library
        else:
            ops.load_library = own  # type: ignore[method-assign]


def _forget_failed_import() -> None:
    """Drop ``torchvision.*`` modules left in ``sys.modules`` by a failed import.

    A failed ``import torchvision`` removes ``torchvision`` itself but keeps the
    submodules that were already executed, among them ``torchvision.extension``
    which has recorded that the operators are missing.
    """
    if "torchvision" in sys.modules:
        return
    for name in [name for name in sys.modules if name.startswith("torchvision.")]:
        del sys.modules[name]


def _imported_has_ops(module: ModuleType) -> bool:
    """Whether an imported torchvision reports its operators as present."""
    extension = getattr(module, "extension", None)
    has_ops = getattr(extension, "_has_ops", None)
    try:
        return bool(has_ops()) if callable(has_ops) else _op_exists("nms")
    except Exception:
        return False


def _import_with_fallback() -> ModuleType:
    """Import torchvision over the fallback operators and check the result."""
    module = sys.modules.get("torchvision")
    if module is None:
        _forget_failed_import()
        try:
            with _native_load_skipped():
                module = importlib.import_module("torchvision")
        except Exception as exc:
            raise TorchvisionUnavailableError(
                "torchvision failed to import even with Slidewise's fallback operators: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    if not _imported_has_ops(module):
        raise TorchvisionUnavailableError(
            "torchvision was imported without its operators (it has no compiled operator "
            "library to stand in for); install the torchvision build that matches torch "
            f"{torch.__version__}."
        )
    try:
        _register_missing_autograd()
    except (AttributeError, RuntimeError) as exc:  # e.g. torch < 2.4: no register_autograd
        raise TorchvisionUnavailableError(
            "the fallback torchvision operators need autograd formulas that this torch "
            f"{torch.__version__} cannot register ({exc}); install the torchvision build "
            "that matches this torch."
        ) from exc
    return module


def _register_missing_autograd() -> None:
    """Register autograd formulas that torchvision did not register itself.

    Recent torchvision releases register them in Python (and so they cover the
    fallback kernels); older ones register them in the compiled library only.
    """
    formulas = (
        ("roi_align", _roi_align_autograd_backward, _roi_align_setup_context),
        ("roi_pool", _roi_pool_autograd_backward, _roi_pool_setup_context),
    )
    for name, backward, setup_context in formulas:
        qualname = f"{_NAMESPACE}::{name}"
        if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Autograd"):
            continue
        torch.library.register_autograd(qualname, backward, setup_context=setup_context)


def _roi_align_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.input_shape = tuple(input.shape)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _roi_align_autograd_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    (rois,) = ctx.saved_tensors
    spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
    grad_input = torch.ops.torchvision._roi_align_backward(
        grad,
        rois,
        spatial_scale,
        pooled_height,
        pooled_width,
        *ctx.input_shape,
        sampling_ratio,
        aligned,
    )
    return grad_input, None, None, None, None, None, None


def _roi_pool_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    input, rois, spatial_scale, pooled_height, pooled_width = inputs
    ctx.save_for_backward(rois, output[1])
    ctx.input_shape = tuple(input.shape)
    ctx.args = (spatial_scale, pooled_height, pooled_width)


def _roi_pool_autograd_backward(
    ctx: Any, grad: torch.Tensor, _grad_argmax: torch.Tensor | None
) -> tuple[Any, ...]:
    rois, argmax = ctx.saved_tensors
    grad_input = torch.ops.torchvision._roi_pool_backward(
        grad, rois, argmax, *ctx.args, *ctx.input_shape
    )
    return grad_input, None, None, None, None
