"""From Prometheus data to a refused rollout and back, with nothing restarted in between.

Prometheus holds 30 days of a service burning its budget at 1.5x; the controller evaluates the
SLO and writes the gate's decision; the webhook refuses a rollout. Then new data arrives (a
burst of good requests that brings the 30-day error ratio back under budget) and the same
rollout is admitted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.objects import deployment, ratio_slo, release_gate
from localenv.prometheus import PrometheusServer, Series
from localenv.roles import ControllerProcess, WebhookProcess
from localenv.synthetic import Phase, counters, story

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "e2e"
RATE = 1000.0


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    cp = control_plane
    now = time.time()
    s = story([Phase(31 * 1440 + 15, RATE, 0.0015)], now + 15 * 60)
    prometheus.backfill(
        counters(
            s,
            "e2e_requests_total",
            {"job": "checkout"},
            error_labels={"code": "500"},
            ok_labels={"code": "200"},
        )
    )
    cp.kubectl("create", "namespace", NS)
    work = tmp_path_factory.mktemp("e2e")
    ctl = ControllerProcess(
        cp.kubeconfig,
        prometheus.url,
        work / "controller.log",
        "--log-format",
        "plain",
        "--namespace",
        NS,
    )
    hook = WebhookProcess(
        cp.kubeconfig, work / "certs", CertificateAuthority("e2e-ca"), work / "webhook.log"
    )
    cp.apply(
        ratio_slo(
            "checkout-availability",
            NS,
            'e2e_requests_total{job="checkout",code="500"}',
            'e2e_requests_total{job="checkout"}',
            evaluation={"interval": "10s"},
        ),
        release_gate("checkout", NS, "checkout", ["checkout-availability"]),
        deployment("checkout", NS, image="shop/checkout:1.0"),
        hook.configuration(),
    )
    try:
        yield {"ctl": ctl, "hook": hook, "story": s, "prometheus": prometheus}
    finally:
        ctl.stop()
        hook.stop()
        cp.kubectl("delete", "validatingwebhookconfiguration", "slogate", "--ignore-not-found")
        for name in ("controller.log", "webhook.log"):
            print(name, Path(work / name).read_text()[-3000:])


def gate_status(cp: ControlPlane) -> dict[str, Any]:
    return dict(cp.get_json("gate", "checkout", "-n", NS).get("status") or {})


def eventually(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def set_image(cp: ControlPlane, image: str, *extra: str) -> Any:
    return cp.kubectl("set", "image", "deployment/checkout", f"main={image}", "-n", NS, *extra)


def test_controller_blocks_gate_and_webhook_refuses(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    cp = control_plane

    def blocked() -> dict[str, Any]:
        st = gate_status(cp)
        assert st.get("decision") == "BLOCK", st
        return st

    st = eventually(blocked)
    assert st["reasons"][0].startswith("checkout-availability: error budget exhausted (-50%)")
    assert st["objectives"][0]["name"] == "checkout-availability"
    assert st["objectives"][0]["budgetRemaining"] == pytest.approx(-0.5, abs=0.02)
    out = cp.kubectl("get", "gate", "-n", NS, check=True).stdout.splitlines()
    assert out[1].split()[:2] == ["checkout", "BLOCK"]

    def refused() -> None:
        result = set_image(cp, "shop/checkout:2.0", "--dry-run=server")
        assert result.returncode != 0, result.stderr
        assert "error budget exhausted (-50%)" in result.stderr

    eventually(refused, timeout=30)


def test_recovery_from_new_data_admits_the_rollout(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    cp = control_plane
    prom: PrometheusServer = world["prometheus"]
    bad, total = world["story"].events(time.time() - 30 * 86400, time.time())
    # Enough good requests in the last minutes to bring 30 days under budget: bad/total < 0.0008
    burst = bad / 0.0008 - total
    start = time.time() - 120
    times = [start + 10 * i for i in range(12 + 90)]  # 2 minutes back, 15 minutes ahead
    values = [0.0] + [burst] * (len(times) - 1)
    prom.backfill(
        [
            Series(
                "e2e_requests_total",
                {"job": "checkout", "code": "200", "instance": "burst"},
                times,
                values,
            )
        ]
    )

    def allowed() -> None:
        st = gate_status(cp)
        assert st.get("decision") == "ALLOW", st

    eventually(allowed, timeout=90)
    result = set_image(cp, "shop/checkout:2.0")
    assert result.returncode == 0, result.stderr
    slo = cp.get_json("slo", "checkout-availability", "-n", NS)["status"]
    assert slo["errorBudget"]["remaining"] > 0
