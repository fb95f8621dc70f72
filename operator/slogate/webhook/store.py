"""The webhook's read-only, in-memory view of SLOs, ReleaseGates, Deployments and ReplicaSet
templates.

Filled and kept current by the webhook's informers (:mod:`slogate.webhook.informer`: a LIST,
then a WATCH; readiness waits for the LIST), through :meth:`Store.sink`. Admission reads only
this: never Prometheus, never the API server on the allow path, and on the refusal path only
when this index cannot tell a rollback (see :func:`~slogate.core.admission.rollback_from_index`).

Of a ReplicaSet only its owner's uid and a digest of its template are kept (about 200 bytes),
so watching every ReplicaSet of a large cluster costs a few MiB, not a copy of the templates.
Of a Deployment only its labels, its pod template's labels and its selector are kept: enough to
tell which ReplicaSets it owns or would adopt, and which gates match it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from slogate.core.admission import GateRef, gate_ref, template_digest
from slogate.core.gate import SloView
from slogate.core.guards import WorkloadView, deployment_view
from slogate.webhook.informer import Key, Sink, object_key

log = logging.getLogger("slogate.store")


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
        self.deployments: dict[Key, WorkloadView] = {}
        # owner (Deployment) uid -> ReplicaSet key -> template digest
        self.templates: dict[str, dict[Key, str]] = {}
        self._rs_owner: dict[Key, tuple[str, int]] = {}  # ReplicaSet -> (owner uid, generation)
        self._versions: dict[tuple[str, Key], int] = {}

    key = staticmethod(object_key)

    def sink(self, kind: str, put: Callable[[dict[str, Any]], None]) -> Sink:
        """What an informer of ``kind`` feeds: ``put``, and this store's drop and keys."""
        return Sink(put, functools.partial(self.drop, kind), functools.partial(self.keys, kind))

    def keys(self, kind: str) -> list[Key]:
        """Every object of ``kind`` put and not dropped (also those it does not index, such as
        a ReplicaSet without an owning Deployment)."""
        return [key for (k, key) in self._versions if k == kind]

    def _newer(self, kind: str, body: dict[str, Any]) -> bool:
        """Skip a version older than one already seen, and the same version again (a LIST after
        a lost watch repeats most of what is indexed: no need to parse each gate again)."""
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
            # With what its status remembers blocking: the sticky part of its decision.
            self.gates[key] = gate_ref(body)
        except ValidationError as exc:
            # The CRD refuses what the model refuses; an object that slipped past (an older CRD)
            # gates nothing rather than crashing admission.
            log.warning("ignoring ReleaseGate %s/%s: %s", *key, exc)
            self.gates.pop(key, None)
            return
        self.gate_uids[key] = str((body.get("metadata") or {}).get("uid", ""))

    def put_deployment(self, body: dict[str, Any]) -> None:
        if not self._newer("deployment", body):
            return
        view = deployment_view(body)
        old = self.deployments.get(self.key(body))
        if old != view:  # most updates are status (replica counts): keep the old object
            self.deployments[self.key(body)] = view

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
        # No tombstone: each kind has one ordered source (its informer), so no older version
        # can arrive after the deletion, and deleted objects must not cost memory.
        key = self.key(body)
        self._versions.pop((kind, key), None)
        if kind == "slo":
            self.slos.pop(key, None)
        elif kind == "rs":
            self._forget_replicaset(key)
        elif kind == "gate":
            self.gates.pop(key, None)
            self.gate_uids.pop(key, None)
        elif kind == "deployment":
            self.deployments.pop(key, None)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def gates_in(self, namespace: str) -> list[GateRef]:
        return [g for key, g in self.gates.items() if key[0] == namespace]

    def deployments_in(self, namespace: str) -> list[WorkloadView]:
        return [d for key, d in self.deployments.items() if key[0] == namespace]

    def template_digests(self, owner_uid: str) -> set[str]:
        """Digests of the templates of the ReplicaSets a Deployment controls."""
        return set((self.templates.get(owner_uid) or {}).values())
