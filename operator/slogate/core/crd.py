"""Generate the CustomResourceDefinitions from the pydantic models.

The CRD schemas are derived, never hand-written: pydantic's JSON Schema is turned into the
structural OpenAPI v3 subset Kubernetes accepts (references inlined, ``anyOf [X, null]``
collapsed, draft-2020 exclusive bounds turned into OpenAPI 3.0 booleans) and every
:class:`~slogate.core.specbase.CrossFieldRule` becomes an ``x-kubernetes-validations`` entry.
``make crds`` writes ``crds/``; a test fails when the committed files differ from this output.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from slogate.core.resources import GROUP, KINDS, VERSION, Kind
from slogate.core.specbase import SpecModel

_DROP = {"title", "additionalProperties", "$defs", "discriminator"}


def _rules_by_title(model: type[BaseModel], out: dict[str, type[BaseModel]]) -> None:
    """Map every nested model's JSON-schema title to its class, to attach its CEL rules."""
    out[model.__name__] = model
    for field in model.model_fields.values():
        for sub in _models_in(field.annotation):
            if sub.__name__ not in out:
                _rules_by_title(sub, out)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    meta = getattr(annotation, "__origin__", None)
    if meta is not None and not getattr(annotation, "__args__", None):
        found.extend(_models_in(meta))
    return found


def _convert(
    node: Any, defs: dict[str, Any], models: dict[str, type[BaseModel]], *, nullable_ok: bool
) -> Any:
    if isinstance(node, list):
        return [_convert(n, defs, models, nullable_ok=nullable_ok) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        merged.setdefault("title", name)
        return _convert(merged, defs, models, nullable_ok=nullable_ok)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        has_null = len(options) != len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            inner = _convert({**options[0], **rest}, defs, models, nullable_ok=nullable_ok)
            if has_null and nullable_ok:
                inner["nullable"] = True
                if "enum" in inner:
                    # The API server refuses null for an enum even when nullable (and even with
                    # null listed), so status enums are documented instead of enforced.
                    values = ", ".join(str(v) for v in inner.pop("enum"))
                    inner["description"] = f"One of {values}, or null."
            inner.pop("default", None) if inner.get("default") is None else None
            return inner
        raise ValueError(f"cannot express a union of {options} in a structural schema")

    title = node.get("title")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {
                k: _convert(v, defs, models, nullable_ok=nullable_ok) for k, v in value.items()
            }
        elif key in ("items",):
            out[key] = _convert(value, defs, models, nullable_ok=nullable_ok)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(
            node["additionalProperties"], defs, models, nullable_ok=nullable_ok
        )
    model = models.get(title) if isinstance(title, str) else None
    if model is not None and issubclass(model, SpecModel) and model.cross_field_rules:
        out["x-kubernetes-validations"] = [r.to_crd() for r in model.cross_field_rules]
    if out.get("type") == "integer" and "format" not in out:
        out["format"] = "int64"
    return out


def openapi_schema(model: type[BaseModel], *, nullable_ok: bool) -> dict[str, Any]:
    """Structural OpenAPI v3 schema for ``model`` (by alias, as manifests are written)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    models: dict[str, type[BaseModel]] = {}
    _rules_by_title(model, models)
    defs = raw.get("$defs", {})
    converted: dict[str, Any] = _convert(raw, defs, models, nullable_ok=nullable_ok)
    return converted


def crd_for(kind: Kind) -> dict[str, Any]:
    spec_schema = openapi_schema(kind.spec_model, nullable_ok=False)
    spec_schema["description"] = f"Desired state of the {kind.kind}."
    status_schema = openapi_schema(kind.status_model, nullable_ok=True)
    status_schema["description"] = f"Observed state of the {kind.kind}, written by slogate."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "slogate"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["slogate"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            "description": c.description,
                            **({"priority": c.priority} if c.priority else {}),
                        }
                        for c in kind.columns
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name under ``crds/`` -> CRD document."""
    return {f"{k.plural}.{GROUP}.yaml": crd_for(k) for k in KINDS.values()}
