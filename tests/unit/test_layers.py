"""The layering, enforced: only the edge imports fabric, invoke or paramiko.

Read from the source with ast (every import statement, also those inside functions and under
TYPE_CHECKING), so a lazy import counts as much as one at the top. A module that imports an
edge module is on the edge too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import labhop

ROOT = Path(labhop.__file__).parent
FORBIDDEN = {"fabric", "invoke", "paramiko"}

# The modules allowed to reach Fabric: they run things, connect, or are the tasks themselves.
EDGE = {
    "labhop.program", "labhop.commands", "labhop.actions", "labhop.cli", "labhop.executor", "labhop.fleet",
    "labhop.report", "labhop.ssh.connect", "labhop.ssh.faults", "labhop.ssh.hostkeys", "labhop.ssh.tcp",
    "labhop.ssh.runner", "labhop.ssh.login", "labhop.ssh.sessions", "labhop.ssh.sshconfig",
    "labhop.tunnel.forward", "labhop.tunnel.opener", "labhop.slurm.run",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["labhop", *parts])


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported_by(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, relative imports resolved against its package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in MODULES)
    return found


def fabric_users() -> dict[str, str]:
    """Module -> what makes it one (a forbidden import, or an import of such a module)."""
    graph = {name: imported_by(name, path) for name, path in MODULES.items()}
    why = {name: sorted(i for i in imports if i.split(".")[0] in FORBIDDEN)[0]
           for name, imports in graph.items() if any(i.split(".")[0] in FORBIDDEN for i in imports)}
    grew = True
    while grew:
        grew = False
        for name, imports in graph.items():
            via = sorted(i for i in imports if i in why)
            if name not in why and via:
                why[name], grew = via[0], True
    return why


def test_the_walk_sees_the_imports_it_must() -> None:
    assert len(MODULES) > 40
    assert "fabric" in imported_by("labhop.ssh.connect", MODULES["labhop.ssh.connect"])
    assert "paramiko" in imported_by("labhop.ssh.faults", MODULES["labhop.ssh.faults"])  # inside a function
    assert "labhop.tunnel.supervise" in imported_by("labhop.tunnel.records", MODULES["labhop.tunnel.records"])
    assert "labhop.errors" in imported_by("labhop.plan", MODULES["labhop.plan"])


def test_only_the_edge_imports_fabric_invoke_or_paramiko() -> None:
    outside = {name: why for name, why in fabric_users().items() if name not in EDGE}
    assert not outside, f"pure modules reaching Fabric (module: the import that does it): {outside}"


def test_the_pure_layer_imports_without_fabric() -> None:
    pure = sorted(set(MODULES) - EDGE - {"labhop.remote.loader"})  # loader.py is a script (stdin, argv)
    code = ("import importlib, sys\n"
            f"for name in {pure!r}: importlib.import_module(name)\n"
            f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
            "print(loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
