"""Whole resources (apiVersion, kind, metadata, spec, status) and their CRD identities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slogate.core.objective import SloSpec, SloStatus
from slogate.core.releasegate import GateSpec, GateStatus
from slogate.core.specbase import K8S_NAME_PATTERN

GROUP = "slogate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ObjectMeta(BaseModel):
    """The parts of metadata slogate reads; everything else Kubernetes adds is kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: Annotated[str, Field(pattern=K8S_NAME_PATTERN, max_length=253)]
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generation: int | None = None


class _Resource(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Annotated[Literal["slogate.dev/v1alpha1"], Field(alias="apiVersion")]
    metadata: ObjectMeta


class ServiceLevelObjective(_Resource):
    kind: Literal["ServiceLevelObjective"]
    spec: SloSpec
    status: SloStatus | None = None


class ReleaseGate(_Resource):
    kind: Literal["ReleaseGate"]
    spec: GateSpec
    status: GateStatus | None = None


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    resource_model: type[_Resource]
    columns: tuple[PrinterColumn, ...]
    description: str


SLO_KIND = Kind(
    kind="ServiceLevelObjective",
    plural="servicelevelobjectives",
    singular="servicelevelobjective",
    short_names=("slo",),
    spec_model=SloSpec,
    status_model=SloStatus,
    resource_model=ServiceLevelObjective,
    description="A service level objective: an SLI read from Prometheus, a target and a window; "
    "status carries the error budget, burn rates, risk and an exhaustion forecast.",
    columns=(
        PrinterColumn("Target", "number", ".spec.target", "Promised percent of good events"),
        PrinterColumn("SLI", "string", ".status.summary.sli", "Good events over the window"),
        PrinterColumn("Budget", "string", ".status.summary.budget", "Error budget remaining"),
        PrinterColumn("Burn-1h", "string", ".status.summary.burn1h", "Burn rate over 1h"),
        PrinterColumn("Risk", "string", ".status.risk", "SAFE, OBSERVE, DANGER, FREEZE, UNKNOWN"),
        PrinterColumn("Exhausts", "string", ".status.forecast.exhaustsIn", "Forecast exhaustion"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Age"),
        PrinterColumn("Service", "string", ".spec.service", "Service", priority=1),
        PrinterColumn("Message", "string", ".status.message", "Summary", priority=1),
    ),
)

GATE_KIND = Kind(
    kind="ReleaseGate",
    plural="releasegates",
    singular="releasegate",
    short_names=("gate",),
    spec_model=GateSpec,
    status_model=GateStatus,
    resource_model=ReleaseGate,
    description="Gates rollouts of matching Deployments on the error budgets of chosen SLOs.",
    columns=(
        PrinterColumn("Decision", "string", ".status.decision", "ALLOW, WARN or BLOCK"),
        PrinterColumn("Reason", "string", ".status.reasons[0]", "First reason for the decision"),
        PrinterColumn("Blocked", "integer", ".status.blockedCount", "Rollouts refused so far"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Age"),
        PrinterColumn("Enforcement", "string", ".spec.enforcement", "Mode", priority=1),
    ),
)

KINDS: dict[str, Kind] = {k.kind: k for k in (SLO_KIND, GATE_KIND)}


def parse_resource(doc: dict[str, Any]) -> ServiceLevelObjective | ReleaseGate:
    """Validate one manifest document; raises pydantic.ValidationError or ValueError."""
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ValueError(
            f"kind: {kind!r} is not a slogate kind; expected one of {', '.join(KINDS)}"
        )
    model = KINDS[kind].resource_model
    return model.model_validate(doc)  # type: ignore[return-value]
