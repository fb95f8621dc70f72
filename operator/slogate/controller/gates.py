"""Gate decisions in the controller: recomputed after every evaluation, written on change.

The controller owns ``decision``, ``reasons``, ``objectives`` and the ``Ready`` condition of a
gate's status; the webhook owns ``blockedCount``, ``lastBlocked`` and ``lastOverride``. Both
write with merge patches of their own fields only, so neither clobbers the other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from slogate import metrics
from slogate.core.gate import DEFAULT_STALE_AFTER_S, SloView, judge_gate, remembered_blocking
from slogate.core.releasegate import GateSpec
from slogate.core.resources import GATE_KIND, GROUP, VERSION
from slogate.core.status import Event, needs_write, set_condition
from slogate.events import post_event

log = logging.getLogger("slogate.gates")
Key = tuple[str, str]


@dataclass
class GateEntry:
    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: GateSpec
    status: dict[str, Any] | None
    last_write: float = -math.inf


class GateKeeper:
    def __init__(
        self, heartbeat_s: float = 300.0, stale_after_s: float = DEFAULT_STALE_AFTER_S
    ) -> None:
        self.custom: k8s.CustomObjectsApi | None = None
        self.core: k8s.CoreV1Api | None = None
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.gates: dict[Key, GateEntry] = {}

    def attach(self, api: k8s.ApiClient) -> None:
        """Start writing to the API server (gates may be known before login completes)."""
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)

    def upsert(self, body: Mapping[str, Any], spec: GateSpec) -> bool:
        """Register a gate; False when the event changed nothing we read (e.g. a status write)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.gates.get(key)
        if old is not None and old.uid == meta.get("uid", "") and old.spec == spec:
            old.generation = meta.get("generation")
            return False
        self.gates[key] = GateEntry(
            meta["namespace"],
            meta["name"],
            meta.get("uid", ""),
            meta.get("generation"),
            spec,
            status=(old.status if old else None) or dict(body.get("status") or {}) or None,
            last_write=old.last_write if old else -math.inf,
        )
        return True

    def remove(self, key: Key) -> None:
        self.gates.pop(key, None)
        for decision in ("ALLOW", "WARN", "BLOCK"):
            metrics.remove_series(metrics.gate_decision, (key[0], key[1], decision))

    def compute(self, entry: GateEntry, slos: Mapping[Key, SloView], now: float) -> dict[str, Any]:
        memory = remembered_blocking(entry.status, entry.generation)
        verdict = judge_gate(entry.spec, entry.namespace, slos, now, self.stale_after_s, memory)
        conditions = [dict(c) for c in (entry.status or {}).get("conditions") or []]
        missing = [o.name for o in verdict.objectives if o.unknown == "SLO not found"]
        if missing:
            set_condition(
                conditions,
                "Ready",
                "False",
                "ObjectiveNotFound",
                f"no such ServiceLevelObjective: {', '.join(missing)}",
                now,
                entry.generation,
            )
        else:
            set_condition(
                conditions,
                "Ready",
                "True",
                "Evaluated",
                f"{len(verdict.objectives)} objective(s) evaluated",
                now,
                entry.generation,
            )
        return {
            "observedGeneration": entry.generation,
            "decision": verdict.decision,
            "reasons": list(verdict.reasons),
            "objectives": [o.as_status() for o in verdict.objectives],
            "conditions": conditions,
        }

    async def refresh(self, slos: Mapping[Key, SloView], now: float) -> int:
        writes = 0
        for entry in list(self.gates.values()):
            new = self.compute(entry, slos, now)
            for decision in ("ALLOW", "WARN", "BLOCK"):
                metrics.gate_decision.labels(entry.namespace, entry.name, decision).set(
                    1.0 if decision == new["decision"] else 0.0
                )
            old = {k: (entry.status or {}).get(k) for k in new}
            if not needs_write(old, new, entry.last_write, now, self.heartbeat_s):
                continue
            if await self._write(entry.namespace, entry.name, new):
                writes += 1
                previous = (entry.status or {}).get("decision")
                entry.status = {**(entry.status or {}), **new}
                entry.last_write = now
                if previous is not None and previous != new["decision"]:
                    await self._announce(entry, previous, new)
        return writes

    async def report_invalid(
        self, namespace: str, name: str, generation: int | None, message: str
    ) -> None:
        conditions: list[dict[str, Any]] = []
        set_condition(
            conditions, "Ready", "False", "InvalidSpec", message[:1000], time.time(), generation
        )
        status = {"observedGeneration": generation, "decision": None, "conditions": conditions}
        await self._write(namespace, name, status)

    async def _write(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        if self.custom is None:
            return False
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                GATE_KIND.plural,
                name,
                {"status": status},
            )
        except Exception as exc:
            log.warning("gate status write for %s/%s failed: %s", namespace, name, exc)
            return False
        metrics.status_writes.labels("ReleaseGate").inc()
        return True

    async def _announce(self, entry: GateEntry, previous: str, new: dict[str, Any]) -> None:
        if self.core is None:
            return
        reasons = "; ".join(new["reasons"]) or "all objectives healthy"
        event = Event(
            "Warning" if new["decision"] == "BLOCK" else "Normal",
            f"Decision{new['decision'].capitalize()}",
            f"{previous} -> {new['decision']}: {reasons}",
        )
        ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ReleaseGate",
            "namespace": entry.namespace,
            "name": entry.name,
            "uid": entry.uid,
        }
        await post_event(self.core, ref, event, "slogate-controller", "controller")
