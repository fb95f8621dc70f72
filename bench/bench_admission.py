"""Admission: AdmissionReviews over HTTPS straight to the real ``slogate webhook`` process.

The load generator is open-loop: request ``i`` is due at ``start + i / rate`` whatever happened
to earlier requests, and its latency is measured from that due time, so a stalled server shows
up as latency instead of silently lowering the rate (coordinated omission). Requests are a fixed
mix of gated-and-healthy (allow), gated-and-at-risk (warn), gated-and-spent (deny) and ungated
Deployment updates, each checked against the expected answer.

End to end: ``PATCH`` of a Deployment template through the real kube-apiserver, alternating
between a Deployment the webhook is called for and one in a namespace the webhook configuration
excludes, first without the configuration registered and then with it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

from bench.report import percentile
from localenv.objects import deployment, replicaset
from slogate.core.admission import strip_template_hash

MIX = (("allow", 0.60), ("ungated", 0.25), ("warn", 0.10), ("deny", 0.05))
# The same without refusals: the path that never leaves the process.
NO_DENY = (("allow", 0.65), ("ungated", 0.25), ("warn", 0.10))


def _deployment(namespace: str, name: str, app: str, image: str) -> dict[str, Any]:
    """The Deployment as the API server sends it in a review: with a uid and a generation."""
    obj = deployment(name, namespace, app, image, replicas=2)
    obj["metadata"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{name}"))
    obj["metadata"]["generation"] = 3
    return obj


def admission_review(
    uid: str,
    namespace: str,
    name: str,
    app: str,
    old_image: str,
    new_image: str,
    *,
    dry_run: bool = False,
    user: str = "bench-deployer",
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``admission.k8s.io/v1`` review of a Deployment image change, as kube-apiserver sends.

    ``template``: the pod template as the API server stored it (with its defaults), which is
    what a real review carries; the images are set on copies of it."""
    old, new = (_deployment(namespace, name, app, image) for image in (old_image, new_image))
    if template is not None:
        for obj, image in ((old, old_image), (new, new_image)):
            obj["spec"]["template"] = copy.deepcopy(template)
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    gvr = {"group": "apps", "version": "v1", "resource": "deployments"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": name,
            "namespace": namespace,
            "operation": "UPDATE",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
        },
    }


@dataclass(frozen=True)
class GateTarget:
    namespace: str
    app: str
    kind: str  # allow | warn | deny


@dataclass(frozen=True)
class PlannedRequest:
    kind: str  # allow | warn | deny | ungated
    body: bytes
    allowed: bool


def current_image(app: str) -> str:
    return f"shop/{app}:1.0"


def current_replicasets(gates: Sequence[GateTarget], history: int = 3) -> list[dict[str, Any]]:
    """What the Deployment controller would have left in a real cluster: for each gated
    Deployment the ReplicaSet of its current template and ``history - 1`` earlier ones."""
    docs = []
    for g in gates:
        dep = _deployment(g.namespace, g.app, g.app, current_image(g.app))
        docs.append(replicaset(dep, current_image(g.app), "cur"))
        for k in range(1, history):
            docs.append(replicaset(dep, f"shop/{g.app}:0.{k}", f"old{k}"))
    return docs


def stored_templates(replicasets: Sequence[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """The current templates (from ``current_replicasets``, read back from the API server with
    its defaults) by (namespace, app), without the ReplicaSet's ``pod-template-hash``."""
    out = {}
    for rs in replicasets:
        meta = rs["metadata"]
        if meta["name"].endswith("-cur"):
            out[(meta["namespace"], meta["name"][: -len("-cur")])] = strip_template_hash(
                rs["spec"]["template"]
            )
    return out


def plan_requests(
    gates: Sequence[GateTarget],
    namespaces: Sequence[str],
    count: int,
    seed: int = 5,
    mix: Sequence[tuple[str, float]] = MIX,
    stored: Mapping[tuple[str, str], dict[str, Any]] | None = None,
) -> list[PlannedRequest]:
    """``count`` reviews in the ``mix`` proportions, over the given gates' workloads;
    ``stored``: pod templates as the API server stored them, by (namespace, app)."""
    rng = random.Random(seed)
    by_kind: dict[str, list[GateTarget]] = {}
    for g in gates:
        by_kind.setdefault(g.kind, []).append(g)
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]
    out = []
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        if kind != "ungated" and not by_kind.get(kind):
            kind = "ungated"
        if kind == "ungated":
            ns, app = rng.choice(list(namespaces)), f"nogate-{i % 97}"
        else:
            g = rng.choice(by_kind[kind])
            ns, app = g.namespace, g.app
        # The Deployment runs CURRENT_IMAGE (its ReplicaSet exists, see current_replicasets)
        # and each request rolls out a new image.
        review = admission_review(
            f"bench-{i}",
            ns,
            app,
            app,
            current_image(app),
            f"shop/{app}:2.{i}",
            template=(stored or {}).get((ns, app)),
        )
        out.append(PlannedRequest(kind, json.dumps(review).encode(), kind != "deny"))
    return out


@dataclass
class LoadResult:
    rate: float
    duration_s: float
    sent: int = 0
    errors: int = 0
    wrong: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # kind -> seconds
    service: list[float] = field(default_factory=list)  # send -> answer, all kinds
    lag_max_s: float = 0.0  # how late the generator sent its latest request
    achieved_rate: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    def all(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


async def open_loop(
    url: str,
    ssl_ctx: ssl.SSLContext,
    requests: Sequence[PlannedRequest],
    rate: float,
    warmup: int = 0,
    timeout_s: float = 3.0,
) -> LoadResult:
    """Send ``requests`` at ``rate`` per second on an open-loop schedule; the first ``warmup``
    are sent on the same schedule but not counted."""
    res = LoadResult(rate=rate, duration_s=len(requests) / rate)
    connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=512)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, due: float) -> None:
            req = requests[i]
            sent = loop.time()
            counted = i >= warmup
            try:
                async with session.post(
                    url, data=req.body, headers={"Content-Type": "application/json"}
                ) as resp:
                    payload = await resp.json()
                    done = loop.time()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")
                allowed = bool(payload["response"]["allowed"])
            except Exception as exc:
                if counted:
                    res.errors += 1
                    if len(res.error_samples) < 5:
                        res.error_samples.append(f"{type(exc).__name__}: {exc}")
                return
            if not counted:
                return
            if allowed != req.allowed:
                res.wrong += 1
            res.latencies.setdefault(req.kind, []).append(done - due)
            res.service.append(done - sent)

        tasks = []
        start = loop.time() + 0.1
        for i in range(len(requests)):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                res.lag_max_s = max(res.lag_max_s, -delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        res.achieved_rate = len(requests) / (loop.time() - start)
    res.sent = len(requests) - warmup
    res.duration_s = res.sent / rate
    return res


def summarize(res: LoadResult) -> dict[str, Any]:
    """p50/p99/max (seconds) overall and per kind."""

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "count": float(len(values)),
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": max(values) if values else float("nan"),
        }

    return {
        "rate": res.rate,
        "achieved_rate": res.achieved_rate,
        "sent": res.sent,
        "errors": res.errors,
        "wrong": res.wrong,
        "lag_max_s": res.lag_max_s,
        "all": stats(res.all()),
        "service": stats(res.service),
        "by_kind": {k: stats(v) for k, v in sorted(res.latencies.items())},
        "error_samples": res.error_samples,
    }


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative ``le -> count`` of a histogram in a /metrics exposition."""
    out: dict[float, float] = {}
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, value = line[len(prefix) :].split("}", 1)
        for part in labels.split(","):
            key, _, raw = part.partition("=")
            if key.strip() == "le":
                le = raw.strip().strip('"')
                out[float("inf") if le == "+Inf" else float(le)] = float(value.split()[0])
    return out


# --- end to end through the API server --------------------------------------------------------


def patch_latencies(
    http: httpx.Client, paths: Sequence[str], rounds: int, tag: str
) -> dict[str, list[float]]:
    """``rounds`` template changes of each Deployment in ``paths``, interleaved; seconds each."""
    out: dict[str, list[float]] = {p: [] for p in paths}
    for i in range(rounds):
        for path in paths:
            body = {
                "spec": {"template": {"metadata": {"annotations": {"bench/rev": f"{tag}-{i}"}}}}
            }
            t0 = time.perf_counter()
            resp = http.patch(
                path,
                content=json.dumps(body),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            elapsed = time.perf_counter() - t0
            resp.raise_for_status()
            out[path].append(elapsed)
    return out
