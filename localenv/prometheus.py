"""A real Prometheus (Debian's package) on a free loopback port, with history backfill.

History is written as OpenMetrics and turned into TSDB blocks by
``promtool tsdb create-blocks-from openmetrics``; Prometheus is then (re)started on the data
directory, so queries see the backfilled series exactly as if they had been scraped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localenv.binaries import tool
from localenv.processes import (
    Process,
    Server,
    StartupError,
    answers_ok,
    free_port,
    wait_until,
)


@dataclass(frozen=True)
class Series:
    """One time series of samples; ``timestamps`` in seconds since the epoch, ascending."""

    name: str
    labels: dict[str, str]
    timestamps: Sequence[float]
    values: Sequence[float]


def counter(
    name: str,
    labels: dict[str, str],
    start: float,
    step: float,
    increases: Sequence[float],
    initial: float = 0.0,
) -> Series:
    """A counter whose value grows by ``increases[i]`` during step ``i`` after ``start``.

    The first sample (at ``start``) holds ``initial``; sample ``i + 1`` holds the running sum.
    """
    timestamps = [start + step * i for i in range(len(increases) + 1)]
    values = [initial]
    for inc in increases:
        values.append(values[-1] + inc)
    return Series(name, labels, timestamps, values)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def openmetrics_text(series: Iterable[Series]) -> str:
    """Render series as OpenMetrics; families are typed ``unknown`` so any name is allowed."""
    by_name: dict[str, list[Series]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s)
    lines: list[str] = []
    for name, members in by_name.items():
        lines.append(f"# TYPE {name} unknown")
        for s in members:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
            head = f"{name}{{{labels}}}" if labels else name
            lines.extend(
                f"{head} {v!r} {t:.3f}" for t, v in zip(s.timestamps, s.values, strict=True)
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass
class PrometheusServer(Server):
    """``with PrometheusServer() as prom:`` runs Prometheus until the block ends."""

    scrape_configs: list[dict[str, Any]] = field(default_factory=list)
    scrape_interval: str = "5s"
    rule_files: list[Path] = field(default_factory=list)
    alertmanager_urls: list[str] = field(default_factory=list)  # http://host:port
    # Lets scrapes and rule results land below backfilled history that runs into the future
    # (without it they are "out of bounds" until the history's end has passed).
    out_of_order_window: str | None = None
    workdir: Path | None = None
    port: int = 0
    process: Process | None = None

    def __post_init__(self) -> None:
        self._own_dir = self.workdir is None
        self.dir = Path(self.workdir or tempfile.mkdtemp(prefix="slogate-prom-"))
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": self.scrape_configs,
        }
        if self.out_of_order_window:
            config["storage"] = {"tsdb": {"out_of_order_time_window": self.out_of_order_window}}
        if self.rule_files:
            config["rule_files"] = [str(p) for p in self.rule_files]
        if self.alertmanager_urls:
            targets = [urllib.parse.urlsplit(u).netloc for u in self.alertmanager_urls]
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
        config_path = self.dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = Process(
            "prometheus",
            [
                tool("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Backfilled history reaches back further than the default 15d retention.
                "--storage.tsdb.retention.time=400d",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            self.dir / "prometheus.log",
        )
        wait_until(
            lambda: answers_ok(f"{self.url}/-/ready"),
            self.process,
            60,
            "Prometheus answered /-/ready",
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port and data (the data directory is kept)."""
        if self.process is not None:
            self.process.stop()
            self.process = None
        self.start()

    def backfill(self, series: Iterable[Series]) -> None:
        """Write ``series`` into the TSDB and restart so Prometheus serves them at once."""
        backfill_blocks(self.data_dir, series, self.dir)
        if self.process is not None:
            self.restart()

    def backfill_rules(self, rule_file: Path, start: float, end: float) -> None:
        """Evaluate ``rule_file``'s recording rules over ``[start, end]`` from the data
        Prometheus holds (``promtool tsdb create-blocks-from rules``, at each group's own
        interval) and restart so the recorded history is served."""
        out = self.dir / f"rule-blocks-{time.monotonic_ns()}"
        result = subprocess.run(
            [
                tool("promtool"),
                "tsdb",
                "create-blocks-from",
                "rules",
                f"--start={int(start)}",
                f"--end={int(end)}",
                f"--url={self.url}",
                f"--output-dir={out}",
                "--quiet",
                str(rule_file),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=1200,
        )
        if result.returncode != 0:
            raise StartupError(
                f"promtool rule backfill failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        for block in out.iterdir():
            shutil.move(str(block), self.data_dir / block.name)
        shutil.rmtree(out, ignore_errors=True)
        if self.process is not None:
            self.restart()

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query result vector (raises on a Prometheus error); for tests and the demo."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=body, timeout=30) as resp:
            payload = json.loads(resp.read())
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus error: {payload}")
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    def scalar(self, promql: str, at: float | None = None) -> float:
        result = self.query(promql, at)
        if len(result) != 1:
            raise AssertionError(f"{promql!r} returned {len(result)} series, expected 1")
        return float(result[0]["value"][1])


def backfill_blocks(data_dir: Path, series: Iterable[Series], scratch: Path) -> None:
    """Turn ``series`` into TSDB blocks inside ``data_dir`` with promtool."""
    scratch.mkdir(parents=True, exist_ok=True)
    source = scratch / f"backfill-{time.monotonic_ns()}.om"
    source.write_text(openmetrics_text(series))
    try:
        blocks_from_openmetrics(source, data_dir)
    finally:
        source.unlink(missing_ok=True)


def blocks_from_openmetrics(source: Path, data_dir: Path, timeout_s: float = 1200) -> None:
    """``promtool tsdb create-blocks-from openmetrics`` of one file into ``data_dir``."""
    result = subprocess.run(
        # One block per 31 days instead of per 2h: hundreds of tiny blocks slow Prometheus.
        [
            tool("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=744h",
            str(source),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise StartupError(
            f"promtool backfill failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
