"""Watches that keep the webhook's index current, and say so when they cannot.

One :class:`Informer` per kind (and per namespace with ``--namespace``): a LIST in pages, then a
WATCH from the list's resourceVersion with bookmarks and a server-side timeout, resumed from
the last version seen when it ends, listed again on 410 Gone (the version fell out of the API
server's watch cache), retried with backoff on any error. Objects stay raw JSON (no client
model objects: a fraction of the CPU and memory) and go to a :class:`Sink`, the store's put and
drop methods, on the event loop; the blocking HTTP reads happen in one daemon thread per
informer, so a hung connection never stalls admission.

Each informer knows whether it is connected and since when it is not: readiness turns 503 when
a watch has been down longer than a grace period, so a replica whose index is frozen (API
server unreachable, RBAC revoked) stops claiming to be ready. ``slogate_webhook_watch_up``
exports the same per kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slogate import metrics
from slogate.core.timetext import rfc3339

log = logging.getLogger("slogate.webhook.informer")
Key = tuple[str, str]
Body = dict[str, Any]
# A generated list method of the Kubernetes client, bound to a namespace (None: all).
Lister = Callable[[k8s.ApiClient, str | None], Callable[..., Any]]

CONNECT_TIMEOUT_S = 10.0
LIST_READ_TIMEOUT_S = 60.0
# The API server ends each watch after a random time in this range; a read blocked longer than
# that plus a margin means a dead connection, and the watch starts again.
WATCH_TIMEOUT_S = (60, 120)
WATCH_READ_MARGIN_S = 30.0
BACKOFF_S = (0.5, 10.0)
# TCP keepalive on watch connections: a peer that vanished without a reset (a node gone, a
# firewall that forgot the connection) is noticed after about a minute, not at the read timeout.
KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


def watch_client(connections: int) -> k8s.ApiClient:
    """A client for long-lived watches, on the credentials ``load_config`` set up: its own pool
    (``connections`` watches at once) so watches never take the connections admission needs."""
    cfg = k8s.Configuration.get_default_copy()
    options = [*urllib3.connection.HTTPConnection.default_socket_options]
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    for name, value in KEEPALIVE:
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    cfg.socket_options = options
    cfg.connection_pool_maxsize = max(connections + 2, cfg.connection_pool_maxsize or 0)
    return k8s.ApiClient(cfg)


def object_key(body: Body) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name")))


def custom_objects(group: str, version: str, plural: str) -> Lister:
    """List/watch of a custom resource."""

    def bind(api: k8s.ApiClient, namespace: str | None) -> Callable[..., Any]:
        custom = k8s.CustomObjectsApi(api)
        if namespace is None:
            return lambda **kw: custom.list_cluster_custom_object(group, version, plural, **kw)
        return lambda **kw: custom.list_namespaced_custom_object(
            group, version, namespace, plural, **kw
        )

    return bind


def typed(api_class: Callable[[k8s.ApiClient], Any], resource: str) -> Lister:
    """List/watch of a built-in resource, by the client's method names: ``typed(k8s.AppsV1Api,
    "replica_set")`` uses ``list_replica_set_for_all_namespaces`` / ``list_namespaced_replica_set``.
    """

    def bind(api: k8s.ApiClient, namespace: str | None) -> Callable[..., Any]:
        group_api = api_class(api)
        if namespace is None:
            method: Callable[..., Any] = getattr(group_api, f"list_{resource}_for_all_namespaces")
            return method
        namespaced = getattr(group_api, f"list_namespaced_{resource}")
        return lambda **kw: namespaced(namespace, **kw)

    return bind


@dataclass(frozen=True)
class Sink:
    """Where an informer's objects go (called on the event loop)."""

    put: Callable[[Body], None]
    drop: Callable[[Body], None]
    known: Callable[[], Iterable[Key]]  # what the sink holds, to drop what a new LIST lacks


@dataclass(frozen=True)
class Source:
    """One kind the webhook indexes: ``kind`` (the API's plural) names it in readiness and
    metrics."""

    kind: str
    lister: Lister
    sink: Sink


class Gone(Exception):
    """410: the resourceVersion to resume from is no longer available; list again."""


class WatchError(Exception):
    """An ERROR event in the watch stream other than 410."""


def _lines(resp: Any) -> Iterator[bytes]:
    """The newline-separated JSON events of a streamed watch response, as they arrive."""
    pending = b""
    for chunk in resp.stream(None, decode_content=False):
        pending += chunk
        while True:
            line, sep, rest = pending.partition(b"\n")
            if not sep:
                break
            pending = rest
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _describe(exc: BaseException, limit: int = 200) -> str:
    """One short line for logs and /readyz."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # the connection error itself, not urllib3's wrapper around it
    text = str(exc).strip()
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit] + "..."


class Informer:
    """LIST then WATCH of one kind (in one namespace, or all), feeding ``source.sink``."""

    def __init__(
        self,
        source: Source,
        api: k8s.ApiClient,
        namespace: str | None = None,
        *,
        page_size: int = 500,
        watch_timeout_s: tuple[int, int] = WATCH_TIMEOUT_S,
        backoff_s: tuple[float, float] = BACKOFF_S,
    ) -> None:
        self.source = source
        self.namespace = namespace
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self.backoff_s = backoff_s
        self._call = source.lister(api, namespace)
        # Written by the informer's thread; plain attribute stores, read by the event loop.
        self.resource_version: str | None = None  # None: the next round starts with a LIST
        self.connected = False
        self.down_since: float | None = None  # wall clock, for messages
        self._down_mono: float | None = None
        self.last_error = ""
        self.relists = 0
        self._delay = backoff_s[0]
        # Written on the event loop: the first LIST has reached the sink.
        self.synced = False
        self._on_synced: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        _LIVE.add(self)

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def name(self) -> str:
        return self.kind if self.namespace is None else f"{self.kind} in {self.namespace}"

    @property
    def up(self) -> bool:
        """Listed at least once and not disconnected now."""
        return self.synced and self.down_since is None

    def down_for(self) -> float:
        """Seconds since the connection was lost (0 while connected)."""
        return 0.0 if self._down_mono is None else time.monotonic() - self._down_mono

    def problem(self, grace_s: float) -> str | None:
        """Why this informer makes the webhook unready, or None."""
        error = f": {self.last_error}" if self.last_error else ""
        if not self.synced:
            return f"{self.name}: initial list not finished{error}"
        if self.down_since is not None and self.down_for() > grace_s:
            return (
                f"{self.name}: watch down since {rfc3339(self.down_since)} "
                f"({self.down_for():.0f}s){error}"
            )
        return None

    # --- lifecycle (event loop side) ----------------------------------------------------------

    def start(self, on_synced: Callable[[], None] = lambda: None) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_synced = on_synced
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        resp = self._response
        if resp is not None:
            # Unblocks the thread's read at once (urllib3 >= 2.3; close() otherwise).
            getattr(resp, "shutdown", resp.close)()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _apply(self, items: list[Body]) -> None:
        for item in items:
            self.source.sink.put(item)

    def _listed(self, seen: set[Key]) -> None:
        """After a complete LIST: drop what the sink holds that the list no longer has (deleted
        while no watch ran), then count as synced."""
        gone = [
            key
            for key in self.source.sink.known()
            if key not in seen and (self.namespace is None or key[0] == self.namespace)
        ]
        for namespace, name in gone:
            self.source.sink.drop({"metadata": {"namespace": namespace, "name": name}})
        if gone:
            log.info("%s: %d object(s) deleted while not watching", self.name, len(gone))
        if not self.synced:
            self.synced = True
            self._on_synced()

    def _event(self, kind: str, body: Body) -> None:
        if kind == "DELETED":
            self.source.sink.drop(body)
        else:
            self.source.sink.put(body)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                continue  # a watch that ran its time: resume from where it ended
            except Gone as exc:
                log.info("%s: %s; listing again", self.name, exc)
                self.resource_version = None
                self.relists += 1
                pause = self.backoff_s[0]
            except Exception as exc:
                if self._stop.is_set():
                    return
                if isinstance(exc, RuntimeError) and (self._loop is None or self._loop.is_closed()):
                    return  # call_soon_threadsafe after the event loop ended: shutting down
                self._failed(exc)
                pause, self._delay = self._delay, min(self._delay * 2, self.backoff_s[1])
            self._stop.wait(pause * random.uniform(0.8, 1.2))

    def _failed(self, exc: Exception) -> None:
        self.connected = False
        self.last_error = _describe(exc)
        if self.down_since is None:
            self.down_since, self._down_mono = time.time(), time.monotonic()
            log.warning("%s: watch lost: %s; retrying", self.name, self.last_error)
        else:
            log.debug("%s: still down: %s", self.name, self.last_error)

    def _connected(self) -> None:
        if self.down_since is not None:
            log.info("%s: watch restored after %.1fs", self.name, self.down_for())
        self.connected = True
        self.down_since = self._down_mono = None
        self.last_error = ""
        self._delay = self.backoff_s[0]

    def _list(self) -> None:
        seen: set[Key] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "limit": self.page_size,
                "_preload_content": False,
                "_request_timeout": (CONNECT_TIMEOUT_S, LIST_READ_TIMEOUT_S),
            }
            if token:
                kwargs["_continue"] = token
            try:
                resp = self._call(**kwargs)
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired: start over
                    raise Gone(f"list continuation expired ({exc.reason})") from exc
                raise
            page = json.loads(resp.data)
            resp.release_conn()
            items = list(page.get("items") or [])
            seen.update(object_key(item) for item in items)
            self._post(self._apply, items)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                version = str(meta.get("resourceVersion") or "")
                break
        self._post(self._listed, seen)
        log.info("%s: listed %d at resourceVersion %s", self.name, len(seen), version)
        self.resource_version = version or None
        self._connected()

    def _watch(self) -> None:
        timeout = random.randint(*self.watch_timeout_s)
        try:
            resp = self._call(
                watch=True,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_S, timeout + WATCH_READ_MARGIN_S),
            )
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(f"resourceVersion {self.resource_version} expired") from exc
            raise
        self._response = resp
        self._connected()
        started, events = time.monotonic(), 0
        try:
            for line in _lines(resp):
                events += 1
                if self._stop.is_set():
                    return
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise Gone(str(body.get("message") or "410 Gone"))
                    raise WatchError(f"{body.get('code')}: {body.get('message')}")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._post(self._event, kind, body)
                version = (body.get("metadata") or {}).get("resourceVersion")
                if version:  # BOOKMARK events carry only this
                    self.resource_version = str(version)
            resp.release_conn()
            if not events and time.monotonic() - started < 1.0:
                # Closed at once without a word (a proxy in the way?): back off, do not spin.
                raise WatchError("the watch closed at once without events")
        finally:
            self._response = None
            resp.close()


class Watches:
    """The informers of the webhook: started together, ready together."""

    def __init__(
        self,
        sources: Sequence[Source],
        api: k8s.ApiClient,
        namespaces: Sequence[str] = (),
        grace_s: float = 30.0,
        **informer_options: Any,
    ) -> None:
        self.grace_s = grace_s
        self.informers = [
            Informer(source, api, namespace, **informer_options)
            for source in sources
            for namespace in (namespaces or (None,))
        ]
        self.synced = asyncio.Event()  # every informer has listed once

    def start(self) -> None:
        for informer in self.informers:
            informer.start(self._check_synced)

    def stop(self) -> None:
        for informer in self.informers:
            informer._stop.set()
        for informer in self.informers:
            informer.stop()

    def _check_synced(self) -> None:
        if all(i.synced for i in self.informers):
            self.synced.set()

    def problems(self) -> list[str]:
        """Why the index cannot be trusted now (empty: it can)."""
        return [p for i in self.informers if (p := i.problem(self.grace_s)) is not None]


# Informers alive in this process, for the metric below.
_LIVE: weakref.WeakSet[Informer] = weakref.WeakSet()


class WatchHealth(Collector):
    """``slogate_webhook_watch_up{kind}`` (1 when every watch of the kind is listed and
    connected) and ``slogate_webhook_watch_relists_total{kind}``, computed at scrape time from
    the informers themselves."""

    def _families(self) -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        up = GaugeMetricFamily(
            "slogate_webhook_watch_up",
            "1 while the webhook's watch of this kind is listed and connected, 0 while it is "
            "down or has not finished its first list.",
            labels=("kind",),
        )
        relists = CounterMetricFamily(
            "slogate_webhook_watch_relists",
            "LISTs after a watch could not resume (410 Gone: its resourceVersion left the API "
            "server's watch cache, e.g. after an API server restart).",
            labels=("kind",),
        )
        return up, relists

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        up, relists = self._families()
        kinds: dict[str, tuple[bool, int]] = {}
        for informer in list(_LIVE):
            was_up, count = kinds.get(informer.kind, (True, 0))
            kinds[informer.kind] = (was_up and informer.up, count + informer.relists)
        for kind, (is_up, count) in sorted(kinds.items()):
            up.add_metric([kind], 1.0 if is_up else 0.0)
            relists.add_metric([kind], count)
        return up, relists


metrics.REGISTRY.register(WatchHealth())
