"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on a free loopback port.

Routes every alert to one webhook receiver, with waits short enough for tests and the demo to
see a page within seconds of Prometheus sending it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localenv.binaries import tool
from localenv.processes import Process, Server, answers_ok, free_port, wait_until

BINARY = "prometheus-alertmanager"  # Debian's name for the alertmanager binary


@dataclass
class AlertmanagerServer(Server):
    """``with AlertmanagerServer(webhook_url) as am:`` runs Alertmanager until the block ends."""

    webhook_url: str
    group_wait: str = "1s"
    group_interval: str = "1s"
    repeat_interval: str = "1h"
    port: int = 0
    process: Process | None = None

    def __post_init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="slogate-am-"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "route": {
                "receiver": "webhook",
                "group_by": ["alertname", "namespace", "slo", "rule"],
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [
                {
                    "name": "webhook",
                    "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}],
                }
            ],
        }

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        path = self.dir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(self.config()))
        self.process = Process(
            "alertmanager",
            [
                tool(BINARY),
                f"--config.file={path}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # one instance: no gossip port
                "--log.level=warn",
            ],
            self.dir / "alertmanager.log",
        )
        wait_until(
            lambda: answers_ok(f"{self.url}/-/ready"),
            self.process,
            60,
            "Alertmanager answered /-/ready",
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds now (API v2)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as resp:
            found: list[dict[str, Any]] = json.loads(resp.read())
        return found
