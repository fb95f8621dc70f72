"""The wheel and the image carry the product only: the ``slogate`` package, never the local
environment (``localenv/``), the benchmarks or the tests, and the product never imports them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = REPO / "operator" / "slogate"
NOT_PRODUCT = frozenset({"localenv", "bench", "tests"})
# Modules of the local environment that must not reappear inside the product under any path.
LOCAL_ONLY = frozenset({"faultproxy", "chaoswebhook", "demo", "demoapp", "controlplane"})
# What a build writes next to the sources, and caches: never part of the copy that is built.
LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def _pip_wheel(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *extra]
    return subprocess.run(
        [*argv, "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def build_wheel(tmp_path: Path) -> Path:
    """The wheel pip builds from a copy of the repository (an in-tree build would leave build/
    and an egg-info behind, and a stale build/ could slip removed modules into the wheel)."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=LEFT_OUT)
    out = tmp_path / "wheels"
    # The dev venv has the build backend (pyproject's build-system); without it, pip fetches
    # it into an isolated environment.
    result = _pip_wheel(source, out, "--no-build-isolation")
    if result.returncode != 0:
        isolated = _pip_wheel(source, out)
        assert isolated.returncode == 0, (
            f"pip wheel failed\n--no-build-isolation:\n{result.stderr}\nisolated:\n"
            f"{isolated.stderr}"
        )
    wheels = list(out.glob("slogate-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_holds_only_the_slogate_package(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
    assert "slogate/__init__.py" in names and "slogate/py.typed" in names
    stray = [
        n
        for n in names
        if n.split("/")[0] != "slogate" and not n.split("/")[0].endswith(".dist-info")
    ]
    assert not stray, f"the wheel carries more than the product: {stray}"
    local = [n for n in names if {*Path(n).parent.parts, Path(n).stem} & (NOT_PRODUCT | LOCAL_ONLY)]
    assert not local, f"local-only modules in the wheel: {local}"


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``, at any depth (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_product_never_imports_the_local_environment_benchmarks_or_tests() -> None:
    sources = sorted(PRODUCT.rglob("*.py"))
    assert len(sources) > 20, "the product package was not found"
    offenders = {
        str(path.relative_to(REPO)): sorted(imports & NOT_PRODUCT)
        for path in sources
        if (imports := imported_modules(path)) & NOT_PRODUCT
    }
    assert not offenders, f"the product imports what does not ship: {offenders}"
    assert not (PRODUCT / "localenv").exists()
