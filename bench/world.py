"""The benchmark's world: synthetic services in Prometheus, SLO/gate manifests, API access.

Services share series: SLO ``i`` reads service ``i % services``, so 5,000 SLOs need only
``2 x services`` backfilled series while every SLO still costs Prometheus its own queries (each
SLO's expressions are evaluated separately, whatever series they select).

History is sampled every minute for the whole 31 days (like a 60 s scrape interval), not coarser
for old data: the ratio of samples loaded by slogate to those loaded by the naive baseline
depends on how dense old data is compared with recent data, and a real Prometheus scrapes at one
interval throughout.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import ssl
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import yaml

from localenv.objects import fresh_slo_status
from localenv.prometheus import Series

MINUTE = 60
HOUR = 3600
DAY = 86400
GROUP_VERSION = "slogate.dev/v1alpha1"
METRIC = "bench_requests_total"
LIVE_JOB = "bench-live"
FloatArray = npt.NDArray[np.float64]

# Story kinds, cycled over the services: most are healthy, some had an incident this month, some
# burn slowly (a ticket rule fires: DANGER) and some have spent their budget. "noisy" is healthy
# with Poisson-distributed counts, as real traffic is; every other story is exact, so that
# "nothing changes" really holds for the healthy and exhausted ones.
KINDS = ("healthy",) * 5 + ("noisy", "incident", "incident", "slowburn", "exhausted")
TARGETS = (99.9, 99.95, 99.5, 99.0)


@dataclass(frozen=True)
class ServiceStory:
    """Per-minute events of one service; minute ``k`` ends at ``start + 60 (k + 1)``.

    ``rate`` (requests per minute), ``phase`` (of the daily cycle) and ``ratio_now`` (the error
    ratio at the end) let the exporter continue the story live.
    """

    name: str
    kind: str
    start: float
    bad: FloatArray
    total: FloatArray
    rate: float = 0.0
    phase: float = 0.0
    diurnal: float = 0.5
    ratio_now: float = 0.0
    noisy: bool = False

    @property
    def end(self) -> float:
        return self.start + MINUTE * len(self.total)


def make_services(count: int, end: float, days: int = 31, seed: int = 8) -> list[ServiceStory]:
    """``count`` services with ``days`` of history up to ``end`` (rounded down to a minute)."""
    rng = np.random.default_rng(seed)
    end = math.floor(end / MINUTE) * MINUTE
    minutes = days * 1440
    start = end - minutes * MINUTE
    t = start + MINUTE * np.arange(minutes, dtype=np.float64)
    budget = 0.001  # stories are told against a 99.9% target
    out = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        rate = float(np.exp(rng.uniform(np.log(20), np.log(3000))))  # requests per minute
        phase = float(rng.uniform(0, 2 * np.pi))
        total = rate * (1 + 0.5 * np.sin(2 * np.pi * t / DAY + phase))
        ratio = np.full(minutes, budget * rng.uniform(0.1, 0.8))
        if kind == "incident":
            begin = end - rng.uniform(2, 28) * DAY
            length = rng.uniform(1, 4) * HOUR
            ratio[(t >= begin) & (t < begin + length)] = budget * rng.uniform(10, 40)
        elif kind == "slowburn":
            ratio[t >= end - 2 * DAY] = budget * 3.5
        elif kind == "exhausted":
            ratio[:] = budget * rng.uniform(1.2, 2.0)
        bad = total * ratio
        if kind == "noisy":
            total = rng.poisson(total).astype(np.float64)
            bad = rng.binomial(total.astype(np.int64), ratio).astype(np.float64)
        out.append(
            ServiceStory(
                f"svc-{i:03d}",
                kind,
                start,
                bad,
                total,
                rate=rate,
                phase=phase,
                ratio_now=float(ratio[-1]),
                noisy=kind == "noisy",
            )
        )
    return out


def live_history(end: float, rate: float = 600.0, burn: float = 0.2) -> ServiceStory:
    """31 healthy days for the live exporter's service, ending at ``end``."""
    end = math.floor(end / MINUTE) * MINUTE
    minutes = 31 * 1440
    total = np.full(minutes, rate)
    ratio = 0.001 * burn
    return ServiceStory(
        LIVE_JOB,
        "live",
        end - minutes * MINUTE,
        total * ratio,
        total,
        rate=rate,
        diurnal=0.0,
        ratio_now=ratio,
    )


def story_series(story: ServiceStory, instance: str) -> list[Series]:
    """The two counters of a story (``code="500"`` and ``code="200"``), one sample a minute.

    ``instance`` is the exporter's scrape target: the live samples it serves then continue these
    very series (same labels), so no counter restarts at the seam.
    """
    times = (story.start + MINUTE * np.arange(len(story.total) + 1)).tolist()
    bad = np.concatenate([[0.0], np.cumsum(story.bad)])
    good = np.concatenate([[0.0], np.cumsum(story.total - story.bad)])
    labels = {"job": story.name, "instance": instance}
    return [
        Series(METRIC, {**labels, "code": "500"}, times, bad.tolist()),
        Series(METRIC, {**labels, "code": "200"}, times, good.tolist()),
    ]


def exporter_spec(story: ServiceStory) -> dict[str, float | str | bool]:
    """What the exporter needs to continue ``story`` from its last sample."""
    return {
        "job": story.name,
        "t0": story.end,
        "bad0": float(np.cumsum(story.bad)[-1]),
        "good0": float(np.cumsum(story.total - story.bad)[-1]),
        "rate": story.rate,
        "phase": story.phase,
        "diurnal": story.diurnal,
        "ratio": story.ratio_now,
        "noisy": story.noisy,
    }


# --- manifests ---------------------------------------------------------------------------------


def namespace_of(i: int, namespaces: int) -> str:
    return f"team-{i % namespaces:02d}"


def slo_name(i: int) -> str:
    return f"slo-{i:05d}"


def service_of(i: int, services: int) -> str:
    return f"svc-{i % services:03d}"


def selectors(service: str) -> tuple[str, str]:
    """(errors, total) selectors of a service."""
    return f'{METRIC}{{job="{service}",code="500"}}', f'{METRIC}{{job="{service}"}}'


def kind_of_slo(i: int, services: int) -> str:
    """The story kind of the service SLO ``i`` reads (see :func:`make_services`)."""
    return KINDS[(i % services) % len(KINDS)]


def slo_manifest(i: int, services: int, namespaces: int) -> dict[str, Any]:
    service = service_of(i, services)
    errors, total = selectors(service)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "ServiceLevelObjective",
        "metadata": {
            "name": slo_name(i),
            "namespace": namespace_of(i, namespaces),
            "labels": {"bench": "scale"},
        },
        "spec": {
            "service": service,
            "target": TARGETS[(i // services) % len(TARGETS)],
            "window": "30d",
            "indicator": {"ratio": {"errors": errors, "total": total}},
            "evaluation": {"interval": "30s"},
        },
    }


def slo_status(kind: str, at: float) -> dict[str, Any]:
    """A fresh status that makes a gate ALLOW (``ok``), WARN (``warn``) or BLOCK (``deny``)."""
    remaining, risk, burn, firing = {
        "ok": (0.8, "SAFE", 0.2, []),
        "warn": (0.3, "DANGER", 3.5, ["ticket-fast"]),
        "deny": (-0.29, "FREEZE", 3.2, ["page-fast"]),
    }[kind]
    return fresh_slo_status(remaining, risk, burn, firing, at=at)


# --- the API server, spoken to directly -------------------------------------------------------


class Api:
    """httpx clients for the local API server with the admin client certificate."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = str(cluster["server"])
        self.ssl = ssl.create_default_context(cafile=str(cluster["certificate-authority"]))
        self.ssl.load_cert_chain(str(user["client-certificate"]), str(user["client-key"]))
        self.http = httpx.Client(base_url=self.server, verify=self.ssl, timeout=60)

    def close(self) -> None:
        self.http.close()

    def aclient(self, connections: int = 16) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.server,
            verify=self.ssl,
            timeout=60,
            limits=httpx.Limits(max_connections=connections),
        )

    @staticmethod
    def path(doc: dict[str, Any]) -> str:
        """The collection URL of a manifest."""
        api_version, kind = doc["apiVersion"], doc["kind"]
        ns = (doc.get("metadata") or {}).get("namespace")
        plural = {
            "ServiceLevelObjective": "servicelevelobjectives",
            "ReleaseGate": "releasegates",
            "Deployment": "deployments",
            "ReplicaSet": "replicasets",
            "Namespace": "namespaces",
        }[kind]
        base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        return f"{base}/namespaces/{ns}/{plural}" if ns else f"{base}/{plural}"

    def create(self, doc: dict[str, Any]) -> None:
        resp = self.http.post(self.path(doc), json=doc)
        if resp.status_code not in (200, 201, 409):
            raise RuntimeError(f"create {doc['kind']}: {resp.status_code} {resp.text[:500]}")

    def create_many(self, docs: Sequence[dict[str, Any]], concurrency: int = 16) -> None:
        """POST every manifest (409 Conflict counts as done), ``concurrency`` at a time."""

        async def run() -> None:
            sem = asyncio.Semaphore(concurrency)
            async with self.aclient(concurrency) as client:

                async def one(doc: dict[str, Any]) -> None:
                    async with sem:
                        for attempt in range(5):
                            resp = await client.post(self.path(doc), json=doc)
                            if resp.status_code in (200, 201, 409):
                                return
                            if resp.status_code < 500 and resp.status_code != 429:
                                break
                            await asyncio.sleep(0.2 * (attempt + 1))
                        raise RuntimeError(
                            f"create {doc['kind']} {doc['metadata']['name']}: "
                            f"{resp.status_code} {resp.text[:300]}"
                        )

                await asyncio.gather(*(one(d) for d in docs))

        asyncio.run(run())

    def patch_status_many(
        self, items: Sequence[tuple[str, str, str, dict[str, Any]]], concurrency: int = 16
    ) -> None:
        """JSON-patch ``/status`` of ``(plural, namespace, name, status)`` objects."""

        async def run() -> None:
            sem = asyncio.Semaphore(concurrency)
            async with self.aclient(concurrency) as client:

                async def one(plural: str, ns: str, name: str, status: dict[str, Any]) -> None:
                    async with sem:
                        resp = await client.patch(
                            f"/apis/{GROUP_VERSION}/namespaces/{ns}/{plural}/{name}/status",
                            content=json.dumps([{"op": "add", "path": "/status", "value": status}]),
                            headers={"Content-Type": "application/json-patch+json"},
                        )
                        resp.raise_for_status()

                await asyncio.gather(*(one(*item) for item in items))

        asyncio.run(run())

    def list(self, plural: str) -> list[dict[str, Any]]:
        return self.list_rv(plural)[0]

    def list_rv(self, plural: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``plural`` in all namespaces, and the list's resourceVersion."""
        resp = self.http.get(f"/apis/{GROUP_VERSION}/{plural}")
        resp.raise_for_status()
        body = resp.json()
        return list(body["items"]), str(body["metadata"]["resourceVersion"])

    def get(self, path: str) -> dict[str, Any]:
        resp = self.http.get(path)
        resp.raise_for_status()
        return dict(resp.json())

    def metrics(self) -> str:
        resp = self.http.get("/metrics")
        resp.raise_for_status()
        return resp.text


def apiserver_writes(text: str) -> dict[str, float]:
    """API server request counts by ``verb resource[/subresource]`` from its /metrics."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        key = f"{labels.get('verb')} {labels.get('resource')}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


# --- processes and the machine ----------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    prom = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpu": f"{model}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "python": f"{platform.python_version()} ({sys.executable})",
        "os": platform.platform(),
        "prometheus": (prom.stdout or prom.stderr).splitlines()[0] if prom.returncode == 0 else "?",
    }


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
