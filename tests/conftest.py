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


def install_crds(cp: ControlPlane) -> None:
    result = cp.kubectl("apply", "--server-side", "-f", str(CRDS))
    assert result.returncode == 0, result.stderr
    waited = cp.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "servicelevelobjectives.slogate.dev",
        "releasegates.slogate.dev",
    )
    assert waited.returncode == 0, waited.stderr


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        install_crds(cp)
        yield cp


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer() as prom:
        yield prom
