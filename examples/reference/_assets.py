"""Locate files that ship inside installed packages, without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class MissingAssetError(RuntimeError):
    """A package or data file that a reference asset needs is not installed.

    ``install`` is the command that fixes it; ``hint`` repeats it in the form ptsq's CLI prints.
    """

    def __init__(self, what: str, install: str) -> None:
        super().__init__(f"{what} is not installed; install it with: {install}")
        self.what = what
        self.install = install
        self.hint = f"run `{install}`"


def package_dir(package: str, install: str) -> Path:
    """Directory of an installed top-level package, found without executing its ``__init__``."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingAssetError(f"the Python package {package!r}", install)
    return Path(locations[0])


def package_file(package: str, relative: str, install: str) -> Path:
    """Path of ``relative`` inside an installed package; raises MissingAssetError if absent."""
    path = package_dir(package, install) / relative
    if not path.is_file():
        raise MissingAssetError(f"{relative!r} inside the package {package!r}", install)
    return path


def data_file(path: Path, install: str) -> Path:
    """``path`` itself if it exists, else MissingAssetError naming the install command."""
    if not path.is_file():
        raise MissingAssetError(f"the data file {str(path)!r}", install)
    return path
