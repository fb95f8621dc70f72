"""API server faults and operator restarts, with the controller and the webhook running.

The controller and the webhook reach kube-apiserver through a TCP proxy (``TcpProxy``) that can
reset every open connection at once: a dropped watch is a real broken TCP stream. A chaos
admission webhook, called by the real API server for status writes of SLOs and gates, turns
chosen writes into real 409 Conflicts. kube-apiserver is restarted on the same port with the
same etcd. The controller is killed with SIGKILL while a Prometheus request of its evaluation is
in flight (Prometheus answers slowly through a fault proxy, so "mid-tick" is observed, not
hoped for).

After each fault, the test changes something (an SLO target, a new gate) and requires both roles
to see it, without any restart: only then is a watch known to be alive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.certs import CertificateAuthority
from localenv.chaoswebhook import ChaosWebhook
from localenv.controlplane import ControlPlane
from localenv.faultproxy import FaultProxy, TcpProxy, kubeconfig_via
from localenv.objects import deployment, release_gate
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess, WebhookProcess
from localenv.synthetic import Phase, Story, counters, story
from tests.integration.faults import (
    apply,
    condition,
    eventually,
    log_problems,
    matrix_row,
    ratio_indicator,
    remove_objects,
    slo_manifest,
)

pytest_plugins = ["tests.integration.reliability_matrix"]
pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "rel-api"
METRIC = "rela_requests_total"
WINDOW_S = 30 * 86400


def ctl_args(prom_url: str) -> tuple[str, ...]:
    return ("--log-format", "plain", "--heartbeat", "10", "--namespace", NS)


class World:
    def __init__(
        self,
        cp: ControlPlane,
        work: Path,
        tcp: TcpProxy,
        prom: FaultProxy,
        chaos: ChaosWebhook,
        stories: dict[str, Story],
    ) -> None:
        self.cp, self.work, self.tcp, self.prom, self.chaos = cp, work, tcp, prom, chaos
        self.stories = stories
        self.kubeconfig = kubeconfig_via(cp, tcp, work / "via-proxy.kubeconfig")
        self.ctl = self.start_controller()
        self.hook = WebhookProcess(
            self.kubeconfig, work / "hook", CertificateAuthority("rel-api"), work / "hook.log"
        )
        self.restarts = 0

    def start_controller(self) -> ControllerProcess:
        log = self.work / f"controller-{time.monotonic_ns()}.log"
        return ControllerProcess(self.kubeconfig, self.prom.url, log, *ctl_args(self.prom.url))


def status(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", NS).get("status") or {})


def slo(name: str, job: str, target: float = 99.9) -> dict[str, Any]:
    return slo_manifest(
        name,
        NS,
        target=target,
        indicator=ratio_indicator(METRIC, job),
        evaluation={"interval": "10s"},
    )


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    cp = control_plane
    now = time.time()
    stories = {
        "a": story([Phase(31 * 1440 + 15, 1000.0, 0.0015)], now + 900),  # burn 1.5: spent
        "b": story([Phase(31 * 1440 + 15, 1000.0, 0.0002)], now + 900),  # burn 0.2
    }
    series = []
    for job, s in stories.items():
        series += counters(
            s, METRIC, {"job": job}, error_labels={"code": "500"}, ok_labels={"code": "200"}
        )
    prometheus.backfill(series)
    cp.kubectl("create", "namespace", NS)
    work = tmp_path_factory.mktemp("rel-api")
    chaos = ChaosWebhook(CertificateAuthority("rel-api-chaos"), work / "chaos")
    apply(
        cp,
        chaos.configuration(
            [
                {
                    "apiGroups": ["slogate.dev"],
                    "apiVersions": ["*"],
                    "operations": ["UPDATE"],
                    "resources": ["servicelevelobjectives/status", "releasegates/status"],
                    "scope": "Namespaced",
                }
            ]
        ),
    )
    with TcpProxy(cp.api_port) as tcp, FaultProxy(prometheus.url) as prom:
        w = World(cp, work, tcp, prom, chaos, stories)
        try:
            config = w.hook.configuration()
            config["metadata"]["name"] = "slogate-rel-api"
            config["webhooks"][0]["namespaceSelector"] = {
                "matchLabels": {"kubernetes.io/metadata.name": NS}
            }
            apply(
                cp,
                slo("exhausted", "a"),
                slo("healthy", "b"),
                slo("doomed", "b"),
                release_gate("checkout", NS, "checkout", ["exhausted"]),
                deployment("checkout", NS, "checkout"),
                config,
            )

            def evaluated() -> None:
                for name in ("exhausted", "healthy", "doomed"):
                    assert condition(status(cp, name), "Ready").get("status") == "True", name

            eventually(evaluated, timeout=60)
            eventually(lambda: _refused(cp, "checkout"), timeout=30)
            yield w
        finally:
            remove_objects(cp, NS)
            w.ctl.stop()
            w.hook.stop()
            chaos.close()
            cp.kubectl(
                "delete",
                "validatingwebhookconfiguration",
                "slogate-rel-api",
                "slogate-chaos",
                "--ignore-not-found",
            )
            for log in sorted(work.glob("*.log")):
                print(log.name, log.read_text()[-3000:])


def _refused(cp: ControlPlane, deployment: str) -> None:
    result = cp.kubectl(
        "set",
        "image",
        f"deployment/{deployment}",
        f"main=x:{time.monotonic_ns()}",
        "-n",
        NS,
        "--dry-run=server",
    )
    assert result.returncode != 0, result.stderr
    assert f"ReleaseGate {NS}/" in result.stderr, result.stderr


def _both_roles_see_changes(w: World, tag: str, timeout: float = 30) -> tuple[float, float]:
    """Change an SLO target (controller must re-evaluate) and add a gate (webhook must enforce
    it); returns how long each role took to show it."""
    cp = w.cp
    target = {"drop": 99.5, "conflict": 99.0, "restart": 99.8}[tag]
    t0 = time.monotonic()
    patched = cp.kubectl(
        "patch",
        "slo",
        "healthy",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"target": target}}),
    )
    assert patched.returncode == 0, patched.stderr
    generation = cp.get_json("slo", "healthy", "-n", NS)["metadata"]["generation"]
    apply(
        cp,
        deployment(f"app-{tag}", NS, f"app-{tag}"),
        release_gate(f"gate-{tag}", NS, f"app-{tag}", ["exhausted"]),
    )

    def controller_saw() -> None:
        st = status(cp, "healthy")
        assert st.get("observedGeneration") == generation, st.get("observedGeneration")
        assert condition(st, "Ready")["status"] == "True"
        budget = 1 - 0.2 * 0.1 / (100 - target)  # burn 0.2 at 99.9 is 0.02% errors
        assert st["errorBudget"]["remaining"] == pytest.approx(budget, abs=0.01)

    eventually(controller_saw, timeout=timeout)
    controller_s = time.monotonic() - t0
    eventually(lambda: _refused(cp, f"app-{tag}"), timeout=timeout)
    webhook_s = time.monotonic() - t0
    return controller_s, webhook_s


@matrix_row(
    "every watch and API connection of the controller and the webhook reset (TCP RST) at once",
    "both reconnect by themselves: a changed SLO target is re-evaluated and a new gate is "
    "enforced, no restart, no crash",
)
def test_dropped_watches_resume(world: World, observe: Callable[[str], None]) -> None:
    w = world
    open_before = w.tcp.open_connections
    dropped = w.tcp.drop()
    assert dropped >= 2, "the roles hold no API connections through the proxy?"
    controller_s, webhook_s = _both_roles_see_changes(w, "drop")
    assert w.ctl.alive() and w.hook.alive()
    assert log_problems(w.ctl) == [] and log_problems(w.hook) == []
    observe(
        f"{dropped} connections reset ({open_before} open); change seen by the controller "
        f"after {controller_s:.1f}s, new gate enforced by the webhook after {webhook_s:.1f}s"
    )


@matrix_row(
    "409 Conflict from the API server on status writes (2 SLO status patches, 2 gate status "
    "patches, via a chaos admission webhook)",
    "the write is retried (SLO: on the next evaluation; gate blockedCount: test-and-set "
    "again at once), the status converges, nothing is counted twice, no crash",
)
def test_status_write_conflicts_are_retried(world: World, observe: Callable[[str], None]) -> None:
    w, cp = world, world.cp

    def slo_status_write(req: dict[str, Any]) -> bool:
        return req["resource"]["resource"] == "servicelevelobjectives" and req["name"] == "healthy"

    w.chaos.fail_next(2, only=slo_status_write)
    controller_s, _ = _both_roles_see_changes(w, "conflict", timeout=45)
    assert w.chaos.remaining == 0 and len(w.chaos.refused) == 2
    assert "status write for rel-api/healthy failed: 409" in w.ctl.log_path.read_text()

    def gate_count() -> int:
        st = cp.get_json("gate", "checkout", "-n", NS).get("status") or {}
        return int(st.get("blockedCount") or 0)

    w.hook.wait_recorded()
    before = gate_count()

    def gate_status_write(req: dict[str, Any]) -> bool:
        return req["resource"]["resource"] == "releasegates" and req["name"] == "checkout"

    w.chaos.fail_next(2, only=gate_status_write)
    blocked = cp.kubectl("set", "image", "deployment/checkout", "main=x:conflict", "-n", NS)
    assert blocked.returncode != 0 and "ReleaseGate rel-api/checkout" in blocked.stderr
    w.hook.wait_recorded()
    assert gate_count() == before + 1
    assert len(w.chaos.refused) == 2
    assert w.ctl.alive() and w.hook.alive()
    assert log_problems(w.ctl) == [] and log_problems(w.hook) == []
    observe(
        f"2 SLO status writes refused with 409, status converged {controller_s:.1f}s after the "
        f"change; 2 gate status writes refused, blockedCount +1 exactly"
    )


@matrix_row(
    "kube-apiserver restarted (same port, same etcd) while the controller and webhook run",
    "both keep running and reconnect by themselves; statuses survive; a changed target is "
    "re-evaluated and a new gate enforced",
)
def test_apiserver_restart(world: World, observe: Callable[[str], None]) -> None:
    w, cp = world, world.cp
    before = {n: status(cp, n) for n in ("exhausted", "healthy")}
    t0 = time.monotonic()
    cp.stop_apiserver()
    time.sleep(3)
    assert w.ctl.alive() and w.hook.alive()
    cp.start_apiserver()
    down_s = time.monotonic() - t0
    # The statuses are still there (etcd is the record).
    for name, st in before.items():
        assert status(cp, name)["errorBudget"] == st["errorBudget"]
    controller_s, webhook_s = _both_roles_see_changes(w, "restart", timeout=60)
    assert w.ctl.alive() and w.hook.alive()
    assert log_problems(w.ctl) == [] and log_problems(w.hook) == []
    observe(
        f"API server away {down_s:.1f}s; afterwards the controller re-evaluated a change in "
        f"{controller_s:.1f}s and the webhook enforced a new gate in {webhook_s:.1f}s"
    )


@matrix_row(
    "kill -9 of the controller while a Prometheus request of its evaluation is in flight; "
    "while it is dead an SLO that carries the finalizer of earlier slogate versions is deleted "
    "(pending), one created, one changed; then a new controller process starts",
    "statuses consistent (observedGeneration = generation, numbers right), the 30-day history "
    "rebuilt from Prometheus with range queries, the old finalizer released so the deletion "
    "completes, the new one evaluated, nothing added to the SLOs (no finalizer), nothing "
    "duplicated (metrics once, BudgetExhausted Event still once)",
)
def test_kill_9_mid_tick_and_restart(world: World, observe: Callable[[str], None]) -> None:
    w, cp = world, world.cp
    w.prom.slow(2.0)
    w.prom.clear()
    assert w.prom.wait_for_requests(1, 30), "no evaluation reached Prometheus"
    deadline = time.monotonic() + 30
    while w.prom.in_flight == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    in_flight = w.prom.in_flight
    w.ctl.kill()
    assert w.ctl.popen.returncode == -9
    # Changes while no controller runs. "doomed" carries the finalizer earlier versions added
    # (kopf's, for an on.delete handler), so its deletion waits for a controller.
    legacy = cp.kubectl(
        "patch",
        "slo",
        "doomed",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"finalizers": ["slogate.dev/finalizer"]}}),
    )
    assert legacy.returncode == 0, legacy.stderr
    deleted = cp.kubectl("delete", "slo", "doomed", "-n", NS, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    assert cp.get_json("slo", "doomed", "-n", NS)["metadata"].get("deletionTimestamp")
    apply(cp, slo("newborn", "a"))
    patched = cp.kubectl(
        "patch",
        "slo",
        "exhausted",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"target": 99.8}}),
    )
    assert patched.returncode == 0
    w.prom.pass_through()
    w.prom.clear()
    t0 = time.monotonic()
    w.ctl = w.start_controller()

    def consistent() -> None:
        names = {i["metadata"]["name"] for i in cp.get_json("slo", "-n", NS)["items"]}
        assert "doomed" not in names, "the deleted SLO is still there"
        assert {"exhausted", "healthy", "newborn"} <= names
        for item in cp.get_json("slo", "-n", NS)["items"]:
            meta, st = item["metadata"], item.get("status") or {}
            assert not meta.get("finalizers"), meta
            assert st.get("observedGeneration") == meta["generation"], meta["name"]
            assert condition(st, "Ready").get("status") == "True", meta["name"]

    eventually(consistent, timeout=40)
    took = time.monotonic() - t0
    at = time.time()
    a = w.stories["a"]
    remaining_a = status(cp, "exhausted")["errorBudget"]["remaining"]
    assert remaining_a == pytest.approx(1 - a.consumed(WINDOW_S, at, 99.8), abs=0.01)
    assert status(cp, "newborn")["errorBudget"]["remaining"] == pytest.approx(
        1 - a.consumed(WINDOW_S, at, 99.9), abs=0.01
    )
    ranges = [r for r in w.prom.recorded() if r.path.endswith("/api/v1/query_range")]
    assert ranges, "the history was not rebuilt from Prometheus"
    events = cp.get_json("events", "-n", NS)["items"]
    exhausted_events = [
        e
        for e in events
        if e["involvedObject"]["name"] == "exhausted" and e["reason"] == "BudgetExhausted"
    ]
    assert len(exhausted_events) == 1
    for name in ("exhausted", "healthy", "newborn"):
        series = w.ctl.metrics_text().count(
            f'slogate_slo_error_budget_remaining{{name="{name}",namespace="{NS}"'
        )
        assert series == 1, name
    assert w.ctl.alive() and log_problems(w.ctl) == []
    observe(
        f"killed with {in_flight} Prometheus request(s) in flight; consistent {took:.1f}s after "
        f"the restart; {len(ranges)} range queries rebuilt the history; the old finalizer "
        "released, the deleted SLO gone"
    )
