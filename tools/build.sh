#!/usr/bin/env bash
# Builds the Go binaries the local control plane needs (etcd, kube-apiserver,
# kube-controller-manager, kubectl, helm)
# into a versioned cache outside the repository, so only the first run pays for the build.
# Usage: tools/build.sh            -> prints the bin directory on stdout
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=v1.33.13
ETCD_VERSION=v3.5.24
HELM_VERSION=v3.21.4
cache=${SLOGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slogate}
bin="$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
mkdir -p "$bin"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw

build_k8s() {  # $1 = command name under k8s.io/kubernetes/cmd
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  (cd "$here/kube" && go build -trimpath -tags=notest -ldflags="-s -w \
    -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
    -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor" \
    -o "$bin/$1.tmp" "k8s.io/kubernetes/cmd/$1") && mv "$bin/$1.tmp" "$bin/$1"
}

if [ ! -x "$bin/etcd" ]; then
  echo "building etcd $ETCD_VERSION (one-time)..." >&2
  (cd "$here/etcd" && go build -trimpath -ldflags="-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3) \
    && mv "$bin/etcd.tmp" "$bin/etcd"
fi
for cmd in kube-apiserver kube-controller-manager kubectl; do
  if [ ! -x "$bin/$cmd" ]; then
    echo "building $cmd $K8S_VERSION (one-time, 10-20 min on 2 cores)..." >&2
    build_k8s "$cmd"
  fi
done
if [ ! -x "$bin/helm" ]; then
  echo "building helm $HELM_VERSION (one-time)..." >&2
  (cd "$here/helm" && go build -trimpath -ldflags="-s -w" -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm) \
    && mv "$bin/helm.tmp" "$bin/helm"
fi
echo "$bin"
