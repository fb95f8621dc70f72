"""The ServiceLevelObjective resource: what a team promises (spec) and how it stands (status).

Field names are the API: the CRD in ``crds/`` and ``docs/reference.md`` are generated from
these classes.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, StrictFloat, StrictInt, field_validator

from slogate.core.durations import parse_duration
from slogate.core.specbase import (
    K8S_NAME_PATTERN,
    Condition,
    CrossFieldRule,
    Duration,
    FieldRule,
    NamedSelector,
    NonBlank,
    PromSelector,
    SpecModel,
    StatusModel,
    cel_seconds,
)

DEFAULT_WINDOW = "30d"
MIN_WINDOW_S = 86400
MAX_WINDOW_S = 366 * 86400
Risk = Literal["SAFE", "OBSERVE", "DANGER", "FREEZE", "UNKNOWN"]

_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


class RatioIndicator(SpecModel):
    """Two event counters: bad (``errors``) or good (``good``) events, and all (``total``)."""

    errors: PromSelector | None = None
    good: PromSelector | None = None
    total: PromSelector

    cross_field_rules = (
        CrossFieldRule(
            cel="has(self.errors) != has(self.good)",
            check=lambda s: (s.errors is None) != (s.good is None),
            message="ratio needs exactly one of errors or good (plus total)",
        ),
    )


class LatencyIndicator(SpecModel):
    """A classic Prometheus histogram; requests slower than ``threshold`` seconds are bad events."""

    histogram: NamedSelector
    threshold: Annotated[
        StrictFloat,
        Field(gt=0, description="Seconds; must equal one of the histogram's bucket bounds (le)."),
    ]

    cross_field_rules = (
        CrossFieldRule(
            cel="!self.histogram.split('{')[0].trim().matches('_(bucket|count|sum)$')",
            check=lambda s: not s.histogram.split("{")[0].strip().endswith(_HISTOGRAM_SUFFIXES),
            message="histogram takes the base metric name: drop the _bucket, _count or _sum suffix",
            field_path=".histogram",
        ),
    )


class QueryIndicator(SpecModel):
    """Escape hatch: PromQL that returns the error ratio (0..1) over ``{{window}}``."""

    error_ratio: Annotated[
        str,
        NonBlank,
        Field(
            min_length=1,
            max_length=8192,
            description="PromQL for the error ratio (0..1); {{window}} becomes each window.",
        ),
    ]

    cross_field_rules = (
        CrossFieldRule(
            cel="self.errorRatio.contains('{{window}}')",
            check=lambda s: "{{window}}" in s.error_ratio,
            message="errorRatio must contain the {{window}} placeholder where the range goes, "
            "e.g. rate(errors_total[{{window}}])",
            field_path=".errorRatio",
        ),
    )


class Indicator(SpecModel):
    """How good and bad events are counted; exactly one kind."""

    ratio: RatioIndicator | None = None
    latency: LatencyIndicator | None = None
    query: QueryIndicator | None = None

    cross_field_rules = (
        CrossFieldRule(
            cel="[has(self.ratio), has(self.latency), has(self.query)].filter(x, x).size() == 1",
            check=lambda s: sum(k is not None for k in (s.ratio, s.latency, s.query)) == 1,
            message="indicator needs exactly one of ratio, latency or query",
        ),
    )

    @property
    def kind(self) -> Literal["ratio", "latency", "query"]:
        if self.ratio is not None:
            return "ratio"
        if self.latency is not None:
            return "latency"
        return "query"


class Calendar(SpecModel):
    """A calendar compliance window: the budget resets at the start of every period."""

    period: Annotated[
        Literal["week", "month", "quarter"],
        Field(description="week (from Monday 00:00), month or quarter, in timeZone."),
    ]
    time_zone: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description="IANA time zone the period boundaries are taken in, e.g. Europe/Berlin.",
        ),
        FieldRule(
            # getHours() fails on a zone the tz database does not know, which refuses the object.
            # It also takes a fixed offset ("+02:00") and Go's "Local", which are no IANA names
            # (and which Python's zoneinfo refuses), so those are excluded first.
            cel="!self.contains(':') && self != 'Local'"
            " && timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0",
            check=lambda zone: _known_zone(zone),
            message="timeZone must be an IANA time zone name such as UTC or Europe/Berlin",
        ),
    ] = "UTC"


def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class BurnRateRule(SpecModel):
    """Alert when the burn rate over both ``long`` and ``short`` windows exceeds ``burnRate``."""

    name: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            max_length=63,
            description="Shown in status.firing; page rules make the risk FREEZE.",
        ),
    ]
    long: Annotated[Duration, Field(description="Long window, e.g. 1h.")]
    short: Annotated[Duration, Field(description="Short window that confirms it, e.g. 5m.")]
    burn_rate: Annotated[
        StrictFloat, Field(gt=0, le=1000, description="Threshold, in multiples of the budget.")
    ]
    severity: Annotated[
        Literal["page", "ticket"],
        Field(description="page: FREEZE while firing; ticket: DANGER while firing."),
    ]
    for_: (
        Annotated[
            Duration,
            Field(
                description="How long the generated alert must hold before it is sent "
                "(default: half the short window, in whole minutes).",
            ),
        ]
        | None
    ) = Field(default=None, alias="for")

    cross_field_rules = (
        CrossFieldRule(
            cel=f"{cel_seconds('self.short')} < {cel_seconds('self.long')}",
            check=lambda s: parse_duration(s.short) < parse_duration(s.long),
            message="short must be a shorter window than long (e.g. long: 1h, short: 5m)",
            field_path=".short",
        ),
    )


#: Labels slogate sets on every alert; the spec's own labels may not replace them.
ALERT_LABELS = ("alertname", "severity", "slo", "namespace", "service", "owner", "tier", "rule")
_LABEL_KEY = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
_RESERVED_CEL = "[" + ", ".join(f"'{name}'" for name in ALERT_LABELS) + "]"

LabelValue = Annotated[str, Field(max_length=1024)]


def _label_keys_ok(labels: dict[str, str] | None) -> bool:
    return all(re.match(_LABEL_KEY, k) and k not in ALERT_LABELS for k in labels or {})


def _annotation_keys_ok(annotations: dict[str, str] | None) -> bool:
    return all(re.match(_LABEL_KEY, k) for k in annotations or {})


class Alerting(SpecModel):
    """Burn-rate rules (they drive ``status.firing``, risk and gates) and the Prometheus alerts
    generated from them."""

    rules: (
        Annotated[
            list[BurnRateRule],
            Field(
                min_length=1,
                max_length=16,
                description="Default: the SRE Workbook's multiwindow table for the window.",
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    disabled: Annotated[
        bool,
        Field(
            description="No Prometheus rules are generated for this SLO (status.firing, risk "
            "and gates are unaffected)."
        ),
    ] = False
    labels: Annotated[
        dict[str, LabelValue],
        Field(
            max_length=16,
            description="Added to every alert of this SLO, for Alertmanager routing "
            "(e.g. team: payments).",
        ),
    ] = Field(default_factory=dict)
    annotations: Annotated[
        dict[str, LabelValue],
        Field(max_length=16, description="Added to every alert of this SLO."),
    ] = Field(default_factory=dict)
    runbook_url: (
        Annotated[
            str,
            Field(
                pattern=r"^https?://[^\s]+$",
                max_length=2048,
                description="Runbook link, shown as the alerts' runbook_url annotation.",
            ),
        ]
        | None
    ) = Field(default=None, alias="runbookURL")

    cross_field_rules = (
        CrossFieldRule(
            cel="!has(self.labels) || "
            f"self.labels.all(k, k.matches('{_LABEL_KEY}') && !(k in {_RESERVED_CEL}))",
            check=lambda s: _label_keys_ok(s.labels),
            message="labels keys must be Prometheus label names (letters, digits, _) and not one "
            f"slogate sets itself ({', '.join(ALERT_LABELS)})",
            field_path=".labels",
        ),
        CrossFieldRule(
            cel=f"!has(self.annotations) || self.annotations.all(k, k.matches('{_LABEL_KEY}'))",
            check=lambda s: _annotation_keys_ok(s.annotations),
            message="annotations keys must be Prometheus label names (letters, digits, _)",
            field_path=".annotations",
        ),
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[BurnRateRule] | None) -> list[BurnRateRule] | None:
        names = [r.name for r in rules or ()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; duplicated: {', '.join(dupes)}")
        return rules


class Evaluation(SpecModel):
    interval: Annotated[Duration, Field(description="How often the SLO is evaluated.")] = "30s"
    min_events: Annotated[
        StrictInt,
        Field(ge=0, description="Fewer events than this in a window counts as no data."),
    ] = 1

    cross_field_rules = (
        CrossFieldRule(
            cel=f"{cel_seconds('self.interval')} >= 10 && {cel_seconds('self.interval')} <= 3600",
            check=lambda s: 10 <= parse_duration(s.interval) <= 3600,
            message="interval must be between 10s and 1h",
            field_path=".interval",
        ),
    )


class Dependency(SpecModel):
    name: Annotated[
        str,
        Field(
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?" + K8S_NAME_PATTERN[1:],
            max_length=317,
            description="An SLO in this namespace, or namespace/name for one elsewhere.",
        ),
    ]

    def resolve(self, own_namespace: str) -> tuple[str, str]:
        """``(namespace, name)`` of the SLO this points at."""
        if "/" in self.name:
            ns, name = self.name.split("/", 1)
            return ns, name
        return own_namespace, self.name


class PrometheusRef(SpecModel):
    url: Annotated[
        str,
        Field(
            # No user:password@ (a spec is readable by everyone who may read SLOs), no query
            # string or fragment (the client appends the API path to it).
            pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
            max_length=2048,
            description="Prometheus-compatible query API base URL (Prometheus, Thanos, Mimir); "
            "only URLs on the operator's allow-list are queried.",
        ),
    ]


class SloSpec(SpecModel):
    """spec of a ServiceLevelObjective."""

    service: Annotated[
        str,
        NonBlank,
        Field(min_length=1, max_length=253, description="The service this SLO belongs to."),
    ]
    owner: (
        Annotated[
            str, Field(max_length=253, description="Team that owns the SLO (shown in reports).")
        ]
        | None
    ) = None
    tier: (
        Annotated[StrictInt, Field(ge=1, le=3, description="1 (critical) .. 3 (standard).")] | None
    ) = None
    description: (
        Annotated[str, Field(max_length=1024, description="What the SLO promises, in words.")]
        | None
    ) = None
    target: Annotated[
        StrictFloat,
        Field(gt=0, lt=100, description="Percent of good events promised, 0 < target < 100."),
    ]
    window: (
        Annotated[
            Duration,
            Field(description="Rolling compliance window (default 30d); or use calendar."),
        ]
        | None
    ) = None
    calendar: Calendar | None = None
    indicator: Indicator
    alerting: (
        Annotated[
            Alerting,
            Field(description="Burn-rate rules; default: the SRE Workbook's multiwindow table."),
        ]
        | None
    ) = None
    evaluation: Evaluation = Evaluation()
    depends_on: Annotated[
        list[Dependency],
        Field(max_length=32, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
    ] = Field(default_factory=list)
    prometheus: PrometheusRef | None = None

    cross_field_rules = (
        CrossFieldRule(
            cel="!(has(self.window) && has(self.calendar))",
            check=lambda s: not (s.window is not None and s.calendar is not None),
            message="set either window (rolling) or calendar, not both",
        ),
        CrossFieldRule(
            cel=f"!has(self.window) || ({cel_seconds('self.window')} >= {MIN_WINDOW_S}"
            f" && {cel_seconds('self.window')} <= {MAX_WINDOW_S})",
            check=lambda s: (
                s.window is None or MIN_WINDOW_S <= parse_duration(s.window) <= MAX_WINDOW_S
            ),
            message="window must be between 1d and 366d",
            field_path=".window",
        ),
    )

    @property
    def window_seconds(self) -> int:
        """Length of the rolling window; for calendar SLOs, of the longest period (for history)."""
        if self.calendar is not None:
            return {"week": 7, "month": 31, "quarter": 92}[self.calendar.period] * 86400
        return parse_duration(self.window or DEFAULT_WINDOW)


# --- status -----------------------------------------------------------------------------------


class ErrorBudget(StatusModel):
    remaining: float | None = None
    consumed: float | None = None


class Forecast(StatusModel):
    exhaustion_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    exhausts_in: str | None = None
    trend: Literal["increasing", "stable", "decreasing"] | None = None
    confidence: Literal["high", "medium", "low"] | None = None


class Recommendation(StatusModel):
    target: float | None = None
    achieved: float | None = None
    dependency_bound: float | None = None
    achievable: bool | None = None


class SloSummary(StatusModel):
    """Preformatted values for ``kubectl get slo`` (printer columns cannot do arithmetic)."""

    sli: str | None = None
    budget: str | None = None
    burn1h: str | None = Field(default=None, alias="burn1h")


class SloStatus(StatusModel):
    observed_generation: int | None = None
    last_evaluation_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    sli: float | None = None
    error_budget: ErrorBudget | None = None
    burn_rates: dict[str, float | None] | None = None
    firing: list[str] | None = None
    risk: Risk | None = None
    forecast: Forecast | None = None
    recommendation: Recommendation | None = None
    conditions: list[Condition] | None = None
    message: str | None = None
    summary: SloSummary | None = None
