"""The webhook's read-only, in-memory view of SLOs, ReleaseGates and ReplicaSet templates.

Filled once by a LIST at start-up (readiness waits for it) and kept current by kopf's watch
events. Admission reads only this: never Prometheus, never the API server on the allow path,
and on the refusal path only when this index cannot tell a rollback (see
:func:`~slogate.core.admission.rollback_from_index`).

Of a ReplicaSet only its owner's uid and a digest of its template are kept (about 200 bytes),
so watching every ReplicaSet of a large cluster costs a few MiB, not a copy of the templates.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from kubernetes import client as k8s
from pydantic import ValidationError

from slogate.core.admission import GateRef, template_digest
from slogate.core.gate import SloView
from slogate.core.releasegate import GateSpec
from slogate.core.resources import GATE_KIND, GROUP, SLO_KIND, VERSION

log = logging.getLogger("slogate.store")
Key = tuple[str, str]


def _rv(body: dict[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Store:
    def __init__(self) -> None:
        self.slos: dict[Key, SloView] = {}
        self.gates: dict[Key, GateRef] = {}
        self.gate_uids: dict[Key, str] = {}
        # owner (Deployment) uid -> ReplicaSet key -> template digest
        self.templates: dict[str, dict[Key, str]] = {}
        self._rs_owner: dict[Key, tuple[str, int]] = {}  # ReplicaSet -> (owner uid, generation)
        self._versions: dict[tuple[str, Key], int] = {}
        self.loaded = asyncio.Event()

    @staticmethod
    def key(body: dict[str, Any]) -> Key:
        meta = body.get("metadata") or {}
        return (str(meta.get("namespace")), str(meta.get("name")))

    def _newer(self, kind: str, body: dict[str, Any]) -> bool:
        """Skip a version older than one already seen (a LIST racing the watch), and the same
        version again (kopf's own initial listing repeats what the start-up LIST indexed)."""
        key = (kind, self.key(body))
        rv = _rv(body)
        if rv and rv <= self._versions.get(key, 0):
            return False
        self._versions[key] = rv
        return True

    def put_slo(self, body: dict[str, Any]) -> None:
        if not self._newer("slo", body):
            return
        meta = body.get("metadata") or {}
        self.slos[self.key(body)] = SloView(
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            labels=dict(meta.get("labels") or {}),
            status=dict(body.get("status") or {}),
        )

    def put_gate(self, body: dict[str, Any]) -> None:
        if not self._newer("gate", body):
            return
        key = self.key(body)
        try:
            spec = GateSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # The CRD refuses what the model refuses; an object that slipped past (an older CRD)
            # gates nothing rather than crashing admission.
            log.warning("ignoring ReleaseGate %s/%s: %s", *key, exc)
            self.gates.pop(key, None)
            return
        self.gates[key] = GateRef(key[0], key[1], spec)
        self.gate_uids[key] = str((body.get("metadata") or {}).get("uid", ""))

    def put_replicaset(self, body: dict[str, Any]) -> None:
        if not self._newer("rs", body):
            return
        key = self.key(body)
        meta = body.get("metadata") or {}
        owner = next(
            (
                str(o.get("uid"))
                for o in meta.get("ownerReferences") or []
                if o.get("kind") == "Deployment" and o.get("controller")
            ),
            "",
        )
        generation = int(meta.get("generation") or 0)
        seen = self._rs_owner.get(key)
        if seen == (owner, generation) and generation:
            return  # a status update (replica counts): the template is unchanged
        self._forget_replicaset(key)
        if not owner:
            return
        digest = template_digest((body.get("spec") or {}).get("template"))
        self.templates.setdefault(owner, {})[key] = digest
        self._rs_owner[key] = (owner, generation)

    def _forget_replicaset(self, key: Key) -> None:
        seen = self._rs_owner.pop(key, None)
        if seen is None:
            return
        owned = self.templates.get(seen[0])
        if owned is not None:
            owned.pop(key, None)
            if not owned:
                del self.templates[seen[0]]

    def drop(self, kind: str, body: dict[str, Any]) -> None:
        key = self.key(body)
        self._versions[(kind, key)] = _rv(body)
        if kind == "slo":
            self.slos.pop(key, None)
        elif kind == "rs":
            self._forget_replicaset(key)
        else:
            self.gates.pop(key, None)
            self.gate_uids.pop(key, None)

    def gates_in(self, namespace: str) -> list[GateRef]:
        return [g for key, g in self.gates.items() if key[0] == namespace]

    def template_digests(self, owner_uid: str) -> set[str]:
        """Digests of the templates of the ReplicaSets a Deployment controls."""
        return set((self.templates.get(owner_uid) or {}).values())

    async def load(self, api: k8s.ApiClient, namespaces: tuple[str, ...] = ()) -> None:
        """The initial LIST; retried until it succeeds (readiness waits for it)."""
        custom = k8s.CustomObjectsApi(api)
        delay = 0.5
        while True:
            try:
                for kind, plural, put in (
                    ("slo", SLO_KIND.plural, self.put_slo),
                    ("gate", GATE_KIND.plural, self.put_gate),
                ):
                    items = await self._list(custom, plural, namespaces)
                    for item in items:
                        put(item)
                    log.info("indexed %d %s", len(items), plural)
                    del kind
                count = 0
                async for item in self._replicasets(k8s.AppsV1Api(api), namespaces):
                    self.put_replicaset(item)
                    count += 1
                log.info("indexed %d replicasets of %d deployments", count, len(self.templates))
                self.loaded.set()
                return
            except Exception as exc:
                log.warning("initial LIST failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    @staticmethod
    async def _replicasets(
        apps: k8s.AppsV1Api, namespaces: tuple[str, ...]
    ) -> AsyncIterator[dict[str, Any]]:
        """Every ReplicaSet, 500 per page, as raw JSON (no model objects: less CPU and memory)."""
        for ns in namespaces or (None,):
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"limit": 500, "_preload_content": False}
                if token:
                    kwargs["_continue"] = token
                if ns is None:
                    call = functools.partial(apps.list_replica_set_for_all_namespaces, **kwargs)
                else:
                    call = functools.partial(apps.list_namespaced_replica_set, ns, **kwargs)
                resp = await asyncio.to_thread(call)
                page = json.loads(resp.data)  # type: ignore[attr-defined]
                for item in page.get("items") or []:
                    yield item
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break

    @staticmethod
    async def _list(
        custom: k8s.CustomObjectsApi, plural: str, namespaces: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        if not namespaces:
            got = await asyncio.to_thread(custom.list_cluster_custom_object, GROUP, VERSION, plural)
            return list(cast(dict[str, Any], got).get("items", []))
        items: list[dict[str, Any]] = []
        for ns in namespaces:
            got = await asyncio.to_thread(
                custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural
            )
            items.extend(cast(dict[str, Any], got).get("items", []))
        return items
