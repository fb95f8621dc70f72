"""Which client serves which Prometheus URL: the one place that decides.

An SLO may name its own backend (``spec.prometheus.url``), and whoever may create an SLO picks
that URL, so it may be a server they run. The pool decides, per URL:

- no URL, or the operator's own (``--prometheus-url``): the default client, with the
  operator's credentials, headers, parameters and CA. Created once, never evicted.
- a URL on the trust list (``--prometheus-trusted-url``): a client with the default's config
  at that URL, credentials included. For the platform team's other backends.
- a URL on the allow-list (``--prometheus-allowed-url``): a client with the default's timeouts,
  retries, concurrency and size bound but no credentials, headers or parameters, and
  ``echo_errors=False``, so nothing that backend says reaches a status condition.
- anything else: :class:`UrlNotAllowed`; a URL that is not a usable base URL at all (userinfo,
  a query string, a ``..`` segment, another scheme): :class:`UrlInvalid`, a subclass, so one
  ``except UrlNotAllowed`` handles both. ``str()`` of either is one line for a condition.

An entry matches a URL equal to it after normalisation (scheme and host lower-cased, the
default port made explicit, trailing slashes dropped); an entry ending in ``/`` also matches
every URL below that path on the same scheme, host and port. Host names are compared whole,
so ``http://prom/`` never matches ``http://prometheus.evil``.

At most ``max_clients`` per-SLO clients are kept, least recently used first out, so memory and
sockets stay bounded however many URLs SLOs name. An evicted client is retired, not closed: a
query still running on it finishes, and its connections go once it is idle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from slogate.prometheus.client import Observer, PrometheusClient, PrometheusConfig
from slogate.prometheus.errors import MESSAGE_LIMIT, one_line

_FIELD = "spec.prometheus.url"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Printable ASCII without the space: anything else in a URL is a typo or a trick (urlsplit
# silently drops tabs and newlines, which would make the checked URL differ from the used one).
_URL_CHARS = re.compile(r"^[!-~]+$")


class UrlNotAllowed(Exception):
    """An SLO's Prometheus URL the operator will not query; ``str()`` says what to do."""

    reason = "PrometheusUrlNotAllowed"

    def __init__(self, message: str) -> None:
        self.message = one_line(message, MESSAGE_LIMIT)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class UrlInvalid(UrlNotAllowed):
    """An SLO's Prometheus URL that is not a usable base URL, whatever the allow-list says."""

    reason = "PrometheusUrlInvalid"


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: int
    path: str  # as written, without trailing slashes: "" for the root

    @property
    def key(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class _Entry:
    url: _Url
    prefix: bool

    def matches(self, url: _Url) -> bool:
        mine = self.url
        if (url.scheme, url.host, url.port) != (mine.scheme, mine.host, mine.port):
            return False
        return url.path == mine.path or (self.prefix and url.path.startswith(mine.path + "/"))


class _Bad(ValueError):
    """Why a URL cannot be used, in words that follow the URL in a message."""


def _parse(url: str, *, userinfo_ok: bool = False) -> _Url:
    if not _URL_CHARS.match(url):
        raise _Bad("must be printable ASCII without spaces (write an IDN host in its xn-- form)")
    if "?" in url or "#" in url:
        raise _Bad("must not carry a query string or fragment; the client appends the API path")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise _Bad("is not a URL: write http(s)://host[:port][/prefix]") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise _Bad("must be http(s)://host[:port][/prefix]")
    if "@" in parts.netloc and not userinfo_ok:
        raise _Bad(
            "must not carry user:password@ (anyone who may read the SLO could read it); "
            "ask the platform team to trust the URL so it gets the operator's credentials"
        )
    # A server resolves "..", "%2e%2e" and often "\" and "%2f": a path that climbs out of an
    # allowed prefix must not be taken for one below it.
    decoded = urllib.parse.unquote(parts.path).replace("\\", "/")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise _Bad('must not contain "." or ".." path segments')
    return _Url(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/"))


def _shown(url: str) -> str:
    """``url`` for a message: no query string or fragment, nothing before an ``@``."""
    head = re.split(r"[?#]", url, maxsplit=1)[0]
    scheme, sep, rest = head.partition("://")
    if "@" in rest:
        # Userinfo may hold a "/" that urlsplit would take for the path: cut up to the last @.
        rest = "***@" + rest.rpartition("@")[2]
    shown = f"{scheme}{sep}{rest}" + (" (query string not shown)" if head != url else "")
    return one_line(shown, 300) or "''"


def _entry(url: str, flag: str) -> _Entry:
    try:
        parsed = _parse(url)
    except _Bad as exc:
        raise ValueError(f"{flag} {_shown(url)} {exc}") from None
    return _Entry(parsed, url.endswith("/"))


class ClientPool:
    """``pool.get(spec_url)``: the client for an SLO's backend (None: the operator's default).

    ``max_response_bytes`` overrides the base config's for every client (the operator flag
    ``--prometheus-max-response-bytes``). Call :meth:`get` from the event loop: evicting starts
    a task that closes the evicted client's idle connections.
    """

    def __init__(
        self,
        base: PrometheusConfig,
        *,
        allowed_urls: Sequence[str] = (),
        trusted_urls: Sequence[str] = (),
        max_clients: int = 32,
        observer: Observer | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be >= 1")
        if max_response_bytes is not None:
            base = dataclasses.replace(base, max_response_bytes=max_response_bytes)
        self.base = base
        self.max_clients = max_clients
        self.observer = observer
        try:
            self._base_key = _parse(base.url, userinfo_ok=True).key
        except _Bad as exc:
            raise ValueError(f"--prometheus-url {_shown(base.url)} {exc}") from None
        self._trusted = [_entry(u, "--prometheus-trusted-url") for u in trusted_urls]
        self._allowed = [_entry(u, "--prometheus-allowed-url") for u in allowed_urls]
        self._default = PrometheusClient(base, observer=observer)
        self._clients: OrderedDict[str, PrometheusClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, url: str | None) -> PrometheusClient:
        """The client for ``url``; :class:`UrlNotAllowed` (or :class:`UrlInvalid`) otherwise.

        Never raises anything else for any ``url``.
        """
        if self._closed:
            raise RuntimeError("ClientPool is closed")
        if url is None:
            return self._default
        if not isinstance(url, str):
            raise UrlInvalid(f"{_FIELD}: must be a string")
        try:
            target = _parse(url)
        except _Bad as exc:
            raise UrlInvalid(f"{_FIELD}: {_shown(url)} {exc}") from None
        if target.key == self._base_key:
            return self._default
        client = self._clients.get(target.key)
        if client is not None:
            self._clients.move_to_end(target.key)
            return client
        trusted = any(entry.matches(target) for entry in self._trusted)
        if not trusted and not any(entry.matches(target) for entry in self._allowed):
            raise UrlNotAllowed(
                f"{_FIELD}: {_shown(url)} is not in the operator's allow-list "
                "(--prometheus-allowed-url / Helm value prometheus.allowedUrls); ask the "
                f"platform team to add it, or remove {_FIELD} to use the default Prometheus"
            )
        try:
            config = self._config(url, trusted)
        except ValueError as exc:
            # What PrometheusConfig refuses beyond the checks above; its words name no secret.
            raise UrlInvalid(f"{_FIELD}: {_shown(url)}: {one_line(str(exc), 200)}") from None
        client = PrometheusClient(config, observer=self.observer)
        self._clients[target.key] = client
        while len(self._clients) > self.max_clients:
            _, evicted = self._clients.popitem(last=False)
            self._retire(evicted)
        return client

    def _config(self, url: str, trusted: bool) -> PrometheusConfig:
        base = self.base
        if trusted:
            return dataclasses.replace(base, url=url)
        # Only how to ask, never what to ask with: a tenant's server must not collect the
        # operator's token, tenant header or Thanos parameters, nor write into conditions.
        return PrometheusConfig(
            url=url,
            timeout_s=base.timeout_s,
            retries=base.retries,
            backoff_base_s=base.backoff_base_s,
            backoff_cap_s=base.backoff_cap_s,
            max_concurrency=base.max_concurrency,
            trust_env=base.trust_env,
            max_response_bytes=base.max_response_bytes,
            echo_errors=False,
        )

    def _retire(self, client: PrometheusClient) -> None:
        task = client.retire()
        if task is not None:
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every client now (queries still running on them fail)."""
        self._closed = True
        clients = [self._default, *self._clients.values()]
        self._clients.clear()
        await asyncio.gather(
            *(client.aclose() for client in clients), *self._closing, return_exceptions=True
        )
