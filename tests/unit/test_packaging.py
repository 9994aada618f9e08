"""pyproject.toml's extras are the ones the README's install table documents, and the metadata is complete."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_extras() -> list[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| extra | adds |") :].split("\n\n", 1)[0]
    return re.findall(r"^\| `([\w-]+)` \|", table, flags=re.M)


def test_every_extra_is_documented_once_in_the_readme_table():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    documented = _readme_extras()
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == set(extras), f"README table {sorted(documented)} vs pyproject {sorted(extras)}"


def test_project_metadata_is_complete():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for key in ("description", "readme", "requires-python", "license", "keywords", "classifiers", "urls"):
        assert project.get(key), key
    assert project["scripts"]["ptsq"] == "ptsq.cli.main:main"
    assert (ROOT / "src" / "ptsq" / "py.typed").exists()
