"""Shared fixtures: the real local control plane and Prometheus, started once per test session.

If a real part cannot start, the fixture raises and every test that needs it errors loudly:
nothing here is skipped or faked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slogate.localenv.controlplane import ControlPlane
from slogate.localenv.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
MANIFESTS = REPO / "tests" / "manifests"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.install_crds(CRDS)
        yield cp


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer() as prom:
        yield prom
