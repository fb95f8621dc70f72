"""The few API calls admission makes, and only when it is about to refuse a rollout.

- the Deployment's ReplicaSets, to recognise a rollback to one of their templates;
- a SubjectAccessReview per blocking gate, when the workload asks for an override;
- afterwards, off the request path: Events on the Deployment and the gate, and the gate's
  ``status.lastBlocked`` / ``blockedCount`` / ``lastOverride``.
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

from slogate.core.admission import Change, GateHit
from slogate.core.resources import GATE_KIND, GROUP, VERSION
from slogate.core.status import Event
from slogate.events import post_event

log = logging.getLogger("slogate.webhook.kube")
COMPONENT = "slogate-webhook"


class KubeCalls:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.apps = k8s.AppsV1Api(api)
        self.authz = k8s.AuthorizationV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.instance = socket.gethostname()
        self._gate_locks: dict[tuple[str, str], asyncio.Lock] = {}

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

    async def record_block(
        self,
        change: Change,
        deployment_uid: str,
        hits: tuple[GateHit, ...],
        gate_uids: dict[tuple[str, str], str],
        *,
        dry_run_mode: bool,
        message: str,
    ) -> None:
        now = _now()
        reason = "RolloutWouldBeBlocked" if dry_run_mode else "RolloutBlocked"
        for hit in hits:
            gate = hit.gate
            text = f"{change.user} changing {change.workload}: " + "; ".join(hit.verdict.reasons)
            await self._event(
                change.namespace,
                "Deployment",
                "apps/v1",
                change.name,
                deployment_uid,
                Event("Warning", reason, message[:1000]),
            )
            await self._event(
                gate.namespace,
                "ReleaseGate",
                f"{GROUP}/{VERSION}",
                gate.name,
                gate_uids.get(gate.key, ""),
                Event("Warning", reason, text),
            )
            record: dict[str, Any] = {
                "workload": change.workload,
                "user": change.user,
                "image": change.image,
                "time": now,
            }
            if dry_run_mode:
                record["dryRun"] = True
            await self._bump_blocked(gate.namespace, gate.name, record)

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

    async def _bump_blocked(self, namespace: str, name: str, record: dict[str, Any]) -> None:
        """Increment blockedCount safely against other webhook replicas (test-and-set).

        One increment per gate at a time in this replica (a burst of refusals would otherwise
        race itself and exhaust its retries, losing counts); other replicas still race, so a
        lost test-and-set is retried after a short random pause.
        """
        lock = self._gate_locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            await self._bump_blocked_locked(namespace, name, record)

    async def _bump_blocked_locked(self, namespace: str, name: str, record: dict[str, Any]) -> None:
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
                count = int(((gate.get("status") or {}).get("blockedCount")) or 0)
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
                ops.append({"op": "add", "path": "/status/blockedCount", "value": count + 1})
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
                    )
                )
                return
            except ApiException as exc:
                if exc.status in (409, 422):  # someone else wrote first: read again
                    continue
                log.warning("could not record the block on %s/%s: %s", namespace, name, exc)
                return
            except Exception as exc:
                log.warning("could not record the block on %s/%s: %s", namespace, name, exc)
                return
        log.warning("could not record the block on %s/%s: too many conflicts", namespace, name)

    async def _event(
        self, namespace: str, kind: str, api_version: str, name: str, uid: str, event: Event
    ) -> None:
        ref = {
            "apiVersion": api_version,
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "uid": uid,
        }
        await post_event(self.core, ref, event, COMPONENT, self.instance)


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
