"""The CLI stays thin: no module of ``shadow_burnin.cli`` imports ``shadow_burnin.io``
(it parses flags, calls ``app/`` and renders). An import-graph check over the source
tree, every import statement included (module level and inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import shadow_burnin

CLI = Path(shadow_burnin.__file__).parent / "cli"

# Justified exceptions, each to be removed by its owner's change (the test fails when an
# allow-listed module no longer needs its entry, so the list only shrinks):
ALLOWED: dict[str, str] = {}  # module -> why it may import io/ (none needs to today)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = "shadow_burnin.cli"
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against shadow_burnin.cli
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]) if base else ".".join(parts)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def io_imports(path: Path) -> list[str]:
    return [f"{path.name}:{line}: {name}" for line, name in imported_modules(path)
            if name == "shadow_burnin.io" or name.startswith("shadow_burnin.io.")]


def test_no_cli_module_imports_io() -> None:
    files = sorted(CLI.glob("*.py"))
    assert len(files) > 10  # the walk found the package
    bad = [hit for f in files if f.name not in ALLOWED for hit in io_imports(f)]
    assert bad == [], "cli/ must go through app/: " + "; ".join(bad)


def test_the_allow_list_only_holds_modules_that_still_need_it() -> None:
    stale = [name for name in ALLOWED if not (CLI / name).exists()
             or not io_imports(CLI / name)]
    assert stale == [], f"remove from ALLOWED: {stale}"


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import shadow_burnin.io.clock\n"
        "from shadow_burnin.io.log import store\n"
        "from shadow_burnin import io\n"
        "from ..io.http import client\n"
        "def f():\n    from shadow_burnin.io.run.alerts import run_command\n"
        "from shadow_burnin.app import files\n"
        "from shadow_burnin.iox import y\n")
    assert [h.split(": ")[1] for h in io_imports(sample)] == [
        "shadow_burnin.io.clock", "shadow_burnin.io.log", "shadow_burnin.io.log.store",
        "shadow_burnin.io", "shadow_burnin.io.http", "shadow_burnin.io.http.client",
        "shadow_burnin.io.run.alerts", "shadow_burnin.io.run.alerts.run_command"]
