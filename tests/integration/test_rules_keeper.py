"""The controller keeps one PrometheusRule per SLO: the real Prometheus Operator CRD in the real
kube-apiserver, written only when the generated content changes, restored when removed by
hand, removed with the SLO, never overwriting someone else's object. Without the CRD the
controller says so once and keeps evaluating; a CRD installed later is picked up without a
restart.

The CRD is installed by this module and removed again at its end, so other modules' controllers
run without it, as most of them would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.controlplane import ControlPlane
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess
from slogate.core.alertrules import RuleOptions, rule_group
from slogate.core.objective import SloSpec
from tests.conftest import third_party_crds

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "rules-keeper"
CRD = "prometheusrules.monitoring.coreos.com"
RESYNC_S = 5


def spec(target: float = 99.9, **extra: Any) -> dict[str, Any]:
    return {
        "service": "shop",
        "target": target,
        "indicator": {
            "ratio": {
                "errors": 'keeper_requests_total{code="500"}',
                "total": "keeper_requests_total",
            }
        },
        "evaluation": {"interval": "10s"},
        **extra,
    }


def slo(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "slogate.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


@pytest.fixture(scope="module")
def keeper(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    crds = third_party_crds()
    assert (crds / "monitoring.coreos.com_prometheusrules.yaml").is_file(), crds
    control_plane.kubectl("delete", "crd", CRD, "--ignore-not-found")
    control_plane.kubectl("create", "namespace", NS)
    control_plane.apply(slo("first", spec()), slo("second", spec(target=99.0)))
    log = tmp_path_factory.mktemp("keeper") / "controller.log"
    ctl = ControllerProcess(
        control_plane.kubeconfig,
        prometheus.url,
        log,
        "--log-format",
        "plain",
        "--namespace",
        NS,
        "--prometheus-rule-label",
        "release=kube-prometheus",
        "--prometheus-rule-resync",
        str(RESYNC_S),
    )
    try:
        yield {"ctl": ctl, "log": log, "crds": crds}
    finally:
        ctl.stop()
        print(Path(log).read_text()[-3000:])
        control_plane.kubectl("delete", "crd", CRD, "--ignore-not-found", "--wait=false")


def status_of(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", NS).get("status") or {})


def rules_condition(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    found = [c for c in status_of(cp, name).get("conditions") or [] if c["type"] == "RulesReady"]
    return found[0] if found else None


def rule_object(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    done = cp.kubectl("get", "prometheusrule", f"slogate-{name}", "-n", NS, "-o", "json")
    if done.returncode != 0:
        assert "NotFound" in done.stderr or "doesn't have a resource type" in done.stderr, (
            done.stderr
        )
        return None
    return dict(json.loads(done.stdout))


def eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def test_without_the_crd_the_controller_says_so_once_and_keeps_evaluating(
    control_plane: ControlPlane, keeper: dict[str, Any]
) -> None:
    cond = eventually(lambda: rules_condition(control_plane, "first"), 60, "a RulesReady condition")
    assert (cond["status"], cond["reason"]) == ("False", "PrometheusRuleCRDMissing")
    assert "install the Prometheus Operator's CRDs" in cond["message"]
    # Evaluation goes on: the status keeps being written.
    assert status_of(control_plane, "first").get("lastEvaluationTime")
    events = control_plane.get_json(
        "events", "-n", NS, "--field-selector", "reason=PrometheusRuleCRDMissing"
    )["items"]
    assert {e["involvedObject"]["name"] for e in events} == {"first", "second"}
    assert all(e.get("count", 1) == 1 for e in events)
    time.sleep(2 * RESYNC_S)  # more probes: still one log line, one Event each
    text = Path(keeper["log"]).read_text()
    assert text.count("PrometheusRule CRD (monitoring.coreos.com/v1) is not installed") == 1
    again = control_plane.get_json(
        "events", "-n", NS, "--field-selector", "reason=PrometheusRuleCRDMissing"
    )["items"]
    assert len(again) == 2 and all(e.get("count", 1) == 1 for e in again)


def test_a_crd_installed_later_is_picked_up_without_a_restart(
    control_plane: ControlPlane, keeper: dict[str, Any]
) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(keeper["crds"]), check=True)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", CRD, check=True
    )
    obj = eventually(lambda: rule_object(control_plane, "first"), 90, "PrometheusRule first")
    meta = obj["metadata"]
    assert meta["labels"]["release"] == "kube-prometheus"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "slogate"
    (owner,) = meta["ownerReferences"]
    uid = control_plane.get_json("slo", "first", "-n", NS)["metadata"]["uid"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ServiceLevelObjective", "first", uid)
    # Exactly what `slogate rules` prints for the same SLO, through the API server's schema.
    expected = rule_group(NS, "first", SloSpec.model_validate(spec()), RuleOptions())
    assert obj["spec"]["groups"] == [expected]
    cond = eventually(
        lambda: (c := rules_condition(control_plane, "first")) and c["status"] == "True" and c,
        60,
        "RulesReady True",
    )
    assert cond["reason"] == "RulesWritten"
    assert rule_object(control_plane, "second") is not None


def test_rules_are_written_only_when_their_content_changes(
    control_plane: ControlPlane, keeper: dict[str, Any]
) -> None:
    before = eventually(lambda: rule_object(control_plane, "first"), 30, "PrometheusRule")
    version = before["metadata"]["resourceVersion"]
    time.sleep(3 * RESYNC_S)  # several evaluations, status writes and resyncs
    assert rule_object(control_plane, "first")["metadata"]["resourceVersion"] == version
    control_plane.apply(slo("first", spec(target=99.5)))
    changed = eventually(
        lambda: (
            (o := rule_object(control_plane, "first"))
            and o["metadata"]["resourceVersion"] != version
            and o
        ),
        30,
        "the rule updated",
    )
    expected = rule_group(NS, "first", SloSpec.model_validate(spec(target=99.5)), RuleOptions())
    assert changed["spec"]["groups"] == [expected]
    assert "/ 0.005" in str(changed["spec"])


def test_a_rule_deleted_by_hand_comes_back(
    control_plane: ControlPlane, keeper: dict[str, Any]
) -> None:
    control_plane.kubectl("delete", "prometheusrule", "slogate-second", "-n", NS, check=True)
    eventually(lambda: rule_object(control_plane, "second"), 4 * RESYNC_S, "the rule restored")


def test_someone_elses_rule_is_never_overwritten(
    control_plane: ControlPlane, keeper: dict[str, Any]
) -> None:
    theirs = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "slogate-third", "namespace": NS},
        "spec": {"groups": [{"name": "theirs", "rules": [{"record": "x", "expr": "vector(1)"}]}]},
    }
    control_plane.apply(theirs)
    control_plane.apply(slo("third", spec()))
    cond = eventually(
        lambda: (c := rules_condition(control_plane, "third")) and c["status"] == "False" and c,
        60,
        "RulesConflict",
    )
    assert cond["reason"] == "RulesConflict"
    assert rule_object(control_plane, "third")["spec"]["groups"][0]["name"] == "theirs"
    # The others are unaffected.
    assert rules_condition(control_plane, "first")["status"] == "True"


def test_alerting_disabled_and_deleted_slos_lose_their_rules(
    control_plane: ControlPlane, keeper: dict[str, Any]
) -> None:
    control_plane.apply(slo("second", spec(target=99.0, alerting={"disabled": True})))
    eventually(lambda: rule_object(control_plane, "second") is None, 30, "the rule removed")
    eventually(
        lambda: rules_condition(control_plane, "second") is None, 60, "the condition removed"
    )
    control_plane.kubectl("delete", "slo", "first", "-n", NS, check=True)
    eventually(lambda: rule_object(control_plane, "first") is None, 30, "the rule deleted")
