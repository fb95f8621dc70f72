#!/usr/bin/env bash
# Fetches third-party CRDs the tests install into the real kube-apiserver, taken from the Go
# modules that ship them (the module proxy serves them; no other download), into a versioned
# cache outside the repository. Usage: tools/crds.sh   -> prints the CRD directory on stdout
set -euo pipefail
PROMETHEUS_OPERATOR_VERSION=v0.85.0
cache=${SLOGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slogate}
out="$cache/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
if [ ! -f "$out/monitoring.coreos.com_prometheusrules.yaml" ]; then
  echo "fetching the Prometheus Operator CRDs $PROMETHEUS_OPERATOR_VERSION (one-time)..." >&2
  export GOTOOLCHAIN=local GOFLAGS=-modcacherw
  dir=$(cd "$(mktemp -d)" && go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "go mod download found no module directory" >&2; exit 1; }
  mkdir -p "$out.tmp"
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" "$out.tmp/"
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
echo "$out"
