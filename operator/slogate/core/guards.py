"""Back doors to a blocking gate, closed at admission: pure decisions, like ``admission``.

A gate is only as good as its inputs. Two kinds of change could open one without touching the
gated workload, and the webhook judges them here:

- **SLO changes.** Lowering a target, swapping the indicator, relabelling an SLO out of an
  ``objectiveSelector``, deleting it (or re-creating one the gate remembers as blocking) would
  each let the next rollout through. While an Enforce gate blocks on an SLO, such a change needs
  the same RBAC verb ``override`` on that gate (the shell asks the API server with a
  SubjectAccessReview and records the change like an override). Changes to SLOs no gate blocks
  on, and metadata other than labels, pass untouched.
- **Hand-made ReplicaSets.** A rollback (a template one of the Deployment's ReplicaSets has) is
  always allowed, so a ReplicaSet made by hand with the new template, owned by (or adoptable by)
  a gated Deployment, would turn the next rollout into a "rollback". Only the cluster's own
  controllers (the Deployment controller) may create such ReplicaSets or change their template,
  owners or labels.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from slogate.core.admission import GateHit, GateRef, template_labels
from slogate.core.gate import SloView
from slogate.core.specbase import LabelSelector

Outcome = Literal["allow", "deny"]
OVERRIDE_VERB_HINT = (
    "needs the RBAC verb 'override' on the releasegate (check with: kubectl auth can-i override "
    "releasegates/{gate} -n {namespace})"
)


@dataclass(frozen=True)
class Guarded:
    """The guard's answer before any RBAC check: ``holding`` are the gates whose ``override``
    permission would let the change through."""

    outcome: Outcome
    message: str = ""
    holding: tuple[GateHit, ...] = ()


ALLOW = Guarded("allow")


# --- SLO changes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SloChange:
    operation: str  # CREATE | UPDATE | DELETE
    namespace: str
    name: str
    old: Mapping[str, Any] | None  # the object before (UPDATE, DELETE)
    new: Mapping[str, Any] | None  # the object after (CREATE, UPDATE)
    user: str
    dry_run: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def kind_of_change(self) -> str:
        return {"CREATE": "creation", "DELETE": "deletion"}.get(self.operation, "change")

    def touches_what_gates_read(self) -> bool:
        """Spec or labels: what the numbers and the objectiveSelector come from. Annotations,
        finalizers and the status (written by the controller) are not."""
        if self.operation != "UPDATE":
            return True
        return bool(_spec(self.old) != _spec(self.new) or _labels(self.old) != _labels(self.new))


def _spec(obj: Mapping[str, Any] | None) -> Any:
    return (obj or {}).get("spec")


def _labels(obj: Mapping[str, Any] | None) -> Any:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def guard_slo_change(
    change: SloChange,
    gates: Sequence[GateRef],
    slos: Mapping[tuple[str, str], SloView],
    now: float,
    stale_after_s: float,
    controllers: Collection[str] = (),
) -> Guarded:
    """Refuse a change to an SLO that an Enforce gate blocks on (the shell may still admit it
    for a user allowed to override every such gate). The cluster's own ``controllers`` (the
    namespace controller deleting a namespace's objects) are never refused."""
    if change.operation not in ("CREATE", "UPDATE", "DELETE") or change.user in controllers:
        return ALLOW
    if not change.touches_what_gates_read():
        return ALLOW
    holding = []
    for gate in sorted(gates, key=lambda g: g.name):
        if gate.namespace != change.namespace or gate.spec.enforcement != "Enforce":
            continue
        verdict = gate.judge(slos, now, stale_after_s)
        if verdict.decision != "BLOCK":
            continue
        if any(o.key == change.key and o.blocking for o in verdict.objectives):
            holding.append(GateHit(gate, verdict))
    if not holding:
        return ALLOW
    parts = [
        f"ReleaseGate {h.gate.namespace}/{h.gate.name}: {'; '.join(h.verdict.reasons)}"
        for h in holding
    ]
    first = holding[0].gate
    message = (
        f"slogate refused this {change.kind_of_change} of ServiceLevelObjective "
        f"{change.namespace}/{change.name}: a gate blocks rollouts on it ("
        + " | ".join(parts)
        + "). While a gate blocks on an SLO, changing its spec or labels, deleting it or "
        "re-creating it would open the gate without the budget recovering, so it "
        + OVERRIDE_VERB_HINT.format(gate=first.name, namespace=first.namespace)
        + "."
    )
    return Guarded("deny", message, tuple(holding))


# --- hand-made ReplicaSets ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadView:
    """What the webhook's index keeps of a Deployment: enough to tell which ReplicaSets it owns
    or would adopt, and which gates match it."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    template_labels: Mapping[str, str]
    selector: LabelSelector | None  # spec.selector; None if unreadable (never adopts)

    @property
    def workload(self) -> str:
        return f"deployment/{self.name}"


@dataclass(frozen=True)
class OwnerRef:
    kind: str
    uid: str
    controller: bool


@dataclass(frozen=True)
class ReplicaSetChange:
    operation: str  # CREATE | UPDATE
    namespace: str
    name: str
    user: str
    labels: Mapping[str, str]
    owners: tuple[OwnerRef, ...]
    old_labels: Mapping[str, str] = field(default_factory=dict)
    old_owners: tuple[OwnerRef, ...] = ()
    template_changed: bool = True

    def adds_a_way_in(self) -> bool:
        """CREATE, or an UPDATE of the template, an added owner or changed labels: what could
        make this ReplicaSet a rollback target of some Deployment. Scaling, status, annotations
        and the garbage collector removing owners cannot."""
        if self.operation == "CREATE":
            return True
        if self.operation != "UPDATE":
            return False
        return (
            self.template_changed
            or bool(set(self.owners) - set(self.old_owners))
            or dict(self.labels) != dict(self.old_labels)
        )


def replicaset_owners(metadata: Mapping[str, Any] | None) -> tuple[OwnerRef, ...]:
    refs = (metadata or {}).get("ownerReferences") or []
    return tuple(
        OwnerRef(str(r.get("kind", "")), str(r.get("uid", "")), bool(r.get("controller")))
        for r in refs
        if isinstance(r, Mapping)
    )


def related_workloads(
    change: ReplicaSetChange, deployments: Sequence[WorkloadView]
) -> list[WorkloadView]:
    """The Deployments this ReplicaSet belongs to, or that would adopt it (an orphan whose
    labels match their selector: the Deployment controller adopts those)."""
    owned = {o.uid for o in change.owners if o.kind == "Deployment"}
    orphan = not any(o.controller for o in change.owners)
    out = []
    for d in deployments:
        if d.namespace != change.namespace:
            continue
        adoptable = (
            orphan
            and d.selector is not None
            and bool(d.selector.match_labels or d.selector.match_expressions)
            and d.selector.matches(dict(change.labels))
        )
        if d.uid in owned or adoptable:
            out.append(d)
    return out


def guard_replicaset(
    change: ReplicaSetChange,
    deployments: Sequence[WorkloadView],
    gates: Sequence[GateRef],
    controllers: Collection[str],
) -> Guarded:
    """Refuse a ReplicaSet that a gated Deployment owns or would adopt, unless the workload
    controller itself made it."""
    if change.user in controllers or not change.adds_a_way_in():
        return ALLOW
    for workload in related_workloads(change, deployments):
        for gate in sorted(gates, key=lambda g: g.name):
            if gate.namespace != workload.namespace:
                continue
            if not any(
                gate.spec.selector.matches(dict(labels))
                for labels in (workload.labels, workload.template_labels)
            ):
                continue
            verb = "creation" if change.operation == "CREATE" else "change"
            return Guarded(
                "deny",
                f"slogate refused this {verb} of ReplicaSet {change.namespace}/{change.name} "
                f"by {change.user}: it belongs to {workload.workload}, which ReleaseGate "
                f"{gate.namespace}/{gate.name} gates, and only the Deployment controller makes "
                "that Deployment's ReplicaSets. A hand-made one would later pass as a rollback "
                "target and carry a new template past the gate. Roll out through the Deployment "
                f"instead (kubectl set image / kubectl apply on {workload.workload}).",
            )
    return ALLOW


def deployment_view(body: Mapping[str, Any]) -> WorkloadView:
    """A Deployment as the index keeps it."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    try:
        selector: LabelSelector | None = LabelSelector.model_validate(spec.get("selector") or {})
    except ValueError:
        selector = None
    return WorkloadView(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        template_labels=template_labels(spec.get("template")),
        selector=selector,
    )
