"""``make demo`` (``python -m localenv.demo``): the whole story on one machine, no Docker,
no cluster.

1. Start etcd + kube-apiserver and Prometheus (the same harness the tests use).
2. Backfill 30 days for the example services, each with its own story: checkout is healthy
   (and continues live from a small demo app whose error rate you can change), payments-db
   spent its budget, storefront is slowly burning, search is fine.
3. Load the examples' burn-rate rules (``slogate rules examples/``) into Prometheus, backfill
   their 5-minute records from the history, and route alerts to Alertmanager, whose
   notifications the demo prints.
4. Install the CRDs, run the controller and the webhook (``slogate run``), apply examples/
   plus three Deployments and two more gates, and wait until every SLO has status.
5. Show a refused rollout, an admitted one, and an authorised override.
6. Leave it all running with a guide, or (``--once``) stop and clean up.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from localenv.alertmanager import AlertmanagerServer
from localenv.binaries import REPO_ROOT, bin_dir
from localenv.certs import CertificateAuthority
from localenv.controlplane import ControlPlane
from localenv.objects import deployment, release_gate
from localenv.processes import Process, StartupError, free_port, wait_until
from localenv.prometheus import PrometheusServer, Series, backfill_blocks
from localenv.synthetic import Phase, Story, counters, histogram, story
from localenv.webhookconfig import validating_webhook_configuration

NS = "shop"
RATE_PER_S = 20.0
DAY = 1440  # minutes


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _show(
    cp: ControlPlane, *args: str, kubeconfig: Path | None = None, as_user: str | None = None
) -> Any:
    who = f" (as {as_user})" if as_user else ""
    print(f"$ kubectl {' '.join(args)}{who}", flush=True)
    result = cp.kubectl(*args, kubeconfig=kubeconfig)
    out = (result.stdout + result.stderr).rstrip()
    if out:
        print(out, flush=True)
    return result


def stories(end: float) -> dict[str, Story]:
    """Per-minute traffic of each demo service, ending at ``end``."""
    month = 31 * DAY
    per_min = RATE_PER_S * 60
    return {
        # healthy: burn 0.3 against 99.9%
        "checkout": story([Phase(month, per_min, 0.0003)], end),
        # latency: 0.3% slower than 300ms against 99% (burn 0.3)
        "checkout-latency": story([Phase(month, per_min, 0.003)], end),
        # spent: burn 1.4 against 99.95% all month
        "payments-db": story([Phase(month, per_min * 3, 0.0007)], end),
        # slow burn: 0.5 for weeks, then 4x for the last two days (ticket-fast fires)
        "storefront": story(
            [Phase(month - 2 * DAY, per_min, 0.0025), Phase(2 * DAY, per_min, 0.02)], end
        ),
        # search index updates: 0.05% late against 99.5% (burn 0.1)
        "search": story([Phase(month, 120, 0.0005)], end),
    }


def history(s: dict[str, Story]) -> list[Series]:
    live = {"job": "checkout", "instance": "demo-app"}
    series = counters(
        s["checkout"],
        "http_requests_total",
        live,
        error_labels={"code": "500"},
        ok_labels={"code": "200"},
    )
    series += histogram(
        s["checkout-latency"], "http_request_duration_seconds", live, ["0.1", "0.3", "1"], "0.3"
    )
    series += counters(
        s["payments-db"],
        "db_queries_total",
        {"db": "payments"},
        error_labels={"outcome": "error"},
        ok_labels={"outcome": "ok"},
    )
    series += counters(
        s["storefront"],
        "http_requests_total",
        {"job": "storefront"},
        error_labels={"code": "503"},
        ok_labels={"code": "200"},
    )
    # search: index_updates_total counts all, index_updates_late_total the late ones
    late, on_time = counters(
        s["search"],
        "index_updates_total",
        {"job": "indexer"},
        error_labels={"kind": "late"},
        ok_labels={"kind": "on_time"},
    )
    all_updates = [a + b for a, b in zip(late.values, on_time.values, strict=True)]
    series += [
        Series("index_updates_total", {"job": "indexer"}, late.timestamps, all_updates),
        Series("index_updates_late_total", {"job": "indexer"}, late.timestamps, list(late.values)),
    ]
    return series


def demo_objects() -> list[dict[str, Any]]:
    """Deployments to gate, and gates for the two services examples/ does not gate."""

    overrider = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "slogate-overrider"},
        "rules": [
            {"apiGroups": ["slogate.dev"], "resources": ["releasegates"], "verbs": ["override"]}
        ],
    }
    oncall = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "deployer", "namespace": NS},
        "rules": [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "patch", "update"],
            }
        ],
    }
    bindings = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "User", "name": "oncall-alice"}],
        }
        for name, kind, role in (
            ("alice-deploys", "Role", "deployer"),
            ("alice-overrides", "ClusterRole", "slogate-overrider"),
        )
    ]
    return [
        *(
            deployment(name, NS, image=f"shop/{name}:1.0", container=name, replicas=2)
            for name in ("checkout", "payments-db", "storefront")
        ),
        release_gate("payments-db", NS, "payments-db", ["payments-db-availability"]),
        release_gate("storefront", NS, "storefront", ["storefront-monthly"]),
        overrider,
        oncall,
        *bindings,
    ]


class Pager:
    """Alertmanager's webhook receiver: prints every notification as one line per alert."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                for alert in body.get("alerts", []):
                    labels = alert.get("labels", {})
                    summary = alert.get("annotations", {}).get("summary", "")
                    print(
                        f"ALERTMANAGER {alert.get('status', '?').upper()} "
                        f"{labels.get('severity', '?')}/{labels.get('rule', '?')} "
                        f"{labels.get('namespace', '?')}/{labels.get('slo', '?')}: {summary}",
                        flush=True,
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.stack = contextlib.ExitStack()
        self.cp: ControlPlane
        self.prom: PrometheusServer
        self.am: AlertmanagerServer
        self.app_port = free_port()
        self.metrics_port = free_port()

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def start(self) -> None:
        bins = bin_dir()
        _step("starting etcd and kube-apiserver (a real control plane, no Docker)")
        self.cp = self.stack.enter_context(ControlPlane(workdir=self.dir / "cluster"))
        print(f"kube-apiserver {self.cp.url} ({bins})")

        _step("starting Alertmanager; its notifications are printed here as ALERTMANAGER lines")
        pager = Pager()
        self.stack.callback(pager.stop)
        self.am = self.stack.enter_context(AlertmanagerServer(pager.url))
        print(f"Alertmanager {self.am.url}")

        _step("backfilling 30 days of history for checkout, payments-db, storefront, search")
        end = float(int(time.time() // 60 * 60))
        s = stories(end)
        rules = self._write_rules()
        self.prom = PrometheusServer(
            scrape_configs=[
                {
                    "job_name": "demo-app",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{self.app_port}"]}],
                }
            ],
            workdir=self.dir / "prometheus",
            rule_files=[rules],
            alertmanager_urls=[self.am.url],
        )
        self.stack.callback(self.prom.stop)
        backfill_blocks(self.prom.data_dir, history(s), self.dir / "prometheus")
        self._start_app(s, end)
        self.prom.start()
        print(f"Prometheus {self.prom.url}; demo app http://127.0.0.1:{self.app_port}")
        _step("recording the 5-minute rates long windows derive from, for the past 30 days")
        print(
            "$ promtool tsdb create-blocks-from rules --start <30 days ago> --end <now> "
            "rules-backfill.yaml",
            flush=True,
        )
        took = time.monotonic()
        self.prom.backfill_rules(self.dir / "rules-backfill.yaml", end - 30 * DAY * 60, end)
        print(f"done in {time.monotonic() - took:.0f}s", flush=True)

        _step("installing the CRDs; starting the controller and the webhook (slogate run)")
        self.cp.install_crds(REPO_ROOT / "crds")
        self._start_operator()

        _step("applying examples/ and the demo's Deployments and gates")
        _show(self.cp, "apply", "-f", str(REPO_ROOT / "examples"))
        self.cp.apply(*demo_objects())
        self.alice = self.cp.write_kubeconfig(self.dir / "oncall-alice.kubeconfig", "oncall-alice")
        self._wait_for_status()
        _show(self.cp, "get", "slo", "-n", NS)
        _show(self.cp, "get", "gate", "-n", NS)

    def _write_rules(self) -> Path:
        """The examples' rules, as a user without the Prometheus Operator makes them."""
        rules = self.dir / "rules.yaml"
        for out, extra in ((rules, ()), (self.dir / "rules-backfill.yaml", ("--backfill",))):
            argv = ["rules", str(REPO_ROOT / "examples"), "-o", str(out), *extra]
            print(f"$ slogate {' '.join(argv)}", flush=True)
            made = subprocess.run(
                [sys.executable, "-m", "slogate", *argv], capture_output=True, text=True
            )
            if made.returncode != 0:
                raise StartupError(f"slogate rules failed: {made.stderr.strip()}")
            print(made.stderr.strip(), flush=True)
        return rules

    def _start_app(self, s: dict[str, Story], end: float) -> None:
        req, lat = s["checkout"], s["checkout-latency"]
        state = {
            "counts": {
                "ok": float(req.total.sum() - req.bad.sum()),
                "error": float(req.bad.sum()),
                "fast": float(lat.total.sum() - lat.bad.sum()),
                "slow": float(lat.bad.sum()),
            },
            "since": end,
            "rate": RATE_PER_S,
            "error_ratio": 0.0003,
            "slow_ratio": 0.003,
        }
        path = self.dir / "demo-app.json"
        path.write_text(json.dumps(state))
        app = Process(
            "demo-app",
            [
                sys.executable,
                "-m",
                "localenv.demoapp",
                "--port",
                str(self.app_port),
                "--state",
                str(path),
            ],
            self.dir / "demo-app.log",
        )
        self.stack.callback(app.stop)

        def answers() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.app_port}/", timeout=1):
                return True

        wait_until(answers, app, 30, "the demo app answered")

    def _start_operator(self) -> None:
        certs = self.dir / "webhook-certs"
        certs.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority("slogate-demo-webhook-ca")
        ca.serving("slogate-webhook").write(certs / "tls.crt", certs / "tls.key")
        port = free_port()
        op = Process(
            "slogate",
            [
                sys.executable,
                "-m",
                "slogate",
                "run",
                "--kubeconfig",
                str(self.cp.kubeconfig),
                "--prometheus-url",
                self.prom.url,
                "--tls-cert-file",
                str(certs / "tls.crt"),
                "--tls-key-file",
                str(certs / "tls.key"),
                "--port",
                str(port),
                "--metrics-port",
                str(self.metrics_port),
                "--liveness-port",
                str(free_port()),
                "--log-format",
                "plain",
            ],
            self.dir / "slogate.log",
        )
        self.stack.callback(op.stop)

        def ready() -> bool:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)

        wait_until(ready, op, 60, "slogate answered /readyz")
        config = validating_webhook_configuration(
            {
                "url": f"https://127.0.0.1:{port}",
                "caBundle": base64.b64encode(ca.cert_pem).decode(),
            },
            operator_namespace="slogate-system",
        )
        self.cp.apply(config)
        print(
            f"slogate: logs {self.dir / 'slogate.log'}, "
            f"metrics http://127.0.0.1:{self.metrics_port}/metrics"
        )

    def _wait_for_status(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.cp.get_json("slo", "-n", NS)["items"]
            if items and all((i.get("status") or {}).get("risk") for i in items):
                gates = self.cp.get_json("gate", "-n", NS)["items"]
                if all((g.get("status") or {}).get("decision") for g in gates):
                    return
            time.sleep(1)
        raise StartupError("SLOs or gates got no status within two minutes; see slogate.log")

    def story_of_rollouts(self) -> None:
        _step("payments-db spent its error budget: its rollout is refused by the API server")
        _show(
            self.cp,
            "set",
            "image",
            "deployment/payments-db",
            "payments-db=shop/payments-db:1.1",
            "-n",
            NS,
        )
        _step("checkout is healthy: the same kind of rollout goes through")
        _show(
            self.cp, "set", "image", "deployment/checkout", "checkout=shop/checkout:1.1", "-n", NS
        )
        _step("storefront burns slowly (DANGER): admitted, with a warning")
        _show(
            self.cp,
            "set",
            "image",
            "deployment/storefront",
            "storefront=shop/storefront:1.1",
            "-n",
            NS,
        )
        _step("break-glass: oncall-alice may override the payments-db gate, for at most 4h")
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        patch = {
            "metadata": {
                "annotations": {
                    "slogate.dev/override": "INC-4711 db hotfix",
                    "slogate.dev/override-until": until,
                }
            },
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "payments-db", "image": "shop/payments-db:1.1-hotfix"}
                        ]
                    }
                }
            },
        }
        _show(
            self.cp,
            "patch",
            "deployment",
            "payments-db",
            "-n",
            NS,
            "-p",
            json.dumps(patch),
            kubeconfig=self.alice,
            as_user="oncall-alice",
        )
        _show(
            self.cp,
            "get",
            "gate",
            "payments-db",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.lastOverride}{'\\n'}",
        )
        _step("slogate status")
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "slogate",
                "status",
                "-n",
                NS,
                "--kubeconfig",
                str(self.cp.kubeconfig),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        print(status.stdout.rstrip() or status.stderr.rstrip(), flush=True)

    def guide(self) -> None:
        bins = bin_dir()
        app = f"http://127.0.0.1:{self.app_port}"
        print(
            "\n==> slogate is running. Try:\n"
            f"  export PATH={bins}:$PATH KUBECONFIG={self.cp.kubeconfig}\n"
            f"  kubectl get slo,gate -n {NS} -w\n"
            f"  .venv/bin/slogate status -n {NS}\n"
            f"  .venv/bin/slogate check deployment/checkout -n {NS}; echo exit=$?\n"
            "Make checkout burn its budget and watch page-fast fire and the gate block:\n"
            f"  curl -X POST '{app}/control?error_ratio=0.5'\n"
            f"  kubectl set image deployment/checkout checkout=shop/checkout:2.0 -n {NS}\n"
            "  (within about 3 minutes Alertmanager pages: an ALERTMANAGER FIRING page/page-fast "
            "line here)\n"
            f"  curl -X POST '{app}/control?error_ratio=0.0003'   # and recover\n"
            "  (about 5 minutes later, once the 5m window forgets the errors: ALERTMANAGER "
            "RESOLVED)\n"
            f"Prometheus: {self.prom.url}   Alertmanager: {self.am.url}   slogate metrics: "
            f"http://127.0.0.1:{self.metrics_port}/metrics\n"
            f"Logs and data: {self.dir}\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    path = Path(tempfile.mkdtemp(prefix="slogate-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_demo(once: bool, workdir: Path | None = None) -> int:
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    with _workdir(workdir) as path, Demo(path) as demo:
        demo.start()
        demo.story_of_rollouts()
        if once:
            _step("done (--once): stopping everything")
            return 0
        demo.guide()
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        _step("stopping")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localenv.demo",
        description="run the local demo (control plane, Prometheus, examples)",
    )
    parser.add_argument("--once", action="store_true", help="show the story and exit (for scripts)")
    args = parser.parse_args(argv)
    return run_demo(once=args.once)


if __name__ == "__main__":
    sys.exit(main())
