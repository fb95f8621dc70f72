"""A gate that holds: nobody with Kubernetes' default ``edit`` role opens their own gate.

The user ``mallory`` is bound to the real ``edit`` ClusterRole in the namespace (the chart's
roles aggregated into it by the real clusterrole-aggregation controller of
kube-controller-manager); ``oncall`` has ``edit`` plus the chart's overrider role. The webhook
runs under the chart's own RBAC, over TLS, called by the real kube-apiserver with the default
``failurePolicy: Ignore``, so every refusal seen here is slogate's decision. SLO statuses are
written as the controller would (the webhook judges statuses, not Prometheus).

Each way the issue found to get a blocked rollout admitted without the ``override`` verb is
tried, and refused: weakening, breaking, relabelling or deleting the SLO the gate blocks on; a
hand-made ReplicaSet with the new template; a second Deployment with the new image; relabelling
the Deployment out of the gate; and, with slogate's own webhook route unregistered (fail open),
breaking or deleting the SLO still leaves the gate blocking (sticky). Overrides are recorded
before they are admitted; refusal-path API calls that hang end in a refusal within the webhook
timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.faultproxy import TcpProxy, kubeconfig_via
from localenv.objects import deployment, release_gate, replicaset
from localenv.roles import WebhookProcess
from tests.integration.faults import (
    RBAC,
    apply,
    binding,
    chart_user_roles,
    chart_webhook_rules,
    eventually,
    matrix_row,
    now_rfc3339,
    remove_objects,
    set_slo_status,
    slo_manifest,
    user,
    written_status,
)

pytest_plugins = ["tests.integration.reliability_matrix"]
pytestmark = pytest.mark.cluster

NS = "gate-holds"
SLOW_NS = "gate-slow"
GATE_FIELDS = ("decision", "objectives", "observedGeneration")


def ratio(job: str) -> dict[str, Any]:
    return {"ratio": {"errors": f'e_total{{job="{job}"}}', "total": f't_total{{job="{job}"}}'}}


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    cp = control_plane
    work = tmp_path_factory.mktemp("gate-holds")
    for ns in (NS, SLOW_NS):
        cp.kubectl("create", "namespace", ns)
    roles = chart_user_roles("gate-holds-chart")
    overrider = roles[0]["metadata"]["name"]
    apply(
        cp,
        *roles,
        {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "gate-holds-webhook"},
         "rules": chart_webhook_rules()},
        binding("ClusterRoleBinding", "gate-holds-webhook", None, "ClusterRole",
                "gate-holds-webhook", [user("gate-holds-webhook")]),
        *(
            binding("RoleBinding", f"edit-{ns}", ns, "ClusterRole", "edit",
                    [user("mallory"), user("oncall")])
            for ns in (NS, SLOW_NS)
        ),
        *(
            binding("RoleBinding", f"oncall-{ns}", ns, "ClusterRole", overrider, [user("oncall")])
            for ns in (NS, SLOW_NS)
        ),
    )  # fmt: skip
    kube = {p: cp.write_kubeconfig(work / f"{p}.kubeconfig", p) for p in ("mallory", "oncall")}
    # The real edit role gets the chart's SLO rules from the aggregation controller.
    eventually(lambda: _can(cp, kube["mallory"], "delete", "servicelevelobjectives"), timeout=60)

    spent = written_status(-0.4, "FREEZE", 2.0)
    slos = [
        slo_manifest(name, NS, indicator=ratio(name))
        for name in ("spent", "spare", "broken", "doomed", "relabel", "team-spent")
    ]
    for doc in slos:
        if doc["metadata"]["name"] in ("relabel", "team-spent"):
            doc["metadata"]["labels"] = {"team": "pay"}
    slos.append(slo_manifest("spent", SLOW_NS, indicator=ratio("spent")))
    apply(cp, *slos)
    for doc in slos:
        set_slo_status(cp, doc["metadata"]["namespace"], doc["metadata"]["name"], spent)
    team_gate = release_gate("team", NS, "pay", [])
    team_gate["spec"].pop("objectives")
    team_gate["spec"]["objectiveSelector"] = {"matchLabels": {"team": "pay"}}
    gold = release_gate("gold", NS, "unused", ["spent"])
    gold["spec"]["selector"] = {"matchLabels": {"tier": "gold"}}
    billing = deployment("billing", NS, "billing")
    billing["metadata"]["labels"] = {"app": "billing", "tier": "gold"}
    apply(
        cp,
        release_gate("checkout", NS, "checkout", ["spent", "spare"]),
        release_gate("broken", NS, "broken", ["broken"]),
        release_gate("doomed", NS, "doomed", ["doomed"]),
        team_gate,
        gold,
        deployment("checkout", NS, "checkout"),
        deployment("broken", NS, "broken"),
        deployment("doomed", NS, "doomed"),
        deployment("pay", NS, "pay"),
        billing,
        release_gate("slow", SLOW_NS, "slow", ["spent"]),
        deployment("slow", SLOW_NS, "slow"),
    )
    ca = CertificateAuthority("gate-holds-ca")
    hook = WebhookProcess(
        cp.write_kubeconfig(work / "webhook.kubeconfig", "gate-holds-webhook"),
        work / "hook",
        ca,
        work / "hook.log",
    )
    # A second webhook whose API calls go through a proxy that can stop answering.
    proxy = TcpProxy(int(cp.url.rsplit(":", 1)[1]))
    proxy.accept()
    slow = WebhookProcess(
        kubeconfig_via(cp, proxy, work / "slow.kubeconfig"),
        work / "slow",
        ca,
        work / "slow.log",
        extra=("--call-deadline", "1"),
    )
    configs = [_scoped(hook.configuration(), "slogate-gate-holds", NS),
               _scoped(slow.configuration(), "slogate-gate-slow", SLOW_NS)]  # fmt: skip
    apply(cp, *configs)
    for ns, name in ((NS, "checkout"), (SLOW_NS, "slow")):
        eventually(lambda ns=ns, name=name: _refused(_set_image(cp, ns, name, "probe:1",
                                                                "--dry-run=server")))  # fmt: skip
    try:
        yield {"kube": kube, "hook": hook, "slow": slow, "proxy": proxy, "spent": spent}
    finally:
        proxy.flow()
        for config in configs:
            cp.kubectl("delete", "validatingwebhookconfiguration", config["metadata"]["name"])
        for ns in (NS, SLOW_NS):
            remove_objects(cp, ns)
        hook.stop()
        slow.stop()
        proxy.__exit__()
        for name in ("hook.log", "slow.log"):
            print(name, (work / name).read_text()[-3000:])


def _scoped(config: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    config["metadata"]["name"] = name
    for webhook in config["webhooks"]:
        webhook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return config


def _can(cp: ControlPlane, kube: Path, verb: str, resource: str) -> None:
    result = cp.kubectl("auth", "can-i", verb, resource, "-n", NS, kubeconfig=kube)
    assert result.stdout.strip() == "yes", result.stdout + result.stderr


def _set_image(cp: ControlPlane, ns: str, name: str, image: str, *extra: str,
               kube: Path | None = None) -> Any:  # fmt: skip
    return cp.kubectl(
        "set", "image", f"deployment/{name}", f"main={image}", "-n", ns, *extra, kubeconfig=kube
    )


def _refused(result: Any, *needles: str) -> None:
    assert result.returncode != 0, f"admitted: {result.stdout} {result.stderr}"
    assert "slogate refused" in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def _patch_slo(cp: ControlPlane, kube: Path, name: str, patch: dict[str, Any]) -> Any:
    return cp.kubectl("patch", "slo", name, "-n", NS, "--type=merge", "-p", json.dumps(patch),
                      kubeconfig=kube)  # fmt: skip


def _gate_status(cp: ControlPlane, name: str, ns: str = NS) -> dict[str, Any]:
    return dict(cp.get_json("gate", name, "-n", ns).get("status") or {})


@matrix_row(
    "a user with the default edit role tries to open a blocking gate through its SLO: lowers "
    "the target, swaps the indicator (a query that will never evaluate), raises minEvents, "
    "points it at another Prometheus, relabels it out of the gate's objectiveSelector, deletes "
    "it",
    "each change refused by the API server (slogate's SLO webhook) naming the gate, its reasons "
    "and the missing 'override' verb; the SLO is unchanged and the rollout still refused",
)
def test_edit_user_cannot_weaken_break_relabel_or_delete_a_blocking_slo(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, kube = control_plane, world["kube"]["mallory"]
    attempts = {
        "lower the target": _patch_slo(cp, kube, "spent", {"spec": {"target": 50.0}}),
        "swap the indicator": _patch_slo(
            cp, kube, "spent",
            {"spec": {"indicator": {"ratio": {"errors": "nothing_total", "total": "t_total"}}}},
        ),
        "raise minEvents": _patch_slo(
            cp, kube, "spent", {"spec": {"evaluation": {"minEvents": 1000000000}}}
        ),
        "another Prometheus": _patch_slo(
            cp, kube, "spent", {"spec": {"prometheus": {"url": "http://elsewhere:9090"}}}
        ),
        "relabel out of the selector": _patch_slo(
            cp, kube, "relabel", {"metadata": {"labels": {"team": "other"}}}
        ),
        "delete": cp.kubectl("delete", "slo", "spent", "-n", NS, kubeconfig=kube),
    }  # fmt: skip
    for what, result in attempts.items():
        assert result.returncode != 0, f"{what}: admitted {result.stdout}"
        assert "slogate refused this" in result.stderr, (what, result.stderr)
        assert "ServiceLevelObjective gate-holds/" in result.stderr, (what, result.stderr)
        assert "override" in result.stderr and "error budget exhausted" in result.stderr
    spec = cp.get_json("slo", "spent", "-n", NS)["spec"]
    assert spec["target"] == 99.9 and "prometheus" not in spec
    assert cp.get_json("slo", "relabel", "-n", NS)["metadata"]["labels"] == {"team": "pay"}
    _refused(_set_image(cp, NS, "checkout", "shop/checkout:2.0", kube=kube))
    # Annotations and status are not what gates read: changing them is nobody's business.
    ok = cp.kubectl("annotate", "slo", "spent", "-n", NS, "note=hi", kubeconfig=kube)
    assert ok.returncode == 0, ok.stderr
    first = attempts["lower the target"].stderr.strip().splitlines()[-1]
    observe(f"{len(attempts)} of {len(attempts)} refused, e.g. {first[:300]}")


@matrix_row(
    "on-call with the override verb changes an SLO a gate blocks on, and overrides a rollout",
    "both admitted with a warning, and already recorded in the gate's status (lastOverride and "
    "the last few in overrides) and an Event when kubectl returns: recorded before the answer",
)
def test_override_is_recorded_before_it_is_admitted(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, kube = control_plane, world["kube"]["oncall"]
    changed = _patch_slo(cp, kube, "spare", {"spec": {"target": 99.0}})
    assert changed.returncode == 0, changed.stderr
    assert "allowed because oncall may override" in changed.stderr
    # No waiting: the record is in the gate's status before the API server got the answer.
    records = _gate_status(cp, "checkout").get("overrides") or []
    assert records and records[-1]["workload"] == "servicelevelobjective/spare"
    assert records[-1]["user"] == "oncall"
    patch = {
        "metadata": {
            "annotations": {
                "slogate.dev/override": "INC-42 hotfix",
                "slogate.dev/override-until": now_rfc3339(1800),
            }
        },
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "shop/x:9"}]}}},
    }
    rollout = cp.kubectl("patch", "deployment", "checkout", "-n", NS, "-p", json.dumps(patch),
                         kubeconfig=kube)  # fmt: skip
    assert rollout.returncode == 0, rollout.stderr
    status = _gate_status(cp, "checkout")
    assert status["lastOverride"]["reason"] == "INC-42 hotfix"
    assert [r["workload"] for r in status["overrides"]][-2:] == [
        "servicelevelobjective/spare",
        "deployment/checkout",
    ]
    events = cp.get_json("events", "-n", NS, "--field-selector", "reason=GateOverridden")
    assert any("INC-42 hotfix" in e["message"] for e in events["items"])
    observe(f"{len(status['overrides'])} overrides in the gate's status as kubectl returned")


@matrix_row(
    "a hand-made ReplicaSet with the new template: owned by the gated Deployment, or an orphan "
    "its selector would adopt; then the rollout to that template",
    "both ReplicaSets refused (only the Deployment controller makes them); the rollout is still "
    "refused; the same ReplicaSet made as the controller is accepted",
)
def test_hand_made_replicaset_is_no_rollback_target(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, kube = control_plane, world["kube"]["mallory"]
    dep = cp.get_json("deployment", "pay", "-n", NS)
    owned = replicaset(dep, "shop/pay:6.6", "evil1")
    orphan = replicaset(dep, "shop/pay:6.6", "evil2")
    orphan["metadata"].pop("ownerReferences")
    for rs in (owned, orphan):
        made = cp.kubectl("create", "-f", "-", "-n", NS, input=json.dumps(rs), kubeconfig=kube)
        assert made.returncode != 0, made.stdout
        assert "only the Deployment controller makes" in made.stderr, made.stderr
    _refused(_set_image(cp, NS, "pay", "shop/pay:6.6", kube=kube))
    cp.apply(replicaset(dep, "shop/pay:5.0", "real1"), kubeconfig=cp.controller_kubeconfig)
    observe("hand-made owned and orphan ReplicaSets refused; the controller's accepted")


@matrix_row(
    "a second Deployment with the new image and the gated labels (gateCreates left at its default)",
    "refused: creating a gated workload is a rollout too (gateCreates defaults to true)",
)
def test_a_second_deployment_is_gated_by_default(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, kube = control_plane, world["kube"]["mallory"]
    twin = deployment("checkout-v2", NS, "checkout", image="shop/checkout:2.0")
    made = cp.kubectl("create", "-f", "-", input=json.dumps(twin), kubeconfig=kube)
    _refused(made, "ReleaseGate gate-holds/checkout")
    observe(made.stderr.strip().splitlines()[-1][:200])


@matrix_row(
    "relabelling a Deployment out of a gate that selects on a label of the Deployment's metadata "
    "(step one of a two-step escape), then rolling out",
    "the relabelling is refused while the gate blocks, like a rollout (override needed)",
)
def test_relabelling_a_deployment_out_of_a_blocking_gate_is_refused(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, kube = control_plane, world["kube"]["mallory"]
    result = cp.kubectl("label", "deployment", "billing", "-n", NS, "tier=bronze", "--overwrite",
                        kubeconfig=kube)  # fmt: skip
    _refused(result, "relabelling", "ReleaseGate gate-holds/gold")
    labels = cp.get_json("deployment", "billing", "-n", NS)["metadata"]["labels"]
    assert labels["tier"] == "gold"
    observe("relabelling refused; labels unchanged")


@matrix_row(
    "with slogate's SLO webhook unregistered (failurePolicy Ignore: the webhook is down), the "
    "SLO a gate blocks on is broken (its controller marks it Stale, keeping the last numbers), "
    "or deleted",
    "the rollout is still refused: the objective was last seen blocking and stays blocking "
    "(sticky) until fresh data says otherwise, from the SLO's own last numbers or, for a deleted "
    "SLO, from the gate's status",
)
def test_sticky_block_survives_a_broken_or_deleted_slo(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, kube = control_plane, world["kube"]["mallory"]
    config = cp.get_json("validatingwebhookconfiguration", "slogate-gate-holds")
    saved = json.loads(json.dumps(config))
    config["webhooks"] = [w for w in config["webhooks"] if not w["name"].startswith("service")]
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        config["metadata"].pop(key, None)
    cp.kubectl("delete", "validatingwebhookconfiguration", "slogate-gate-holds")
    apply(cp, config)
    try:
        # Broken: the query no longer evaluates; the controller keeps the last good numbers
        # and marks them Stale.
        query = {"ratio": None, "query": {"errorRatio": "x[{{window}}] )("}}
        broke = _patch_slo(cp, kube, "broken", {"spec": {"indicator": query}})
        assert broke.returncode == 0, broke.stderr
        stale = {**world["spent"]}
        stale["conditions"] = [
            {**c, "status": "True", "reason": "QueryRejected"} if c["type"] == "Stale" else c
            for c in stale["conditions"]
        ]
        set_slo_status(cp, NS, "broken", stale)
        eventually(lambda: _refused(
            _set_image(cp, NS, "broken", "shop/broken:2", "--dry-run=server", kube=kube),
            "last seen blocking (error budget exhausted (-40%)", "data is stale (QueryRejected)",
        ))  # fmt: skip
        # Deleted: the gate's status (as the controller writes it) remembers it blocking.
        gen = cp.get_json("gate", "doomed", "-n", NS)["metadata"]["generation"]
        memory = {
            "observedGeneration": gen,
            "decision": "BLOCK",
            "objectives": [{"name": "doomed", "namespace": NS, "risk": "FREEZE",
                            "budgetRemaining": -0.4, "stale": False, "blocking": True}],
        }  # fmt: skip
        cp.kubectl("patch", "gate", "doomed", "-n", NS, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": memory}), check=True)  # fmt: skip
        gone = cp.kubectl("delete", "slo", "doomed", "-n", NS, kubeconfig=kube)
        assert gone.returncode == 0, gone.stderr
        eventually(lambda: _refused(
            _set_image(cp, NS, "doomed", "shop/doomed:2", "--dry-run=server", kube=kube),
            "last seen blocking (error budget -40%, risk FREEZE), now SLO not found",
        ))  # fmt: skip
    finally:
        cp.kubectl("delete", "validatingwebhookconfiguration", "slogate-gate-holds")
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            saved["metadata"].pop(key, None)
        apply(cp, saved)
    observe("broken SLO: still refused, last seen blocking; deleted SLO: still refused")


@matrix_row(
    "the API server stops answering the webhook's refusal-path calls (SubjectAccessReview for "
    "an override, ReplicaSet LIST for a rollback check) longer than the webhook timeout",
    "the blocking decision refuses within the webhook timeout (--call-deadline 1 s), saying "
    "which check could not be made in time; before, failurePolicy Ignore admitted the change",
)
def test_refusal_path_calls_have_a_deadline(
    control_plane: ControlPlane, world: dict[str, Any], observe: Callable[[str], None]
) -> None:
    cp, kube, proxy = control_plane, world["kube"]["oncall"], world["proxy"]
    patch = {
        "metadata": {
            "annotations": {
                "slogate.dev/override": "INC-7",
                "slogate.dev/override-until": now_rfc3339(1800),
            }
        },
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "shop/s:2"}]}}},
    }
    proxy.stall()
    try:
        started = time.monotonic()
        result = cp.kubectl("patch", "deployment", "slow", "-n", SLOW_NS, "-p",
                            json.dumps(patch), kubeconfig=kube)  # fmt: skip
        took = time.monotonic() - started
    finally:
        proxy.flow()
    _refused(result, "within 1s (the refusal stands)")
    assert took < 3.0, took
    dep = cp.get_json("deployment", "slow", "-n", SLOW_NS)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] != "shop/s:2"
    observe(f"refused in {took:.1f}s: {result.stderr.strip().splitlines()[-1][-160:]}")
