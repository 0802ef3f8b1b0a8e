"""Finding torchvision's compiled operator libraries without importing torchvision.

torchvision ships a compiled library that registers the ``torchvision::*``
operators: ``torchvision/_C`` up to 0.28, ``torchvision/_C_stable`` from 0.29,
with an extension suffix such as ``.so``, ``.cpython-311-x86_64-linux-gnu.so``
or ``.pyd``. :func:`find_native_libraries` finds the ones torchvision's loader
(``torchvision/extension.py``) loads, by reading the loader's source;
:func:`is_ops_library` tells whether a path is one of them, whatever its name
(:mod:`slidewise.engine.imagery.tvcompat` skips them while it imports
torchvision over its fallback operators).
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import os
from pathlib import Path

import torch

from slidewise.engine.core.errors import EngineError


class TorchvisionUnavailableError(EngineError):
    """torchvision cannot be imported, or its operators cannot be provided."""


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


def find_native_libraries() -> list[Path]:
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


def is_ops_library(path: str | os.PathLike[str]) -> bool:
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
