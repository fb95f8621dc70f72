"""The field reference (docs/reference.md), generated from the same schemas as the CRDs.

``make docs`` writes it; a test fails when the committed file differs, so the reference cannot
drift from what the API server enforces.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from slogate.core.crd import crd_for
from slogate.core.resources import KINDS, Kind

HEADER = """# Field reference

Generated from the pydantic models in `operator/slogate/core/` by `make docs` (the CRDs in
`crds/` come from the same models). **Rules** lists what the API server checks: types, ranges,
patterns and the cross-field CEL rules with the message it prints.
"""


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type(node.get('items') or {})}"
    if kind == "object" and "additionalProperties" in node:
        return f"map of {_type(node['additionalProperties'])}"
    return str(kind)


def _rules(node: dict[str, Any]) -> str:
    out = []
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node:
        op = ">" if node.get("exclusiveMinimum") else ">="
        out.append(f"{op} {node['minimum']}")
    if "maximum" in node:
        op = "<" if node.get("exclusiveMaximum") else "<="
        out.append(f"{op} {node['maximum']}")
    if "pattern" in node:
        out.append(f"pattern `{node['pattern']}`")
    if "maxLength" in node:
        out.append(f"at most {node['maxLength']} characters")
    if "minItems" in node or "maxItems" in node:
        out.append(f"{node.get('minItems', 0)}..{node.get('maxItems', 'any')} items")
    if node.get("x-kubernetes-list-type") == "map":
        out.append("unique " + ", ".join(node.get("x-kubernetes-list-map-keys", [])))
    for rule in node.get("x-kubernetes-validations") or []:
        out.append(f"{rule['message']}")
    return "; ".join(out).replace("|", "\\|")


def _rows(node: dict[str, Any], path: str, required: bool) -> Iterator[str]:
    default = node.get("default")
    default_text = "" if default is None else f"`{default}`"
    description = (node.get("description") or "").replace("\n", " ").replace("|", "\\|")
    yield (
        f"| `{path}` | {_type(node)} | {'yes' if required else ''} | {default_text} | "
        f"{description} | {_rules(node)} |"
    )
    props = node.get("properties") or (node.get("items") or {}).get("properties") or {}
    needed = set(node.get("required") or (node.get("items") or {}).get("required") or [])
    suffix = "[]" if node.get("type") == "array" else ""
    for name, child in props.items():
        yield from _rows(child, f"{path}{suffix}.{name}", name in needed)


def section(kind: Kind) -> str:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = [f"## {kind.kind} (`kubectl get {kind.short_names[0]}`)", "", kind.description, ""]
    for part in ("spec", "status"):
        lines += [
            f"### {part}",
            "",
            "| field | type | required | default | description | rules |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        node = schema["properties"][part]
        for name, child in (node.get("properties") or {}).items():
            lines.extend(_rows(child, f"{part}.{name}", name in set(node.get("required") or [])))
        lines.append("")
    lines += [
        "Printer columns: "
        + ", ".join(f"`{c.name.upper()}` ({c.json_path})" for c in kind.columns if not c.priority),
        "",
    ]
    return "\n".join(lines)


def reference() -> str:
    return HEADER + "\n" + "\n".join(section(k) for k in KINDS.values())
