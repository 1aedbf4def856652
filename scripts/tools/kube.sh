#!/usr/bin/env bash
# Build (or reuse cached) the pieces of a throwaway Kubernetes API server, for
# scripts/check_chart.sh's server-side validation of the chart:
#
#   etcd            go.etcd.io/etcd/server/v3 $ETCD_VERSION (etcdmain.Main)
#   kube-apiserver  k8s.io/kubernetes $KUBE_VERSION (cmd/kube-apiserver/app)
#   kubectl         k8s.io/kubernetes $KUBE_VERSION, only when none is on PATH
#                   (or RMMWATCH_BUILD_KUBECTL=1)
#   CRDs            the ServiceMonitor and PrometheusRule CRDs of prometheus-operator
#                   $PROM_OPERATOR_VERSION and the ScaledObject and TriggerAuthentication
#                   CRDs of KEDA $KEDA_VERSION, copied out of their Go modules
#
#   eval "$(scripts/tools/kube.sh)"   # sets KUBE_BIN and KUBE_CRDS
#
# Everything comes from the Go module proxy (no release downloads: this machine only
# reaches package registries) and is cached under ${RMMWATCH_CACHE:-~/.cache/rmmwatch}:
# bin/ for the binaries, kube-crds/<versions>/ for the CRDs, kube-build/ for the wrapper
# modules, tools-logs/ for the build logs. Idempotent: a cached binary that runs and
# carries the right version stamp is not rebuilt. Prints nothing but errors (on stderr)
# and, on stdout, the two assignments above.
#
# A cold build takes a few minutes (kube-apiserver: ~2.1 GB at link, a 146 MB binary).
# Env overrides: KUBE_VERSION, ETCD_VERSION, PROM_OPERATOR_VERSION, KEDA_VERSION,
# RMMWATCH_TOOLS_TIMEOUT (seconds per build step, default 1500).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.4}"
PROM_OPERATOR_VERSION="${PROM_OPERATOR_VERSION:-v0.85.0}"
KEDA_VERSION="${KEDA_VERSION:-v2.21.0}"
TOOLS_TIMEOUT="${RMMWATCH_TOOLS_TIMEOUT:-1500}"

_home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${RMMWATCH_CACHE:-${_home:-/tmp}/.cache/rmmwatch}"
BIN="$CACHE/bin"
LOGDIR="$CACHE/tools-logs"
BUILD="$CACHE/kube-build"
mkdir -p "$BIN" "$LOGDIR" "$BUILD"

die() { printf 'tools/kube.sh: error: %s\n' "$*" >&2; exit 1; }

GO="$(command -v go || true)"
[[ -n "$GO" ]] || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }
# GOFLAGS=-mod=mod: ignore any vendor dir; GOTOOLCHAIN=local: never try to download a
# toolchain (only the module proxy is reachable).
gorun() { env GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 "$GO" "$@"; }

# Serialise concurrent runs (its own lock: install.sh's tools stay usable meanwhile).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.kube-tools.lock"
  flock -w "$TOOLS_TIMEOUT" 9 || die "timed out waiting for $CACHE/.kube-tools.lock"
fi

# Run a build step quietly (one retry, for a registry hiccup); on failure show its log
# tail on stderr. --foreground: a Ctrl-C stops the build too (timeout would otherwise
# move it out of the terminal's process group, and a cold build runs for minutes).
run_logged() {
  local name=$1; shift
  local log="$LOGDIR/$name.log" attempt
  for attempt in 1 2; do
    timeout --foreground --kill-after=30 "$TOOLS_TIMEOUT" "$@" >"$log" 2>&1 && return 0
    ((attempt == 2)) || sleep 5
  done
  printf 'tools/kube.sh: %s failed (log: %s):\n' "$name" "$log" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

# Bump when the build recipe changes, so cached binaries get rebuilt.
RECIPE=1
stamp_ok() { [[ -x "$BIN/$1" && -f "$BIN/.$1.version" && "$(cat "$BIN/.$1.version")" == "$2 r$RECIPE" ]]; }
cached() { # name version check-arg...: the cached binary is stamped and runs
  local name=$1 version=$2; shift 2
  stamp_ok "$name" "$version" && timeout 60 "$BIN/$name" "$@" >/dev/null 2>&1
}
need_go() { [[ -n "$GO" ]] || die "go is required to build $1 (none on PATH nor at /usr/local/go/bin/go)"; }

# Module directory (its extracted source) of module@version, from the Go module proxy.
mod_dir() {
  local dir
  dir="$(cd / && timeout 900 env GOFLAGS=-mod=mod GOTOOLCHAIN=local "$GO" mod download -json "$1" 2>/dev/null |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')" || true
  [[ -n "$dir" && -d "$dir" ]] || die "could not download $1 from the Go module proxy"
  printf '%s' "$dir"
}

# -- etcd ------------------------------------------------------------------------------
# etcd's release binaries are not reachable; its server module is. etcdmain.Main is what
# the etcd binary's main calls.
if ! cached etcd "$ETCD_VERSION" --version; then
  need_go etcd
  rm -f "$BIN/etcd" "$BIN/.etcd.version"
  dir="$BUILD/etcd-$ETCD_VERSION"
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/main.go" <<'GO'
// Command etcd: the etcd server, built from its Go module (scripts/tools/kube.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && gorun mod init rmmwatch.local/etcd >/dev/null 2>&1)
  run_logged etcd-get sh -c "cd '$dir' && exec env GOFLAGS=-mod=mod GOTOOLCHAIN=local '$GO' get go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  run_logged etcd-tidy sh -c "cd '$dir' && exec env GOFLAGS=-mod=mod GOTOOLCHAIN=local '$GO' mod tidy"
  run_logged etcd sh -c "cd '$dir' && exec env GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 '$GO' build -trimpath -ldflags='-s -w' -o '$BIN/etcd' ."
  "$BIN/etcd" --version >/dev/null 2>&1 || die "etcd was built but '$BIN/etcd --version' fails"
  printf '%s r%s\n' "$ETCD_VERSION" "$RECIPE" >"$BIN/.etcd.version"
fi

# -- kube-apiserver (and kubectl) -------------------------------------------------------
# k8s.io/kubernetes is not meant to be required as a module: its go.mod replaces every
# k8s.io/* staging module with ./staging/src/..., which a dependent cannot see, and
# requires them at v0.0.0. The wrapper replaces each of them with its published version
# (Kubernetes v1.X.Y <-> staging v0.X.Y), read from the kubernetes go.mod itself.
build_kube() { # name version-check-args...
  local name=$1 dir gomod staging ldflags
  shift
  need_go "$name"
  dir="$BUILD/kubernetes-$KUBE_VERSION"
  staging="v0.${KUBE_VERSION#v1.}"
  if [[ ! -f "$dir/.ready" ]]; then
    rm -rf "$dir" && mkdir -p "$dir/cmd/kube-apiserver" "$dir/cmd/kubectl"
    gomod="$(cd / && timeout 900 env GOFLAGS=-mod=mod GOTOOLCHAIN=local "$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" 2>/dev/null |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')" || true
    [[ -n "$gomod" && -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy"
    {
      printf 'module rmmwatch.local/kube\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
      sed -n '/^replace (/,/^)/s#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
      printf ')\n'
    } >"$dir/go.mod"
    grep -q "k8s.io/api => k8s.io/api $staging" "$dir/go.mod" || die "no staging replace block found in $gomod"
    cat >"$dir/cmd/kube-apiserver/main.go" <<'GO'
// Command kube-apiserver, built from k8s.io/kubernetes (scripts/tools/kube.sh).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
    cat >"$dir/cmd/kubectl/main.go" <<'GO'
// Command kubectl, built from k8s.io/kubernetes (scripts/tools/kube.sh).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
	os.Exit(0)
}
GO
    run_logged kube-tidy sh -c "cd '$dir' && exec env GOFLAGS=-mod=mod GOTOOLCHAIN=local '$GO' mod tidy"
    touch "$dir/.ready"
  fi
  # The version stamp the release build sets (hack/lib/version.sh): without it the
  # server reports v0.0.0-master, which Helm's kubeVersion checks refuse.
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION") -X $pkg.gitTreeState=clean"
  done
  rm -f "$BIN/$name" "$BIN/.$name.version"
  run_logged "$name" sh -c "cd '$dir' && exec env GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 '$GO' build -trimpath -ldflags='$ldflags' -o '$BIN/$name' ./cmd/$name"
  timeout 60 "$BIN/$name" "$@" >/dev/null 2>&1 || die "$name was built but '$BIN/$name $*' fails"
  printf '%s r%s\n' "$KUBE_VERSION" "$RECIPE" >"$BIN/.$name.version"
}
cached kube-apiserver "$KUBE_VERSION" --version || build_kube kube-apiserver --version
# kubectl: the one on PATH serves (server-side dry-run and field validation are done by
# the server; an older client only warns about the skew); build one when there is none.
if [[ "${RMMWATCH_BUILD_KUBECTL:-0}" == 1 ]] || ! command -v kubectl >/dev/null 2>&1; then
  cached kubectl "$KUBE_VERSION" version --client || build_kube kubectl version --client
fi

# -- CRDs --------------------------------------------------------------------------------
# The chart's ServiceMonitor, PrometheusRule, ScaledObject and TriggerAuthentication need
# their CRDs on the server; both projects publish them in their Go modules.
CRDS="$CACHE/kube-crds/prometheus-operator-$PROM_OPERATOR_VERSION+keda-$KEDA_VERSION"
if [[ ! -f "$CRDS/.ready" ]]; then
  [[ -n "$GO" ]] || die "go is required to fetch the CRDs"
  rm -rf "$CRDS" && mkdir -p "$CRDS"
  src="$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION")"
  for kind in servicemonitors prometheusrules; do
    cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$CRDS/" ||
      die "no $kind CRD in prometheus-operator $PROM_OPERATOR_VERSION"
  done
  src="$(mod_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")"
  for kind in scaledobjects triggerauthentications; do
    cp "$src/config/crd/bases/keda.sh_$kind.yaml" "$CRDS/" || die "no $kind CRD in KEDA $KEDA_VERSION"
  done
  chmod 644 "$CRDS"/*.yaml
  touch "$CRDS/.ready"
fi

printf 'KUBE_BIN=%q\nKUBE_CRDS=%q\n' "$BIN" "$CRDS"
