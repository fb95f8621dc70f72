"""The few API calls admission makes, and only when it is about to refuse a rollout.

- the Deployment's ReplicaSets, to recognise a rollback to one of their templates, when the
  webhook's own index of ReplicaSets cannot tell;
- a SubjectAccessReview per blocking gate, when the workload asks for an override;
- afterwards, off the request path: Events on the Deployment and the gate, and the gate's
  ``status.lastBlocked`` / ``blockedCount`` / ``lastOverride``.

Refusals are recorded in batches: ``note_block`` only counts, and ``flush`` (every second, and at
shutdown) writes each gate's status once with the refusals since the last flush and aggregates
repeated Events. A burst of refusals then costs a few API calls, not four per refusal, and the
webhook's event loop keeps answering reviews instead of waiting on its own bookkeeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import random
import socket
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slogate import metrics
from slogate.core.admission import Change, GateHit
from slogate.core.resources import GATE_KIND, GROUP, VERSION
from slogate.core.status import Event
from slogate.events import CoalescedEvents, post_event

log = logging.getLogger("slogate.webhook.kube")
COMPONENT = "slogate-webhook"


class KubeCalls:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.apps = k8s.AppsV1Api(api)
        self.authz = k8s.AuthorizationV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.instance = socket.gethostname()
        self.events = CoalescedEvents(self.core, COMPONENT, self.instance)
        self._blocks: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._flushing = asyncio.Lock()

    async def replicaset_templates(self, namespace: str, deployment: dict[str, Any]) -> list[Any]:
        uid = (deployment.get("metadata") or {}).get("uid")
        if not uid:
            return []
        selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        got = await asyncio.to_thread(self._list_replicasets, namespace, label_selector)
        templates = []
        for rs in got.get("items", []):
            owners = (rs.get("metadata") or {}).get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                templates.append((rs.get("spec") or {}).get("template"))
        return templates

    def _list_replicasets(self, namespace: str, label_selector: str) -> dict[str, Any]:
        # Raw JSON (not model objects): the template must compare equal to the request's JSON.
        resp = self.apps.list_namespaced_replica_set(
            namespace, label_selector=label_selector, _preload_content=False
        )
        return dict(json.loads(resp.data))  # type: ignore[attr-defined]

    async def may_override(self, userinfo: dict[str, Any], gate_ns: str, gate_name: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": userinfo.get("username"),
                "uid": userinfo.get("uid"),
                "groups": userinfo.get("groups") or [],
                "extra": userinfo.get("extra") or {},
                "resourceAttributes": {
                    "group": GROUP,
                    "resource": GATE_KIND.plural,
                    "verb": "override",
                    "name": gate_name,
                    "namespace": gate_ns,
                },
            },
        }
        result = await asyncio.to_thread(self.authz.create_subject_access_review, review)  # type: ignore[arg-type]
        return bool(result.status and result.status.allowed)

    # --- records (after the response; best effort) ---------------------------------------

    def note_block(
        self,
        change: Change,
        deployment_uid: str,
        hits: tuple[GateHit, ...],
        gate_uids: dict[tuple[str, str], str],
        *,
        dry_run_mode: bool,
        message: str,
    ) -> None:
        """Count a refusal (or, for DryRun gates, a would-be refusal); written by ``flush``."""
        reason = "RolloutWouldBeBlocked" if dry_run_mode else "RolloutBlocked"
        record: dict[str, Any] = {
            "workload": change.workload,
            "user": change.user,
            "image": change.image,
            "time": _now(),
        }
        if dry_run_mode:
            record["dryRun"] = True
        for hit in hits:
            gate = hit.gate
            text = f"{change.user} changing {change.workload}: " + "; ".join(hit.verdict.reasons)
            self.events.add(
                _ref(change.namespace, "Deployment", "apps/v1", change.name, deployment_uid),
                Event("Warning", reason, message[:1000]),
            )
            self.events.add(
                _ref(
                    gate.namespace,
                    "ReleaseGate",
                    f"{GROUP}/{VERSION}",
                    gate.name,
                    gate_uids.get(gate.key, ""),
                ),
                Event("Warning", reason, text),
            )
            count, _ = self._blocks.get(gate.key, (0, record))
            self._blocks[gate.key] = (count + 1, record)
            metrics.unrecorded_refusals.inc()

    async def flush(self) -> None:
        """Write what ``note_block`` counted: Events, then each gate's status once."""
        async with self._flushing:
            await self.events.flush()
            blocks, self._blocks = self._blocks, {}
            for (namespace, name), (count, record) in blocks.items():
                try:
                    await self._bump_blocked(namespace, name, count, record)
                finally:  # written, or given up on (and logged)
                    metrics.unrecorded_refusals.dec(count)

    async def flush_forever(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception:  # a bug in bookkeeping must not stop the next flush
                log.exception("recording refusals failed")

    async def record_override(
        self,
        change: Change,
        deployment_uid: str,
        hits: tuple[GateHit, ...],
        gate_uids: dict[tuple[str, str], str],
        reason: str,
        until: str,
    ) -> None:
        now = _now()
        for hit in hits:
            gate = hit.gate
            text = (
                f"{change.user} overrode {gate.namespace}/{gate.name} for {change.workload} "
                f"until {until}: {reason}"
            )
            await self._event(
                change.namespace,
                "Deployment",
                "apps/v1",
                change.name,
                deployment_uid,
                Event("Warning", "GateOverridden", text),
            )
            await self._event(
                gate.namespace,
                "ReleaseGate",
                f"{GROUP}/{VERSION}",
                gate.name,
                gate_uids.get(gate.key, ""),
                Event("Warning", "GateOverridden", text),
            )
            patch = {
                "status": {
                    "lastOverride": {
                        "workload": change.workload,
                        "user": change.user,
                        "reason": reason,
                        "until": until,
                        "time": now,
                    }
                }
            }
            try:
                await asyncio.to_thread(
                    self.custom.patch_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    gate.namespace,
                    GATE_KIND.plural,
                    gate.name,
                    patch,
                )
            except Exception as exc:
                log.warning("could not record the override on %s: %s", gate.key, exc)

    async def _bump_blocked(
        self, namespace: str, name: str, count: int, record: dict[str, Any]
    ) -> None:
        """Add ``count`` to blockedCount safely against other webhook replicas: test-and-set on
        the resourceVersion, read again after a lost race (after a short random pause)."""
        for attempt in range(10):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.05 * attempt))
            try:
                gate = await asyncio.to_thread(
                    self.custom.get_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    namespace,
                    GATE_KIND.plural,
                    name,
                )
                gate = cast(dict[str, Any], gate)
                before = int(((gate.get("status") or {}).get("blockedCount")) or 0)
                ops: list[dict[str, Any]] = []
                if "status" not in gate:
                    ops.append({"op": "add", "path": "/status", "value": {}})
                ops.append(
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": gate["metadata"]["resourceVersion"],
                    }
                )
                ops.append({"op": "add", "path": "/status/blockedCount", "value": before + count})
                ops.append({"op": "add", "path": "/status/lastBlocked", "value": record})
                await asyncio.to_thread(
                    functools.partial(
                        self.custom.patch_namespaced_custom_object_status,
                        GROUP,
                        VERSION,
                        namespace,
                        GATE_KIND.plural,
                        name,
                        ops,
                        _content_type="application/json-patch+json",
                        _preload_content=False,
                    )
                )
                return
            except ApiException as exc:
                if exc.status in (409, 422):  # someone else wrote first: read again
                    continue
                log.warning(
                    "could not record %d block(s) on %s/%s: %s", count, namespace, name, exc
                )
                return
            except Exception as exc:
                log.warning(
                    "could not record %d block(s) on %s/%s: %s", count, namespace, name, exc
                )
                return
        log.warning(
            "could not record %d block(s) on %s/%s: too many conflicts", count, namespace, name
        )

    async def _event(
        self, namespace: str, kind: str, api_version: str, name: str, uid: str, event: Event
    ) -> None:
        ref = _ref(namespace, kind, api_version, name, uid)
        await post_event(self.core, ref, event, COMPONENT, self.instance)


def _ref(namespace: str, kind: str, api_version: str, name: str, uid: str) -> dict[str, str]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "uid": uid,
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
