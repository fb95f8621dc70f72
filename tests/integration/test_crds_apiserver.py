"""The CRDs in a real kube-apiserver: examples apply, bad manifests are refused, columns print.

The same invalid corpus is checked against the pydantic models in tests/unit/test_models.py, so
the API server and the models are held to the same answers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from localenv.controlplane import ControlPlane
from slogate.core.objective import (
    Condition,
    ErrorBudget,
    Forecast,
    Recommendation,
    SloStatus,
    SloSummary,
)
from slogate.core.timetext import rfc3339
from slogate.core.validation import field_errors
from tests.conftest import EXAMPLES, MANIFESTS
from tests.unit.test_models import INVALID, expectations

pytestmark = pytest.mark.cluster


def test_examples_apply_and_list(control_plane: ControlPlane) -> None:
    applied = control_plane.kubectl("apply", "-f", str(EXAMPLES))
    assert applied.returncode == 0, applied.stderr
    names = {d.stem for d in EXAMPLES.glob("*.yaml")} - {"00-namespace"}
    listed = control_plane.get_json("slogate", "-n", "shop")["items"]
    listed_names = {item["metadata"]["name"] for item in listed}
    # Every example file contributed its object; a file name need not equal the object name.
    assert len(listed) == len(names)
    assert {"checkout-availability", "checkout", "storefront-monthly"} <= listed_names


def test_printer_columns(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(EXAMPLES), check=True)
    slo = control_plane.kubectl("get", "slo", "-n", "shop", check=True).stdout
    assert slo.splitlines()[0].split() == [
        "NAME",
        "TARGET",
        "SLI",
        "BUDGET",
        "BURN-1H",
        "RISK",
        "EXHAUSTS",
        "AGE",
    ]
    assert "checkout-availability" in slo
    gate = control_plane.kubectl("get", "gate", "-n", "shop", check=True).stdout
    assert gate.splitlines()[0].split() == ["NAME", "DECISION", "REASON", "BLOCKED", "AGE"]
    wide = control_plane.kubectl("get", "slo", "-n", "shop", "-o", "wide", check=True).stdout
    assert "SERVICE" in wide.splitlines()[0] and "MESSAGE" in wide.splitlines()[0]


def test_status_model_is_accepted_by_the_status_schema(control_plane: ControlPlane) -> None:
    """A status as the operator will write it survives the API server's schema unchanged."""
    control_plane.kubectl("apply", "-f", str(EXAMPLES), check=True)
    now = rfc3339(time.time())
    status = SloStatus(
        observed_generation=1,
        last_evaluation_time=now,
        sli=0.99871,
        error_budget=ErrorBudget(remaining=-0.29, consumed=1.29),
        burn_rates={"5m": 3.1, "1h": 3.2, "3d": None},
        firing=["page-fast"],
        risk="FREEZE",
        forecast=Forecast(
            exhaustion_time=None, exhausts_in="exhausted", trend="increasing", confidence="high"
        ),
        recommendation=Recommendation(
            target=99.5, achieved=99.87, dependency_bound=99.85, achievable=False
        ),
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="Evaluated",
                message="ok",
                last_transition_time=now,
                observed_generation=1,
            )
        ],
        message="Budget overspent (-29%); burning 3.2x over 1h; page-fast firing.",
        summary=SloSummary(sli="99.871%", budget="-29%", burn1h="3.2x"),
    )
    # A JSON patch, not a merge patch: in a merge patch null means "delete", and a window
    # without traffic must read null, not vanish.
    body = [{"op": "add", "path": "/status", "value": status.model_dump(by_alias=True)}]
    patched = control_plane.kubectl(
        "patch",
        "slo",
        "checkout-availability",
        "-n",
        "shop",
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(body),
    )
    assert patched.returncode == 0, patched.stderr
    stored = control_plane.get_json("slo", "checkout-availability", "-n", "shop")["status"]
    assert SloStatus.model_validate(stored) == status
    assert stored["burnRates"]["3d"] is None
    assert stored["forecast"]["exhaustionTime"] is None
    row = control_plane.kubectl(
        "get", "slo", "checkout-availability", "-n", "shop", "--no-headers", check=True
    ).stdout.split()
    assert row[1:7] == ["99.9", "99.871%", "-29%", "3.2x", "FREEZE", "exhausted"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_refused_by_apiserver(control_plane: ControlPlane, path: Path) -> None:
    field, message = expectations(path)
    result = control_plane.kubectl("apply", "-f", str(path))
    assert result.returncode != 0, f"the API server accepted {path.name}"
    assert field in result.stderr, result.stderr
    if message:
        assert message in result.stderr, result.stderr
    # ... and the models refuse the same document (the unit suite checks the field there).
    assert field_errors(yaml.safe_load(path.read_text()))


def test_valid_corpus_accepted_by_apiserver(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("apply", "-f", str(MANIFESTS / "valid"))
    assert result.returncode == 0, result.stderr
    stored = control_plane.get_json("slo", "edge-values", "-n", "default")
    # API-server defaulting fills what the models default, so both read the same object.
    assert stored["spec"]["evaluation"] == {"interval": "1h", "minEvents": 0}
    gate = control_plane.get_json("gate", "selector-gate", "-n", "default")
    assert gate["spec"]["override"] == {"maxDuration": "7d"}
    minimal = control_plane.get_json("slo", "minimal", "-n", "default")
    assert minimal["spec"]["evaluation"] == {"interval": "30s", "minEvents": 1}
