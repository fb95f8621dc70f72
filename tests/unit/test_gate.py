"""Gate decisions and admission verdicts: pure functions, every policy branch."""

from __future__ import annotations

from typing import Any

import pytest

from slogate.core.admission import (
    Change,
    GateRef,
    is_rollback,
    parse_override,
    review,
    rollback_from_index,
    settle,
    strip_template_hash,
    template_digest,
)
from slogate.core.gate import Remembered, SloView, judge_gate, remembered_blocking
from slogate.core.releasegate import GateSpec
from slogate.core.timetext import rfc3339

NOW = 1_800_000_000.0
STALE = 900.0


def status(
    remaining: float | None,
    risk: str,
    *,
    stale: bool = False,
    age_s: float = 10,
    burn: float | None = 3.2,
    firing: tuple[str, ...] = (),
) -> dict[str, Any]:
    exhausted = "Unknown" if remaining is None else ("True" if remaining <= 0 else "False")
    return {
        "lastEvaluationTime": rfc3339(NOW - age_s),
        "errorBudget": {"remaining": remaining},
        "burnRates": {"1h": burn},
        "risk": risk,
        "firing": list(firing),
        "conditions": [
            {
                "type": "Stale",
                "status": "True" if stale else "False",
                "reason": "PrometheusTimeout" if stale else "Fresh",
            },
            {"type": "BudgetExhausted", "status": exhausted, "reason": "x"},
        ],
    }


def views(**statuses: dict[str, Any] | None) -> dict[tuple[str, str], SloView]:
    return {("shop", n): SloView("shop", n, {"team": "pay"}, st) for n, st in statuses.items()}


def spec(**over: Any) -> GateSpec:
    return GateSpec.model_validate(
        {"selector": {"matchLabels": {"app": "checkout"}}, "objectives": [{"name": "a"}], **over}
    )


def test_exhausted_blocks_with_reason() -> None:
    v = judge_gate(spec(), "shop", views(a=status(-0.29, "FREEZE")), NOW, STALE)
    assert v.decision == "BLOCK"
    assert v.reasons == ("a: error budget exhausted (-29%), burning 3.2x over 1h",)


def test_healthy_allows() -> None:
    v = judge_gate(spec(), "shop", views(a=status(0.8, "SAFE", burn=0.2)), NOW, STALE)
    assert v.decision == "ALLOW"
    assert v.reasons == ()


@pytest.mark.parametrize(
    ("policy", "risk", "remaining", "decision"),
    [
        ({}, "DANGER", 0.3, "WARN"),  # default warnWhen DANGER
        ({"blockWhen": ["BudgetExhausted", "FREEZE"]}, "FREEZE", 0.5, "BLOCK"),
        ({}, "FREEZE", 0.5, "ALLOW"),  # FREEZE from a page, budget left, not in blockWhen
        ({"warnWhen": ["OBSERVE"]}, "OBSERVE", 0.9, "WARN"),
        ({"blockWhen": ["DANGER"]}, "DANGER", 0.3, "BLOCK"),
    ],
)
def test_policy_triggers(
    policy: dict[str, Any], risk: str, remaining: float, decision: str
) -> None:
    v = judge_gate(spec(policy=policy), "shop", views(a=status(remaining, risk)), NOW, STALE)
    assert v.decision == decision


@pytest.mark.parametrize("on_unknown", ["Allow", "Warn", "Block"])
@pytest.mark.parametrize(
    "slo_status",
    [
        None,
        status(None, "UNKNOWN"),
        status(0.5, "SAFE", stale=True),
        status(0.5, "SAFE", age_s=STALE + 1),
        {},
    ],
    ids=["missing", "no-data", "stale-condition", "too-old", "no-status"],
)
def test_unknown_follows_on_unknown(on_unknown: str, slo_status: dict[str, Any] | None) -> None:
    slos = {} if slo_status is None else views(a=slo_status)
    v = judge_gate(spec(policy={"onUnknown": on_unknown}), "shop", slos, NOW, STALE)
    assert v.decision == on_unknown.upper()
    assert v.objectives[0].unknown is not None


@pytest.mark.parametrize("on_unknown", ["Allow", "Warn", "Block"])
@pytest.mark.parametrize(
    ("slo_status", "now_unknown"),
    [
        (status(-1, "FREEZE", stale=True), "data is stale (PrometheusTimeout)"),
        (status(-1, "FREEZE", age_s=STALE + 1), "status not updated recently"),
    ],
    ids=["stale-condition", "too-old"],
)
def test_last_seen_blocking_stays_blocking_while_unknown(
    on_unknown: str, slo_status: dict[str, Any], now_unknown: str
) -> None:
    # A broken query or a dead controller must not turn a BLOCK into onUnknown's WARN.
    v = judge_gate(spec(policy={"onUnknown": on_unknown}), "shop", views(a=slo_status), NOW, STALE)
    assert v.decision == "BLOCK"
    assert v.reasons[0].startswith("a: last seen blocking (error budget exhausted (-100%)")
    assert now_unknown in v.reasons[0]
    assert "until fresh data says otherwise" in v.reasons[0]
    assert v.objectives[0].blocking and v.objectives[0].unknown is not None


def remembered(**over: Any) -> dict[tuple[str, str], Remembered]:
    gate_status = {
        "observedGeneration": 3,
        "objectives": [
            {"namespace": "shop", "name": n, "risk": "FREEZE", "budgetRemaining": -0.29, **o}
            for n, o in over.items()
        ],
    }
    return remembered_blocking(gate_status, 3)


def test_a_deleted_slo_the_gate_saw_blocking_keeps_blocking() -> None:
    memory = remembered(a={"blocking": True})
    v = judge_gate(spec(), "shop", {}, NOW, STALE, memory)
    assert v.decision == "BLOCK"
    assert v.reasons == (
        "a: last seen blocking (error budget -29%, risk FREEZE), now SLO not found; "
        "the block holds until fresh data says otherwise",
    )
    # Without that memory a missing SLO follows onUnknown (Warn).
    assert judge_gate(spec(), "shop", {}, NOW, STALE).decision == "WARN"
    assert judge_gate(
        spec(), "shop", {}, NOW, STALE, remembered(a={"blocking": False})
    ).decision == ("WARN")


def test_memory_of_another_gate_generation_is_ignored() -> None:
    # Only the platform team edits gates; an edit starts the memory afresh.
    old = {
        "observedGeneration": 2,
        "objectives": [{"namespace": "shop", "name": "a", "blocking": True}],
    }
    assert remembered_blocking(old, 3) == {}
    assert remembered_blocking(None, 3) == {}


def test_fresh_data_releases_a_remembered_block() -> None:
    memory = remembered(a={"blocking": True})
    v = judge_gate(spec(), "shop", views(a=status(0.8, "SAFE", burn=0.2)), NOW, STALE, memory)
    assert v.decision == "ALLOW"
    assert not v.objectives[0].blocking


def test_relabelling_a_blocking_slo_out_of_the_selector_does_not_open_the_gate() -> None:
    gate = GateSpec.model_validate(
        {"selector": {}, "objectiveSelector": {"matchLabels": {"team": "pay"}}}
    )
    blocking = views(a=status(-0.29, "FREEZE"))
    first = judge_gate(gate, "shop", blocking, NOW, STALE)
    assert first.decision == "BLOCK"
    memory = remembered_blocking(
        {"observedGeneration": 1, "objectives": [o.as_status() for o in first.objectives]}, 1
    )
    relabelled = {("shop", "a"): SloView("shop", "a", {"team": "other"}, status(-0.29, "FREEZE"))}
    # Without memory nothing matches: the selector policy (onUnknown Warn) would apply.
    assert judge_gate(gate, "shop", relabelled, NOW, STALE).decision == "WARN"
    assert judge_gate(gate, "shop", relabelled, NOW, STALE, memory).decision == "BLOCK"
    # Once its fresh data is healthy, the relabelled SLO no longer holds the gate.
    healthy = {("shop", "a"): SloView("shop", "a", {"team": "other"}, status(0.9, "SAFE"))}
    assert judge_gate(gate, "shop", healthy, NOW, STALE, memory).decision == "WARN"


def test_objective_selector_and_strictest_of_many() -> None:
    gate = GateSpec.model_validate(
        {"selector": {}, "objectiveSelector": {"matchLabels": {"team": "pay"}}}
    )
    v = judge_gate(gate, "shop", views(a=status(0.5, "SAFE"), b=status(-0.1, "FREEZE")), NOW, STALE)
    assert [o.name for o in v.objectives] == ["a", "b"]
    assert v.decision == "BLOCK"


@pytest.mark.parametrize(
    ("risks", "decision"),
    [
        (("SAFE", "FREEZE", "DANGER"), "BLOCK"),
        (("FREEZE", "DANGER", "SAFE"), "BLOCK"),
        (("DANGER", "SAFE", "SAFE"), "WARN"),
        (("SAFE", "DANGER", "SAFE"), "WARN"),
        (("SAFE", "SAFE", "SAFE"), "ALLOW"),
    ],
)
def test_the_strictest_objective_decides_whatever_the_order(
    risks: tuple[str, str, str], decision: str
) -> None:
    remaining = {"SAFE": 0.8, "DANGER": 0.3, "FREEZE": -0.1}
    objectives = [{"name": n} for n in ("a", "b", "c")]
    slos = views(**{n: status(remaining[r], r) for n, r in zip("abc", risks, strict=True)})
    v = judge_gate(spec(objectives=objectives), "shop", slos, NOW, STALE)
    assert [o.name for o in v.objectives] == ["a", "b", "c"]
    assert v.decision == decision


def test_no_objective_at_all_allows_when_on_unknown_allows() -> None:
    gate = GateSpec.model_validate(
        {
            "selector": {},
            "objectiveSelector": {"matchLabels": {"team": "nobody"}},
            "policy": {"onUnknown": "Allow"},
        }
    )
    v = judge_gate(gate, "shop", views(a=status(-0.1, "FREEZE")), NOW, STALE)
    assert v.objectives == ()
    assert v.decision == "ALLOW" and v.reasons == ()


def change(
    op: str = "UPDATE",
    image: str = "v2",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    dry_run: bool = False,
) -> Change:
    labels = labels or {"app": "checkout"}

    def tpl(img: str) -> dict[str, Any]:
        return {
            "metadata": {"labels": dict(labels)},
            "spec": {"containers": [{"name": "m", "image": img}]},
        }

    return Change(
        op,
        "shop",
        "checkout",
        labels,
        annotations or {},
        tpl("v1"),
        tpl(image),
        "alice",
        dry_run,
        image,
    )


def gates(**over: Any) -> list[GateRef]:
    return [GateRef("shop", "checkout", spec(**over))]


SPENT = views(a=status(-0.29, "FREEZE"))


def test_template_unchanged_is_allowed_without_looking_at_gates() -> None:
    assert review(change(image="v1"), gates(), SPENT, NOW, STALE).outcome == "allow"


def test_create_is_gated_unless_the_gate_opts_out() -> None:
    # A second Deployment with the new image is a rollout too: gated by default.
    assert review(change("CREATE"), gates(), SPENT, NOW, STALE).outcome == "deny"
    assert review(change("CREATE"), gates(gateCreates=False), SPENT, NOW, STALE).outcome == "allow"


def test_other_namespace_or_labels_not_gated() -> None:
    assert review(change(labels={"app": "cart"}), gates(), SPENT, NOW, STALE).outcome == "allow"
    other = [GateRef("elsewhere", "checkout", spec())]
    assert review(change(), other, SPENT, NOW, STALE).outcome == "allow"


def test_deny_message_names_everything() -> None:
    r = review(change(), gates(), SPENT, NOW, STALE)
    assert r.outcome == "deny"
    assert "ReleaseGate shop/checkout: a: error budget exhausted (-29%)" in r.message
    assert "burning 3.2x over 1h" in r.message
    assert "kubectl annotate deployment/checkout -n shop --overwrite" in r.message
    assert "slogate.dev/override-until=2027-01-15T12:00:00Z" in r.message  # now + 4h


@pytest.mark.parametrize(
    ("mode", "text"), [("Warn", "(Warn mode) would block"), ("DryRun", "(DryRun mode) would block")]
)
def test_warn_and_dryrun_modes_admit_with_warning(mode: str, text: str) -> None:
    r = review(change(), gates(enforcement=mode), SPENT, NOW, STALE)
    assert r.outcome == "warn"
    assert text in r.warnings[0]
    v = settle(change(), r, rollback=False, may_override={})
    assert v.outcome == "warn"
    assert len(v.would_block) == 1


def test_rollback_settles_to_allow() -> None:
    r = review(change(), gates(), SPENT, NOW, STALE)
    assert settle(change(), r, rollback=True, may_override={}).rollback


def test_rollback_detection_ignores_pod_template_hash() -> None:
    c = change()
    rs = {
        "metadata": {"labels": {"app": "checkout", "pod-template-hash": "x"}},
        "spec": {"containers": [{"name": "m", "image": "v2"}]},
    }
    assert is_rollback(c, [rs])
    assert not is_rollback(c, [strip_template_hash({**rs, "spec": {"containers": []}})])


def rs_template(image: str, hash_: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "checkout", "pod-template-hash": hash_}},
        "spec": {"containers": [{"name": "m", "image": image}]},
    }


def test_template_digest_ignores_pod_template_hash_and_key_order() -> None:
    a = rs_template("v1", "aaa")
    b = {"spec": {"containers": [{"image": "v1", "name": "m"}]}, "metadata": a["metadata"]}
    b["metadata"] = {"labels": {"pod-template-hash": "bbb", "app": "checkout"}}
    assert template_digest(a) == template_digest(b) == template_digest(change().old_template)
    assert template_digest(a) != template_digest(rs_template("v2", "aaa"))


def test_rollback_from_index_answers_only_when_the_index_is_current() -> None:
    current = template_digest(rs_template("v1", "h1"))  # the Deployment's template now
    earlier = template_digest(rs_template("v2", "h2"))
    other = template_digest(rs_template("v0", "h0"))
    # back to an earlier ReplicaSet's template: a rollback, whatever else is indexed
    assert rollback_from_index(change(image="v2"), {earlier}) is True
    # the index holds the current template's ReplicaSet, and no match: not a rollback
    assert rollback_from_index(change(image="v3"), {current, earlier}) is False
    # without the current template's ReplicaSet the index may be behind: ask the API server
    assert rollback_from_index(change(image="v3"), {other}) is None
    assert rollback_from_index(change(image="v3"), set()) is None


def annotated(offset_s: float, reason: str = "INC-1") -> dict[str, str]:
    return {"slogate.dev/override": reason, "slogate.dev/override-until": rfc3339(NOW + offset_s)}


def test_override_needs_rbac_for_every_blocking_gate() -> None:
    c = change(annotations=annotated(3600))
    r = review(c, gates(), SPENT, NOW, STALE)
    assert r.override is not None
    allowed = settle(c, r, rollback=False, may_override={("shop", "checkout"): True})
    assert allowed.outcome == "allow"
    assert allowed.overridden
    refused = settle(c, r, rollback=False, may_override={("shop", "checkout"): False})
    assert refused.outcome == "deny"
    assert "alice may not 'override' releasegate shop/checkout" in refused.message
    assert refused.record_block


@pytest.mark.parametrize(
    ("annotations", "why"),
    [
        (annotated(-60), "the override expired at"),
        (annotated(5 * 3600), "allows at most 4h"),
        ({"slogate.dev/override": "x"}, "override-until (an RFC3339 time) is missing"),
        ({"slogate.dev/override-until": rfc3339(NOW + 60)}, "(the reason) is missing"),
        (
            {"slogate.dev/override": "x", "slogate.dev/override-until": "tomorrow"},
            "is not an RFC3339 time",
        ),
        (
            {"slogate.dev/override": "x", "slogate.dev/override-until": "2027-01-15T09:00:00"},
            "needs a time zone",
        ),
    ],
)
def test_unusable_overrides_are_refused_with_why(annotations: dict[str, str], why: str) -> None:
    c = change(annotations=annotations)
    r = review(c, gates(), SPENT, NOW, STALE)
    assert r.override is None
    v = settle(c, r, rollback=False, may_override={})
    assert v.outcome == "deny"
    assert why in v.message


def test_dry_run_is_denied_but_not_recorded() -> None:
    c = change(dry_run=True)
    v = settle(c, review(c, gates(), SPENT, NOW, STALE), rollback=False, may_override={})
    assert v.outcome == "deny"
    assert not v.record_block


def test_no_override_request_means_none() -> None:
    assert parse_override({}, NOW) is None


def relabelled(old_app: str, new_app: str, old_image: str, new_image: str) -> Change:
    def tpl(app: str, img: str) -> dict[str, Any]:
        return {
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "m", "image": img}]},
        }

    return Change(
        "UPDATE",
        "shop",
        "checkout",
        {"app": new_app},
        {},
        tpl(old_app, old_image),
        tpl(new_app, new_image),
        "mallory",
        False,
        new_image,
        old_labels={"app": old_app},
    )


def test_dropping_the_label_in_the_same_change_does_not_escape_the_gate() -> None:
    escaped = relabelled("checkout", "other", "v1", "v2")
    assert review(escaped, gates(), SPENT, NOW, STALE).outcome == "deny"
    never_gated = relabelled("other", "other", "v1", "v2")
    assert review(never_gated, gates(), SPENT, NOW, STALE).outcome == "allow"


def test_relabelling_out_of_a_blocking_gate_needs_the_override_too() -> None:
    # Step one of a two-step escape from a gate that selects on a label of the Deployment's
    # metadata only: relabel (template unchanged), then roll out ungated.
    tpl = {"metadata": {"labels": {"app": "checkout"}}, "spec": {"containers": [{"image": "v1"}]}}

    def relabel(old_team: str, new_team: str) -> Change:
        return Change(
            "UPDATE",
            "shop",
            "checkout",
            {"app": "checkout", "team": new_team},
            {},
            tpl,
            tpl,
            "mallory",
            False,
            "v1",
            old_labels={"app": "checkout", "team": old_team},
        )

    team_gate = [GateRef("shop", "payments", spec(selector={"matchLabels": {"team": "pay"}}))]
    first = review(relabel("pay", "other"), team_gate, SPENT, NOW, STALE)
    assert first.outcome == "deny"
    assert "refused this relabelling (it takes the workload out of a gate" in first.message
    healthy = views(a=status(0.8, "SAFE", burn=0.2))
    assert review(relabel("pay", "other"), team_gate, healthy, NOW, STALE).outcome == "allow"
    # Relabelling into the gate, or within it, is a metadata change like any other.
    assert review(relabel("other", "pay"), team_gate, SPENT, NOW, STALE).outcome == "allow"
    assert review(relabel("pay", "pay"), team_gate, SPENT, NOW, STALE).outcome == "allow"
