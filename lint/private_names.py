"""An import-linter contract: no module imports another module's private (``_name``) functions or classes.

``from ptsq.engines.fx.engine import _capture`` reaches into another module's internals; the name should
be made public (and documented) or the code should move. Private *modules* are the ``private_modules``
contract's business; this one looks at the names imported, lazy imports included.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
from importlinter import Contract, ContractCheck, output


def _package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"cannot find package {name!r}")
    return Path(next(iter(spec.submodule_search_locations)))


def _module_name(root: Path, package: str, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


class PrivateNamesContract(Contract):
    type_name = "private_names"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        violations = []
        for package in sorted(self.session_options["root_packages"]):
            root = _package_root(package)
            for path in sorted(root.rglob("*.py")):
                importer = _module_name(root, package, path)
                tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
                for node in ast.walk(tree):
                    if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                        continue
                    if node.module.split(".")[0] != package or node.module == importer:
                        continue
                    for alias in node.names:
                        name = alias.name
                        private = name.startswith("_") and not name.startswith("__")
                        if private and f"{node.module}.{name}" not in graph.modules:
                            violations.append(f"{importer} imports {node.module}.{name} (line {node.lineno})")
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["violations"]:
            output.print_error(f"- {line}")
        output.new_line()
        output.print("Make the name public (no leading underscore) where it is shared, or move the code.")
