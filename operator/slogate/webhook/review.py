"""admission.k8s.io/v1 AdmissionReview in and out: parsing a request, rendering an answer.

Pure: no I/O and nothing kept between calls. The server turns a :class:`ReviewError` into an
HTTP 400 with its message, so each check below says in a few words what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[Operation, ...] = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class ReviewError(ValueError):
    """The body is not an AdmissionReview this webhook can answer."""


@dataclass(frozen=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str


@dataclass(frozen=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclass(frozen=True)
class UserInfo:
    """Who asked the API server for the change (as authenticated by it)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The request's ``userInfo`` shape, e.g. for a SubjectAccessReview."""
        return {
            "username": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
            "extra": {k: list(v) for k, v in self.extra.items()},
        }


@dataclass(frozen=True)
class AdmissionRequest:
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str
    namespace: str
    name: str
    operation: Operation
    user: UserInfo
    dry_run: bool
    # The objects as sent (raw JSON); None where the operation has none (oldObject on CREATE).
    object: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    old_object: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class AdmissionAnswer:
    allowed: bool
    message: str = ""
    code: int = 403  # HTTP-style code the API server reports for a refusal
    warnings: tuple[str, ...] = ()

    @classmethod
    def allow(cls, warnings: tuple[str, ...] | list[str] = ()) -> AdmissionAnswer:
        return cls(True, warnings=tuple(warnings))

    @classmethod
    def deny(
        cls, message: str, code: int = 403, warnings: tuple[str, ...] | list[str] = ()
    ) -> AdmissionAnswer:
        return cls(False, message=message, code=code, warnings=tuple(warnings))


def _str(obj: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{where}.{key} is missing")
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{where}.{key} must be a string")
    return value


def _mapping(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise ReviewError(f"{where}.{key} must be an object")
    return cast(Mapping[str, Any], value)


def _object(obj: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReviewError(f"request.{key} must be an object or null")
    return value


def _user(request: Mapping[str, Any]) -> UserInfo:
    info = _mapping(request, "userInfo", "request")
    groups = info.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ReviewError("request.userInfo.groups must be a list of strings")
    extra = info.get("extra") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(v, list) and all(isinstance(i, str) for i in v) for v in extra.values()
    ):
        raise ReviewError("request.userInfo.extra must map names to lists of strings")
    return UserInfo(
        username=_str(info, "username", "request.userInfo"),
        uid=_str(info, "uid", "request.userInfo"),
        groups=tuple(groups),
        extra={str(k): tuple(v) for k, v in extra.items()},
    )


def parse_review(payload: Any) -> AdmissionRequest:
    """The request of an admission.k8s.io/v1 AdmissionReview; :class:`ReviewError` if it is
    not one (the webhook configuration asks the API server for v1 only)."""
    if not isinstance(payload, dict):
        raise ReviewError("the body must be a JSON object")
    if payload.get("apiVersion") != API_VERSION or payload.get("kind") != KIND:
        raise ReviewError(f"expected apiVersion {API_VERSION} and kind {KIND}")
    request = _mapping(payload, "request", "review")
    uid = _str(request, "uid", "request", required=True)
    if not uid:
        raise ReviewError("request.uid is empty")
    operation = _str(request, "operation", "request", required=True)
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation must be one of {', '.join(OPERATIONS)}")
    kind = _mapping(request, "kind", "request")
    resource = _mapping(request, "resource", "request")
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool | None):
        raise ReviewError("request.dryRun must be a boolean")
    new, old = _object(request, "object"), _object(request, "oldObject")
    if new is None and operation in ("CREATE", "UPDATE"):
        raise ReviewError(f"request.object is missing for {operation}")
    if old is None and operation in ("UPDATE", "DELETE"):
        raise ReviewError(f"request.oldObject is missing for {operation}")
    return AdmissionRequest(
        uid=uid,
        kind=GroupVersionKind(
            _str(kind, "group", "request.kind"),
            _str(kind, "version", "request.kind", required=True),
            _str(kind, "kind", "request.kind", required=True),
        ),
        resource=GroupVersionResource(
            _str(resource, "group", "request.resource"),
            _str(resource, "version", "request.resource", required=True),
            _str(resource, "resource", "request.resource", required=True),
        ),
        sub_resource=_str(request, "subResource", "request"),
        namespace=_str(request, "namespace", "request"),
        name=_str(request, "name", "request"),
        operation=operation,
        user=_user(request),
        dry_run=bool(dry_run),
        object=new,
        old_object=old,
    )


def render_review(uid: str, answer: AdmissionAnswer) -> dict[str, Any]:
    """The AdmissionReview response for request ``uid``."""
    response: dict[str, Any] = {"uid": uid, "allowed": answer.allowed}
    if not answer.allowed:
        response["status"] = {"code": answer.code, "message": answer.message}
    if answer.warnings:
        response["warnings"] = list(answer.warnings)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
