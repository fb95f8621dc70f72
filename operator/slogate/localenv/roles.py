"""Running slogate's own roles (controller, webhook) as real processes for tests and the demo."""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

from slogate.localenv.processes import Process, free_port, wait_until


class ControllerProcess(Process):
    """``python -m slogate controller`` against the given kubeconfig and Prometheus."""

    def __init__(self, kubeconfig: Path, prometheus_url: str, log_path: Path, *extra: str) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        super().__init__(
            "slogate-controller",
            [
                sys.executable,
                "-m",
                "slogate",
                "controller",
                "--kubeconfig",
                str(kubeconfig),
                "--prometheus-url",
                prometheus_url,
                "--metrics-port",
                str(self.metrics_port),
                "--liveness-port",
                str(self.liveness_port),
                *extra,
            ],
            log_path,
        )
        wait_until(self.healthy, self, 60, "the controller answered /healthz")

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, metric_name: str, /, **labels: str) -> float:
        """Sum of the samples of ``metric_name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if not match or match.group(1) != metric_name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total
