"""The import contracts in pyproject.toml ([tool.importlinter]) hold: the layers of slogate, a
core without I/O libraries or anything of slogate outside it, and roles that do not import each
other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The venv's own script, so the contracts are checked against the slogate this venv imports.
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contracts_are_kept() -> None:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the dev extras"
    result = subprocess.run(
        # No cache: it would be written into the repository (.import_linter_cache).
        [str(LINT_IMPORTS), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"lint-imports failed\n{result.stdout}\n{result.stderr}"
