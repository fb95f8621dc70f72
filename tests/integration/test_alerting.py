"""Generated rules in a real Prometheus, paging through a real Alertmanager.

Known-answer histories (healthy, fast burn, slow burn, exhausted, no traffic, low traffic,
latency, free-form query) are backfilled; the 5-minute records that long windows derive from
are backfilled from them with ``promtool tsdb create-blocks-from rules`` (as docs/alerting.md
tells users to). Then two independent computations meet: the recording rules' burn rates
against the controller's status on the same data, window by window, and the alerts Prometheus
holds against ``status.firing``. A live service shows a page arriving in Alertmanager's webhook
and resolving.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localenv.alertmanager import AlertmanagerServer
from localenv.controlplane import ControlPlane
from localenv.demoapp import Traffic, serve
from localenv.processes import free_port
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess
from localenv.synthetic import Phase, Story, counters, histogram, story
from slogate.core.alertrules import (
    ALERT_NAME,
    BUDGET_RECORD,
    RuleOptions,
    backfill_group,
    record,
    rule_file,
    rule_group,
)
from slogate.core.durations import parse_duration
from slogate.core.objective import SloSpec
from slogate.core.timetext import parse_rfc3339
from slogate.manifests import dump_yaml

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "alerting"
RATE = 600.0  # requests per minute
FUTURE_MIN = 15
HISTORY_MIN = 2 * 1440 + 120
INTERVAL_S = 10  # rule group interval here (30s by default): pages arrive sooner
OPTIONS = RuleOptions(interval_s=INTERVAL_S)
SCRAPE_S = 1
LIVE_FOR_S = 20
HISTORIES = (
    "healthy",
    "fastburn",
    "slowburn",
    "exhausted",
    "idle",
    "lowtraffic",
    "latency",
    "query",
)
GROUP_WAIT_S = 1


def build_stories(now: float) -> dict[str, Story]:
    end = now + FUTURE_MIN * 60
    n, f = HISTORY_MIN, FUTURE_MIN
    return {
        "healthy": story([Phase(n + f, RATE, 0.0001)], end),  # burn 0.1
        # burn 0.1, then 30 for the last 40 minutes
        "fastburn": story([Phase(n - 40, RATE, 0.0001), Phase(40 + f, RATE, 0.03)], end),
        # burn 0.05, then 0.35 for 20 hours: above the 2d window's ticket factor (0.2) only
        "slowburn": story([Phase(n - 1200, RATE, 0.00005), Phase(1200 + f, RATE, 0.00035)], end),
        "exhausted": story([Phase(n + f, RATE, 0.0015)], end),  # burn 1.5: overspent
        "idle": story([Phase(n + f, 0.0, 0.0)], end),  # counters that never move
        # 1.2 requests an hour, half of them failing: below minEvents in every window
        "lowtraffic": story([Phase(n + f, 0.02, 0.5)], end),
        "latency": story([Phase(n + f, RATE, 0.0015)], end),  # 99% target: burn 0.15
        "query": story([Phase(n + f, RATE, 0.00015)], end),  # burn 0.15
    }


def ratio(job: str) -> dict[str, Any]:
    return {
        "ratio": {
            "errors": f'alt_requests_total{{job="{job}",code="500"}}',
            "total": f'alt_requests_total{{job="{job}"}}',
        }
    }


def specs() -> dict[str, dict[str, Any]]:
    base = {"target": 99.9, "window": "2d", "evaluation": {"interval": "10s"}}
    out = {
        name: {**base, "service": name, "indicator": ratio(name)}
        for name in ("healthy", "fastburn", "slowburn", "exhausted", "idle")
    }
    out["lowtraffic"] = {
        **base,
        "service": "lowtraffic",
        "indicator": ratio("lowtraffic"),
        "evaluation": {"interval": "10s", "minEvents": 100},
    }
    out["latency"] = {
        **base,
        "service": "latency",
        "target": 99.0,
        "indicator": {
            "latency": {"histogram": 'alt_duration_seconds{job="latency"}', "threshold": 0.3}
        },
    }
    out["query"] = {
        **base,
        "service": "query",
        "indicator": {
            "query": {
                "errorRatio": 'sum(rate(alt_requests_total{job="query",code="500"}[{{window}}]))'
                ' / sum(rate(alt_requests_total{job="query"}[{{window}}]))'
            }
        },
    }
    return out


LIVE_SPEC: dict[str, Any] = {
    "service": "checkout",
    "owner": "payments",
    "tier": 1,
    "target": 99.9,
    "window": "2d",
    "indicator": {
        "ratio": {
            "errors": 'http_requests_total{job="checkout",code="500"}',
            "total": 'http_requests_total{job="checkout"}',
        }
    },
    "alerting": {
        "labels": {"team": "checkout-team"},
        "annotations": {"dashboard": "https://grafana.example/d/checkout"},
        "runbookURL": "https://runbooks.example/checkout",
        # A 30s short window, so that the alert resolves within a minute of the errors ending.
        "rules": [
            {
                "name": "page-fast",
                "long": "1h",
                "short": "30s",
                "burnRate": 14.4,
                "severity": "page",
                "for": f"{LIVE_FOR_S}s",
            }
        ],
    },
}


class Receiver:
    """Alertmanager's webhook receiver: every notification, with the time it arrived."""

    def __init__(self) -> None:
        self.notifications: list[tuple[float, dict[str, Any]]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def alerts(self, slo: str, status: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        return [
            (at, alert)
            for at, note in list(self.notifications)
            for alert in note["alerts"]
            if alert["labels"].get("slo") == slo and (status is None or alert["status"] == status)
        ]


def history_series(stories: dict[str, Story]) -> list[Any]:
    series: list[Any] = []
    fine = HISTORY_MIN + FUTURE_MIN + 1
    for job, s in stories.items():
        if job == "latency":
            series += histogram(
                s, "alt_duration_seconds", {"job": job}, ["0.1", "0.30", "1"], "0.30", fine
            )
        else:
            series += counters(
                s,
                "alt_requests_total",
                {"job": job},
                error_labels={"code": "500"},
                ok_labels={"code": "200"},
                fine_minutes=fine,
            )
    return series


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("alerting")
    now = time.time()
    stories = build_stories(now)
    slo_specs = {name: SloSpec.model_validate(body) for name, body in specs().items()}
    live = SloSpec.model_validate(LIVE_SPEC)
    groups = [rule_group(NS, n, s, OPTIONS) for n, s in slo_specs.items()]
    groups.append(rule_group(NS, "live", live, OPTIONS))
    backfill = [backfill_group(NS, n, s, OPTIONS) for n, s in slo_specs.items()]

    traffic = Traffic({"ok": 0.0, "error": 0.0, "fast": 0.0, "slow": 0.0}, now, 100.0, 0.0, 0.0)
    app_port = free_port()
    app = serve(app_port, traffic)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    receiver = Receiver()
    rules_path = tmp / "rules.yaml"
    rules_path.write_text("groups: []\n")
    backfill_path = tmp / "backfill.yaml"
    backfill_path.write_text(dump_yaml(rule_file(backfill)))

    with AlertmanagerServer(receiver.url, group_wait=f"{GROUP_WAIT_S}s") as am:
        prom = PrometheusServer(
            scrape_configs=[
                {
                    "job_name": "live",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}],
                }
            ],
            scrape_interval=f"{SCRAPE_S}s",
            rule_files=[rules_path],
            alertmanager_urls=[am.url],
            out_of_order_window="1h",
        )
        try:
            prom.backfill(history_series(stories))
            prom.start()
            # Loaded at the restart that serves the backfilled records.
            rules_path.write_text(dump_yaml(rule_file(groups)))
            story_start = min(s.start for s in stories.values())
            prom.backfill_rules(backfill_path, story_start + 600, time.time())

            control_plane.kubectl("create", "namespace", NS)
            control_plane.apply(
                *(
                    {
                        "apiVersion": "slogate.dev/v1alpha1",
                        "kind": "ServiceLevelObjective",
                        "metadata": {"name": name, "namespace": NS},
                        "spec": body,
                    }
                    for name, body in specs().items()
                )
            )
            log = tmp / "controller.log"
            ctl = ControllerProcess(
                control_plane.kubeconfig, prom.url, log, "--log-format", "plain", "--namespace", NS
            )
            try:
                wait_until_true(
                    lambda: all(status_of(control_plane, n).get("burnRates") for n in slo_specs),
                    120,
                    "every SLO evaluated",
                )
                # Every alert rule evaluated at least twice on the restarted Prometheus.
                wait_until_true(
                    lambda: bool(prom.query(f'{record("burn_rate", 172800)}{{slo="healthy"}}')),
                    60,
                    "derived windows recorded",
                )
                time.sleep(2 * INTERVAL_S)
                yield {
                    "prom": prom,
                    "am": am,
                    "receiver": receiver,
                    "traffic": traffic,
                    "specs": slo_specs,
                    "stories": stories,
                }
            finally:
                ctl.stop()
                print(Path(log).read_text()[-3000:])
        finally:
            prom.stop()
            app.shutdown()
            receiver.server.shutdown()


def wait_until_true(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for: {what}")


def status_of(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", NS).get("status") or {})


def recorded(prom: PrometheusServer, metric: str, slo: str, at: float) -> float | None:
    found = prom.query(f'{metric}{{slo="{slo}",namespace="{NS}"}}', at=at)
    assert len(found) <= 1, found
    return float(found[0]["value"][1]) if found else None


@pytest.mark.parametrize("name", HISTORIES)
def test_recorded_burn_rates_equal_the_status(
    control_plane: ControlPlane, world: dict[str, Any], name: str
) -> None:
    prom: PrometheusServer = world["prom"]
    status = status_of(control_plane, name)
    # A moment after the controller's evaluation, so the rule group has run on the same data.
    at = parse_rfc3339(status["lastEvaluationTime"]) + INTERVAL_S
    checked = []
    for window, burn in status["burnRates"].items():
        got = recorded(prom, record("burn_rate", parse_duration(window)), name, at)
        if burn is None:
            assert got is None, f"{window}: status has no data, the rules say {got}"
        else:
            assert got == pytest.approx(burn, rel=0.02, abs=1e-3), window
        checked.append(window)
    # Every window the status shows, raw (5m..2h) and derived (6h, 1d) alike.
    assert {"5m", "1h", "6h", "1d"} <= set(checked)
    remaining = (status.get("errorBudget") or {}).get("remaining")
    got = recorded(prom, BUDGET_RECORD, name, at)
    if remaining is None:
        assert got is None
    else:
        assert got == pytest.approx(remaining, abs=0.02)


@pytest.mark.parametrize("name", HISTORIES)
def test_alerts_are_exactly_status_firing(
    control_plane: ControlPlane, world: dict[str, Any], name: str
) -> None:
    prom: PrometheusServer = world["prom"]
    query = f'ALERTS{{alertname="{ALERT_NAME}",slo="{name}",namespace="{NS}"}}'

    def both() -> tuple[set[str], set[str]]:
        firing = set(status_of(control_plane, name).get("firing") or [])
        return {a["metric"]["rule"] for a in prom.query(query)}, firing

    # Pending or firing in Prometheus, firing in status: the same rules. Two processes on
    # their own schedules, so allow them a few evaluations to meet.
    deadline = time.monotonic() + 3 * INTERVAL_S
    alerts, firing = both()
    while alerts != firing and time.monotonic() < deadline:
        time.sleep(1)
        alerts, firing = both()
    assert alerts == firing


def test_known_answers_fire_as_the_workbook_says(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    firing = {
        name: set(status_of(control_plane, name).get("firing") or []) for name in world["specs"]
    }
    # A 2d window scales the Workbook's factors to 0.96 (1h/5m), 0.4 (6h/30m), 0.2 (1d/2h).
    assert firing["fastburn"] == {"page-fast", "page-slow", "ticket-fast"}
    assert firing["slowburn"] == {"ticket-fast"}
    assert firing["exhausted"] == {"page-fast", "page-slow", "ticket-fast"}
    for quiet in ("healthy", "idle", "lowtraffic", "latency", "query"):
        assert firing[quiet] == set(), quiet


def test_quiet_histories_page_nobody(world: dict[str, Any]) -> None:
    prom: PrometheusServer = world["prom"]
    receiver: Receiver = world["receiver"]
    for quiet in ("healthy", "idle", "lowtraffic"):
        ever = prom.query(f'max_over_time(ALERTS{{slo="{quiet}",namespace="{NS}"}}[1h])')
        assert ever == [], quiet
        assert receiver.alerts(quiet) == [], quiet
    # Low traffic: numbers exist, but fewer than minEvents means no data and no page.
    assert prom.query(f'{record("events", 3600)}{{slo="lowtraffic"}}')
    assert prom.query(f'{record("burn_rate", 3600)}{{slo="lowtraffic"}}') == []


def test_a_fast_burn_pages_through_alertmanager_and_resolves(world: dict[str, Any]) -> None:
    traffic: Traffic = world["traffic"]
    receiver: Receiver = world["receiver"]
    prom: PrometheusServer = world["prom"]
    assert receiver.alerts("live") == []
    started = time.time()
    traffic.set(error_ratio=1.0)
    # The burn reaches Prometheus with the next scrape; then pending at the next evaluation,
    # firing `for` later, and Alertmanager's group_wait.
    budget = LIVE_FOR_S + 2 * INTERVAL_S + SCRAPE_S + GROUP_WAIT_S + 2
    wait_until_true(lambda: receiver.alerts("live", "firing"), budget + 30, "the page")
    arrived, alert = receiver.alerts("live", "firing")[0]
    took = arrived - started
    print(f"page arrived {took:.1f}s after the burn began (bound {budget}s)")
    assert took <= budget
    labels = alert["labels"]
    assert labels["alertname"] == ALERT_NAME
    assert {k: labels[k] for k in ("severity", "slo", "namespace", "service", "owner", "tier")} == {
        "severity": "page",
        "slo": "live",
        "namespace": NS,
        "service": "checkout",
        "owner": "payments",
        "tier": "1",
    }
    assert labels["team"] == "checkout-team"
    assert labels["rule"] == "page-fast"
    notes = alert["annotations"]
    assert notes["runbook_url"] == "https://runbooks.example/checkout"
    assert notes["dashboard"] == "https://grafana.example/d/checkout"
    assert notes["kubectl"] == f"kubectl describe slo live -n {NS}"
    assert "burns its error budget" in notes["summary"] and "x as fast" in notes["summary"]
    assert "Budget left over 2d: " in notes["description"]
    assert "unknown" not in notes["description"]  # the budget record answered the template
    assert "%" in notes["description"].split("Budget left over 2d: ")[1]
    assert world["am"].alerts()  # Alertmanager holds it too

    stopped = time.time()
    traffic.set(error_ratio=0.0)
    # The 30s short window forgets the errors within 30 s; then one evaluation and one
    # group_interval.
    wait_until_true(lambda: receiver.alerts("live", "resolved"), 150, "the resolution")
    resolved_at, _ = receiver.alerts("live", "resolved")[0]
    print(f"resolved {resolved_at - stopped:.1f}s after the errors stopped")
    assert resolved_at - stopped <= 30 + 2 * INTERVAL_S + SCRAPE_S + GROUP_WAIT_S + 10
    assert prom.query('ALERTS{slo="live",alertstate="firing"}') == []
