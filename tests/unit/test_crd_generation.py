"""crds/ is generated from the models; this fails when someone edits one without the other."""

from pathlib import Path

import yaml

from slogate.cli import CRD_HEADER
from slogate.core.crd import all_crds
from slogate.manifests import dump_yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_equal_generated() -> None:
    generated = all_crds()
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(generated)
    for name, doc in generated.items():
        assert (CRDS / name).read_text() == CRD_HEADER + dump_yaml(doc), (
            f"crds/{name} is stale: run `make crds`"
        )


def _walk(node: object, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_schemas_are_structural() -> None:
    for name, doc in all_crds().items():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "$ref" not in node and "anyOf" not in node, f"{name}{path}"
            assert not ("properties" in node and "additionalProperties" in node), f"{name}{path}"
            if "properties" in node:
                assert node.get("type") == "object", f"{name}{path} lacks type: object"


def test_names_printer_columns_and_categories() -> None:
    crds = {d["spec"]["names"]["kind"]: d for d in all_crds().values()}
    slo, gate = crds["ServiceLevelObjective"], crds["ReleaseGate"]
    assert slo["spec"]["names"]["shortNames"] == ["slo"]
    assert gate["spec"]["names"]["shortNames"] == ["gate"]
    for crd in (slo, gate):
        assert crd["spec"]["names"]["categories"] == ["slogate"]
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
    columns = [
        c["name"]
        for c in slo["spec"]["versions"][0]["additionalPrinterColumns"]
        if not c.get("priority")
    ]
    assert columns == ["Target", "SLI", "Budget", "Burn-1h", "Risk", "Exhausts", "Age"]
    columns = [
        c["name"]
        for c in gate["spec"]["versions"][0]["additionalPrinterColumns"]
        if not c.get("priority")
    ]
    assert columns == ["Decision", "Reason", "Blocked", "Age"]


def test_yaml_round_trip() -> None:
    for doc in all_crds().values():
        assert yaml.safe_load(dump_yaml(doc)) == doc


def test_reference_doc_is_current() -> None:
    from slogate.reference import reference

    committed = (CRDS.parent / "docs" / "reference.md").read_text()
    assert committed == reference(), "docs/reference.md is stale: run `make docs`"
