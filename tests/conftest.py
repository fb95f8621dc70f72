"""Shared fixtures: the real local control plane and Prometheus, started once per test session.

If a real part cannot start, the fixture raises and every test that needs it errors loudly:
nothing here is skipped or faked.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from localenv.controlplane import ControlPlane
from localenv.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
MANIFESTS = REPO / "tests" / "manifests"


def third_party_crds() -> Path:
    """The directory ``tools/crds.sh`` fills with CRDs taken from their projects' Go modules
    (the Prometheus Operator's PrometheusRule); ``make test`` passes it as SLOGATE_CRD_DIR."""
    given = os.environ.get("SLOGATE_CRD_DIR")
    if given:
        return Path(given)
    done = subprocess.run(
        [str(REPO / "tools" / "crds.sh")], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip())


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.install_crds(CRDS)
        yield cp


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer() as prom:
        yield prom
