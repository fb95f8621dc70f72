"""Two controllers with kopf peering: exactly one evaluates and writes; the other takes over."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.controlplane import ControlPlane
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess
from localenv.synthetic import Phase, counters, story

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "ha"
PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Cluster",
        "names": {
            "kind": "ClusterKopfPeering",
            "plural": "clusterkopfpeerings",
            "singular": "clusterkopfpeering",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def apply(cp: ControlPlane, *docs: dict[str, Any]) -> None:
    cp.apply(*docs)


@pytest.fixture(scope="module")
def setup(control_plane: ControlPlane, prometheus: PrometheusServer) -> None:
    cp = control_plane
    apply(cp, PEERING_CRD)
    cp.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/clusterkopfpeerings.kopf.dev",
        check=True,
    )
    apply(
        cp,
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "slogate-ha"},
        },
    )
    s = story([Phase(31 * 1440 + 30, 1000, 0.0002)], time.time() + 30 * 60)
    prometheus.backfill(
        counters(
            s,
            "ha_requests_total",
            {"job": "ha"},
            error_labels={"code": "500"},
            ok_labels={"code": "200"},
        )
    )
    cp.kubectl("create", "namespace", NS)
    apply(
        cp,
        {
            "apiVersion": "slogate.dev/v1alpha1",
            "kind": "ServiceLevelObjective",
            "metadata": {"name": "ha", "namespace": NS},
            "spec": {
                "service": "ha",
                "target": 99.9,
                "evaluation": {"interval": "10s"},
                "indicator": {
                    "ratio": {
                        "errors": 'ha_requests_total{code="500"}',
                        "total": "ha_requests_total",
                    }
                },
            },
        },
    )


def evaluations(ctl: ControllerProcess) -> float:
    return ctl.metric("slogate_evaluations_total")


def wait_for(check: Any, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture
def pair(
    control_plane: ControlPlane, prometheus: PrometheusServer, setup: None, tmp_path: Path
) -> Iterator[tuple[ControllerProcess, ControllerProcess]]:
    def start(name: str, priority: int) -> ControllerProcess:
        return ControllerProcess(
            control_plane.kubeconfig,
            prometheus.url,
            tmp_path / name,
            "--peering",
            "slogate-ha",
            "--priority",
            str(priority),
            "--log-format",
            "plain",
            "--namespace",
            NS,
        )

    a = start("a.log", 200)
    b = start("b.log", 100)
    try:
        yield a, b
    finally:
        for proc in (a, b):
            proc.stop()
        for name in ("a.log", "b.log"):
            print(name, (tmp_path / name).read_text()[-1500:])


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_one_active_and_takeover(
    pair: tuple[ControllerProcess, ControllerProcess], how: str
) -> None:
    a, b = pair
    wait_for(lambda: evaluations(a) > 0, 60)
    time.sleep(12)  # more than one evaluation interval: the standby must stay idle
    assert evaluations(a) >= 2
    assert evaluations(b) == 0
    assert b.metric("slogate_status_writes_total") == 0
    assert a.metric("slogate_controller_active") == 1
    assert b.metric("slogate_controller_active") == 0
    if how == "sigkill":
        a.kill()
    else:
        a.popen.send_signal(signal.SIGTERM)
    took = wait_for(lambda: evaluations(b) > 0, 90)
    assert b.metric("slogate_controller_active") == 1
    print(f"\ntakeover after {how} of the active controller: {took:.1f} s")
    # kill -9: the peer's lease (30 s) must lapse; SIGTERM: kopf withdraws it at once.
    assert took < (45 if how == "sigkill" else 15)
