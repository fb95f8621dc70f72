"""Where the Go-built binaries (etcd, kube-apiserver, kubectl, helm) live; built when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from localenv.processes import StartupError

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build.sh"
REQUIRED = ("etcd", "kube-apiserver", "kubectl")


def bin_dir() -> Path:
    """The cached bin folder: ``$SLOGATE_BIN_DIR`` if set, else built by ``tools/build.sh``."""
    given = os.environ.get("SLOGATE_BIN_DIR")
    if given:
        path = Path(given)
    elif BUILD_SCRIPT.exists():
        result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StartupError(f"tools/build.sh failed:\n{result.stderr[-4000:]}")
        path = Path(result.stdout.strip().splitlines()[-1])
        os.environ["SLOGATE_BIN_DIR"] = str(path)
    else:
        raise StartupError("set SLOGATE_BIN_DIR to a folder with etcd, kube-apiserver and kubectl")
    missing = [b for b in REQUIRED if not (path / b).is_file()]
    if missing:
        raise StartupError(f"{path} lacks {', '.join(missing)}; run tools/build.sh")
    return path


def tool(name: str) -> str:
    """Path of a binary from the cached bin folder, or (for Debian's tools) from PATH."""
    candidate = bin_dir() / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StartupError(f"{name} not found; `make test` installs it (see Makefile)")
    return found
