"""The admission decision for a Deployment change: pure, in two steps.

``review`` answers from the request, the gates and the SLO statuses alone. When it would refuse
a change, the shell may still need two facts only the API server has, and asks for them only
then: whether the new template is that of an existing ReplicaSet (a rollback, always allowed)
and, when the workload carries override annotations, whether the user may ``override`` each
blocking gate (SubjectAccessReview). ``settle`` turns those facts into the final verdict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from slogate.core.durations import humanize_seconds, parse_duration
from slogate.core.gate import GateVerdict, Remembered, SloView, judge_gate, remembered_blocking
from slogate.core.releasegate import GateSpec
from slogate.core.timetext import NoTimeZone, parse_rfc3339, rfc3339

OVERRIDE = "slogate.dev/override"
OVERRIDE_UNTIL = "slogate.dev/override-until"
POD_TEMPLATE_HASH = "pod-template-hash"

Outcome = Literal["allow", "warn", "deny"]


@dataclass(frozen=True)
class GateRef:
    namespace: str
    name: str
    spec: GateSpec
    # What the gate's status last showed blocking (``slogate.core.gate.remembered_blocking``).
    remembered: Mapping[tuple[str, str], Remembered] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def judge(
        self, slos: Mapping[tuple[str, str], SloView], now: float, stale_after_s: float
    ) -> GateVerdict:
        return judge_gate(self.spec, self.namespace, slos, now, stale_after_s, self.remembered)


def gate_ref(body: Mapping[str, Any]) -> GateRef:
    """A ReleaseGate object as admission reads it: its spec, and the objectives its status
    remembers blocking. Raises pydantic's ``ValidationError`` for a spec the model refuses."""
    meta = body.get("metadata") or {}
    spec = GateSpec.model_validate(body.get("spec") or {})
    memory = remembered_blocking(body.get("status"), meta.get("generation"))
    return GateRef(str(meta.get("namespace")), str(meta.get("name")), spec, memory)


@dataclass(frozen=True)
class Change:
    """The parts of an AdmissionReview slogate reads."""

    operation: str  # CREATE | UPDATE
    namespace: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    old_template: Any
    new_template: Any
    user: str
    dry_run: bool
    image: str | None = None
    # The workload's labels before the change (UPDATE).
    old_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def workload(self) -> str:
        return f"deployment/{self.name}"

    def _label_sets(self, before: bool) -> list[Mapping[str, str]]:
        if before:
            if self.operation != "UPDATE":
                return []
            return [self.old_labels, template_labels(self.old_template)]
        return [self.labels, template_labels(self.new_template)]

    def _matches(self, gate: GateRef, before: bool) -> bool:
        return gate.namespace == self.namespace and any(
            gate.spec.selector.matches(dict(labels)) for labels in self._label_sets(before)
        )

    def matched_by(self, gate: GateRef) -> bool:
        """The gate applies if it matches the workload's or its pod template's labels, before
        or after the change: dropping a label in the same request does not escape it."""
        return self._matches(gate, before=False) or self._matches(gate, before=True)

    def escapes(self, gate: GateRef) -> bool:
        """A relabelling that takes the workload out of the gate (template unchanged)."""
        return self._matches(gate, before=True) and not self._matches(gate, before=False)


@dataclass(frozen=True)
class Override:
    reason: str
    until: float


@dataclass(frozen=True)
class GateHit:
    """A gate that would refuse (Enforce) or warn about (Warn/DryRun) this change."""

    gate: GateRef
    verdict: GateVerdict


@dataclass(frozen=True)
class Review:
    outcome: Outcome
    message: str = ""
    warnings: tuple[str, ...] = ()
    blocking: tuple[GateHit, ...] = ()  # Enforce gates that BLOCK: need a rollback or override
    recorded: tuple[GateHit, ...] = ()  # Warn/DryRun gates that would block: recorded as such
    override: Override | None = None
    override_error: str | None = None  # annotations present but unusable, and why
    gated: bool = False


def template_changed(change: Change) -> bool:
    return change.operation == "CREATE" or change.old_template != change.new_template


def template_labels(template: Any) -> dict[str, str]:
    if not isinstance(template, dict):
        return {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def strip_template_hash(template: Any) -> Any:
    """A ReplicaSet's template without the label the Deployment controller adds to it."""
    if not isinstance(template, dict):
        return template
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop(POD_TEMPLATE_HASH, None)
    meta = {**(template.get("metadata") or {}), "labels": labels}
    if not labels:
        meta.pop("labels")
    return {**template, "metadata": meta}


def is_rollback(change: Change, replicaset_templates: Sequence[Any]) -> bool:
    """Does the new template equal that of one of the Deployment's ReplicaSets?"""
    wanted = strip_template_hash(change.new_template)
    return any(strip_template_hash(t) == wanted for t in replicaset_templates)


def template_digest(template: Any) -> str:
    """A short fingerprint of a pod template without ``pod-template-hash``: what an index of
    ReplicaSets keeps instead of whole templates."""
    canonical = json.dumps(strip_template_hash(template), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def rollback_from_index(change: Change, digests: Collection[str]) -> bool | None:
    """Is this change a rollback, judged from the digests of the Deployment's ReplicaSets?

    ``None`` when the index cannot tell: it does not hold the ReplicaSet of the Deployment's
    current template, so it is behind the Deployment controller (or no controller created it);
    the caller must then ask the API server. Otherwise the index is known current for this
    Deployment and its answer stands.
    """
    if template_digest(change.new_template) in digests:
        return True
    if change.old_template is not None and template_digest(change.old_template) in digests:
        return False
    return None


def parse_override(annotations: Mapping[str, str], now: float) -> Override | str | None:
    """The override the workload asks for, an error message, or None when it asks for none."""
    reason = (annotations.get(OVERRIDE) or "").strip()
    until_text = (annotations.get(OVERRIDE_UNTIL) or "").strip()
    if not reason and not until_text:
        return None
    if not reason:
        return f"{OVERRIDE_UNTIL} is set but {OVERRIDE} (the reason) is missing"
    if not until_text:
        return f"{OVERRIDE} is set but {OVERRIDE_UNTIL} (an RFC3339 time) is missing"
    try:
        until = parse_rfc3339(until_text)
    except NoTimeZone:
        return f"{OVERRIDE_UNTIL}={until_text!r} needs a time zone (e.g. a trailing Z)"
    except ValueError:
        return f"{OVERRIDE_UNTIL}={until_text!r} is not an RFC3339 time like 2026-11-22T14:00:00Z"
    if until <= now:
        return f"the override expired at {until_text}"
    return Override(reason, until)


def review(
    change: Change,
    gates: Sequence[GateRef],
    slos: Mapping[tuple[str, str], SloView],
    now: float,
    stale_after_s: float,
) -> Review:
    """The verdict before rollback and RBAC checks (see module docstring).

    Gated: a template change (or a CREATE) of a workload a gate matches, and a relabelling
    that takes a workload out of a gate: while that gate blocks, it needs the same override.
    """
    if change.operation not in ("CREATE", "UPDATE"):
        return Review("allow")
    rollout = template_changed(change)
    if rollout:
        matching = [
            g
            for g in gates
            if change.matched_by(g) and (change.operation == "UPDATE" or g.spec.gate_creates)
        ]
    else:
        matching = [g for g in gates if change.escapes(g)]
    if not matching:
        return Review("allow")
    blocking: list[GateHit] = []
    recorded: list[GateHit] = []
    warnings: list[str] = []
    for gate in sorted(matching, key=lambda g: g.name):
        verdict = gate.judge(slos, now, stale_after_s)
        reasons = "; ".join(verdict.reasons)
        label = f"ReleaseGate {gate.namespace}/{gate.name}"
        if verdict.decision == "WARN":
            warnings.append(f"slogate: {label} warns: {reasons}")
        elif verdict.decision == "BLOCK":
            hit = GateHit(gate, verdict)
            if gate.spec.enforcement == "Enforce":
                blocking.append(hit)
            else:
                recorded.append(hit)
                mode = "Warn" if gate.spec.enforcement == "Warn" else "DryRun"
                warnings.append(f"slogate: {label} ({mode} mode) would block: {reasons}")
    if not blocking:
        return Review(
            "warn" if warnings else "allow",
            warnings=tuple(warnings),
            recorded=tuple(recorded),
            gated=True,
        )
    asked = parse_override(change.annotations, now)
    override = asked if isinstance(asked, Override) else None
    error = asked if isinstance(asked, str) else None
    if override is not None:
        too_far = [
            h
            for h in blocking
            if override.until - now > parse_duration(h.gate.spec.override.max_duration)
        ]
        if too_far:
            limits = ", ".join(
                f"{h.gate.namespace}/{h.gate.name} allows at most "
                f"{h.gate.spec.override.max_duration}"
                for h in too_far
            )
            error = (
                f"the override runs {humanize_seconds(override.until - now)} ahead, "
                f"beyond what the gate allows ({limits})"
            )
            override = None
    return Review(
        "deny",
        message=deny_message(change, blocking, now, rollout),
        warnings=tuple(warnings),
        blocking=tuple(blocking),
        recorded=tuple(recorded),
        override=override,
        override_error=error,
        gated=True,
    )


def deny_message(
    change: Change, blocking: Sequence[GateHit], now: float, rollout: bool = True
) -> str:
    """Names the gate(s), SLO(s), budget, burn rate and window, and the override command."""
    parts = []
    for hit in blocking:
        reasons = "; ".join(hit.verdict.reasons)
        parts.append(f"ReleaseGate {hit.gate.namespace}/{hit.gate.name}: {reasons}")
    shortest = min(parse_duration(h.gate.spec.override.max_duration) for h in blocking)
    # Whole minutes: the suggested value reads like one a person would type.
    until_text = rfc3339((now + shortest) // 60 * 60)
    what = (
        "this rollout"
        if rollout
        else "this relabelling (it takes the workload out of a gate that blocks)"
    )
    return (
        f"slogate refused {what} of {change.workload} in {change.namespace}: "
        + " | ".join(parts)
        + ". The error budget must recover before rollouts resume. To override (needs RBAC "
        f"verb 'override' on the releasegate): kubectl annotate {change.workload} -n "
        f"{change.namespace} --overwrite {OVERRIDE}='<reason>' {OVERRIDE_UNTIL}={until_text}"
        " and apply the change again with the same annotations."
    )


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    message: str = ""
    warnings: tuple[str, ...] = ()
    overridden: bool = False
    rollback: bool = False
    record_block: bool = False  # an Enforce block to record (not for dry-run requests)
    blocking: tuple[GateHit, ...] = field(default=())
    would_block: tuple[GateHit, ...] = field(default=())  # Warn/DryRun gates, to record


def settle(
    change: Change,
    first: Review,
    *,
    rollback: bool,
    may_override: Mapping[tuple[str, str], bool],
) -> Verdict:
    """The final answer, given the rollback check and per-gate RBAC answers (when needed)."""
    if first.outcome != "deny":
        return Verdict(first.outcome, warnings=first.warnings, would_block=first.recorded)
    if rollback:
        return Verdict(
            "allow",
            warnings=(
                *first.warnings,
                "slogate: rollback to an existing ReplicaSet's template; allowed despite the gate",
            ),
            rollback=True,
        )
    if first.override is not None:
        refused = [h for h in first.blocking if not may_override.get(h.gate.key, False)]
        if not refused:
            note = (
                f"slogate: override by {change.user} until "
                f"{rfc3339(first.override.until)}: {first.override.reason}"
            )
            return Verdict(
                "allow", warnings=(*first.warnings, note), overridden=True, blocking=first.blocking
            )
        names = ", ".join(f"{h.gate.namespace}/{h.gate.name}" for h in refused)
        why = f"the override was not honoured: {change.user} may not 'override' releasegate {names}"
        return Verdict(
            "deny",
            message=f"{first.message} ({why})",
            warnings=first.warnings,
            record_block=not change.dry_run,
            blocking=first.blocking,
        )
    message = first.message
    if first.override_error:
        message = f"{message} (the override was not honoured: {first.override_error})"
    return Verdict(
        "deny",
        message=message,
        warnings=first.warnings,
        record_block=not change.dry_run,
        blocking=first.blocking,
    )
