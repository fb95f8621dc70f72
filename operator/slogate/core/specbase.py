"""Building blocks shared by the ServiceLevelObjective and ReleaseGate models.

The pydantic models are the single source of truth for the resources' shape: the CRD schemas in
``crds/`` are generated from them (``slogate.core.crd``), the CLI validates manifests offline with
them, and the operator parses what the API server stores with them.

A rule that spans several fields is written once as a :class:`CrossFieldRule`: its CEL expression
goes into the CRD (``x-kubernetes-validations``) and its Python twin runs in the model, both with
the same message, so ``kubectl apply`` and ``slogate validate`` refuse the same manifest with the
same words. Tests hold the two expressions to each other on a shared corpus of manifests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from slogate.core.durations import DURATION_MAX_LENGTH, DURATION_PATTERN, UNIT_SECONDS

# message -> field path, so offline errors point at the same field as the API server's.
RULE_FIELD_PATHS: dict[str, str] = {}


@dataclass(frozen=True)
class CrossFieldRule:
    """One validation rule, expressed for the API server (CEL) and for Python alike."""

    cel: str
    check: Callable[[Any], bool]
    message: str
    field_path: str | None = None  # where kubectl should point, e.g. ".window"

    def __post_init__(self) -> None:
        if self.field_path:
            RULE_FIELD_PATHS[self.message] = self.field_path

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


@dataclass(frozen=True)
class FieldRule:
    """A CEL rule on a single field, used as ``Annotated[str, FieldRule(...)]``.

    Unlike a CrossFieldRule's ``fieldPath``, a rule attached to the field itself keeps the field's
    path in the API server's message even when CEL fails at runtime (e.g. an unknown time zone).
    """

    cel: str
    check: Callable[[Any], bool]
    message: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Any:
            if not self.check(value):
                raise ValueError(self.message)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["x-kubernetes-validations"] = [{"rule": self.cel, "message": self.message}]
        return out


class SpecModel(BaseModel):
    """Base for every object in a manifest: camelCase names, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
    cross_field_rules: ClassVar[tuple[CrossFieldRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> SpecModel:
        for rule in self.cross_field_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self


class StatusModel(BaseModel):
    """Base for status objects: written by the operator, so unknown fields are kept, not refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def cel_seconds(expr: str) -> str:
    """CEL that turns a duration string such as ``30d`` (already pattern-checked) into seconds."""
    unit = " : ".join(f"{expr}.endsWith('{u}') ? {UNIT_SECONDS[u]}" for u in ("w", "d", "h", "m"))
    return f"(int({expr}.substring(0, size({expr}) - 1)) * ({unit} : 1))"


Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=DURATION_MAX_LENGTH,
        description="A whole number and one unit of s, m, h, d or w, e.g. 5m, 1h, 30d.",
    ),
]

# Kubernetes object names (RFC 1123 subdomain, as metadata.name uses).
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
K8sName = Annotated[str, Field(pattern=K8S_NAME_PATTERN, min_length=1, max_length=253)]

# A PromQL series selector, spelled out token by token: a metric name and/or label matchers
# whose values are complete string literals. It is pasted into the queries slogate builds, so
# nothing else may pass: a stray ")" or an unterminated quote would let a selector rewrite the
# query around it. One grammar serves the CRD (the API server's regexp), the models and the
# parser in ``slogate.core.promql``; it is linear to match (no nested quantifiers).
METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
MATCH_OP = r"(=~|!~|!=|=)"
STRING_LITERAL = r"""("([^"\\\n]|\\.)*"|'([^'\\\n]|\\.)*'|`[^`]*`)"""
MATCHER = rf"{LABEL_NAME}\s*{MATCH_OP}\s*{STRING_LITERAL}"
_MATCHER_LIST = rf"{MATCHER}(\s*,\s*{MATCHER})*(\s*,)?"
MATCHERS = rf"\{{\s*({_MATCHER_LIST}\s*)?\}}"
SELECTOR_PATTERN = rf"^\s*({METRIC_NAME}(\s*{MATCHERS})?|\{{\s*{_MATCHER_LIST}\s*\}})\s*$"
# A histogram's base name must be known: _bucket and _count are appended to it. Written in
# front, or as an exact __name__ matcher whose value is a metric name.
_NAME_MATCHER = rf"""__name__\s*=\s*("{METRIC_NAME}"|'{METRIC_NAME}'|`{METRIC_NAME}`)"""
NAMED_SELECTOR_PATTERN = (
    rf"^\s*({METRIC_NAME}(\s*{MATCHERS})?"
    rf"|\{{\s*({MATCHER}\s*,\s*)*{_NAME_MATCHER}(\s*,\s*{MATCHER})*(\s*,)?\s*\}})\s*$"
)
PromSelector = Annotated[
    str,
    Field(
        pattern=SELECTOR_PATTERN,
        min_length=1,
        max_length=4096,
        description=(
            'A counter series selector such as http_requests_total{job="api"}; slogate wraps '
            "it in increase()/rate() itself. For arbitrary PromQL use indicator.query."
        ),
    ),
]
NamedSelector = Annotated[
    str,
    Field(
        pattern=NAMED_SELECTOR_PATTERN,
        min_length=1,
        max_length=4096,
        description=(
            "A histogram's base metric name with optional label matchers, such as "
            'http_request_duration_seconds{job="api"}; _bucket and _count are derived.'
        ),
    ),
]


# Not only whitespace; a CEL twin so the API server refuses "   " as the models do.
NonBlank = FieldRule(
    cel="self.trim().size() > 0",
    check=lambda value: bool(value.strip()),
    message="must not be blank",
)


class LabelSelectorRequirement(SpecModel):
    key: Annotated[str, Field(min_length=1, max_length=317)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, Field(max_length=63)]] | None = None

    cross_field_rules = (
        CrossFieldRule(
            cel="self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
            " : (!has(self.values) || size(self.values) == 0)",
            check=lambda s: bool(s.values) == (s.operator in ("In", "NotIn")),
            message="values must be non-empty for In/NotIn and empty for Exists/DoesNotExist",
            field_path=".values",
        ),
    )


class LabelSelector(SpecModel):
    """A standard Kubernetes label selector; an empty selector matches everything."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions or ():
            present = req.key in labels
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator == "In" and (not present or labels[req.key] not in (req.values or ())):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in (req.values or ()):
                return False
        return True


class Condition(StatusModel):
    """A status condition following the Kubernetes API conventions."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    observed_generation: int | None = None
