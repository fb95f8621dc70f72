"""Bad input: generated SLO and ReleaseGate manifests against the API server, the models and the
running controller.

hypothesis builds valid manifests (every indicator kind, windows, calendars, alerting rules,
dependencies, selectors) and breaks some of them: a value out of range, a wrong type, a missing
or unknown field, a contradiction between fields, random text where a duration, selector, URL,
time zone or name belongs, random JSON anywhere. Every case is submitted to the real API server
the way kubectl does (``fieldValidation=Strict``) and checked with the pydantic models; what the
API server stores is handed to a real controller. The properties:

- a manifest broken on purpose is refused by the API server, and the refusal names the field;
- the models refuse what the API server refuses and accept what it accepts, naming the same
  field (one source of truth: ``slogate validate`` must not contradict ``kubectl apply``);
- anything stored that the models refuse is marked ``Ready=False`` (``InvalidSpec``) naming the
  field; everything stored gets a ``Ready`` condition; the controller never crashes.

Cases run in a fixed order (``derandomize``) so a failure is reproducible; the number of cases is
reported in the fault matrix. PromQL that Prometheus itself rejects is covered at the end.
"""

from __future__ import annotations

import copy
import json
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import ControlPlane
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess
from slogate.core.validation import field_errors
from tests.integration.faults import (
    apply,
    condition,
    eventually,
    log_problems,
    matrix_row,
    remove_objects,
    slo_manifest,
)
from tests.integration.reliability_matrix import note

pytest_plugins = ["tests.integration.reliability_matrix"]
pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "rel-fuzz"
PROMQL_NS = "rel-promql"
EXAMPLES = 500
GROUP, VERSION = "slogate.dev", "v1alpha1"
PLURAL = {"ServiceLevelObjective": "servicelevelobjectives", "ReleaseGate": "releasegates"}

# --- valid manifests ---------------------------------------------------------------------------

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,12}[a-z0-9]\Z")
metric = st.sampled_from(["http_requests_total", "grpc_server_handled_total", "fz_events_total"])
labels = st.dictionaries(
    st.sampled_from(["job", "code", "route", "instance"]),
    st.from_regex(r"\A[a-zA-Z0-9_./-]{1,10}\Z"),
    max_size=2,
)


@st.composite
def selectors(draw: st.DrawFn) -> str:
    name = draw(metric)
    matchers = draw(labels)
    if not matchers:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(matchers.items()))
    return f"{name}{{{inner}}}"


durations_short = st.sampled_from(["5m", "10m", "30m", "1h", "2h"])
durations_long = st.sampled_from(["1h", "6h", "12h", "1d", "3d"])


@st.composite
def indicators(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["errors", "good", "latency", "query"]))
    if kind in ("errors", "good"):
        return {"ratio": {kind: draw(selectors()), "total": draw(selectors())}}
    if kind == "latency":
        return {
            "latency": {
                "histogram": draw(selectors()).replace("_total", "_seconds"),
                "threshold": draw(st.sampled_from([0.05, 0.1, 0.25, 0.3, 1.0, 2.5])),
            }
        }
    sel = draw(selectors())
    return {
        "query": {
            "errorRatio": f"sum(rate({sel}[{{{{window}}}}])) / "
            f"sum(rate({draw(selectors())}[{{{{window}}}}]))"
        }
    }


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    out = []
    for i in range(n):
        short = draw(durations_short)
        long_ = draw(durations_long.filter(lambda d, s=short: _seconds(d) > _seconds(s)))
        out.append(
            {
                "name": f"rule-{i}",
                "long": long_,
                "short": short,
                "burnRate": draw(st.sampled_from([1.0, 2.0, 6.0, 14.4])),
                "severity": draw(st.sampled_from(["page", "ticket"])),
            }
        )
    return {"rules": out}


def _seconds(d: str) -> int:
    return int(d[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[d[-1]]


@st.composite
def slo_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "service": draw(names),
        "target": draw(st.sampled_from([90.0, 95.5, 99.0, 99.5, 99.9, 99.95, 99.99])),
        "indicator": draw(indicators()),
        "evaluation": {
            "interval": draw(st.sampled_from(["10s", "30s", "1m"])),
            "minEvents": draw(st.integers(0, 10)),
        },
    }
    window = draw(st.sampled_from(["default", "7d", "28d", "30d", "calendar"]))
    if window == "calendar":
        spec["calendar"] = {
            "period": draw(st.sampled_from(["week", "month", "quarter"])),
            "timeZone": draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"])),
        }
    elif window != "default":
        spec["window"] = window
    if draw(st.booleans()):
        spec["alerting"] = draw(rules())
    if draw(st.booleans()):
        spec["tier"] = draw(st.integers(1, 3))
        spec["owner"] = draw(names)
    if draw(st.booleans()):
        spec["dependsOn"] = [{"name": draw(names)}]
    return spec


@st.composite
def gate_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": draw(names)}}}
    if draw(st.booleans()):
        spec["objectives"] = [{"name": draw(names)}]
    else:
        spec["objectiveSelector"] = {
            "matchExpressions": [{"key": "team", "operator": "In", "values": [draw(names)]}]
        }
    if draw(st.booleans()):
        spec["policy"] = {
            "blockWhen": draw(
                st.lists(st.sampled_from(["BudgetExhausted", "FREEZE"]), unique=True, max_size=2)
            ),
            "warnWhen": draw(
                st.lists(st.sampled_from(["DANGER", "OBSERVE"]), unique=True, max_size=2)
            ),
            "onUnknown": draw(st.sampled_from(["Allow", "Warn", "Block"])),
        }
    spec["enforcement"] = draw(st.sampled_from(["Enforce", "Warn", "DryRun"]))
    if draw(st.booleans()):
        spec["gateCreates"] = draw(st.booleans())
        spec["override"] = {"maxDuration": draw(st.sampled_from(["30m", "4h", "1d", "7d"]))}
    return spec


# --- breaking them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """How a valid manifest was broken; ``field`` is where the refusal must point (None: the
    oracle is the models, the case may be valid after all)."""

    name: str
    field: str | None


junk_text = st.text(
    alphabet=string.ascii_letters + string.digits + " -_.:/{}()[]=\"'~*+,\t", max_size=20
)
junk_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(-1e6, 1e6) | junk_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(junk_text, inner, max_size=3),
    max_leaves=6,
)


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value


def _leaf_paths(node: Any, prefix: list[Any]) -> list[list[Any]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _leaf_paths(v, [*prefix, k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _leaf_paths(v, [*prefix, i])
    return out


def _dotted(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


@st.composite
def slo_mutations(draw: st.DrawFn, doc: dict[str, Any]) -> Mutation:
    spec = doc["spec"]
    ind = spec["indicator"]
    kind = next(iter(ind))
    choice = (
        draw(st.sampled_from(["random-json", "random-text"]))
        if draw(st.integers(0, 9)) < 3
        else draw(
            st.sampled_from(
                [
                    "target-range",
                    "target-type",
                    "service-missing",
                    "service-blank",
                    "unknown-field",
                    "indicator-none",
                    "indicator-two",
                    "ratio-both",
                    "ratio-no-total",
                    "selector-expression",
                    "latency-threshold",
                    "latency-suffix",
                    "query-no-window",
                    "window-range",
                    "window-text",
                    "window-and-calendar",
                    "calendar-period",
                    "calendar-zone",
                    "interval-range",
                    "min-events",
                    "tier-range",
                    "rules-duplicate",
                    "rules-short-long",
                    "rules-burn",
                    "rules-severity",
                    "rules-empty",
                    "depends-name",
                    "prometheus-url",
                    "description-long",
                ]
            )
        )
    )
    if choice == "target-range":
        spec["target"] = draw(st.sampled_from([0.0, 100.0, -1.0, 100.5, 1e6, 0]))
        return Mutation(choice, "spec.target")
    if choice == "target-type":
        spec["target"] = draw(st.sampled_from(["99.9", True, [99.9], {"value": 99.9}, None]))
        if spec["target"] is None:
            del spec["target"]
        return Mutation(choice, "spec.target")
    if choice == "service-missing":
        del spec["service"]
        return Mutation(choice, "spec.service")
    if choice == "service-blank":
        spec["service"] = draw(st.sampled_from(["", "   ", "\t"]))
        return Mutation(choice, "spec.service")
    if choice == "unknown-field":
        where = draw(st.sampled_from([[], ["indicator", kind], ["evaluation"]]))
        key = draw(st.from_regex(r"\A[a-z][a-zA-Z]{2,10}\Z").filter(_not_a_field))
        _set(spec, [*where, key], draw(junk_json))
        return Mutation(choice, _dotted(["spec", *where, key]))
    if choice == "indicator-none":
        spec["indicator"] = {}
        return Mutation(choice, "spec.indicator")
    if choice == "indicator-two":
        other = "query" if kind != "query" else "ratio"
        ind[other] = (
            {"errorRatio": "sum(rate(x[{{window}}]))"}
            if other == "query"
            else {"errors": "e_total", "total": "t_total"}
        )
        return Mutation(choice, "spec.indicator")
    if choice == "ratio-both":
        spec["indicator"] = {"ratio": {"errors": "e_total", "good": "g_total", "total": "t"}}
        return Mutation(choice, "spec.indicator.ratio")
    if choice == "ratio-no-total":
        spec["indicator"] = {"ratio": {"errors": "e_total"}}
        return Mutation(choice, "spec.indicator.ratio.total")
    if choice == "selector-expression":
        spec["indicator"] = {
            "ratio": {
                "errors": draw(
                    st.sampled_from(
                        ["rate(e_total[5m])", "sum(e_total)", "e_total > 0", 'e_total{a="b"}[5m]']
                    )
                ),
                "total": "t_total",
            }
        }
        return Mutation(choice, "spec.indicator.ratio.errors")
    if choice == "latency-threshold":
        spec["indicator"] = {
            "latency": {
                "histogram": "h_seconds",
                "threshold": draw(st.sampled_from([0.0, -0.3, "0.3", "300ms", None])),
            }
        }
        return Mutation(choice, "spec.indicator.latency.threshold")
    if choice == "latency-suffix":
        spec["indicator"] = {
            "latency": {
                "histogram": "h_seconds" + draw(st.sampled_from(["_bucket", "_count", "_sum"])),
                "threshold": 0.3,
            }
        }
        return Mutation(choice, "spec.indicator.latency.histogram")
    if choice == "query-no-window":
        spec["indicator"] = {"query": {"errorRatio": "sum(rate(e_total[5m])) / sum(rate(t[5m]))"}}
        return Mutation(choice, "spec.indicator.query.errorRatio")
    if choice == "window-range":
        spec.pop("calendar", None)
        spec["window"] = draw(st.sampled_from(["12h", "23h", "367d", "53w", "1s", "59m"]))
        return Mutation(choice, "spec.window")
    if choice == "window-text":
        spec.pop("calendar", None)
        spec["window"] = draw(
            st.sampled_from(["30", "30 d", "1.5d", "1h30m", "-5d", "0d", "30D", "1y", "P30D"])
        )
        return Mutation(choice, "spec.window")
    if choice == "window-and-calendar":
        spec["window"] = "30d"
        spec["calendar"] = {"period": "month"}
        return Mutation(choice, "spec")
    if choice == "calendar-period":
        spec.pop("window", None)
        spec["calendar"] = {"period": draw(st.sampled_from(["year", "Month", "day", ""]))}
        return Mutation(choice, "spec.calendar.period")
    if choice == "calendar-zone":
        spec.pop("window", None)
        spec["calendar"] = {
            "period": "month",
            "timeZone": draw(
                st.sampled_from(["Mars/Olympus", "CEST", "Europe/Berlinn", "+02:00", "Local"])
            ),
        }
        return Mutation(choice, "spec.calendar.timeZone")
    if choice == "interval-range":
        spec["evaluation"]["interval"] = draw(st.sampled_from(["1s", "9s", "2h", "1d", "5"]))
        return Mutation(choice, "spec.evaluation.interval")
    if choice == "min-events":
        spec["evaluation"]["minEvents"] = draw(st.sampled_from([-1, 1.5, "10", True]))
        return Mutation(choice, "spec.evaluation.minEvents")
    if choice == "tier-range":
        spec["tier"] = draw(st.sampled_from([0, 4, -1, "1", 1.5]))
        return Mutation(choice, "spec.tier")
    if choice.startswith("rules-"):
        rule = {"name": "r", "long": "1h", "short": "5m", "burnRate": 14.4, "severity": "page"}
        path = "spec.alerting.rules[0]"
        if choice == "rules-duplicate":
            spec["alerting"] = {"rules": [rule, dict(rule)]}
            return Mutation(choice, "spec.alerting.rules")
        if choice == "rules-short-long":
            rule["short"] = draw(st.sampled_from(["1h", "2h", "1d"]))
            spec["alerting"] = {"rules": [rule]}
            return Mutation(choice, f"{path}.short")
        if choice == "rules-burn":
            rule["burnRate"] = draw(st.sampled_from([0.0, -2.0, 1000.5, "14.4"]))
            spec["alerting"] = {"rules": [rule]}
            return Mutation(choice, f"{path}.burnRate")
        if choice == "rules-severity":
            rule["severity"] = draw(st.sampled_from(["critical", "Page", "", "warning"]))
            spec["alerting"] = {"rules": [rule]}
            return Mutation(choice, f"{path}.severity")
        spec["alerting"] = {"rules": []}
        return Mutation(choice, "spec.alerting.rules")
    if choice == "depends-name":
        spec["dependsOn"] = [{"name": draw(st.sampled_from(["Upper", "a/b/c", "", "-x", "x_y"]))}]
        return Mutation(choice, "spec.dependsOn[0].name")
    if choice == "prometheus-url":
        spec["prometheus"] = {
            "url": draw(st.sampled_from(["prometheus:9090", "ftp://x", "http://", "http:// x"]))
        }
        return Mutation(choice, "spec.prometheus.url")
    if choice == "description-long":
        spec["description"] = "x" * 1025
        return Mutation(choice, "spec.description")
    if choice == "random-json":
        paths = _leaf_paths(spec, [])
        path = draw(st.sampled_from(paths))
        _set(spec, path, draw(junk_json))
        return Mutation(f"random-json at {_dotted(path)}", None)
    paths = [p for p in _leaf_paths(spec, []) if isinstance(_get(spec, p), str)]
    path = draw(st.sampled_from(paths))
    _set(spec, path, draw(junk_text))
    return Mutation(f"random-text at {_dotted(path)}", None)


def _get(node: Any, path: list[Any]) -> Any:
    for part in path:
        node = node[part]
    return node


_FIELDS = {
    "service",
    "owner",
    "tier",
    "description",
    "target",
    "window",
    "calendar",
    "indicator",
    "alerting",
    "evaluation",
    "dependsOn",
    "prometheus",
    "ratio",
    "latency",
    "query",
    "errors",
    "good",
    "total",
    "histogram",
    "threshold",
    "errorRatio",
    "interval",
    "minEvents",
}


def _not_a_field(name: str) -> bool:
    return name not in _FIELDS


@st.composite
def gate_mutations(draw: st.DrawFn, doc: dict[str, Any]) -> Mutation:
    spec = doc["spec"]
    choice = (
        "random-json"
        if draw(st.integers(0, 9)) < 3
        else draw(
            st.sampled_from(
                [
                    "selector-missing",
                    "objectives-and-selector",
                    "objectives-neither",
                    "objectives-empty",
                    "objective-name",
                    "block-when",
                    "block-when-repeat",
                    "on-unknown",
                    "enforcement",
                    "gate-creates",
                    "max-duration",
                    "max-duration-text",
                    "expression-values",
                    "expression-operator",
                    "label-value-long",
                    "unknown-field",
                ]
            )
        )
    )
    if choice == "selector-missing":
        del spec["selector"]
        return Mutation(choice, "spec.selector")
    if choice == "objectives-and-selector":
        spec["objectives"] = [{"name": "a"}]
        spec["objectiveSelector"] = {"matchLabels": {"team": "x"}}
        return Mutation(choice, "spec")
    if choice == "objectives-neither":
        spec.pop("objectives", None)
        spec.pop("objectiveSelector", None)
        return Mutation(choice, "spec")
    if choice == "objectives-empty":
        spec.pop("objectiveSelector", None)
        spec["objectives"] = []
        return Mutation(choice, "spec.objectives")
    if choice == "objective-name":
        spec.pop("objectiveSelector", None)
        spec["objectives"] = [{"name": draw(st.sampled_from(["A", "a_b", "", "-a", "a/b"]))}]
        return Mutation(choice, "spec.objectives[0].name")
    if choice == "block-when":
        spec["policy"] = {"blockWhen": [draw(st.sampled_from(["Exhausted", "SAFE", "freeze"]))]}
        return Mutation(choice, "spec.policy.blockWhen[0]")
    if choice == "block-when-repeat":
        spec["policy"] = {"blockWhen": ["FREEZE", "FREEZE"]}
        return Mutation(choice, "spec.policy.blockWhen")
    if choice == "on-unknown":
        spec["policy"] = {"onUnknown": draw(st.sampled_from(["allow", "Deny", "", "Ignore"]))}
        return Mutation(choice, "spec.policy.onUnknown")
    if choice == "enforcement":
        spec["enforcement"] = draw(st.sampled_from(["enforce", "Audit", "", "Block"]))
        return Mutation(choice, "spec.enforcement")
    if choice == "gate-creates":
        spec["gateCreates"] = draw(st.sampled_from(["true", 1, "yes", None]))
        if spec["gateCreates"] is None:
            spec["gateCreates"] = {"on": True}
        return Mutation(choice, "spec.gateCreates")
    if choice == "max-duration":
        spec["override"] = {"maxDuration": draw(st.sampled_from(["8d", "2w", "169h", "10081m"]))}
        return Mutation(choice, "spec.override.maxDuration")
    if choice == "max-duration-text":
        spec["override"] = {"maxDuration": draw(st.sampled_from(["4 h", "4hours", "0h", ""]))}
        return Mutation(choice, "spec.override.maxDuration")
    if choice == "expression-values":
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        values = [] if op in ("In", "NotIn") else ["x"]
        spec["selector"] = {"matchExpressions": [{"key": "app", "operator": op, "values": values}]}
        return Mutation(choice, "spec.selector.matchExpressions[0].values")
    if choice == "expression-operator":
        spec["selector"] = {
            "matchExpressions": [
                {
                    "key": "app",
                    "operator": draw(st.sampled_from(["in", "Equals", ""])),
                    "values": ["x"],
                }
            ]
        }
        return Mutation(choice, "spec.selector.matchExpressions[0].operator")
    if choice == "label-value-long":
        spec["selector"] = {"matchLabels": {"app": "v" * 64}}
        return Mutation(choice, "spec.selector.matchLabels.app")
    if choice == "unknown-field":
        key = draw(st.sampled_from(["selectors", "objective", "enforce", "policies", "mode"]))
        spec[key] = draw(junk_json)
        return Mutation(choice, f"spec.{key}")
    paths = _leaf_paths(spec, [])
    path = draw(st.sampled_from(paths))
    _set(spec, path, draw(junk_json))
    return Mutation(f"random-json at {_dotted(path)}", None)


# --- running a case ----------------------------------------------------------------------------


@dataclass
class Case:
    n: int
    kind: str
    doc: dict[str, Any]
    mutation: Mutation | None
    model_errors: list[str]
    api_status: int = 0  # 201 accepted, else the API's error code
    api_message: str = ""
    stored: dict[str, Any] | None = None
    stored_errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def accepted(self) -> bool:
        return self.api_status == 201


def _api(cp: ControlPlane) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(k8s_config.new_client_from_config(str(cp.kubeconfig)))


def submit(api: k8s.CustomObjectsApi, case: Case) -> None:
    try:
        stored = api.create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL[case.kind], case.doc, field_validation="Strict"
        )
    except ApiException as exc:
        case.api_status = int(exc.status or 0)
        try:
            case.api_message = str(json.loads(exc.body or "{}").get("message", exc.body))
        except ValueError:
            case.api_message = str(exc.body)
        return
    case.api_status = 201
    case.stored = dict(stored)
    case.stored_errors = field_errors(case.stored)


def _paths(errors: list[str]) -> list[str]:
    return [e.split(": ", 1)[0] for e in errors]


@dataclass
class Fuzz:
    cases: list[Case]
    controller: ControllerProcess
    statuses: dict[str, dict[str, Any]]
    gate_statuses: dict[str, dict[str, Any]]
    seconds: float


@pytest.fixture(scope="module")
def fuzz(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fuzz]:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    work = tmp_path_factory.mktemp("rel-fuzz")
    ctl = ControllerProcess(
        cp.kubeconfig,
        prometheus.url,
        work / "controller.log",
        "--log-format",
        "plain",
        "--namespace",
        NS,
        "--prometheus-timeout",
        "2",
        "--prometheus-retries",
        "0",
    )
    api = _api(cp)
    cases: list[Case] = []
    t0 = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        n = len(cases)
        kind = data.draw(st.sampled_from(["ServiceLevelObjective", "ReleaseGate"]))
        spec = data.draw(slo_specs() if kind == "ServiceLevelObjective" else gate_specs())
        doc = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": f"case-{n:04d}", "namespace": NS},
            "spec": spec,
        }
        mutation = None
        if data.draw(st.integers(0, 9)) < 7:  # 70% broken, 30% left valid
            doc = copy.deepcopy(doc)
            mutation = data.draw(
                slo_mutations(doc) if kind == "ServiceLevelObjective" else gate_mutations(doc)
            )
        case = Case(n, kind, doc, mutation, field_errors(copy.deepcopy(doc)))
        submit(api, case)
        cases.append(case)

    try:
        run()
        accepted = [c for c in cases if c.accepted and c.kind == "ServiceLevelObjective"]

        def all_have_ready() -> None:
            missing = [c.name for c in accepted if not condition(_slo_status(cp, c.name), "Ready")]
            assert not missing, f"{len(missing)} stored SLOs without Ready: {missing[:10]}"

        eventually(all_have_ready, timeout=90, interval=2)
        items = cp.get_json("slo", "-n", NS)["items"]
        statuses = {i["metadata"]["name"]: dict(i.get("status") or {}) for i in items}
        gates = cp.get_json("gate", "-n", NS)["items"]
        gate_statuses = {g["metadata"]["name"]: dict(g.get("status") or {}) for g in gates}
        yield Fuzz(cases, ctl, statuses, gate_statuses, time.monotonic() - t0)
    finally:
        remove_objects(cp, NS)
        ctl.stop()
        print(Path(work / "controller.log").read_text()[-4000:])


def _slo_status(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", NS).get("status") or {})


def _show(case: Case) -> str:
    return (
        f"case {case.n} {case.kind} {case.mutation}: API {case.api_status} "
        f"{case.api_message[:300]!r}; model {case.model_errors[:3]}; "
        f"spec {json.dumps(case.doc['spec'])[:400]}"
    )


@matrix_row(
    f"{EXAMPLES} generated SLO and ReleaseGate manifests, about 70% broken on purpose (out of "
    "range, wrong type, missing or unknown field, contradictory fields, random text and "
    "random JSON), submitted like kubectl (fieldValidation=Strict)",
    "every manifest broken on purpose is refused by the API server with a message naming the "
    "field; the models refuse the same manifests naming the same field, and accept the same "
    "ones",
)
def test_generated_manifests_refused_naming_the_field(
    fuzz: Fuzz, observe: Callable[[str], None]
) -> None:
    cases = fuzz.cases
    broken = [c for c in cases if c.mutation is not None and c.mutation.field is not None]
    random_ = [c for c in cases if c.mutation is not None and c.mutation.field is None]
    valid = [c for c in cases if c.mutation is None]
    refused = [c for c in cases if not c.accepted]
    note(
        f"Bad input: {len(cases)} generated manifests ({len(valid)} valid, {len(broken)} broken "
        f"on purpose, {len(random_)} with random text or JSON); the API server refused "
        f"{len(refused)}"
    )
    observe(
        f"{len(cases)} cases: {len(valid)} valid, {len(broken)} broken on purpose, "
        f"{len(random_)} random; API refused {len(refused)}, stored {len(cases) - len(refused)}"
    )
    problems: list[str] = []
    for c in valid:
        if not c.accepted or c.model_errors:
            problems.append(f"valid manifest refused: {_show(c)}")
    for c in broken:
        assert c.mutation is not None and c.mutation.field is not None
        if c.accepted:
            if not c.stored_errors:
                problems.append(f"broken manifest stored as valid: {_show(c)}")
            else:  # the controller must mark it Ready=False (next test); still a disagreement
                problems.append(f"API server accepts what the models refuse: {_show(c)}")
        elif c.mutation.field not in c.api_message:
            problems.append(f"refusal does not name {c.mutation.field}: {_show(c)}")
        if not any(p == c.mutation.field for p in _paths(c.model_errors)):
            problems.append(f"models do not name {c.mutation.field}: {_show(c)}")
    for c in cases:
        if c.api_status not in (201, 400, 422):
            problems.append(f"unexpected API answer: {_show(c)}")
        if not c.accepted and not c.model_errors:
            problems.append(f"API refuses what the models accept: {_show(c)}")
        if c.accepted and c.stored_errors and c not in broken:
            problems.append(f"API server accepts what the models refuse: {_show(c)}")
        if not c.accepted and c.model_errors:
            named = [p for p in _paths(c.model_errors) if p in c.api_message]
            if not named:
                problems.append(f"API and models name different fields: {_show(c)}")
    # Accepted after the API server normalised the document (a null value dropped, 2.0 read
    # as 2): what is stored is valid, so the operator is fine; counted, not failed.
    normalised = [c for c in cases if c.accepted and c.model_errors and not c.stored_errors]
    observe(
        f"{len(normalised)} accepted only after the API server normalised them (e.g. null "
        "values dropped)"
    )
    assert problems == [], "\n".join(problems[:15]) + f"\n({len(problems)} in all)"
    assert len(cases) == EXAMPLES
    assert len(broken) >= EXAMPLES // 4 and len(random_) >= EXAMPLES // 10
    assert len(valid) >= EXAMPLES // 10


@matrix_row(
    "every generated manifest the API server stored, handed to a running controller",
    "each SLO gets a Ready condition (True, or False with a reason); anything the models "
    "refuse is Ready=False InvalidSpec naming the field; the controller never crashes",
)
def test_stored_manifests_are_handled_by_the_controller(
    fuzz: Fuzz, observe: Callable[[str], None]
) -> None:
    stored = [c for c in fuzz.cases if c.accepted]
    slos = [c for c in stored if c.kind == "ServiceLevelObjective"]
    problems = []
    reasons: dict[str, int] = {}
    for c in slos:
        ready = condition(fuzz.statuses.get(c.name, {}), "Ready")
        reasons[f"{ready.get('status')}/{ready.get('reason')}"] = (
            reasons.get(f"{ready.get('status')}/{ready.get('reason')}", 0) + 1
        )
        if not ready:
            problems.append(f"no Ready condition: {_show(c)}")
        if c.stored_errors and (
            ready.get("reason") != "InvalidSpec"
            or not any(p in ready.get("message", "") for p in _paths(c.stored_errors))
        ):
            problems.append(f"invalid stored SLO not marked InvalidSpec: {_show(c)} {ready}")
    for c in stored:
        if c.kind == "ReleaseGate" and c.stored_errors:
            problems.append(f"invalid stored gate: {_show(c)}")
    observe(
        f"{len(slos)} stored SLOs, {len(stored) - len(slos)} stored gates; Ready conditions: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items()))
    )
    assert problems == [], "\n".join(problems[:15])
    assert fuzz.controller.alive(), fuzz.controller.log_tail()
    assert log_problems(fuzz.controller) == []


# --- PromQL that Prometheus rejects ------------------------------------------------------------


@pytest.fixture(scope="module")
def promql(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, dict[str, Any]]]:
    cp = control_plane
    cp.kubectl("create", "namespace", PROMQL_NS)
    work = tmp_path_factory.mktemp("rel-promql")
    ctl = ControllerProcess(
        cp.kubeconfig,
        prometheus.url,
        work / "controller.log",
        "--log-format",
        "plain",
        "--namespace",
        PROMQL_NS,
        "--prometheus-timeout",
        "2",
        "--prometheus-retries",
        "0",
    )
    docs = {
        # Parses as a selector (the CRD's pattern), but Prometheus refuses the regex.
        "bad-regex": {
            "ratio": {"errors": 'fz_events_total{code=~"5(0"}', "total": "fz_events_total"}
        },
        # An escape-hatch query with a syntax error ...
        "bad-query": {"query": {"errorRatio": "sum(rate(fz_events_total[{{window}}]) /"}},
        # ... and a correct one, asked in the same batched request on every tick.
        "good": {
            "query": {
                "errorRatio": 'sum(rate(fz_events_total{code="500"}[{{window}}])) / '
                "sum(rate(fz_events_total[{{window}}]))"
            }
        },
    }
    try:
        apply(
            cp,
            *[
                slo_manifest(n, PROMQL_NS, indicator=i, evaluation={"interval": "10s"})
                for n, i in docs.items()
            ],
        )

        def evaluated() -> dict[str, dict[str, Any]]:
            out = {n: _status_in(cp, PROMQL_NS, n) for n in docs}
            for st_ in out.values():
                assert condition(st_, "Ready"), out
            return out

        eventually(evaluated, timeout=40)
        # SLOs created together may first be evaluated apart; from the next tick on the ones
        # of the same kind and backend share one batched request.
        time.sleep(12)
        yield evaluated()
        assert ctl.alive() and log_problems(ctl) == []
    finally:
        remove_objects(cp, PROMQL_NS)
        ctl.stop()


def _status_in(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", ns).get("status") or {})


@matrix_row(
    "PromQL that passes the CRD but Prometheus rejects (a syntax error in indicator.query, "
    "an invalid regex in a selector)",
    "Ready=False QueryRejected whose message is Prometheus's own error text",
)
def test_promql_rejected_by_prometheus_becomes_a_condition(
    promql: dict[str, dict[str, Any]], observe: Callable[[str], None]
) -> None:
    for name, words in (
        ("bad-query", "parse error"),
        ("bad-regex", "error parsing regexp: missing closing )"),
    ):
        ready = condition(promql[name], "Ready")
        assert ready["status"] == "False", ready
        assert ready["reason"] == "QueryRejected", ready
        assert words in ready["message"], ready
        observe(f"{name}: {ready['message'][ready['message'].find('rejected') :][:90]}")


@matrix_row(
    "one SLO whose PromQL Prometheus rejects shares the batched query with a correct SLO",
    "only the broken SLO is Ready=False QueryRejected; its neighbour in the batch is "
    "evaluated normally (one team's typo must not blind every other SLO)",
)
def test_rejected_promql_does_not_poison_its_batch(
    promql: dict[str, dict[str, Any]], observe: Callable[[str], None]
) -> None:
    ready = condition(promql["good"], "Ready")
    observe(f"good SLO: Ready={ready['status']} {ready['reason']}: {ready['message'][:80]}")
    assert ready["status"] == "True", ready
