"""Detection latency: a live service starts failing; how long until the gate says BLOCK?

A small exporter process (``bench.exporter``) serves counters that the test Prometheus scrapes
every 5 s; 31 days of healthy history for the same job are backfilled. The SLO (99.9%, the
default multiwindow rules) and a gate that blocks on ``FREEZE`` live in the same controller as
the scale benchmark's SLOs, so the tick that notices is a full-size tick. The harness then makes
the exporter fail every request and records, polling as it goes:

- when Prometheus has scraped the first errors,
- when Prometheus's own data first says the page rule holds (1h and 5m burn above 14.4): the
  moment "Prometheus sees the fast burn",
- the SLO's first ``FREEZE`` status (its ``lastEvaluationTime`` is the evaluation instant),
- the gate's ``BLOCK`` decision, and the webhook's first refusal of a gated rollout (asked
  directly, as a dry run, four times a second).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bench_admission import admission_review
from bench.world import (
    GROUP_VERSION,
    LIVE_JOB,
    METRIC,
    Api,
)
from localenv.certs import CertificateAuthority
from localenv.objects import release_gate
from localenv.processes import Process
from localenv.prometheus import PrometheusServer
from localenv.roles import WebhookProcess
from slogate.core.timetext import parse_rfc3339

NS = "live"
NAME = "live-availability"
ERRORS = f'{METRIC}{{job="{LIVE_JOB}",code="500"}}'
TOTAL = f'{METRIC}{{job="{LIVE_JOB}"}}'


def live_manifests() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": GROUP_VERSION,
            "kind": "ServiceLevelObjective",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "service": "live",
                "target": 99.9,
                "window": "30d",
                "indicator": {"ratio": {"errors": ERRORS, "total": TOTAL}},
                "evaluation": {"interval": "30s"},
            },
        },
        release_gate(
            "live",
            NS,
            "live",
            [NAME],
            policy={"blockWhen": ["BudgetExhausted", "FREEZE"], "warnWhen": ["DANGER"]},
        ),
    ]


def page_rule_query(target: float = 99.9) -> str:
    """The default page-fast rule on Prometheus's own data: 1h and 5m both above 14.4."""
    budget = 1 - target / 100

    def burn(window: str) -> str:
        return (
            f"((sum(increase({ERRORS}[{window}])) or vector(0)) "
            f"/ sum(increase({TOTAL}[{window}]))) / {budget:g}"
        )

    return f"({burn('1h')} > 14.4) and ({burn('5m')} > 14.4)"


def start_exporter(work: Path, spec: dict[str, Any]) -> tuple[Process, Path]:
    """``bench.exporter`` serving ``spec`` (see its docstring); returns it and its state file."""
    state = work / "exporter.state"
    spec_path = work / "exporter.json"
    spec_path.write_text(json.dumps(spec))
    repo = Path(__file__).resolve().parents[1]
    proc = Process(
        "bench-exporter",
        [
            sys.executable,
            "-m",
            "bench.exporter",
            "--spec",
            str(spec_path),
            "--state-file",
            str(state),
        ],
        work / "exporter.log",
        env={"PYTHONPATH": str(repo)},
    )
    return proc, state


def measure(
    api: Api,
    prom: PrometheusServer,
    exporter: Process,
    state: Path,
    hook: WebhookProcess,
    interval_s: float = 30.0,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Make the exporter fail and time each stage; returns seconds relative to the errors."""
    gate_path = f"/apis/{GROUP_VERSION}/namespaces/{NS}/releasegates/live"
    slo_path = f"/apis/{GROUP_VERSION}/namespaces/{NS}/servicelevelobjectives/{NAME}"
    ctx = ssl.create_default_context(cadata=hook.ca.cert_pem.decode())
    review = admission_review("live-probe", NS, "live", "live", "live:1", "live:2", dry_run=True)
    out: dict[str, Any] = {}
    # Before: the gate must allow (else there is nothing to detect).
    deadline = time.monotonic() + 3 * interval_s
    while True:
        decision = (api.get(gate_path).get("status") or {}).get("decision")
        if decision == "ALLOW":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the live gate never allowed before the test (decision {decision})")
        time.sleep(1)
    before = prom.query(f"sum({ERRORS})")
    errors0 = float(before[0]["value"][1]) if before else 0.0
    state.unlink(missing_ok=True)
    os.kill(exporter.pid, signal.SIGUSR1)
    while not state.exists():
        time.sleep(0.01)
    t_err = float(state.read_text())
    out["errors_start"] = t_err
    marks: dict[str, float] = {}
    decisions: list[tuple[Any, ...]] = []  # (seconds after errors, decision, reasons)
    next_prom = 0.0
    with httpx.Client(verify=ctx, timeout=5) as hook_http:
        wanted = {"scraped", "visible", "slo_freeze", "gate_block", "webhook_deny"}
        while time.time() - t_err < timeout_s and not wanted <= set(marks):
            now = time.time()
            if now >= next_prom:
                next_prom = now + 1.0
                if "scraped" not in marks:
                    got = prom.query(f"sum({ERRORS})")
                    if got and float(got[0]["value"][1]) > errors0 + 1:
                        marks["scraped"] = now
                if "visible" not in marks and prom.query(page_rule_query()):
                    marks["visible"] = now
            if "slo_freeze" not in marks:
                st = api.get(slo_path).get("status") or {}
                if st.get("risk") == "FREEZE":
                    marks["slo_freeze"] = now
                    marks["slo_evaluated"] = parse_rfc3339(st["lastEvaluationTime"])
            if "gate_block" not in marks:
                st = api.get(gate_path).get("status") or {}
                seen = (st.get("decision"), tuple(st.get("reasons") or ()))
                if not decisions or decisions[-1][1:] != seen:
                    decisions.append((round(now - t_err, 1), *seen))
                if st.get("decision") == "BLOCK":
                    marks["gate_block"] = now
            if "webhook_deny" not in marks:
                resp = hook_http.post(hook.url, content=json.dumps(review))
                if resp.status_code == 200 and not resp.json()["response"]["allowed"]:
                    marks["webhook_deny"] = now
            time.sleep(0.25)
    os.kill(exporter.pid, signal.SIGUSR2)
    out["seconds_after_errors"] = {
        k: v - t_err for k, v in sorted(marks.items(), key=lambda x: x[1])
    }
    if "visible" in marks:
        out["seconds_after_visible"] = {
            k: v - marks["visible"] for k, v in marks.items() if k not in ("scraped",)
        }
    out["gate_decisions"] = decisions
    out["interval_s"] = interval_s
    out["complete"] = all(k in marks for k in ("visible", "gate_block", "webhook_deny"))
    return out


def start_webhook(kubeconfig: Path, work: Path) -> WebhookProcess:
    """A webhook process with its own CA; ``hook.ca`` verifies its serving certificate."""
    ca = CertificateAuthority("bench-webhook-ca")
    work.mkdir(parents=True, exist_ok=True)
    return WebhookProcess(kubeconfig, work / "certs", ca, work / "webhook.log")
