"""The demo's live service: counters that keep growing, with an error rate you can change.

It exposes ``http_requests_total`` and ``http_request_duration_seconds`` for ``job="checkout"``
(labels set by the app itself; Prometheus scrapes it with ``honor_labels``) and continues them
from the values the backfilled history ended at, so 30 days of history and live scrapes form
one series. Traffic is simulated: ``rate`` requests per second, a share ``error_ratio`` of them
answered with 500, ``slow_ratio`` slower than 300 ms.

    python -m localenv.demoapp --port 9100 --state start.json
    curl -X POST 'localhost:9100/control?error_ratio=0.5'    # start burning budget
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

BOUNDS = ("0.1", "0.3", "1")  # le values of the latency histogram (plus +Inf)
LABELS = {"job": "checkout", "instance": "demo-app"}


class Traffic(Collector):
    def __init__(
        self,
        start: dict[str, float],
        since: float,
        rate: float,
        error_ratio: float,
        slow_ratio: float,
    ) -> None:
        self.lock = threading.Lock()
        self.counts = dict(start)  # "ok", "error" (requests); "fast", "slow" (latency)
        self.rate = rate
        self.error_ratio = error_ratio
        self.slow_ratio = slow_ratio
        self.last = since  # where the backfilled history ended: traffic continues from there

    def _advance(self) -> None:
        now = time.time()
        n = self.rate * (now - self.last)
        self.last = now
        self.counts["error"] += n * self.error_ratio
        self.counts["ok"] += n * (1 - self.error_ratio)
        self.counts["slow"] += n * self.slow_ratio
        self.counts["fast"] += n * (1 - self.slow_ratio)

    def set(self, **values: float) -> dict[str, float]:
        with self.lock:
            self._advance()
            for key, value in values.items():
                setattr(self, key, value)
            return {
                "rate": self.rate,
                "error_ratio": self.error_ratio,
                "slow_ratio": self.slow_ratio,
            }

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            self._advance()
            c = dict(self.counts)
        names = [*LABELS, "code"]
        requests = CounterMetricFamily("http_requests", "Requests by status code.", labels=names)
        requests.add_metric([*LABELS.values(), "200"], c["ok"])
        requests.add_metric([*LABELS.values(), "500"], c["error"])
        yield requests
        total = c["fast"] + c["slow"]
        hist = Metric("http_request_duration_seconds", "Request latency.", "histogram")
        for le in BOUNDS:
            value = (
                c["fast"] * 0.5
                if float(le) < 0.3
                else (c["fast"] if float(le) == 0.3 else c["fast"] + c["slow"] * 0.5)
            )
            hist.add_sample("http_request_duration_seconds_bucket", {**LABELS, "le": le}, value)
        hist.add_sample("http_request_duration_seconds_bucket", {**LABELS, "le": "+Inf"}, total)
        hist.add_sample("http_request_duration_seconds_count", dict(LABELS), total)
        hist.add_sample("http_request_duration_seconds_sum", dict(LABELS), total * 0.12)
        yield hist


def serve(port: int, traffic: Traffic) -> ThreadingHTTPServer:
    registry = CollectorRegistry()
    registry.register(traffic)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._reply(200, generate_latest(registry), "text/plain; version=0.0.4")
            else:
                self._reply(200, json.dumps(traffic.set()).encode(), "application/json")

        def do_POST(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            try:
                values = {
                    k: float(v[0])
                    for k, v in query.items()
                    if k in ("rate", "error_ratio", "slow_ratio")
                }
            except ValueError:
                self._reply(400, b"numbers please\n", "text/plain")
                return
            if any(not 0 <= v <= 1 for k, v in values.items() if k != "rate"):
                self._reply(400, b"ratios are between 0 and 1\n", "text/plain")
                return
            self._reply(200, json.dumps(traffic.set(**values)).encode() + b"\n", "application/json")

        def _reply(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True, help="JSON with start counts and rates")
    args = parser.parse_args()
    with open(args.state) as f:
        state = json.load(f)
    traffic = Traffic(
        state["counts"], state["since"], state["rate"], state["error_ratio"], state["slow_ratio"]
    )
    serve(args.port, traffic).serve_forever()


if __name__ == "__main__":
    main()
