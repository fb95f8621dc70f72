"""The benchmark's live services: counters that continue the backfilled stories, scraped by the
real Prometheus.

``python -m bench.exporter --spec spec.json --state-file F`` reads ``{"ports": {"services": P1,
"live": P2}, "services": [...], "live": [...]}`` (entries from ``bench.world.exporter_spec``) and
serves ``bench_requests_total{job, code="200"|"500"}`` for each group on its port. Every
counter continues from the last backfilled value (``bad0``/``good0`` at ``t0``) at the story's
rate, daily cycle and error ratio, computed in closed form at scrape time, so Prometheus sees
one unbroken series per counter.

SIGUSR1 makes the ``live`` group fail ``--fail-ratio`` of its requests and writes the switch
time (seconds since the epoch) to the state file; SIGUSR2 restores the story's own ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

DAY = 86400.0
OMEGA = 2 * math.pi / DAY


class Counters:
    """One service's two counters, integrated exactly between reads."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.job = str(spec["job"])
        self.t = float(spec["t0"])
        self.bad = float(spec["bad0"])
        self.good = float(spec["good0"])
        self.rate = float(spec["rate"]) / 60.0  # per second
        self.phase = float(spec["phase"])
        self.diurnal = float(spec["diurnal"])
        self.ratio = float(spec["ratio"])
        self.own_ratio = self.ratio
        self.noisy = bool(spec.get("noisy", False))
        self.rng = np.random.default_rng(zlib.crc32(self.job.encode()))

    def _served(self, t: float) -> float:
        """Requests served from the epoch to ``t`` (an antiderivative of the rate)."""
        return self.rate * (t - self.diurnal / OMEGA * math.cos(OMEGA * t + self.phase))

    def advance(self, now: float) -> None:
        if now <= self.t:
            return
        served = self._served(now) - self._served(self.t)
        if self.noisy:  # real traffic: Poisson arrivals, each failing with the error ratio
            total = int(self.rng.poisson(served))
            bad = int(self.rng.binomial(total, self.ratio))
            self.bad += bad
            self.good += total - bad
        else:
            self.bad += served * self.ratio
            self.good += served * (1 - self.ratio)
        self.t = now


class Group(Collector):
    def __init__(self, specs: list[dict[str, Any]], lock: threading.Lock) -> None:
        self.counters = [Counters(s) for s in specs]
        self.lock = lock

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam = CounterMetricFamily("bench_requests", "Requests served.", labels=["job", "code"])
        with self.lock:
            now = time.time()
            for c in self.counters:
                c.advance(now)
                fam.add_metric([c.job, "500"], c.bad)
                fam.add_metric([c.job, "200"], c.good)
        yield fam


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--fail-ratio", type=float, default=1.0)
    parser.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    lock = threading.Lock()
    groups = {}
    for name in ("services", "live"):
        registry = CollectorRegistry(auto_describe=False)
        groups[name] = Group(spec[name], lock)
        registry.register(groups[name])
        start_http_server(int(spec["ports"][name]), addr="127.0.0.1", registry=registry)

    def switch(ratio: float | None) -> None:
        with lock:
            now = time.time()
            for c in groups["live"].counters:
                c.advance(now)
                c.ratio = c.own_ratio if ratio is None else ratio
        if ratio is not None:
            args.state_file.write_text(f"{now:.3f}\n")

    def fail(_sig: int, _frame: FrameType | None) -> None:
        switch(args.fail_ratio)

    def recover(_sig: int, _frame: FrameType | None) -> None:
        switch(None)

    signal.signal(signal.SIGUSR1, fail)
    signal.signal(signal.SIGUSR2, recover)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


if __name__ == "__main__":
    main()
