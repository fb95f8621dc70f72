"""Back doors to a blocking gate: SLO changes and hand-made ReplicaSets (pure decisions)."""

from __future__ import annotations

from typing import Any

import pytest

from slogate.core.admission import GateRef
from slogate.core.gate import remembered_blocking
from slogate.core.guards import (
    OwnerRef,
    ReplicaSetChange,
    SloChange,
    deployment_view,
    guard_replicaset,
    guard_slo_change,
    replicaset_owners,
)
from slogate.core.releasegate import GateSpec
from tests.unit.test_gate import NOW, STALE, status, views

CONTROLLERS = {"system:serviceaccount:kube-system:deployment-controller"}


def gate(name: str = "checkout", **over: Any) -> GateRef:
    spec = GateSpec.model_validate(
        {"selector": {"matchLabels": {"app": "checkout"}}, "objectives": [{"name": "a"}], **over}
    )
    return GateRef("shop", name, spec)


def slo(target: float = 99.9, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "a", "namespace": "shop", "labels": labels or {"team": "pay"}},
        "spec": {"service": "checkout", "target": target},
    }


def slo_change(op: str, old: Any, new: Any) -> SloChange:
    return SloChange(op, "shop", "a", old, new, "mallory", False)


SPENT = views(a=status(-0.29, "FREEZE"))
HEALTHY = views(a=status(0.8, "SAFE", burn=0.2))


@pytest.mark.parametrize(
    ("op", "old", "new"),
    [
        ("UPDATE", slo(99.9), slo(90.0)),  # lower the target
        ("UPDATE", slo(labels={"team": "pay"}), slo(labels={"team": "x"})),  # relabel
        ("DELETE", slo(), None),
    ],
    ids=["lower-target", "relabel", "delete"],
)
def test_weakening_an_slo_a_gate_blocks_on_needs_the_override(op: str, old: Any, new: Any) -> None:
    got = guard_slo_change(slo_change(op, old, new), [gate()], SPENT, NOW, STALE)
    assert got.outcome == "deny"
    assert [h.gate.name for h in got.holding] == ["checkout"]
    assert "ServiceLevelObjective shop/a" in got.message
    assert "ReleaseGate shop/checkout: a: error budget exhausted (-29%)" in got.message
    assert "override" in got.message and "kubectl auth can-i" in got.message


def test_same_change_passes_while_the_gate_allows() -> None:
    got = guard_slo_change(
        slo_change("UPDATE", slo(99.9), slo(90.0)), [gate()], HEALTHY, NOW, STALE
    )
    assert got.outcome == "allow"


def test_metadata_other_than_labels_and_status_pass() -> None:
    old, new = slo(), slo()
    new["metadata"]["annotations"] = {"note": "x"}
    new["status"] = {"risk": "SAFE"}
    assert guard_slo_change(
        slo_change("UPDATE", old, new), [gate()], SPENT, NOW, STALE
    ).outcome == ("allow")


def test_warn_and_dryrun_gates_do_not_hold_slos() -> None:
    for mode in ("Warn", "DryRun"):
        got = guard_slo_change(
            slo_change("DELETE", slo(), None), [gate(enforcement=mode)], SPENT, NOW, STALE
        )
        assert got.outcome == "allow"


def test_an_slo_no_gate_blocks_on_may_change() -> None:
    # The gate blocks because of "a"; "b" is read too but healthy: changing it cannot open it.
    two = gate(objectives=[{"name": "a"}, {"name": "b"}])
    slos = views(a=status(-0.29, "FREEZE"), b=status(0.9, "SAFE", burn=0.1))
    change = SloChange("DELETE", "shop", "b", slo(), None, "mallory", False)
    assert guard_slo_change(change, [two], slos, NOW, STALE).outcome == "allow"


def test_recreating_an_slo_the_gate_remembers_blocking_needs_the_override() -> None:
    memory = remembered_blocking(
        {
            "observedGeneration": 1,
            "objectives": [{"namespace": "shop", "name": "a", "blocking": True, "risk": "FREEZE"}],
        },
        1,
    )
    remembering = GateRef("shop", "checkout", gate().spec, memory)
    got = guard_slo_change(slo_change("CREATE", None, slo(50.0)), [remembering], {}, NOW, STALE)
    assert got.outcome == "deny"
    assert "creation of ServiceLevelObjective shop/a" in got.message


def test_gates_of_other_namespaces_do_not_hold() -> None:
    elsewhere = GateRef("other", "checkout", gate().spec)
    got = guard_slo_change(slo_change("DELETE", slo(), None), [elsewhere], SPENT, NOW, STALE)
    assert got.outcome == "allow"


DEPLOY = deployment_view(
    {
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "uid": "d-1",
            "labels": {"app": "checkout"},
        },
        "spec": {
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {"metadata": {"labels": {"app": "checkout"}}},
        },
    }
)


def rs_change(
    user: str = "mallory",
    owners: tuple[OwnerRef, ...] = (OwnerRef("Deployment", "d-1", True),),
    labels: dict[str, str] | None = None,
    **over: Any,
) -> ReplicaSetChange:
    return ReplicaSetChange(
        over.pop("operation", "CREATE"),
        "shop",
        "checkout-abc",
        user,
        labels if labels is not None else {"app": "checkout", "pod-template-hash": "abc"},
        owners,
        **over,
    )


def test_a_hand_made_replicaset_of_a_gated_deployment_is_refused() -> None:
    got = guard_replicaset(rs_change(), [DEPLOY], [gate()], CONTROLLERS)
    assert got.outcome == "deny"
    assert "deployment/checkout" in got.message and "ReleaseGate shop/checkout" in got.message
    assert "rollback target" in got.message


def test_an_orphan_the_deployment_would_adopt_is_refused() -> None:
    got = guard_replicaset(rs_change(owners=()), [DEPLOY], [gate()], CONTROLLERS)
    assert got.outcome == "deny"
    # An orphan that does not match the selector is nobody's rollback target.
    stray = rs_change(owners=(), labels={"app": "cart"})
    assert guard_replicaset(stray, [DEPLOY], [gate()], CONTROLLERS).outcome == "allow"


def test_the_deployment_controller_may_make_replicasets() -> None:
    change = rs_change(user="system:serviceaccount:kube-system:deployment-controller")
    assert guard_replicaset(change, [DEPLOY], [gate()], CONTROLLERS).outcome == "allow"


def test_ungated_deployments_are_none_of_our_business() -> None:
    other = gate("cart", selector={"matchLabels": {"app": "cart"}})
    assert guard_replicaset(rs_change(), [DEPLOY], [other], CONTROLLERS).outcome == "allow"
    assert guard_replicaset(rs_change(), [DEPLOY], [], CONTROLLERS).outcome == "allow"


@pytest.mark.parametrize(
    ("over", "outcome"),
    [
        (
            {"template_changed": False, "old_owners": (OwnerRef("Deployment", "d-1", True),)},
            "allow",
        ),
        ({"template_changed": True, "old_owners": (OwnerRef("Deployment", "d-1", True),)}, "deny"),
        ({"template_changed": False, "old_owners": ()}, "deny"),  # owner added by hand
    ],
    ids=["scale-or-annotate", "template-edited", "owner-added"],
)
def test_updates_are_refused_only_when_they_add_a_way_in(
    over: dict[str, Any], outcome: str
) -> None:
    labels = {"app": "checkout", "pod-template-hash": "abc"}
    change = rs_change(operation="UPDATE", old_labels=labels, **over)
    assert guard_replicaset(change, [DEPLOY], [gate()], CONTROLLERS).outcome == outcome


def test_owner_references_are_read_from_metadata() -> None:
    meta = {"ownerReferences": [{"kind": "Deployment", "uid": "d-1", "controller": True}, "junk"]}
    assert replicaset_owners(meta) == (OwnerRef("Deployment", "d-1", True),)
    assert replicaset_owners(None) == ()
