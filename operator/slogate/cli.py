"""The ``slogate`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from slogate import __version__
from slogate.core.crd import all_crds
from slogate.core.validation import field_errors
from slogate.manifests import dump_yaml, load_documents

CRD_HEADER = "# Generated from operator/slogate/core by `make crds`; do not edit by hand.\n"


def cmd_crds(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    for name, doc in all_crds().items():
        text = CRD_HEADER + dump_yaml(doc)
        if out is None:
            sys.stdout.write("---\n" + text)
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Offline check of manifests with the same models the operator and the CRDs use."""
    bad = checked = 0
    try:
        documents = list(load_documents(args.paths))
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for doc in documents:
        if isinstance(doc.body, dict) and doc.body.get("apiVersion", "").split("/")[0] not in (
            "slogate.dev",
            "",
        ):
            continue  # other kinds (Deployments, Services) may share the files
        checked += 1
        errors = field_errors(doc.body)
        if errors:
            bad += 1
            name = (
                (doc.body.get("metadata") or {}).get("name", "?")
                if isinstance(doc.body, dict)
                else "?"
            )
            for line in errors:
                print(f"{doc.source}: {name}: {line}")
    if checked == 0:
        print("error: no slogate manifests found", file=sys.stderr)
        return 1
    print(f"{checked - bad} of {checked} slogate manifest(s) valid", file=sys.stderr)
    return 1 if bad else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from slogate.localenv.demo import run_demo

    return run_demo(once=args.once)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slogate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"slogate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("crds", help="print or write the CustomResourceDefinitions")
    p.add_argument("--out", help="directory to write one file per CRD into")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser("validate", help="check manifests offline (files or directories)")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("demo", help="run the local demo (control plane, Prometheus, examples)")
    p.add_argument("--once", action="store_true", help="show the story and exit (for scripts)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
