"""The ReleaseGate resource: which workloads which SLOs gate, and what spent budgets mean."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, field_validator

from slogate.core.durations import parse_duration
from slogate.core.specbase import (
    Condition,
    CrossFieldRule,
    Duration,
    K8sName,
    LabelSelector,
    SpecModel,
    StatusModel,
    cel_seconds,
)

# What an SLO's state can trigger in a policy: a condition or a risk level.
Trigger = Literal["BudgetExhausted", "FREEZE", "DANGER", "OBSERVE"]
Decision = Literal["ALLOW", "WARN", "BLOCK"]
MAX_OVERRIDE_S = 7 * 86400


class ObjectiveRef(SpecModel):
    name: Annotated[K8sName, Field(description="A ServiceLevelObjective in this namespace.")]


class Policy(SpecModel):
    block_when: Annotated[
        list[Trigger],
        Field(
            max_length=4,
            description="Block gated rollouts when any objective is in one of these states.",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = Field(default=["BudgetExhausted"])
    warn_when: Annotated[
        list[Trigger],
        Field(
            max_length=4,
            description="Admit with a warning when any objective is in one of these states.",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = Field(default=["DANGER"])
    on_unknown: Annotated[
        Literal["Allow", "Warn", "Block"],
        Field(description="What to do when an objective's data is missing or stale."),
    ] = "Warn"

    @field_validator("block_when", "warn_when")
    @classmethod
    def _no_repeats(cls, items: list[str]) -> list[str]:
        if len(set(items)) != len(items):
            raise ValueError("list each state at most once")
        return items


class Override(SpecModel):
    max_duration: Annotated[
        Duration,
        Field(description="Longest override window a workload annotation may ask for."),
    ] = "4h"

    cross_field_rules = (
        CrossFieldRule(
            cel=f"{cel_seconds('self.maxDuration')} <= {MAX_OVERRIDE_S}",
            check=lambda s: parse_duration(s.max_duration) <= MAX_OVERRIDE_S,
            message="maxDuration must be at most 7d",
            field_path=".maxDuration",
        ),
    )


class GateSpec(SpecModel):
    """spec of a ReleaseGate."""

    selector: Annotated[
        LabelSelector,
        Field(description="Deployments in this namespace that this gate guards."),
    ]
    objectives: (
        Annotated[
            list[ObjectiveRef],
            Field(
                min_length=1,
                max_length=64,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    objective_selector: (
        Annotated[
            LabelSelector,
            Field(
                description="Select the gating SLOs in this namespace by label instead of by name."
            ),
        ]
        | None
    ) = None
    policy: Policy = Policy()
    enforcement: Annotated[
        Literal["Enforce", "Warn", "DryRun"],
        Field(description="Enforce refuses; Warn admits with a warning; DryRun only records."),
    ] = "Enforce"
    gate_creates: Annotated[
        StrictBool,
        Field(
            description="Also gate the creation of new workloads (a second Deployment with the "
            "new image is a rollout too). Default true."
        ),
    ] = True
    override: Override = Override()

    cross_field_rules = (
        CrossFieldRule(
            cel="has(self.objectives) != has(self.objectiveSelector)",
            check=lambda s: (s.objectives is None) != (s.objective_selector is None),
            message="set exactly one of objectives or objectiveSelector",
        ),
    )


# --- status -----------------------------------------------------------------------------------

OVERRIDES_KEPT = 10


class ObjectiveState(StatusModel):
    name: str
    namespace: str | None = None
    risk: str | None = None
    budget_remaining: float | None = None
    stale: bool | None = None
    blocking: bool | None = Field(
        default=None,
        description="This objective blocks, on fresh data or as last seen (a sticky block "
        "while its data is stale or its SLO missing, until fresh data says otherwise).",
    )


class BlockRecord(StatusModel):
    workload: str
    user: str
    image: str | None = None
    time: str = Field(json_schema_extra={"format": "date-time"})
    dry_run: bool | None = None


class OverrideRecord(StatusModel):
    workload: str
    user: str
    reason: str
    until: str = Field(json_schema_extra={"format": "date-time"})
    time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})


class GateStatus(StatusModel):
    observed_generation: int | None = None
    decision: Decision | None = None
    reasons: list[str] | None = None
    objectives: list[ObjectiveState] | None = None
    blocked_count: int | None = None
    last_blocked: BlockRecord | None = None
    last_override: OverrideRecord | None = None
    overrides: list[OverrideRecord] | None = Field(
        default=None,
        max_length=OVERRIDES_KEPT,
        description=f"The last {OVERRIDES_KEPT} overrides (rollouts, and changes to SLOs this "
        "gate blocked on), oldest first; each was recorded before it was admitted.",
    )
    conditions: list[Condition] | None = None
