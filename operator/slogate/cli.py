"""The ``slogate`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slogate import __version__, run
from slogate.core.crd import all_crds
from slogate.core.validation import field_errors
from slogate.manifests import dump_yaml, load_documents
from slogate.prometheus.client import PrometheusConfig

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


def cmd_reference(args: argparse.Namespace) -> int:
    from slogate.reference import reference

    text = reference()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Offline check of manifests with the same models the operator and the CRDs use."""
    bad = checked = 0
    for doc in load_documents(args.paths):
        if doc.error is not None:
            checked += 1
            bad += 1
            print(f"{doc.source}: {doc.error}")
            continue
        if isinstance(doc.body, dict) and doc.body.get("apiVersion", "").split("/")[0] not in (
            "slogate.dev",
            "",
        ):
            continue  # other kinds (Deployments, Services) may share the files
        checked += 1
        errors = field_errors(doc.body)
        if errors:
            bad += 1
            meta = doc.body.get("metadata") if isinstance(doc.body, dict) else None
            name = (meta or {}).get("name", "?") if isinstance(meta, dict) else "?"
            for line in errors:
                print(f"{doc.source}: {name}: {line}")
    if checked == 0:
        print("error: no slogate manifests found", file=sys.stderr)
        return 1
    print(f"{checked - bad} of {checked} slogate manifest(s) valid", file=sys.stderr)
    return 1 if bad else 0


def cmd_rules(args: argparse.Namespace) -> int:
    """The Prometheus rules the controller keeps, as one plain rule file."""
    from pydantic import ValidationError

    from slogate.core.alertrules import backfill_group, rule_file, rule_group, wanted
    from slogate.core.objective import SloSpec
    from slogate.core.resources import SLO_KIND

    groups: list[dict[str, Any]] = []
    bad = found = 0
    for doc in load_documents(args.paths):
        if doc.error is not None:
            bad += 1
            print(f"{doc.source}: {doc.error}", file=sys.stderr)
            continue
        body = doc.body if isinstance(doc.body, dict) else {}
        if body.get("kind") != SLO_KIND.kind or not str(body.get("apiVersion", "")).startswith(
            "slogate.dev/"
        ):
            continue
        found += 1
        meta = body.get("metadata") or {}
        name = meta.get("name", "?")
        errors = field_errors(body)
        try:
            spec = SloSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            errors = errors or ["spec is not valid"]
        if errors:
            bad += 1
            for line in errors:
                print(f"{doc.source}: {name}: {line}", file=sys.stderr)
            continue
        if wanted(spec):
            make = backfill_group if args.backfill else rule_group
            groups.append(make(meta.get("namespace") or args.namespace, name, spec))
    if found == 0:
        print("error: no ServiceLevelObjective manifests found", file=sys.stderr)
        return 1
    if bad:
        # A partial rule file would silently drop some SLOs' alerts.
        print(f"error: {bad} manifest(s) invalid; no rules written", file=sys.stderr)
        return 1
    text = dump_yaml(rule_file(groups))
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    print(f"{len(groups)} rule group(s) from {found} SLO(s)", file=sys.stderr)
    return 0


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SLOGATE_{name}", default)


def add_prometheus_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Prometheus (any Prometheus-compatible query API: Thanos, Mimir)")
    g.add_argument(
        "--prometheus-url",
        default=_env("PROMETHEUS_URL", "http://localhost:9090"),
        help="query API base URL, may include a path prefix [$SLOGATE_PROMETHEUS_URL]",
    )
    g.add_argument("--prometheus-timeout", type=float, default=10.0, metavar="SECONDS")
    g.add_argument("--prometheus-retries", type=int, default=3)
    g.add_argument("--prometheus-max-concurrency", type=int, default=8)
    g.add_argument("--prometheus-bearer-token-file", default=_env("PROMETHEUS_BEARER_TOKEN_FILE"))
    g.add_argument("--prometheus-basic-auth-username")
    g.add_argument("--prometheus-basic-auth-password-file")
    g.add_argument("--prometheus-ca-file")
    g.add_argument("--prometheus-insecure-skip-verify", action="store_true")
    g.add_argument(
        "--prometheus-header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra header on every query, e.g. X-Scope-OrgID=team-a (repeatable)",
    )
    g.add_argument(
        "--prometheus-allowed-url",
        action="append",
        default=[],
        metavar="URL",
        help="an SLO's spec.prometheus.url the controller may query, without the credentials "
        "and headers above (repeatable; ending in / allows every path below it); an SLO naming "
        "any other URL is Ready=False, and no other SLO is affected",
    )
    g.add_argument(
        "--prometheus-trusted-url",
        action="append",
        default=[],
        metavar="URL",
        help="an SLO's spec.prometheus.url that may be queried with the credentials and "
        "headers above (repeatable)",
    )
    g.add_argument(
        "--prometheus-tenant-header",
        default=None,
        metavar="NAME",
        help="send each SLO's namespace in this header, e.g. X-Scope-OrgID for Mimir/Cortex "
        "tenants",
    )
    g.add_argument(
        "--prometheus-max-response-bytes",
        type=int,
        default=8 * 1024 * 1024,
        metavar="BYTES",
        help="a larger answer fails its SLOs (default 8 MiB)",
    )
    g.add_argument(
        "--prometheus-max-clients",
        type=int,
        default=32,
        help="per-SLO backends kept open at once, least recently used closed first",
    )


def add_common_flags(p: argparse.ArgumentParser, metrics_help: str) -> None:
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="only this namespace (repeatable; default: all namespaces)",
    )
    p.add_argument("--metrics-port", type=int, default=8080, help=metrics_help)
    p.add_argument(
        "--stale-after",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="an SLO status older than this counts as unknown for gates",
    )
    p.add_argument("--log-format", choices=("json", "plain"), default="json")


def add_controller_flags(p: argparse.ArgumentParser) -> None:
    add_prometheus_flags(p)
    p.add_argument("--liveness-port", type=int, default=8081, help="/healthz port; 0 disables")
    p.add_argument(
        "--heartbeat",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="rewrite an unchanged status this often (default 300)",
    )
    p.add_argument("--batch-size", type=int, default=50, help="SLOs per Prometheus request")
    p.add_argument(
        "--evaluation-deadline",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="an evaluation unit (one namespace on one backend) still busy after this fails "
        "its SLOs with EvaluationTimeout and is retried (default 120)",
    )
    p.add_argument(
        "--liveness-after",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="/healthz fails when the evaluation loop has not gone round for this long",
    )
    r = p.add_argument_group("Prometheus rules (one PrometheusRule per SLO)")
    r.add_argument(
        "--prometheus-rules",
        choices=("on", "off"),
        default=_env("SLOGATE_PROMETHEUS_RULES", "on"),
        help="keep a PrometheusRule with recording and burn-rate alerting rules for every SLO "
        "(default on; env SLOGATE_PROMETHEUS_RULES)",
    )
    r.add_argument(
        "--prometheus-rule-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label on every PrometheusRule, for a Prometheus Operator ruleSelector (repeatable)",
    )
    r.add_argument(
        "--prometheus-rule-interval",
        type=int,
        default=60,
        metavar="SECONDS",
        help="evaluation interval of the generated rule groups (default 60)",
    )
    r.add_argument(
        "--prometheus-rule-resync",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="list the PrometheusRules this often and restore any changed or deleted by hand "
        "(default 300; without the CRD, look for it at most every 60)",
    )
    p.add_argument(
        "--peering",
        default=None,
        metavar="NAME",
        help="kopf peering name for HA (one active replica); default: standalone",
    )
    p.add_argument(
        "--priority",
        type=int,
        default=0,
        help="kopf peering priority; 0 (default) picks a random one per process",
    )


def add_webhook_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tls-cert-file", required=True, help="serving certificate, re-read when the file changes"
    )
    p.add_argument("--tls-key-file", required=True)
    p.add_argument("--port", type=int, default=8443, help="HTTPS port for AdmissionReviews")
    p.add_argument(
        "--client-ca-file",
        default=None,
        metavar="PATH",
        help="require a client certificate signed by this CA (the API server's; see "
        "docs/webhook.md), re-read when the file changes; default: no client certificate",
    )
    p.add_argument(
        "--max-review-bytes",
        type=int,
        default=8 * 1024 * 1024,
        metavar="BYTES",
        help="largest AdmissionReview body accepted (default 8 MiB: an UPDATE carries two "
        "objects of up to 3 MiB); larger ones get 413 and the failurePolicy applies",
    )
    p.add_argument(
        "--watch-grace-seconds",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="/readyz turns 503 when a watch of the index has been down this long (default 30)",
    )
    p.add_argument(
        "--call-deadline",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="API calls of one review (rollback check, SubjectAccessReviews, recording an "
        "override) finish within this, below the webhook's timeoutSeconds; past it a refusal "
        "stands (default 2)",
    )
    p.add_argument(
        "--cluster-controller",
        action="append",
        default=[],
        metavar="USER",
        help="one of the cluster's own controllers, whose ReplicaSet and SLO changes are never "
        "judged (repeatable; default: the Deployment controller, the namespace controller and "
        "the garbage collector, as service accounts, and system:kube-controller-manager); must "
        "match the webhook configuration's matchConditions",
    )


def prometheus_config(args: argparse.Namespace) -> PrometheusConfig:
    headers = {}
    for item in args.prometheus_header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--prometheus-header takes NAME=VALUE, got {item!r}")
        headers[name.strip()] = value.strip()
    return PrometheusConfig(
        url=args.prometheus_url,
        timeout_s=args.prometheus_timeout,
        retries=args.prometheus_retries,
        max_concurrency=args.prometheus_max_concurrency,
        bearer_token_file=args.prometheus_bearer_token_file,
        basic_auth_username=args.prometheus_basic_auth_username,
        basic_auth_password_file=args.prometheus_basic_auth_password_file,
        ca_file=args.prometheus_ca_file,
        insecure_skip_verify=args.prometheus_insecure_skip_verify,
        headers=headers,
        max_response_bytes=args.prometheus_max_response_bytes,
    )


def _key_values(items: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def controller_options(args: argparse.Namespace) -> Any:
    from slogate.controller.app import ControllerOptions
    from slogate.controller.evaluator import EvaluatorSettings

    return ControllerOptions(
        prometheus=prometheus_config(args),
        evaluator=EvaluatorSettings(
            heartbeat_s=args.heartbeat,
            batch_size=args.batch_size,
            unit_deadline_s=args.evaluation_deadline,
            tenant_header=args.prometheus_tenant_header,
        ),
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port,
        liveness_port=args.liveness_port,
        peering=args.peering,
        priority=args.priority,
        log_format=args.log_format,
        kubeconfig=args.kubeconfig,
        allowed_urls=tuple(args.prometheus_allowed_url),
        trusted_urls=tuple(args.prometheus_trusted_url),
        max_clients=args.prometheus_max_clients,
        stale_after_s=args.stale_after,
        liveness_after_s=args.liveness_after,
        prometheus_rules=args.prometheus_rules == "on",
        rule_labels=_key_values(args.prometheus_rule_label, "--prometheus-rule-label"),
        rule_interval_s=args.prometheus_rule_interval,
        rule_resync_s=args.prometheus_rule_resync,
    )


def webhook_options(args: argparse.Namespace) -> Any:
    from slogate.core.webhookroutes import CLUSTER_CONTROLLERS
    from slogate.webhook.app import WebhookOptions

    return WebhookOptions(
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        port=args.port,
        metrics_port=args.metrics_port,
        stale_after_s=args.stale_after,
        namespaces=tuple(args.namespace),
        kubeconfig=args.kubeconfig,
        log_format=args.log_format,
        client_ca_file=args.client_ca_file,
        max_review_bytes=args.max_review_bytes,
        watch_grace_s=args.watch_grace_seconds,
        call_deadline_s=args.call_deadline,
        cluster_controllers=tuple(args.cluster_controller) or CLUSTER_CONTROLLERS,
    )


def cmd_controller(args: argparse.Namespace) -> int:
    run.controller(controller_options(args))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    run.both(controller_options(args), webhook_options(args))
    return 0


def cmd_webhook(args: argparse.Namespace) -> int:
    # No kopf in this role (slogate.webhook imports none): its own server and informers.
    run.webhook(webhook_options(args))
    return 0


def _api(kubeconfig: str | None) -> Any:
    from kubernetes import client as k8s

    from slogate.kubeclient import load_config

    load_config(kubeconfig)
    return k8s.ApiClient()


def cmd_check(args: argparse.Namespace) -> int:
    """CI gate: exit 0 allow, 1 block, 2 warn or unknown; reasons on stdout."""
    from slogate.clusterview import EXIT_WARN, check

    kind, sep, name = args.target.partition("/")
    if not sep or not name:
        print("error: give KIND/NAME, e.g. deployment/checkout", file=sys.stderr)
        return EXIT_WARN
    try:
        result = check(_api(args.kubeconfig), kind.lower(), name, args.namespace, args.stale_after)
    except Exception as exc:  # CI must get "unknown", not a traceback
        print(f"UNKNOWN: {exc}", file=sys.stderr)
        return EXIT_WARN
    print(f"{result.decision}: {args.target} in {args.namespace}")
    for line in result.lines:
        print(f"  {line}")
    return result.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    from slogate.clusterview import list_slos, render_table, status_rows

    namespace = None if args.all_namespaces else args.namespace
    rows = status_rows(list_slos(_api(args.kubeconfig), namespace))
    if args.output == "json":
        print(json.dumps([{k: v for k, v in r.items() if k != "_cells"} for r in rows], indent=2))
    else:
        print(render_table(rows, color=sys.stdout.isatty()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slogate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"slogate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("crds", help="print or write the CustomResourceDefinitions")
    p.add_argument("--out", help="directory to write one file per CRD into")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser("reference", help="print or write the field reference (Markdown)")
    p.add_argument("--out", help="file to write, e.g. docs/reference.md")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("validate", help="check manifests offline (files or directories)")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("rules", help="print the SLOs' Prometheus rules as a plain rule file")
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument(
        "-n", "--namespace", default="default", help="for manifests without metadata.namespace"
    )
    p.add_argument("-o", "--out", help="file to write instead of standard output")
    p.add_argument(
        "--backfill",
        action="store_true",
        help="only the 5-minute records long windows derive from, for promtool's rule backfill",
    )
    p.set_defaults(func=cmd_rules)

    p = sub.add_parser("controller", help="evaluate SLOs against Prometheus and write status")
    add_common_flags(p, metrics_help="/metrics port; 0 disables")
    add_controller_flags(p)
    p.set_defaults(func=cmd_controller)

    p = sub.add_parser("webhook", help="serve the admission webhook that gates rollouts")
    add_common_flags(p, metrics_help="plain HTTP port for /metrics, /healthz, /readyz")
    add_webhook_flags(p)
    p.set_defaults(func=cmd_webhook)

    p = sub.add_parser("run", help="controller and webhook in one process (local use)")
    add_common_flags(p, metrics_help="plain HTTP port for /metrics, /healthz, /readyz")
    add_controller_flags(p)
    add_webhook_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="would a rollout be admitted now? (exit 0/1/2 for CI)")
    p.add_argument("target", metavar="KIND/NAME", help="deployment/NAME or releasegate/NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--stale-after", type=float, default=900.0, metavar="SECONDS")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="SLOs with budget, burn, risk and forecast")
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.set_defaults(func=cmd_status)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
