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
   the same way (:func:`_load_native_ops`). If any ``torchvision::*`` operator
   then exists, the native library wins entirely: the mode is ``"native"``
   when ``torchvision::nms`` works, and :class:`TorchvisionUnavailableError`
   is raised when it does not (fallback operators are never mixed with native
   ones).
2. Otherwise it defines the ``torchvision::*`` operator schemas itself with
   :class:`torch.library.Library` and registers pure-PyTorch kernels
   (``CompositeExplicitAutograd``, so CPU, CUDA and MPS tensors all work):
   :func:`nms`, :func:`roi_align`, :func:`roi_pool` and the backward operators
   of the last two. The remaining operators (``ps_roi_align``, ``ps_roi_pool``,
   ``deform_conv2d``, ``qnms``, ``qroi_align``, ``box_iou_rotated``) raise
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

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from slidewise.engine.core.errors import EngineError

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

# Elements gathered at once by roi_align / roi_pool (64 MiB of float32).
_GATHER_BUDGET = 1 << 24
# Index/weight entries built at once by roi_align (before the gather).
_TAP_BUDGET = 1 << 22
# nms resolves the greedy order in blocks of this many boxes.
_NMS_BLOCK = 512
# IoU entries computed at once when a block suppresses later boxes.
_NMS_TILE = 1 << 22

_FLT_MAX = float(torch.finfo(torch.float32).max)


class TorchvisionUnavailableError(EngineError):
    """torchvision cannot be imported, or its operators cannot be provided."""


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
        if _load_native_ops(_find_native_libraries()):
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
# Finding torchvision's compiled operator libraries (without importing it)
# --------------------------------------------------------------------------

# Suffixes of compiled libraries on any platform, besides the interpreter's own
# extension suffixes.
_LIBRARY_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
# Functions of torchvision's loader that receive an operator library's name.
_LOADER_CALLS = frozenset({"_load_library", "_get_extension_path"})


def _torchvision_directories() -> list[Path]:
    """The directories of the torchvision package (usually one).

    Raises:
        TorchvisionUnavailableError: torchvision is not installed.
    """
    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError) as exc:
        raise TorchvisionUnavailableError(f"torchvision cannot be located: {exc}") from exc
    if spec is None or not spec.submodule_search_locations:
        raise TorchvisionUnavailableError(
            "torchvision is not installed; install the torchvision release that matches "
            f"torch {torch.__version__}."
        )
    return [Path(location) for location in spec.submodule_search_locations]


def _library_stem(name: str) -> str:
    """``_C_stable`` for ``_C_stable.cpython-311-x86_64-linux-gnu.so``."""
    return name.split(".", 1)[0]


def _is_compiled_library(path: Path) -> bool:
    """Whether a file name looks like a compiled library (``.so``, ``.pyd`` ...)."""
    name = path.name
    suffixes = (*importlib.machinery.EXTENSION_SUFFIXES, *_LIBRARY_SUFFIXES)
    return "." in name and any(name.endswith(suffix) for suffix in suffixes)


def _is_c_stem(stem: str) -> bool:
    """Whether a library name is one of torchvision's ``_C`` family (``_C``, ``_C_stable``)."""
    return stem == "_C" or stem.startswith("_C_")


def _loader_library_names(directory: Path) -> list[str]:
    """Names of the operator libraries that torchvision's ``extension.py`` loads.

    torchvision loads them with ``_load_library("<name>")`` (0.16+) or
    ``_get_extension_path("<name>")`` (older releases); the names are read
    from the source without executing it.

    Args:
        directory: A torchvision package directory.

    Returns:
        The names in the order torchvision loads them; empty when the loader
        cannot be read.
    """
    try:
        tree = ast.parse((directory / "extension.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        first = node.args[0]
        if (
            called in _LOADER_CALLS
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and first.value not in names
        ):
            names.append(first.value)
    return names


def _c_family_files(directory: Path) -> list[Path]:
    """Every ``_C*`` compiled library in a torchvision directory, sorted by name."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [
        entry
        for entry in entries
        if _is_c_stem(_library_stem(entry.name)) and _is_compiled_library(entry)
    ]


def _find_native_libraries() -> list[Path]:
    """Find the compiled operator libraries that torchvision loads, without importing it.

    The names come from torchvision's loader (``_C`` up to 0.28, ``_C_stable``
    from 0.29) and are resolved to files with the same lookup as torchvision's
    ``_get_extension_path`` (the interpreter's extension suffixes). When the
    loader cannot be read, the single ``_C*`` library of the package is used.

    Returns:
        Paths of the libraries in the order torchvision loads them (usually
        one; empty when torchvision was installed without them).

    Raises:
        TorchvisionUnavailableError: torchvision is not installed, or it holds
            several ``_C*`` libraries and its loader does not say which one it
            uses (loading the wrong one would abort the process later).
    """
    loader_details = (
        importlib.machinery.ExtensionFileLoader,
        importlib.machinery.EXTENSION_SUFFIXES,
    )
    found: list[Path] = []
    for directory in _torchvision_directories():
        names = _loader_library_names(directory)
        if not names:
            files = _c_family_files(directory)
            stems = sorted({_library_stem(path.name) for path in files})
            if len(stems) > 1:
                raise TorchvisionUnavailableError(
                    f"torchvision in {directory} holds several compiled operator libraries "
                    f"({', '.join(path.name for path in files)}) and its loader does not say "
                    "which one it uses; remove the stale ones or reinstall torchvision."
                )
            names = stems
        # The same lookup as torchvision's own _get_extension_path().
        finder = importlib.machinery.FileFinder(str(directory), loader_details)
        for name in names:
            library = finder.find_spec(name)
            if library is not None and library.origin:
                found.append(Path(library.origin))
    return found


def _is_ops_library(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one of torchvision's operator libraries (any of its names).

    Those are the ``_C*`` libraries and the libraries named by torchvision's
    loader, inside a torchvision package directory.
    """
    try:
        directories = _torchvision_directories()
    except TorchvisionUnavailableError:
        return False
    target = Path(os.path.realpath(path))
    stem = _library_stem(target.name)
    for directory in directories:
        if os.path.normcase(os.path.realpath(directory)) != os.path.normcase(str(target.parent)):
            continue
        if _is_c_stem(stem) or stem in _loader_library_names(directory):
            return True
    return False


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
        libraries: The files found by :func:`_find_native_libraries`.

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
    every load of one of them (see :func:`_is_ops_library`) is skipped while
    torchvision is imported: a library that defined the same schemas would
    abort the process. Other libraries (torchvision's ``image`` extension ...)
    load as usual.
    """
    ops = torch.ops
    own = vars(ops).get("load_library")
    original = ops.load_library

    def load_library(path: str) -> None:
        if _is_ops_library(path):
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


# --------------------------------------------------------------------------
# Pure-PyTorch operators
# --------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression with torchvision's exact semantics.

    Boxes are visited by decreasing score (ties: lower index first); a box is
    kept unless a kept box before it overlaps it with IoU > ``iou_threshold``.
    The IoU is computed in the boxes' dtype with the same arithmetic as
    torchvision's CPU kernel and compared with the threshold as a double. The
    greedy pass resolves blocks of boxes with vectorised IoU matrices, and only
    the kept boxes of a block are compared with the boxes still in play after it.

    Args:
        boxes: ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` format.
        scores: ``Tensor[N]`` of the same dtype.
        iou_threshold: Boxes whose IoU with a kept box exceeds it are dropped.

    Returns:
        ``int64`` indices of the kept boxes, by decreasing score.

    Raises:
        ValueError: Shapes or dtypes do not fit.
    """
    _require(
        boxes.dim() == 2 and boxes.shape[1] == 4,
        f"boxes should be a Tensor[N, 4], got shape {tuple(boxes.shape)}",
    )
    _require(scores.dim() == 1, f"scores should be a 1d tensor, got {scores.dim()}D")
    _require(
        boxes.shape[0] == scores.shape[0],
        f"boxes and scores should have the same length, got {boxes.shape[0]} and {scores.shape[0]}",
    )
    _require(boxes.dtype == scores.dtype, "boxes should have the same dtype as scores")
    _require(boxes.is_floating_point(), f"boxes should be floating point, got {boxes.dtype}")
    count = boxes.shape[0]
    device = boxes.device
    if count == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    ordered = boxes.index_select(0, order)
    x1, y1, x2, y2 = (ordered[:, k].contiguous() for k in range(4))
    # [5, N]: x1, y1, x2, y2, area of the boxes in score order.
    table = torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)])
    threshold, compare_dtype = _comparable_threshold(iou_threshold, boxes.dtype)

    removed = np.zeros(count, dtype=bool)
    kept: list[int] = []
    for start in range(0, count, _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, count)
        block = table[:, start:stop]
        over = _iou_above(block, block, threshold, compare_dtype).cpu().numpy()
        local_removed = removed[start:stop]  # a view: updates land in `removed`
        newly: list[int] = []
        for i in range(stop - start):
            if local_removed[i]:
                continue
            newly.append(start + i)
            local_removed[i + 1 :] |= over[i, i + 1 :]
        kept.extend(newly)
        alive = np.flatnonzero(~removed[stop:]) + stop
        if not newly or alive.size == 0:
            continue
        rows = table[:, torch.tensor(newly, dtype=torch.int64, device=device)]
        tile = max(1, _NMS_TILE // len(newly))
        for first in range(0, alive.size, tile):
            cols = alive[first : first + tile]
            cols_t = torch.from_numpy(cols).to(device)
            hit = _iou_above(rows, table[:, cols_t], threshold, compare_dtype).any(dim=0)
            removed[cols[hit.cpu().numpy()]] = True
    keep = torch.tensor(kept, dtype=torch.int64, device=device)
    return order.index_select(0, keep)


def _comparable_threshold(iou_threshold: float, dtype: torch.dtype) -> tuple[float, torch.dtype]:
    """A threshold ``f`` and dtype with ``iou > f`` equal to torchvision's comparison.

    torchvision compares the IoU (in the boxes' dtype) with a double threshold.
    For float32/float16 IoUs, ``x > t`` equals ``x > f`` where ``f`` is the
    largest value of that dtype not above ``t``, so no float64 copy is needed.

    Returns:
        ``(f, dtype)``: compare an IoU cast to ``dtype`` with ``f``.
    """
    numpy_types: dict[torch.dtype, type[np.floating[Any]]] = {
        torch.float32: np.float32,
        torch.float16: np.float16,
    }
    numpy_type = numpy_types.get(dtype)
    if numpy_type is None or not np.isfinite(iou_threshold):
        return float(iou_threshold), torch.float64
    value = np.asarray(iou_threshold, dtype=numpy_type)
    if float(value) > iou_threshold:
        value = np.nextafter(value, np.asarray(-np.inf, dtype=numpy_type))
    return float(value), dtype


def _iou_above(
    rows: torch.Tensor, cols: torch.Tensor, threshold: float, compare_dtype: torch.dtype
) -> torch.Tensor:
    """``IoU(rows[:, i], cols[:, j]) > threshold`` as in torchvision's CPU kernel.

    Args:
        rows: ``[5, R]`` x1, y1, x2, y2, area.
        cols: ``[5, C]`` x1, y1, x2, y2, area.
        threshold: From :func:`_comparable_threshold`.
        compare_dtype: From :func:`_comparable_threshold`.

    Returns:
        ``[R, C]`` bool.
    """
    ax1, ay1, ax2, ay2, area_a = (v[:, None] for v in rows)
    bx1, by1, bx2, by2, area_b = (v[None, :] for v in cols)
    inter = torch.minimum(ax2, bx2).sub_(torch.maximum(ax1, bx1)).clamp_(min=0)
    inter.mul_(torch.minimum(ay2, by2).sub_(torch.maximum(ay1, by1)).clamp_(min=0))
    union = (area_a + area_b).sub_(inter)
    iou = inter.div_(union)
    return iou.to(compare_dtype) > threshold


def _check_roi_input(input: torch.Tensor, rois: torch.Tensor, op: str) -> None:
    _require(input.dim() == 4, f"{op}: input should be a Tensor[N, C, H, W]")
    _require(
        rois.dim() == 2 and rois.shape[1] == 5,
        f"{op}: rois must have shape as Tensor[K, 5], got {tuple(rois.shape)}",
    )
    _require(
        input.dtype == rois.dtype,
        f"{op}: expected tensor for input to have the same type as tensor for rois; "
        f"but type {input.dtype} does not equal {rois.dtype}",
    )
    _require(
        input.device == rois.device,
        f"{op}: input and rois should be on the same device, got {input.device} and {rois.device}",
    )


def _axis_taps(
    start: torch.Tensor, bin_size: torch.Tensor, pooled: int, grid: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis for torchvision's roi_align sampling points.

    Sample ``i`` of bin ``p`` sits at ``start + p * bin + (i + 0.5) * bin / grid``.
    Points outside ``[-1, size]`` contribute nothing; others are clamped to
    ``[0, size - 1]`` (torchvision's boundary rule).

    Args:
        start: ``[K]`` roi start along the axis (in feature-map pixels).
        bin_size: ``[K]`` bin size along the axis.
        pooled: Number of output bins along the axis.
        grid: Sampling points per bin along the axis.
        size: Feature-map size along the axis.

    Returns:
        ``(index, weight)``, both ``[K, pooled, grid, 2]``: the low/high pixel
        indices and their weights (zero for points outside the map).
    """
    dtype, device = start.dtype, start.device
    p = torch.arange(pooled, dtype=dtype, device=device)
    i = torch.arange(grid, dtype=dtype, device=device) + 0.5
    coord = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]) + (
        i[None, None, :] * bin_size[:, None, None]
    ) / grid
    valid = (coord >= -1.0) & (coord <= size)  # NaN coordinates are invalid
    coord = coord.clamp(min=0)
    low = coord.to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, size - 1, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    index = torch.stack([low, high], dim=-1).clamp(0, size - 1)
    weight = torch.where(valid[..., None], torch.stack([1.0 - frac, frac], dim=-1), 0.0)
    return index, weight


def _roi_align_taps(
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    height: int,
    width: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Indices and weights of every sampling point, by chunks of rois.

    Yields:
        ``(roi_ids, index, weight, count)``: ``index`` and ``weight`` are
        ``[len(roi_ids) * pooled_height * pooled_width, S]`` (flat positions in a
        ``[N * H * W]`` feature map and bilinear weights, ``S`` taps per bin) and
        ``count`` is the number of sampling points per bin to average over.
    """
    num_rois = rois.shape[0]
    offset = 0.5 if aligned else 0.0
    batch_index = rois[:, 0].to(torch.int64)
    start_w = rois[:, 1] * spatial_scale - offset
    start_h = rois[:, 2] * spatial_scale - offset
    roi_width = (rois[:, 3] * spatial_scale - offset) - start_w
    roi_height = (rois[:, 4] * spatial_scale - offset) - start_h
    if not aligned:
        roi_width = roi_width.clamp(min=1.0)
        roi_height = roi_height.clamp(min=1.0)
    bin_h = roi_height / pooled_height
    bin_w = roi_width / pooled_width

    groups: list[tuple[torch.Tensor, int, int]] = []
    if sampling_ratio > 0:
        all_rois = torch.arange(num_rois, device=rois.device)
        groups.append((all_rois, sampling_ratio, sampling_ratio))
    else:
        # Adaptive sampling: ceil(roi_size / pooled_size) points per bin and axis.
        grid_h = torch.ceil(bin_h).clamp(min=0).to(torch.int64)
        grid_w = torch.ceil(bin_w).clamp(min=0).to(torch.int64)
        pairs = torch.unique(torch.stack([grid_h, grid_w], dim=1), dim=0)
        for gh, gw in pairs.tolist():
            if gh <= 0 or gw <= 0:
                continue  # no sampling point: the output stays zero
            members = torch.nonzero((grid_h == gh) & (grid_w == gw)).squeeze(1)
            groups.append((members, gh, gw))

    bins = pooled_height * pooled_width
    for members, gh, gw in groups:
        taps = gh * gw * 4
        per_chunk = max(1, _TAP_BUDGET // (bins * taps))
        for first in range(0, members.numel(), per_chunk):
            ids = members[first : first + per_chunk]
            k = ids.numel()
            ys, wy = _axis_taps(start_h[ids], bin_h[ids], pooled_height, gh, height)
            xs, wx = _axis_taps(start_w[ids], bin_w[ids], pooled_width, gw, width)
            base = batch_index[ids] * (height * width)
            # [k, PH, PW, gh, 2, gw, 2]; the corner order (y, x) matches
            # torchvision's w1..w4 = (hy*hx, hy*lx, ly*hx, ly*lx).
            index = (
                base[:, None, None, None, None, None, None]
                + ys[:, :, None, :, :, None, None] * width
                + xs[:, None, :, None, None, :, :]
            )
            weight = wy[:, :, None, :, :, None, None] * wx[:, None, :, None, None, :, :]
            yield ids, index.reshape(k * bins, taps), weight.reshape(k * bins, taps), gh * gw


def _weighted_gather(
    source: torch.Tensor, index: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``out[r] = sum_s weight[r, s] * source[index[r, s]]``.

    ``embedding_bag`` does the weighted gather-sum in one fused kernel, without
    materialising the ``[rows, taps, channels]`` gathered values.

    Args:
        source: ``[P, C]`` rows to gather (channels-last feature map).
        index: ``[R, S]`` row indices into ``source``.
        weight: ``[R, S]`` weights, same dtype as ``source``.

    Returns:
        ``[R, C]`` weighted sums.
    """
    return torch.nn.functional.embedding_bag(index, source, per_sample_weights=weight, mode="sum")


def _weighted_scatter(
    target: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, values: torch.Tensor
) -> None:
    """``target[index[r, s]] += weight[r, s] * values[r]`` (the adjoint of the gather).

    On CPU a sparse ``[P, R]`` matrix product does it without materialising the
    ``[R * S, C]`` contributions; elsewhere ``index_add_`` runs over
    memory-bounded chunks (deterministic on CUDA under
    ``torch.use_deterministic_algorithms``).

    Args:
        target: ``[P, C]`` accumulator (channels-last input gradient).
        index: ``[R, S]`` row indices into ``target``.
        weight: ``[R, S]`` weights.
        values: ``[R, C]`` values to spread.
    """
    rows, taps = index.shape
    channels = target.shape[1]
    if target.device.type == "cpu":
        row_ids = torch.arange(rows, device=index.device).repeat_interleave(taps)
        spread = torch.sparse_coo_tensor(
            torch.stack([index.reshape(-1), row_ids]),
            weight.reshape(-1),
            (target.shape[0], rows),
            check_invariants=False,
        )
        target.add_(torch.sparse.mm(spread, values))
        return
    step = max(1, _GATHER_BUDGET // max(1, taps * channels))
    for first in range(0, rows, step):
        idx = index[first : first + step]
        n = idx.shape[0]
        contrib = weight[first : first + n, :, None] * values[first : first + n, None, :]
        target.index_add_(0, idx.reshape(-1), contrib.reshape(n * taps, channels))


def roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """RoI Align with the semantics of ``torch.ops.torchvision.roi_align``.

    Each output bin averages bilinear samples on a ``grid_h x grid_w`` grid
    (``sampling_ratio`` points per axis when > 0, else
    ``ceil(roi_size / pooled_size)``). With ``aligned`` the roi is shifted by
    -0.5 pixel; without it, rois smaller than 1 pixel are enlarged to 1.
    Samples with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` count as 0,
    others are clamped into the map. Vectorised over rois and bins (chunked to
    bound memory).

    Args:
        input: ``Tensor[N, C, H, W]`` feature map.
        rois: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input
            image coordinates, same dtype as ``input``.
        spatial_scale: Factor from roi coordinates to feature-map pixels.
        pooled_height: Output height.
        pooled_width: Output width.
        sampling_ratio: Sampling points per bin and axis; <= 0 for adaptive.
        aligned: Shift the roi by -0.5 pixel (Detectron2 convention).

    Returns:
        ``Tensor[K, C, pooled_height, pooled_width]``.

    Raises:
        ValueError: Shapes, dtypes or devices do not fit.
    """
    _check_roi_input(input, rois, "roi_align")
    batch, channels, height, width = input.shape
    output = input.new_zeros((rois.shape[0], channels, pooled_height, pooled_width))
    if output.numel() == 0 or height == 0 or width == 0:
        return output
    source = input.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    taps = _roi_align_taps(
        rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, height, width
    )
    for ids, index, weight, count in taps:
        pooled = _weighted_gather(source, index, weight) / count
        pooled = pooled.view(ids.numel(), pooled_height, pooled_width, channels)
        output[ids] = pooled.permute(0, 3, 1, 2)
    return output


def roi_align_backward(
    grad: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """Gradient of :func:`roi_align` with respect to its input.

    The kernel of ``torchvision::_roi_align_backward``: every sampling point
    sends ``grad * weight / count`` to its four neighbouring pixels.

    Args:
        grad: ``Tensor[K, C, pooled_height, pooled_width]`` output gradient.
        rois: ``Tensor[K, 5]`` as given to :func:`roi_align`.
        spatial_scale: As given to :func:`roi_align`.
        pooled_height: As given to :func:`roi_align`.
        pooled_width: As given to :func:`roi_align`.
        batch_size: ``N`` of the input.
        channels: ``C`` of the input.
        height: ``H`` of the input.
        width: ``W`` of the input.
        sampling_ratio: As given to :func:`roi_align`.
        aligned: As given to :func:`roi_align`.

    Returns:
        ``Tensor[N, C, H, W]`` input gradient.

    Raises:
        ValueError: ``grad`` and ``rois`` differ in dtype.
    """
    _require(
        grad.dtype == rois.dtype,
        "roi_align backward: expected tensor for grad to have the same type as tensor for "
        f"rois; but type {grad.dtype} does not equal {rois.dtype}",
    )
    grad_source = grad.new_zeros((batch_size * height * width, channels))
    if grad.numel() > 0 and height > 0 and width > 0:
        grad_rows = grad.permute(0, 2, 3, 1)
        taps = _roi_align_taps(
            rois,
            spatial_scale,
            pooled_height,
            pooled_width,
            sampling_ratio,
            aligned,
            height,
            width,
        )
        for ids, index, weight, count in taps:
            values = grad_rows[ids].reshape(-1, channels) / count
            _weighted_scatter(grad_source, index, weight, values)
    return grad_source.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()


def _round_half_away(values: torch.Tensor) -> torch.Tensor:
    """``std::round``: nearest integer, halves away from zero (torch.round: to even)."""
    floor = torch.floor(values)
    frac = values - floor
    up = (frac > 0.5) | ((frac == 0.5) & (values >= 0))
    return torch.where(up, floor + 1, floor)


def roi_pool(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI max pooling with the semantics of ``torch.ops.torchvision.roi_pool``.

    Roi corners are rounded (halves away from zero) to feature-map pixels, the
    ``(end - start + 1)`` extent (at least 1) is split in ``floor``/``ceil`` bins
    clipped to the map; empty bins give 0 and argmax -1.

    Args:
        input: ``Tensor[N, C, H, W]`` feature map.
        rois: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``.
        spatial_scale: Factor from roi coordinates to feature-map pixels.
        pooled_height: Output height.
        pooled_width: Output width.

    Returns:
        ``(output, argmax)``: ``Tensor[K, C, PH, PW]`` maxima and ``int32``
        positions ``h * W + w`` of the maxima in their channel plane.

    Raises:
        ValueError: Shapes, dtypes or devices do not fit.
    """
    _check_roi_input(input, rois, "roi_pool")
    batch, channels, height, width = input.shape
    num_rois = rois.shape[0]
    shape = (num_rois, channels, pooled_height, pooled_width)
    output = input.new_zeros(shape)
    argmax = torch.full(shape, -1, dtype=torch.int32, device=input.device)
    if output.numel() == 0:
        return output, argmax.zero_()
    dtype, device = input.dtype, input.device
    batch_index = rois[:, 0].to(torch.int64)
    corners = _round_half_away(rois[:, 1:] * spatial_scale).to(torch.int64)
    start_w, start_h, end_w, end_h = corners.unbind(1)
    bin_h = (end_h - start_h + 1).clamp(min=1).to(dtype) / pooled_height
    bin_w = (end_w - start_w + 1).clamp(min=1).to(dtype) / pooled_width

    def bounds(
        bin_size: torch.Tensor, start: torch.Tensor, pooled: int, size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.arange(pooled, dtype=dtype, device=device)
        lo = torch.floor(p[None, :] * bin_size[:, None]).to(torch.int64) + start[:, None]
        hi = torch.ceil((p[None, :] + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
        return lo.clamp(0, size), hi.clamp(0, size)

    h_lo, h_hi = bounds(bin_h, start_h, pooled_height, height)  # [K, PH]
    w_lo, w_hi = bounds(bin_w, start_w, pooled_width, width)  # [K, PW]
    h_len = (h_hi - h_lo).clamp(min=0)
    w_len = (w_hi - w_lo).clamp(min=0)
    # Channels-last rows plus one row of -inf that padded window cells point at.
    source = torch.cat(
        [
            input.permute(0, 2, 3, 1).reshape(batch * height * width, channels),
            input.new_full((1, channels), float("-inf")),
        ]
    )
    padding_row = batch * height * width
    for ids in _roi_pool_chunks(h_len, w_len, channels):
        k = ids.numel()
        lo_h, len_h, lo_w, len_w = h_lo[ids], h_len[ids], w_lo[ids], w_len[ids]
        max_h, max_w = int(len_h.max()), int(len_w.max())
        if max_h == 0 or max_w == 0:
            continue  # only empty bins: output 0, argmax -1
        dh = torch.arange(max_h, device=device)
        dw = torch.arange(max_w, device=device)
        rows = lo_h[:, :, None] + dh  # [k, PH, max_h]
        cols = lo_w[:, :, None] + dw  # [k, PW, max_w]
        inside = (dh < len_h[:, :, None])[:, :, None, :, None] & (dw < len_w[:, :, None])[
            :, None, :, None, :
        ]  # [k, PH, PW, max_h, max_w]
        index = (
            (batch_index[ids] * (height * width))[:, None, None, None, None]
            + rows[:, :, None, :, None] * width
            + cols[:, None, :, None, :]
        )
        index = torch.where(inside, index, padding_row)
        values = source.index_select(0, index.reshape(-1))
        values = values.view(k, pooled_height, pooled_width, max_h * max_w, channels)
        best, where = values.max(dim=3)  # first maximum in (h, w) order: [k, PH, PW, C]
        position = (lo_h[:, :, None, None] + torch.div(where, max_w, rounding_mode="floor")) * (
            width
        ) + (lo_w[:, None, :, None] + where % max_w)
        empty = ((len_h == 0)[:, :, None] | (len_w == 0)[:, None, :])[..., None]
        found = best > -_FLT_MAX  # torchvision starts from -FLT_MAX with a strict '>'
        best = torch.where(empty, 0.0, torch.where(found, best, -_FLT_MAX))
        position = torch.where(empty | ~found, -1, position)
        output[ids] = best.permute(0, 3, 1, 2).to(dtype)
        argmax[ids] = position.permute(0, 3, 1, 2).to(torch.int32)
    return output, argmax


def _roi_pool_chunks(
    h_len: torch.Tensor, w_len: torch.Tensor, channels: int
) -> Iterator[torch.Tensor]:
    """Chunks of roi indices whose padded pooling windows fit the gather budget.

    Rois are sorted by window size so that each chunk pads its windows to a
    size close to that of its own rois.

    Args:
        h_len: ``[K, PH]`` bin heights.
        w_len: ``[K, PW]`` bin widths.
        channels: Feature channels.

    Yields:
        ``int64`` roi indices.
    """
    max_h = h_len.amax(dim=1)
    max_w = w_len.amax(dim=1)
    order = torch.argsort(max_h * max_w)
    sizes_h = max_h[order].tolist()
    sizes_w = max_w[order].tolist()
    bins = h_len.shape[1] * w_len.shape[1]
    first = 0
    chunk_h = chunk_w = 0
    for i, (size_h, size_w) in enumerate(zip(sizes_h, sizes_w, strict=True)):
        new_h, new_w = max(chunk_h, size_h), max(chunk_w, size_w)
        if i > first and (i - first + 1) * bins * new_h * new_w * channels > _GATHER_BUDGET:
            yield order[first:i]
            first, new_h, new_w = i, size_h, size_w
        chunk_h, chunk_w = new_h, new_w
    yield order[first:]


def roi_pool_backward(
    grad: torch.Tensor,
    rois: torch.Tensor,
    argmax: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> torch.Tensor:
    """Gradient of :func:`roi_pool`: each bin's gradient goes to its argmax pixel.

    Args:
        grad: ``Tensor[K, C, PH, PW]`` output gradient.
        rois: ``Tensor[K, 5]`` as given to :func:`roi_pool`.
        argmax: The argmax returned by :func:`roi_pool`.
        spatial_scale: Unused (kept for the operator's signature).
        pooled_height: Unused (kept for the operator's signature).
        pooled_width: Unused (kept for the operator's signature).
        batch_size: ``N`` of the input.
        channels: ``C`` of the input.
        height: ``H`` of the input.
        width: ``W`` of the input.

    Returns:
        ``Tensor[N, C, H, W]`` input gradient.

    Raises:
        ValueError: ``grad`` and ``rois`` differ in dtype.
    """
    _require(
        grad.dtype == rois.dtype,
        f"roi_pool backward: grad and rois must have the same dtype, got {grad.dtype} and "
        f"{rois.dtype}",
    )
    grad_input = grad.new_zeros((batch_size * channels * height * width,))
    if grad.numel() > 0:
        batch_index = rois[:, 0].to(torch.int64)
        channel = torch.arange(channels, device=grad.device)
        plane = (batch_index[:, None] * channels + channel[None, :]) * (height * width)
        position = argmax.to(torch.int64)
        valid = position != -1
        flat = plane[:, :, None, None] + position
        grad_input.index_add_(0, flat[valid], grad[valid])
    return grad_input.view(batch_size, channels, height, width)
