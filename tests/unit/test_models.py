"""The pydantic models: what they accept, what they refuse, and the words they use."""

from pathlib import Path

import pytest
import yaml

from slogate.core.objective import SloSpec
from slogate.core.releasegate import GateSpec
from slogate.core.resources import ReleaseGate, ServiceLevelObjective, parse_resource
from slogate.core.validation import field_errors
from slogate.manifests import load_documents

REPO = Path(__file__).resolve().parents[2]
INVALID = sorted((REPO / "tests" / "manifests" / "invalid").glob("*.yaml"))
VALID_DIRS = [REPO / "examples", REPO / "tests" / "manifests" / "valid"]


def expectations(path: Path) -> tuple[str, str]:
    field = message = ""
    for line in path.read_text().splitlines():
        if line.startswith("# expect-field:"):
            field = line.split(":", 1)[1].strip()
        if line.startswith("# expect-message:"):
            message = line.split(":", 1)[1].strip()
    assert field, f"{path.name} lacks an '# expect-field:' header"
    return field, message


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_refused_naming_the_field(path: Path) -> None:
    field, message = expectations(path)
    errors = field_errors(yaml.safe_load(path.read_text()))
    assert errors, f"{path.name} was accepted"
    assert any(e.startswith(f"{field}:") for e in errors), errors
    if message:
        assert any(message in e for e in errors), errors


def test_valid_manifests_accepted() -> None:
    docs = [d for d in load_documents(VALID_DIRS) if d.body.get("apiVersion") != "v1"]
    assert len(docs) >= 9
    for doc in docs:
        assert field_errors(doc.body) == [], doc.source


def base_spec(**over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "service": "api",
        "target": 99.9,
        "indicator": {"ratio": {"errors": "e_total", "total": "t_total"}},
    }
    spec.update(over)
    return spec


def test_defaults_match_design() -> None:
    spec = SloSpec.model_validate(base_spec())
    assert spec.window is None and spec.window_seconds == 30 * 86400
    assert spec.evaluation.interval == "30s" and spec.evaluation.min_events == 1
    assert spec.alerting is None and spec.depends_on == []
    gate = GateSpec.model_validate({"selector": {}, "objectives": [{"name": "a"}]})
    assert gate.policy.block_when == ["BudgetExhausted"]
    assert gate.policy.warn_when == ["DANGER"]
    assert gate.policy.on_unknown == "Warn"
    assert gate.enforcement == "Enforce" and gate.gate_creates is True
    assert gate.override.max_duration == "4h"


def test_integer_target_is_a_number_but_bool_is_not() -> None:
    assert SloSpec.model_validate(base_spec(target=99)).target == 99
    assert field_errors(
        {
            "apiVersion": "slogate.dev/v1alpha1",
            "kind": "ServiceLevelObjective",
            "metadata": {"name": "x"},
            "spec": base_spec(target=True),
        }
    )


def test_several_errors_are_all_reported() -> None:
    doc = {
        "apiVersion": "slogate.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": {"name": "x"},
        "spec": base_spec(target=120, window="30x", tier=9),
    }
    fields = {e.split(":")[0] for e in field_errors(doc)}
    assert {"spec.target", "spec.window", "spec.tier"} <= fields


def test_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="not a slogate kind"):
        parse_resource({"kind": "Deployment"})


def test_dependency_resolves_namespace() -> None:
    spec = SloSpec.model_validate(base_spec(dependsOn=[{"name": "db/pg"}, {"name": "cache"}]))
    assert [d.resolve("shop") for d in spec.depends_on] == [("db", "pg"), ("shop", "cache")]


def test_label_selector_semantics() -> None:
    gate = GateSpec.model_validate(
        {
            "selector": {
                "matchLabels": {"app": "checkout"},
                "matchExpressions": [
                    {"key": "track", "operator": "NotIn", "values": ["canary"]},
                    {"key": "team", "operator": "Exists"},
                ],
            },
            "objectives": [{"name": "a"}],
        }
    )
    sel = gate.selector
    assert sel.matches({"app": "checkout", "team": "pay"})
    assert not sel.matches({"app": "checkout", "team": "pay", "track": "canary"})
    assert not sel.matches({"app": "checkout"})
    assert not sel.matches({"app": "cart", "team": "pay"})


def test_resource_models_round_trip_examples() -> None:
    for doc in load_documents([REPO / "examples"]):
        if doc.body["kind"] == "ServiceLevelObjective":
            ServiceLevelObjective.model_validate(doc.body)
        elif doc.body["kind"] == "ReleaseGate":
            ReleaseGate.model_validate(doc.body)
