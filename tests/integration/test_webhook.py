"""The admission webhook, called by the real kube-apiserver over TLS.

SLO statuses are written here directly (as the controller would), so each case states exactly
what the gate sees; tests/integration/test_gate_e2e.py covers the path from Prometheus data
through the controller to the webhook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.objects import (
    deployment,
    fresh_slo_status,
    ratio_slo,
    release_gate,
    replicaset,
)
from localenv.roles import WebhookProcess
from slogate.core.timetext import rfc3339

pytestmark = pytest.mark.cluster

NS = "gated"


def now_rfc3339(offset_s: float = 0) -> str:
    return rfc3339(time.time() + offset_s)


def slo_status(remaining: float, risk: str, burn1h: float, firing: list[str]) -> dict[str, Any]:
    return fresh_slo_status(remaining, risk, burn1h, firing)


def set_status(cp: ControlPlane, name: str, status: dict[str, Any], namespace: str = NS) -> None:
    body = [{"op": "add", "path": "/status", "value": status}]
    cp.kubectl(
        "patch",
        "slo",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(body),
        check=True,
    )


def slo(name: str, namespace: str = NS) -> dict[str, Any]:
    return ratio_slo(name, namespace, "e_total", "t_total")


def gate(name: str, app: str, objective: str, namespace: str = NS, **spec: Any) -> dict[str, Any]:
    return release_gate(name, namespace, app, [objective], **spec)


def apply(cp: ControlPlane, *docs: dict[str, Any]) -> None:
    cp.apply(*docs)


def set_image(
    cp: ControlPlane,
    name: str,
    image: str,
    *extra: str,
    kubeconfig: Path | None = None,
    namespace: str = NS,
) -> Any:
    return cp.kubectl(
        "set",
        "image",
        f"deployment/{name}",
        f"main={image}",
        "-n",
        namespace,
        *extra,
        kubeconfig=kubeconfig,
    )


def install(cp: ControlPlane, hook: WebhookProcess, failure_policy: str = "Ignore") -> None:
    apply(cp, hook.configuration(failure_policy))


def wait_until_called(cp: ControlPlane, hook: WebhookProcess) -> None:
    """A new webhook configuration takes about a second to reach the API server."""
    deadline = time.monotonic() + 30
    before = hook.metric("slogate_admission_decisions_total")
    while time.monotonic() < deadline:
        set_image(cp, "probe", f"shop/probe:{time.monotonic_ns()}", "--dry-run=server")
        if hook.metric("slogate_admission_decisions_total") > before:
            return
        time.sleep(0.3)
    raise AssertionError("the API server never called the webhook")


@pytest.fixture(scope="module")
def hook(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookProcess]:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    apply(cp, slo("spent"), slo("fine"), slo("risky"))
    set_status(cp, "spent", slo_status(-0.29, "FREEZE", 3.2, ["page-fast"]))
    set_status(cp, "fine", slo_status(0.8, "SAFE", 0.2, []))
    set_status(cp, "risky", slo_status(0.3, "DANGER", 3.5, ["ticket-fast"]))
    apply(
        cp,
        gate("checkout", "checkout", "spent"),
        gate("cart", "cart", "fine"),
        gate("warnonly", "search", "spent", enforcement="Warn"),
        gate("dryrun", "ads", "spent", enforcement="DryRun"),
        gate("danger", "pay", "risky"),
        *(
            deployment(name, NS)
            for name in ("checkout", "cart", "search", "ads", "pay", "other", "probe")
        ),
    )
    work = tmp_path_factory.mktemp("webhook")
    ca = CertificateAuthority("slogate-webhook-test-ca")
    proc = WebhookProcess(cp.kubeconfig, work / "certs", ca, work / "webhook.log")
    install(cp, proc)
    wait_until_called(cp, proc)
    try:
        yield proc
    finally:
        proc.stop()
        cp.kubectl("delete", "validatingwebhookconfiguration", "slogate", "--ignore-not-found")
        print(Path(work / "webhook.log").read_text()[-4000:])


def gate_status(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(cp.get_json("gate", name, "-n", NS).get("status") or {})


def eventually(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_exhausted_budget_refuses_rollout_with_actionable_message(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    result = set_image(control_plane, "checkout", "shop/checkout:1.8")
    assert result.returncode != 0
    msg = result.stderr
    assert "denied the request" in msg
    assert "ReleaseGate gated/checkout" in msg
    assert "spent: error budget exhausted (-29%)" in msg
    assert "burning 3.2x over 1h" in msg
    assert "kubectl annotate deployment/checkout -n gated --overwrite slogate.dev/override=" in msg
    assert "slogate.dev/override-until=" in msg
    image = control_plane.get_json("deployment", "checkout", "-n", NS)["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    assert image == "shop/app:1.0"


def test_block_is_recorded_in_gate_status_and_events(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    hook.wait_recorded()  # earlier tests' refusals are written in the webhook's next batch
    before = gate_status(control_plane, "checkout").get("blockedCount") or 0
    assert set_image(control_plane, "checkout", "shop/checkout:1.9").returncode != 0

    def recorded() -> dict[str, Any]:
        st = gate_status(control_plane, "checkout")
        assert (st.get("blockedCount") or 0) == before + 1
        return st

    st = eventually(recorded)
    assert st["lastBlocked"]["workload"] == "deployment/checkout"
    assert st["lastBlocked"]["user"] == "slogate-admin"
    assert st["lastBlocked"]["image"] == "shop/checkout:1.9"
    events = control_plane.get_json("events", "-n", NS)["items"]
    reasons = {
        (e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"]) for e in events
    }
    assert ("Deployment", "checkout", "RolloutBlocked") in reasons
    assert ("ReleaseGate", "checkout", "RolloutBlocked") in reasons


def test_scale_and_metadata_changes_are_allowed(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    scaled = control_plane.kubectl("scale", "deployment/checkout", "-n", NS, "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr
    patched = control_plane.kubectl(
        "patch",
        "deployment",
        "checkout",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec": {"replicas": 2}}',
    )
    assert patched.returncode == 0, patched.stderr
    labelled = control_plane.kubectl(
        "label", "deployment/checkout", "-n", NS, "tier=web", "--overwrite"
    )
    assert labelled.returncode == 0, labelled.stderr


def test_unmatched_deployment_is_allowed(control_plane: ControlPlane, hook: WebhookProcess) -> None:
    result = set_image(control_plane, "other", "shop/other:2.0")
    assert result.returncode == 0, result.stderr


def test_healthy_gate_allows(control_plane: ControlPlane, hook: WebhookProcess) -> None:
    result = set_image(control_plane, "cart", "shop/cart:2.0")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr


def test_rollback_to_existing_replicaset_is_allowed(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    cp = control_plane
    dep = cp.get_json("deployment", "checkout", "-n", NS)
    # No controller-manager runs here, so make the ReplicaSet of an earlier revision ourselves,
    # as the Deployment controller (the webhook refuses hand-made ones of gated Deployments).
    rs = replicaset(dep, "shop/checkout:1.7", "abc123")
    cp.apply(rs, kubeconfig=cp.controller_kubeconfig)
    assert set_image(cp, "checkout", "shop/checkout:1.6").returncode != 0  # not a rollback
    result = set_image(cp, "checkout", "shop/checkout:1.7")
    assert result.returncode == 0, result.stderr
    assert "rollback to an existing ReplicaSet" in result.stderr
    assert set_image(cp, "checkout", "shop/app:1.0").returncode != 0  # no RS for 1.0


def test_rollback_is_answered_from_the_replicaset_index(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    """Once the webhook's watch holds the ReplicaSet of the Deployment's current template, its
    index alone answers the rollback check: no LIST of ReplicaSets on the refusal path."""
    cp = control_plane
    apply(cp, deployment("shipping", NS, image="shop/shipping:3.0"))
    dep = cp.get_json("deployment", "shipping", "-n", NS)
    apply(cp, gate("shipping", "shipping", "spent"))
    current = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    cp.apply(
        replicaset(dep, current, "cur111"),
        replicaset(dep, "shop/shipping:2.0", "old222"),
        kubeconfig=cp.controller_kubeconfig,
    )

    def checks(source: str) -> float:
        return hook.metric("slogate_rollback_checks_total", source=source)

    # Server-side dry runs get the true answer and change nothing, so they can be repeated
    # until the webhook's watch has caught up.
    def refused_from_index() -> None:
        before = checks("index")
        result = set_image(cp, "shipping", "shop/shipping:3.1", "--dry-run=server")
        assert result.returncode != 0 and "ReleaseGate gated/shipping" in result.stderr
        assert checks("index") == before + 1

    eventually(refused_from_index)  # the gate and both ReplicaSets reach the webhook's indexes
    api_before = checks("api")
    result = set_image(cp, "shipping", "shop/shipping:2.0")
    assert result.returncode == 0, result.stderr
    assert "rollback to an existing ReplicaSet" in result.stderr
    assert checks("api") == api_before

    # A ReplicaSet deleted from the cluster leaves the index: 3.0 is then no rollback target.
    cp.kubectl("delete", "replicaset", "shipping-cur111", "-n", NS, check=True)

    def forgotten() -> None:
        result = set_image(cp, "shipping", current, "--dry-run=server")
        assert result.returncode != 0 and "ReleaseGate gated/shipping" in result.stderr

    eventually(forgotten)


def test_dry_run_is_answered_truthfully_and_not_recorded(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    hook.wait_recorded()
    before = gate_status(control_plane, "checkout").get("blockedCount") or 0
    result = set_image(control_plane, "checkout", "shop/checkout:2.0", "--dry-run=server")
    assert result.returncode != 0
    assert "ReleaseGate gated/checkout" in result.stderr
    time.sleep(1.5)  # more than one batch: a wrongly kept record would be written by now
    hook.wait_recorded()
    assert (gate_status(control_plane, "checkout").get("blockedCount") or 0) == before


def test_warn_mode_admits_with_warning(control_plane: ControlPlane, hook: WebhookProcess) -> None:
    result = set_image(control_plane, "search", "shop/search:2.0")
    assert result.returncode == 0, result.stderr
    assert "Warning: slogate: ReleaseGate gated/warnonly (Warn mode) would block" in result.stderr


def test_dryrun_mode_admits_and_records(control_plane: ControlPlane, hook: WebhookProcess) -> None:
    result = set_image(control_plane, "ads", "shop/ads:2.0")
    assert result.returncode == 0, result.stderr
    assert "(DryRun mode) would block" in result.stderr

    def recorded() -> None:
        st = gate_status(control_plane, "dryrun")
        assert st.get("lastBlocked", {}).get("dryRun") is True
        assert st["lastBlocked"]["image"] == "shop/ads:2.0"

    eventually(recorded)


def test_warn_decision_uses_warnings(control_plane: ControlPlane, hook: WebhookProcess) -> None:
    result = set_image(control_plane, "pay", "shop/pay:2.0")
    assert result.returncode == 0, result.stderr
    assert "Warning: slogate: ReleaseGate gated/danger warns: risky:" in result.stderr


@pytest.fixture(scope="module")
def users(
    control_plane: ControlPlane, hook: WebhookProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    cp = control_plane
    work = tmp_path_factory.mktemp("users")
    apply(
        cp,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "deployer", "namespace": NS},
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments"],
                    "verbs": ["get", "list", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "slogate-overrider-test"},
            "rules": [
                {"apiGroups": ["slogate.dev"], "resources": ["releasegates"], "verbs": ["override"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "deployers", "namespace": NS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "deployer",
            },
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "overriders", "namespace": NS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "slogate-overrider-test",
            },
            "subjects": [{"kind": "User", "name": "alice"}],
        },
    )
    return {u: cp.write_kubeconfig(work / f"{u}.kubeconfig", u) for u in ("alice", "bob")}


def override_patch(cp: ControlPlane, user: Path, image: str, reason: str, until: str) -> Any:
    patch = {
        "metadata": {
            "annotations": {"slogate.dev/override": reason, "slogate.dev/override-until": until}
        },
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}},
    }
    return cp.kubectl(
        "patch",
        "deployment",
        "checkout",
        "-n",
        NS,
        "--type=strategic",
        "-p",
        json.dumps(patch),
        kubeconfig=user,
    )


def test_authorised_override_is_admitted_and_recorded(
    control_plane: ControlPlane, users: dict[str, Path]
) -> None:
    result = override_patch(
        control_plane, users["alice"], "shop/checkout:hotfix", "INC-42 hotfix", now_rfc3339(3600)
    )
    assert result.returncode == 0, result.stderr
    assert "override by alice" in result.stderr

    def recorded() -> None:
        st = gate_status(control_plane, "checkout")
        assert st.get("lastOverride", {}).get("user") == "alice"
        assert st["lastOverride"]["reason"] == "INC-42 hotfix"

    eventually(recorded)
    events = control_plane.get_json("events", "-n", NS)["items"]
    assert any(e["reason"] == "GateOverridden" and "alice" in e["message"] for e in events)


def test_unauthorised_override_is_refused(
    control_plane: ControlPlane, users: dict[str, Path]
) -> None:
    result = override_patch(
        control_plane, users["bob"], "shop/checkout:bob", "I want to", now_rfc3339(3600)
    )
    assert result.returncode != 0
    assert "bob may not 'override' releasegate gated/checkout" in result.stderr


def test_expired_override_is_refused(control_plane: ControlPlane, users: dict[str, Path]) -> None:
    result = override_patch(
        control_plane, users["alice"], "shop/checkout:late", "too late", now_rfc3339(-60)
    )
    assert result.returncode != 0
    assert "the override expired at" in result.stderr


def test_override_beyond_max_duration_is_refused(
    control_plane: ControlPlane, users: dict[str, Path]
) -> None:
    result = override_patch(
        control_plane, users["alice"], "shop/checkout:long", "long", now_rfc3339(6 * 3600)
    )
    assert result.returncode != 0
    assert "gated/checkout allows at most 4h" in result.stderr


def test_recovery_admits_the_same_rollout_without_restart(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    cp = control_plane
    # Close alice's override window first (a metadata-only change, always allowed).
    cleared = cp.kubectl(
        "annotate",
        "deployment/checkout",
        "-n",
        NS,
        "slogate.dev/override-",
        "slogate.dev/override-until-",
    )
    assert cleared.returncode == 0, cleared.stderr
    assert set_image(cp, "checkout", "shop/checkout:3.0").returncode != 0
    set_status(cp, "spent", slo_status(0.4, "SAFE", 0.3, []))

    def admitted() -> None:
        result = set_image(cp, "checkout", "shop/checkout:3.0", "--dry-run=server")
        assert result.returncode == 0, result.stderr

    eventually(admitted)
    assert set_image(cp, "checkout", "shop/checkout:3.0").returncode == 0
    set_status(cp, "spent", slo_status(-0.29, "FREEZE", 3.2, ["page-fast"]))


def stale(status: dict[str, Any]) -> dict[str, Any]:
    for cond in status["conditions"]:
        if cond["type"] == "Stale":
            cond.update(status="True", reason="PrometheusUnreachable")
    return status


def test_stale_status_follows_on_unknown(control_plane: ControlPlane, hook: WebhookProcess) -> None:
    """An SLO whose data is stale and was healthy: the default onUnknown (Warn) admits with a
    warning."""
    set_status(control_plane, "spent", stale(slo_status(0.6, "SAFE", 0.4, [])))

    def warned() -> None:
        result = set_image(control_plane, "checkout", "shop/checkout:4.0", "--dry-run=server")
        assert result.returncode == 0, result.stderr
        assert "data is stale (PrometheusUnreachable)" in result.stderr

    eventually(warned)
    set_status(control_plane, "spent", slo_status(-0.29, "FREEZE", 3.2, ["page-fast"]))


def test_stale_status_last_seen_blocking_keeps_blocking(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    """An SLO whose data went stale while its budget was spent: the block holds (sticky)."""
    set_status(control_plane, "spent", stale(slo_status(-0.29, "FREEZE", 3.2, ["page-fast"])))

    def refused() -> None:
        result = set_image(control_plane, "checkout", "shop/checkout:4.0", "--dry-run=server")
        assert result.returncode != 0, result.stderr
        assert "spent: last seen blocking (error budget exhausted (-29%)" in result.stderr
        assert "now data is stale (PrometheusUnreachable)" in result.stderr

    eventually(refused)
    set_status(control_plane, "spent", slo_status(-0.29, "FREEZE", 3.2, ["page-fast"]))


def test_dropping_the_gated_label_in_the_same_request_is_refused(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    patch = {
        "metadata": {"labels": {"app": None, "renamed": "yes"}},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "shop/x:9"}]}}},
    }
    result = control_plane.kubectl(
        "patch", "deployment", "checkout", "-n", NS, "--type=strategic", "-p", json.dumps(patch)
    )
    assert result.returncode != 0
    assert "ReleaseGate gated/checkout" in result.stderr


def test_failure_policy_when_the_webhook_is_down(
    control_plane: ControlPlane, hook: WebhookProcess
) -> None:
    """Runs last: it stops the webhook. Ignore fails open; Fail closes all but kube-system."""
    cp = control_plane
    apply(cp, deployment("sys-app", "kube-system"))
    hook.stop()
    ok = set_image(cp, "checkout", "shop/checkout:ignored-down")
    assert ok.returncode == 0, ok.stderr
    install(cp, hook, failure_policy="Fail")

    def closed() -> None:
        refused = set_image(cp, "checkout", "shop/checkout:fail-down")
        assert refused.returncode != 0
        assert "failed calling webhook" in refused.stderr

    eventually(closed)
    system = set_image(cp, "sys-app", "shop/sys:2.0", namespace="kube-system")
    assert system.returncode == 0, system.stderr
    install(cp, hook, failure_policy="Ignore")
