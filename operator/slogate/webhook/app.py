"""``slogate webhook``: the admission webhook role (every replica active, no peering).

Its own HTTPS server (:mod:`slogate.webhook.server`) routes AdmissionReviews by path to
handlers; its own informers (:mod:`slogate.webhook.informer`) keep the in-memory index current
and report their health to ``/readyz``. No kopf: nothing is remembered per request, and
readiness knows when the index stops following the cluster. The Deployment handler turns a
request into a :class:`~slogate.core.admission.Change`, asks the pure core for a verdict, and
makes API calls only when it is about to refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from slogate import metrics
from slogate.core.admission import (
    Change,
    GateHit,
    GateRef,
    Verdict,
    is_rollback,
    review,
    rollback_from_index,
    settle,
)
from slogate.core.gate import DEFAULT_STALE_AFTER_S
from slogate.core.guards import (
    ReplicaSetChange,
    SloChange,
    guard_replicaset,
    guard_slo_change,
    replicaset_owners,
)
from slogate.core.resources import GATE_KIND, GROUP, SLO_KIND, VERSION
from slogate.core.timetext import rfc3339
from slogate.core.webhookroutes import CLUSTER_CONTROLLERS, DEPLOYMENTS, REPLICASETS, SLOS
from slogate.kubeclient import api_client, load_config
from slogate.memory import limit_arenas
from slogate.probes import start_probe_server
from slogate.webhook.informer import Source, Watches, custom_objects, typed, watch_client
from slogate.webhook.kubecalls import Deadline, KubeCalls, object_ref
from slogate.webhook.logs import audit, configure_logging
from slogate.webhook.review import AdmissionAnswer, AdmissionRequest
from slogate.webhook.server import (
    DEFAULT_MAX_REVIEW_BYTES,
    AdmissionServer,
    Handler,
)
from slogate.webhook.store import Store
from slogate.webhook.tls import ReloadingTLS

log = logging.getLogger("slogate.webhook")


@dataclass
class WebhookOptions:
    tls_cert_file: str
    tls_key_file: str
    port: int = 8443
    metrics_port: int = 8080
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    log_format: str = "json"
    client_ca_file: str | None = None  # require client certificates signed by this CA
    max_review_bytes: int = DEFAULT_MAX_REVIEW_BYTES
    watch_grace_s: float = 30.0  # a watch down longer than this makes /readyz 503
    # API calls of one review (rollback check, SubjectAccessReviews, the override record)
    # finish within this, below the webhook's timeoutSeconds: past it, a refusal stands.
    call_deadline_s: float = 2.0
    # The cluster's own controllers: their ReplicaSet and SLO changes are never judged.
    cluster_controllers: tuple[str, ...] = CLUSTER_CONTROLLERS


def _first_image(template: Any) -> str | None:
    containers = ((template or {}).get("spec") or {}).get("containers") or []
    return containers[0].get("image") if containers else None


class Webhook:
    def __init__(self, options: WebhookOptions) -> None:
        self.options = options
        self.store = Store()
        self.tls = ReloadingTLS(options.tls_cert_file, options.tls_key_file, options.client_ca_file)
        self.calls: KubeCalls | None = None
        self.background: set[asyncio.Task[None]] = set()
        # Admission routes by path (core.webhookroutes names them for the configuration):
        # another kind of review is one more entry here.
        self.routes: dict[str, Handler] = {
            DEPLOYMENTS.path: self.validate_deployment,
            SLOS.path: self.validate_slo,
            REPLICASETS.path: self.validate_replicaset,
        }
        self.watches: Watches | None = None
        self.server: AdmissionServer | None = None

    def sources(self) -> list[Source]:
        """What the index follows: one informer per entry (per namespace with --namespace)."""
        s = self.store
        return [
            Source(
                SLO_KIND.plural,
                custom_objects(GROUP, VERSION, SLO_KIND.plural),
                s.sink("slo", s.put_slo),
            ),
            Source(
                GATE_KIND.plural,
                custom_objects(GROUP, VERSION, GATE_KIND.plural),
                s.sink("gate", s.put_gate),
            ),
            Source(
                "replicasets", typed(k8s.AppsV1Api, "replica_set"), s.sink("rs", s.put_replicaset)
            ),
            Source(
                "deployments",
                typed(k8s.AppsV1Api, "deployment"),
                s.sink("deployment", s.put_deployment),
            ),
        ]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # --- the process ---------------------------------------------------------------------------

    def _readiness(self) -> str | None:
        problems = self.not_ready()
        return "not ready:\n" + "\n".join(problems) + "\n" if problems else None

    def not_ready(self) -> list[str]:
        """Why this replica must not get traffic now (empty: ready). Ready means: every
        informer listed and none disconnected beyond the grace, and the admission port open."""
        if self.watches is None or self.server is None:
            return ["starting"]
        problems = self.watches.problems()
        if not self.server.listening.is_set():
            problems.append("admission port not open yet")
        return problems

    async def serve(self, stop: asyncio.Event) -> None:
        """The whole role in the running event loop, until ``stop`` is set."""
        load_config(self.options.kubeconfig)
        self.calls = KubeCalls(api_client())
        sources = self.sources()
        namespaces = self.options.namespaces
        self.watches = Watches(
            sources,
            watch_client(len(sources) * max(1, len(namespaces))),
            namespaces,
            grace_s=self.options.watch_grace_s,
        )
        self.server = AdmissionServer(
            self.tls,
            self.routes,
            self.options.port,
            max_review_bytes=self.options.max_review_bytes,
            wait_for=self.watches.synced,
        )
        probes = None
        serving: asyncio.Task[None] | None = None
        try:
            self._spawn(self.calls.flush_forever())
            self.watches.start()
            if self.options.metrics_port:
                probes = await start_probe_server(
                    self.options.metrics_port,
                    {"/healthz": lambda: None, "/readyz": self._readiness},
                    metrics.REGISTRY,
                )
            serving = asyncio.create_task(self.server.serve())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if serving.done():
                serving.result()  # a port that cannot be opened ends the process, loudly
        finally:
            if serving is not None:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
            if probes is not None:
                await probes.cleanup()
            await asyncio.to_thread(self.watches.stop)
            for task in list(self.background):
                task.cancel()
            try:
                await self.calls.flush()  # the refusals counted since the last flush
            except Exception:
                log.exception("recording the last refusals failed")

    def run(self) -> None:
        limit_arenas()  # before any thread exists (informers, the to_thread pool)
        configure_logging(self.options.log_format)
        asyncio.run(self._main())

    async def _main(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.serve(stop)

    # --- admission -----------------------------------------------------------------------------

    async def _answering(
        self,
        request: AdmissionRequest,
        kind: str,
        judge: Callable[[AdmissionRequest, Deadline], Awaitable[Judged]],
    ) -> AdmissionAnswer:
        """Metrics, the audit line and failing open on a bug, around every route."""
        started = time.perf_counter()
        judged = Judged("allow")
        try:
            judged = await judge(request, Deadline(self.options.call_deadline_s))
        except Exception:  # a bug here must not block every change: fail open, loudly
            log.exception("admission failed; allowing the change")
            notes = ["slogate: internal error while checking this change; allowed"]
            judged = Judged("error", notes=notes, gated=True)
        finally:
            metrics.admission_duration.observe(time.perf_counter() - started)
            metrics.admission_decisions.labels(judged.decision).inc()
        if judged.gated or judged.decision != "allow":
            audit(
                kind=kind,
                namespace=request.namespace,
                name=request.name,
                operation=request.operation,
                user=request.user.username,
                dryRun=request.dry_run,
                decision=judged.decision,
                message=judged.message,
                warnings=judged.notes,
            )
        if judged.decision == "deny":
            return AdmissionAnswer.deny(judged.message, 403, judged.notes)
        return AdmissionAnswer.allow(judged.notes)

    async def validate_deployment(self, request: AdmissionRequest) -> AdmissionAnswer:
        """``/validate-deployments``: CREATE and UPDATE of apps Deployments."""
        if (
            request.resource.group != "apps"
            or request.resource.resource != "deployments"
            or request.sub_resource
            or request.operation not in ("CREATE", "UPDATE")
        ):
            return AdmissionAnswer.allow()  # not a change this route judges

        async def judge(req: AdmissionRequest, deadline: Deadline) -> Judged:
            body = req.object if req.object is not None else req.old_object
            return await self.admit(
                dict(body or {}),
                req.old_object,
                req.object,
                req.operation,
                req.dry_run,
                req.user.as_dict(),
                deadline,
            )

        return await self._answering(request, "Deployment", judge)

    async def admit(
        self,
        body: dict[str, Any],
        old: Any,
        new: Any,
        operation: str,
        dryrun: bool,
        userinfo: dict[str, Any],
        deadline: Deadline,
    ) -> Judged:
        meta = body.get("metadata") or {}
        new_template = ((new or {}).get("spec") or {}).get("template")
        old_template = ((old or {}).get("spec") or {}).get("template")
        change = Change(
            operation=operation,
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name") or meta.get("generateName") or ""),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            old_template=old_template,
            new_template=new_template,
            user=str(userinfo.get("username", "")),
            dry_run=dryrun,
            image=_first_image(new_template),
            old_labels=dict(((old or {}).get("metadata") or {}).get("labels") or {}),
        )
        now = time.time()
        first = review(
            change,
            self.store.gates_in(change.namespace),
            self.store.slos,
            now,
            self.options.stale_after_s,
        )
        rollback = False
        may: dict[tuple[str, str], bool] = {}
        unchecked: list[str] = []
        if first.outcome == "deny":
            assert self.calls is not None
            # These checks can only turn a refusal into an admission, so when one cannot be
            # made (in time) the refusal stands: an error here must not let a change through.
            if operation == "UPDATE":
                owner = str(((old or {}).get("metadata") or {}).get("uid") or "")
                known = rollback_from_index(change, self.store.template_digests(owner))
                metrics.rollback_checks.labels("index" if known is not None else "api").inc()
                if known is not None:
                    rollback = known
                else:
                    try:
                        templates = await self.calls.replicaset_templates(
                            change.namespace, dict(old or {}), deadline
                        )
                        rollback = is_rollback(change, templates)
                    except Exception as exc:
                        log.warning("rollback check failed; treating as no rollback: %r", exc)
                        unchecked.append(_failed_check("check for a rollback", exc, deadline))
            if not rollback and first.override is not None:
                may, failed = await self._may_override(
                    userinfo, [h.gate for h in first.blocking], deadline
                )
                unchecked += failed
        verdict = settle(change, first, rollback=rollback, may_override=may)
        if verdict.overridden and first.override is not None and not change.dry_run:
            # Recorded before it is admitted: an override nobody can find later is refused.
            try:
                await self._record_override(
                    object_ref(change.namespace, "Deployment", "apps/v1", change.name, _uid(body)),
                    change.workload,
                    change.user,
                    first.override.reason,
                    first.override.until,
                    verdict.blocking,
                    deadline,
                )
            except Exception as exc:
                log.warning("override not recorded, so not honoured: %r", exc)
                verdict = dataclasses.replace(
                    verdict,
                    outcome="deny",
                    overridden=False,
                    record_block=True,
                    message=f"{first.message} (the override was not honoured: "
                    f"{_failed_check('record it', exc, deadline)}; try again)",
                )
        if unchecked and verdict.outcome == "deny":
            verdict = dataclasses.replace(
                verdict, message=f"{verdict.message} (slogate could not {'; '.join(unchecked)})"
            )
        self._note_blocks(change, dict(old or body), verdict)
        if verdict.outcome == "deny":
            return Judged("deny", verdict.message, list(verdict.warnings), gated=True)
        kind = (
            "override"
            if verdict.overridden
            else "rollback"
            if verdict.rollback
            else verdict.outcome
        )
        return Judged(kind, "", list(verdict.warnings), gated=first.gated)

    async def _may_override(
        self, userinfo: dict[str, Any], gates: Sequence[GateRef], deadline: Deadline
    ) -> tuple[dict[tuple[str, str], bool], list[str]]:
        """A SubjectAccessReview per gate, concurrently, within the deadline; what could not be
        checked counts as not allowed (and is said in the refusal)."""
        assert self.calls is not None
        user = userinfo.get("username", "")

        async def ask(gate: GateRef) -> bool | BaseException:
            assert self.calls is not None
            try:
                return await self.calls.may_override(userinfo, gate.namespace, gate.name, deadline)
            except Exception as exc:
                return exc

        answers = await asyncio.gather(*(ask(g) for g in gates))
        may: dict[tuple[str, str], bool] = {}
        failed: list[str] = []
        for gate, answer in zip(gates, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("SubjectAccessReview failed; override not honoured: %r", answer)
                may[gate.key] = False
                what = (
                    f"check {user}'s RBAC verb 'override' on releasegate "
                    f"{gate.namespace}/{gate.name}"
                )
                failed.append(_failed_check(what, answer, deadline))
            else:
                may[gate.key] = answer
        return may, failed

    async def _record_override(
        self,
        involved: dict[str, str],
        workload: str,
        user: str,
        reason: str,
        until: float,
        hits: tuple[GateHit, ...],
        deadline: Deadline,
    ) -> None:
        assert self.calls is not None
        record = {"workload": workload, "user": user, "reason": reason, "until": rfc3339(until)}
        await self.calls.record_override(
            involved, record, hits, dict(self.store.gate_uids), deadline
        )
        audit(kind="override", workload=workload, namespace=involved["namespace"], user=user,
              reason=reason, until=record["until"],
              gates=[f"{h.gate.namespace}/{h.gate.name}" for h in hits])  # fmt: skip

    def _note_blocks(self, change: Change, workload: dict[str, Any], verdict: Verdict) -> None:
        if change.dry_run or self.calls is None:
            return  # dry-run requests are answered truthfully but leave no trace
        uid = str((workload.get("metadata") or {}).get("uid", ""))
        uids = dict(self.store.gate_uids)
        if verdict.record_block:
            self.calls.note_block(
                change, uid, verdict.blocking, uids, dry_run_mode=False, message=verdict.message
            )
        if verdict.would_block:
            self.calls.note_block(
                change,
                uid,
                verdict.would_block,
                uids,
                dry_run_mode=True,
                message="; ".join(verdict.warnings),
            )

    # --- SLO changes -------------------------------------------------------------------------

    async def validate_slo(self, request: AdmissionRequest) -> AdmissionAnswer:
        """``/validate-servicelevelobjectives``: a change to an SLO a blocking gate reads needs
        the ``override`` verb on that gate (see :mod:`slogate.core.guards`)."""
        if request.sub_resource or request.resource.resource != SLO_KIND.plural:
            return AdmissionAnswer.allow()  # status writes are the controller's
        return await self._answering(request, "ServiceLevelObjective", self._judge_slo)

    async def _judge_slo(self, request: AdmissionRequest, deadline: Deadline) -> Judged:
        change = SloChange(
            operation=request.operation,
            namespace=request.namespace,
            name=request.name,
            old=request.old_object,
            new=request.object,
            user=request.user.username,
            dry_run=request.dry_run,
        )
        guarded = guard_slo_change(
            change,
            self.store.gates_in(change.namespace),
            self.store.slos,
            time.time(),
            self.options.stale_after_s,
            self.options.cluster_controllers,
        )
        if guarded.outcome == "allow":
            return Judged("allow")
        gates = [h.gate for h in guarded.holding]
        may, failed = await self._may_override(request.user.as_dict(), gates, deadline)
        refused = [g for g in gates if not may.get(g.key)]
        if refused:
            why = (
                "; ".join(failed)
                if failed
                else (
                    f"{change.user} may not 'override' releasegate "
                    + ", ".join(f"{g.namespace}/{g.name}" for g in refused)
                )
            )
            return Judged("deny", f"{guarded.message} (not allowed: {why})", gated=True)
        names = ", ".join(f"{g.namespace}/{g.name}" for g in gates)
        workload = f"servicelevelobjective/{change.name}"
        if not change.dry_run:
            try:
                await self._record_override(
                    object_ref(
                        change.namespace, "ServiceLevelObjective", f"{GROUP}/{VERSION}",
                        change.name, _uid(request.old_object or request.object),
                    ),
                    workload,
                    change.user,
                    f"{change.kind_of_change} of an SLO while the gate blocked on it",
                    time.time() + 3600,
                    guarded.holding,
                    deadline,
                )  # fmt: skip
            except Exception as exc:
                log.warning("SLO change not recorded, so not admitted: %r", exc)
                return Judged(
                    "deny",
                    f"{guarded.message} (you may override, but slogate could not "
                    f"{_failed_check('record the change', exc, deadline)}; try again)",
                    gated=True,
                )
        note = (
            f"slogate: {change.kind_of_change} of ServiceLevelObjective {change.namespace}/"
            f"{change.name} while ReleaseGate {names} blocks on it: allowed because "
            f"{change.user} may override; recorded on the gate"
        )
        return Judged("override", "", [note], gated=True)

    # --- ReplicaSets -------------------------------------------------------------------------

    async def validate_replicaset(self, request: AdmissionRequest) -> AdmissionAnswer:
        """``/validate-replicasets``: only the Deployment controller makes the ReplicaSets of a
        gated Deployment (a hand-made one would pass as a rollback target)."""
        if request.sub_resource or request.operation not in ("CREATE", "UPDATE"):
            return AdmissionAnswer.allow()  # scale and status subresources change no template
        return await self._answering(request, "ReplicaSet", self._judge_replicaset)

    async def _judge_replicaset(self, request: AdmissionRequest, _: Deadline) -> Judged:
        new, old = request.object or {}, request.old_object or {}
        new_meta, old_meta = new.get("metadata") or {}, old.get("metadata") or {}
        change = ReplicaSetChange(
            operation=request.operation,
            namespace=request.namespace,
            name=request.name or str(new_meta.get("generateName") or ""),
            user=request.user.username,
            labels=dict(new_meta.get("labels") or {}),
            owners=replicaset_owners(new_meta),
            old_labels=dict(old_meta.get("labels") or {}),
            old_owners=replicaset_owners(old_meta),
            template_changed=(new.get("spec") or {}).get("template")
            != (old.get("spec") or {}).get("template"),
        )
        guarded = guard_replicaset(
            change,
            self.store.deployments_in(change.namespace),
            self.store.gates_in(change.namespace),
            self.options.cluster_controllers,
        )
        if guarded.outcome == "deny":
            return Judged("deny", guarded.message, gated=True)
        return Judged("allow")


@dataclass
class Judged:
    """A route's answer: ``decision`` as counted in the metrics (allow, warn, deny, override,
    rollback, error); ``gated``: a gate judged it (every such decision is an audit line)."""

    decision: str
    message: str = ""
    notes: list[str] = field(default_factory=list)
    gated: bool = False


def _failed_check(what: str, exc: BaseException, deadline: Deadline) -> str:
    if isinstance(exc, TimeoutError):
        return f"{what} within {deadline.seconds:g}s (the refusal stands)"
    return f"{what} ({type(exc).__name__})"


def _uid(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid", ""))
