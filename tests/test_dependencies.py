"""Every third-party library our packages import is declared in pyproject.toml (pinned)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"zerosearch_env", "curricula", "agents"}


def imported_top_level_modules() -> dict[str, str]:
    """top-level module name -> one file that imports it, over our three packages."""
    found: dict[str, str] = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def declared_distributions() -> dict[str, str]:
    """normalised distribution name -> its requirement string, from dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    out = {}
    for req in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
        out[re.sub(r"[-_.]+", "-", name).lower()] = req
    return out


def test_installed_imports_are_declared_and_pinned():
    dists = packages_distributions()
    declared = declared_distributions()
    missing, unpinned = [], []
    for module, where in sorted(imported_top_level_modules().items()):
        if module in OURS or module in sys.stdlib_module_names or module not in dists:
            continue  # ours, the standard library, or an optional extra that is not installed here
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in dists[module]}
        hits = names & set(declared)
        if not hits:
            missing.append(f"{module} ({'/'.join(sorted(names))}, imported in {where})")
        elif not any("==" in declared[h] or ">=" in declared[h] for h in hits):
            unpinned.append(module)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert not unpinned, f"declared without a version: {unpinned}"
