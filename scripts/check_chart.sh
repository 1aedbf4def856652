#!/usr/bin/env bash
# Check the Helm chart (deploy/helm/rmmwatch) and the Grafana dashboard without a cluster:
#
#   1. helm lint --strict with the default values and with each ci/*-values.yaml;
#   2. helm template of each (and of NOTES.txt, which `helm template` skips);
#   3. each ci/bad/*.yaml must FAIL to template, with the message in its
#      `# expect-error:` line (ci/bad/sqlite-3-replicas-values.yaml: the sqlite guard);
#   4. kube-score score on each rendering (ignored tests below, each with its reason);
#   5. yamllint -s (.yamllint.yaml) on values.yaml, Chart.yaml, the ci files and every
#      rendering;
#   6. scripts/check_chart_values.py: every .Values path used by a template exists in
#      values.yaml, every schema property has a default, and every value is used;
#   7. the PromQL of the rendered PrometheusRule and of deploy/grafana/rmmwatch.json parses,
#      and names only metrics that service/rmmwatch/metrics.py defines;
#   8. a real API server (etcd + kube-apiserver on loopback, scripts/kube_server.sh) with
#      the prometheus-operator and KEDA CRDs applied: every rendering must pass
#      `kubectl apply --dry-run=server --validate=strict` (the server decodes, defaults,
#      validates and admits each object, CRD schemas included, and stores nothing) with
#      no warning, in namespaces under the "restricted" Pod Security Standard; and each
#      ci/server-bad/*.yaml must be REJECTED (or warned about) with the message in its
#      `# expect-error:` line.
#
# Usage: scripts/check_chart.sh   (from anywhere)
# Tools: helm and kube-score from PATH or ${RMMWATCH_CACHE:-~/.cache/rmmwatch}/bin
# (scripts/tools/install.sh builds them); yamllint and promql-parser from .venv when it
# has them, else from a venv under the cache (pip, pinned below). Step 8: etcd,
# kube-apiserver (and kubectl when none is on PATH) and the CRDs from
# scripts/tools/kube.sh, cached (a cold build takes 4-5 minutes, ~2 GB of memory).
# KUBECTL=<path> picks the kubectl. RMMWATCH_SKIP_KUBE_SERVER=1 skips step 8, saying
# so; the check then does not pass as a whole: it exits 3.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"
CHART=deploy/helm/rmmwatch
DASHBOARD=deploy/grafana/rmmwatch.json
CACHE="${RMMWATCH_CACHE:-$HOME/.cache/rmmwatch}"
YAMLLINT_VERSION=1.38.0
PROMQL_PARSER_VERSION=0.11.0
RELEASE=rmmwatch
NAMESPACE=secops

FAILURES=0
say() { printf '\n== %s\n' "$*"; }
fail() { printf 'check_chart: FAIL: %s\n' "$*" >&2; FAILURES=$((FAILURES + 1)); }
die() { printf 'check_chart: FAIL: %s\n' "$*" >&2; exit 1; }

# -- tools ------------------------------------------------------------------------------
tool() {
  local name=$1 bin
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  if [[ -x "$CACHE/bin/$name" ]]; then echo "$CACHE/bin/$name"; return; fi
  if [[ -x scripts/tools/install.sh ]]; then
    bin="$(scripts/tools/install.sh | tail -n 1)"
    if [[ -x "$bin/$name" ]]; then echo "$bin/$name"; return; fi
  fi
  return 1
}
HELM="$(tool helm)" || die "helm not found (run scripts/tools/install.sh)"
KUBE_SCORE="$(tool kube-score)" || die "kube-score not found (run scripts/tools/install.sh)"

# A Python with yamllint, PyYAML and promql_parser: the project's .venv once the dev
# requirements carry them, else a venv in the cache.
if [[ -x .venv/bin/yamllint ]] && .venv/bin/python -c 'import yaml, promql_parser' 2>/dev/null; then
  TOOLS_BIN="$ROOT_DIR/.venv/bin"
else
  venv="$CACHE/chart-tools-venv"
  if ! "$venv/bin/python" -c "import yaml, promql_parser, yamllint, sys
sys.exit(yamllint.__version__ != '$YAMLLINT_VERSION')" 2>/dev/null; then
    echo "installing yamllint==$YAMLLINT_VERSION promql-parser==$PROMQL_PARSER_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "yamllint==$YAMLLINT_VERSION" "promql-parser==$PROMQL_PARSER_VERSION" >&2
  fi
  TOOLS_BIN="$venv/bin"
fi
YAMLLINT="$TOOLS_BIN/yamllint"
PY="$TOOLS_BIN/python"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/rmmwatch-chart.XXXXXX")"
# shellcheck source=scripts/kube_server.sh
source scripts/kube_server.sh
# Step 8's servers are stopped on any exit; INT/TERM/HUP exit through this trap too.
cleanup() { kube_server_stop; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
mkdir -p "$TMP/rendered"

echo "helm: $("$HELM" version --short)  kube-score: $("$KUBE_SCORE" version | awk '{print $3}' | tr -d ,)  yamllint: $("$YAMLLINT" --version | awk '{print $2}')"

# name:values-file pairs; "default" is the chart's own values.yaml.
CASES=("default:")
for file in "$CHART"/ci/*-values.yaml; do
  CASES+=("$(basename "$file" -values.yaml):$file")
done
[[ -f "$CHART/ci/bad/sqlite-3-replicas-values.yaml" ]] || die "missing $CHART/ci/bad/sqlite-3-replicas-values.yaml"

# -- 1. lint and 2. template ------------------------------------------------------------
say "helm lint --strict and helm template"
# NOTES.txt is not rendered by `helm template`: render it through a copy of the chart in
# which a template prints it.
NOTES_CHART="$TMP/notes-chart"
cp -r "$CHART" "$NOTES_CHART"
cp "$CHART/templates/NOTES.txt" "$NOTES_CHART/notes.txt"
printf 'notes: |\n{{ tpl (.Files.Get "notes.txt") . | indent 2 }}\n' >"$NOTES_CHART/templates/zz-notes.yaml"

for case in "${CASES[@]}"; do
  name=${case%%:*} file=${case#*:}
  args=()
  [[ -n "$file" ]] && args=(-f "$file")
  if out="$("$HELM" lint --strict "$CHART" "${args[@]}" 2>&1)"; then
    echo "lint     $name: ok"
  else
    echo "$out" >&2
    fail "helm lint --strict ($name)"
  fi
  if "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" "${args[@]}" >"$TMP/rendered/$name.yaml" 2>"$TMP/err"; then
    echo "template $name: $(grep -c '^kind:' "$TMP/rendered/$name.yaml") objects ($(grep '^kind:' "$TMP/rendered/$name.yaml" | awk '{print $2}' | sort | uniq | paste -sd, -))"
  else
    cat "$TMP/err" >&2
    fail "helm template ($name)"
    rm -f "$TMP/rendered/$name.yaml"
  fi
  if ! "$HELM" template "$RELEASE" "$NOTES_CHART" -n "$NAMESPACE" "${args[@]}" \
      --show-only templates/zz-notes.yaml >"$TMP/notes-$name.yaml" 2>"$TMP/err"; then
    cat "$TMP/err" >&2
    fail "NOTES.txt does not render ($name)"
  fi
done

# -- 3. configurations that must fail ------------------------------------------------------
say "ci/bad: each must fail to template with its expected message"
for file in "$CHART"/ci/bad/*.yaml; do
  expected="$(sed -n 's/^# expect-error: //p' "$file" | head -n 1)"
  [[ -n "$expected" ]] || { fail "$file has no '# expect-error: <message>' line"; continue; }
  if "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$file" >/dev/null 2>"$TMP/err"; then
    fail "$file rendered, but it must fail with: $expected"
  elif grep -qF -- "$expected" "$TMP/err"; then
    echo "refused  $(basename "$file"): $(grep -oF -- "$expected" "$TMP/err" | head -n 1)"
  else
    cat "$TMP/err" >&2
    fail "$file failed, but without the message: $expected"
  fi
done

# -- 4. kube-score ------------------------------------------------------------------------
say "kube-score score"
# Tests ignored for every rendering:
#   container-image-pull-policy: kube-score wants Always. The chart pins an immutable
#     release tag (or a digest, image.digest) with IfNotPresent, so that a restarting
#     detector does not depend on the registry being reachable; clusters that must
#     re-check pull credentials on every start enforce it with the AlwaysPullImages
#     admission plugin instead.
IGNORE_ALL=(--ignore-test container-image-pull-policy)
# Optional tests the chart meets and keeps meeting.
OPTIONAL=(--enable-optional-test container-seccomp-profile --enable-optional-test container-ports-check)
for rendered in "$TMP"/rendered/*.yaml; do
  name="$(basename "$rendered" .yaml)"
  ignore=("${IGNORE_ALL[@]}")
  reasons=""
  if grep -q '^    type: Recreate' "$rendered"; then
    # The sqlite store: one process owns the state file on a ReadWriteOnce volume, so the
    # Deployment runs exactly 1 replica (deployment-replicas) and must stop the old pod
    # before the new one starts (deployment-strategy: Recreate, not RollingUpdate).
    ignore+=(--ignore-test deployment-replicas --ignore-test deployment-strategy)
    reasons+=" deployment-replicas,deployment-strategy (sqlite: single replica, Recreate)"
  elif grep -q '^kind: ScaledObject' "$rendered"; then
    # KEDA owns the replica count through the HPA it creates from the ScaledObject, which
    # kube-score does not know about; the Deployment rightly sets no replicas.
    ignore+=(--ignore-test deployment-replicas)
    reasons+=" deployment-replicas (KEDA sets the replicas)"
  fi
  # --disable-ignore-checks-annotations: no kube-score/ignore annotation may hide a finding.
  if out="$("$KUBE_SCORE" score --output-format ci --exit-one-on-warning --disable-ignore-checks-annotations \
      "${ignore[@]}" "${OPTIONAL[@]}" "$rendered" 2>&1)"; then
    echo "score    $name: $(grep -c '^\[OK\]' <<<"$out") ok, $(grep -c '^\[SKIPPED\]' <<<"$out") skipped;${reasons:- no extra ignores}"
  else
    grep -v '^\[OK\]\|^\[SKIPPED\]' <<<"$out" >&2
    fail "kube-score ($name)"
  fi
done

# -- 5. yamllint --------------------------------------------------------------------------
say "yamllint -s (.yamllint.yaml)"
if "$YAMLLINT" -s -c .yamllint.yaml .yamllint.yaml "$CHART/Chart.yaml" "$CHART/values.yaml" \
    "$CHART"/ci/*.yaml "$CHART"/ci/bad/*.yaml "$CHART"/ci/server-bad/*.yaml "$TMP"/rendered/*.yaml; then
  echo "yamllint: values, Chart.yaml, ci files and $(find "$TMP/rendered" -name "*.yaml" | wc -l) renderings clean"
else
  fail "yamllint"
fi

# -- 6. values paths -----------------------------------------------------------------------
say "values paths (scripts/check_chart_values.py)"
"$PY" scripts/check_chart_values.py "$CHART" --fail-unused || fail "templates and values.yaml disagree"

# -- 7. PromQL and metric names ---------------------------------------------------------------
say "PromQL and metric names (PrometheusRule renderings, $DASHBOARD)"
"$PY" - "$TMP/rendered" "$DASHBOARD" service/rmmwatch/metrics.py <<'PY' || fail "PromQL or metric names"
"""Parse every rule and panel expression; every rmmwatch_* name must be an exported series."""

import json
import pathlib
import re
import sys

import promql_parser
import yaml

rendered, dashboard_path, metrics_py = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]

# The series each collector exports (prometheus_client naming).
exported: set[str] = set()
source = pathlib.Path(metrics_py).read_text(encoding="utf-8")
for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|Info|Summary)\(\s*\"(rmmwatch_\w+)\"", source):
    if kind == "Counter":
        exported |= {f"{name}_total", f"{name}_created"}
    elif kind == "Histogram":
        exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    elif kind == "Summary":
        exported |= {f"{name}_sum", f"{name}_count", f"{name}_created"}
    elif kind == "Info":
        exported.add(f"{name}_info")
    else:
        exported.add(name)
if not exported:
    sys.exit(f"no metrics found in {metrics_py}")

problems: list[str] = []


def check(where: str, expr: str) -> None:
    try:
        promql_parser.parse(expr)
    except Exception as exc:  # the parser raises ValueError with the position
        problems.append(f"{where}: PromQL does not parse: {exc}\n    {expr}")
        return
    for name in set(re.findall(r"\brmmwatch_\w+", expr)):
        if name not in exported:
            problems.append(f"{where}: {name} is not a series rmmwatch exports")


rules = 0
for path in sorted(rendered.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not doc or doc.get("kind") != "PrometheusRule":
            continue
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                rules += 1
                check(f"{path.stem}: {rule.get('alert') or rule.get('record')}", rule["expr"])

# Grafana variables, replaced by something PromQL accepts.
substitutions = {
    r"\[\$\{?\w+\}?\]": "[5m]",  # range selectors: $__rate_interval, $latency_window, ...
    r"\$\{?(\w+)(:\w+)?\}?": "x",
}
dashboard = json.loads(pathlib.Path(dashboard_path).read_text(encoding="utf-8"))
if dashboard.get("__inputs") and not any(v.get("type") == "datasource" for v in dashboard["templating"]["list"]):
    problems.append(f"{dashboard_path}: the datasource must be a template variable")
panels = 0


def walk(items: list[dict]) -> None:
    global panels
    for panel in items:
        walk(panel.get("panels", []))
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            panels += 1
            text = expr
            for pattern, value in substitutions.items():
                text = re.sub(pattern, value, text)
            check(f"{dashboard_path}: panel {panel.get('title')!r}", text)
        ds = panel.get("datasource")
        if panel.get("type") != "row" and ds is not None and ds.get("uid") != "${datasource}":
            problems.append(f"{dashboard_path}: panel {panel.get('title')!r} does not use the $datasource variable")


walk(dashboard.get("panels", []))
for variable in dashboard.get("templating", {}).get("list", []):
    query = variable.get("query")
    if variable.get("type") == "query":
        text = query.get("query") if isinstance(query, dict) else query
        for name in set(re.findall(r"\brmmwatch_\w+", text or "")):
            if name not in exported:
                problems.append(f"{dashboard_path}: variable {variable['name']}: {name} is not exported")

for problem in problems:
    print(problem, file=sys.stderr)
if not rules:
    problems.append("no PrometheusRule was rendered (enable prometheusRule in a ci values file)")
if problems:
    sys.exit(1)
print(f"{rules} rule expressions and {panels} dashboard queries parse; all rmmwatch_* names are exported")
PY

# -- 8. a real API server ---------------------------------------------------------------------
say "server-side validation (kubectl apply --dry-run=server --validate=strict)"
SKIPPED=0
if [[ "${RMMWATCH_SKIP_KUBE_SERVER:-0}" == 1 ]]; then
  echo "SKIPPED: RMMWATCH_SKIP_KUBE_SERVER=1: the renderings were NOT checked by an API server" >&2
  SKIPPED=1
else
  server_check() {
    local kubectl kube_env started=$SECONDS
    kube_env="$(scripts/tools/kube.sh)" || { fail "scripts/tools/kube.sh could not build the API server"; return; }
    eval "$kube_env"
    kubectl="${KUBECTL:-$(command -v kubectl || echo "$KUBE_BIN/kubectl")}"
    [[ -x "$kubectl" ]] || { fail "no kubectl (scripts/tools/kube.sh builds one when none is on PATH)"; return; }
    # Every call is bounded: a wedged server fails the check rather than hanging it.
    # --foreground keeps kubectl in our process group, so that Ctrl-C reaches it (and
    # this shell, which runs its INT trap only once the foreground command has ended).
    k() { timeout --foreground --kill-after=10 120 "$kubectl" --request-timeout=60s "$@"; }
    kube_server_start "$TMP/kube" || { fail "could not start etcd + kube-apiserver"; return; }
    echo "server:  $("$KUBE_BIN/kube-apiserver" --version), etcd $("$KUBE_BIN/etcd" --version | awk 'NR == 1 {print $3}'), ready in $((SECONDS - started))s;" \
      "kubectl $("$kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | head -n 1)"
    # The CRDs are applied for real (create, not apply: the prometheus-operator ones are
    # larger than the annotation client-side apply keeps) and must be Established before
    # objects of their kinds validate.
    if ! k create -f "$KUBE_CRDS" >"$TMP/err" 2>&1 ||
        ! k wait --for condition=established --timeout=60s -f "$KUBE_CRDS" >>"$TMP/err" 2>&1; then
      cat "$TMP/err" >&2
      kube_server_logs
      fail "the CRDs in $KUBE_CRDS were not established"
      return
    fi
    echo "crds:    $(find "$KUBE_CRDS" -name '*.yaml' -printf '%f\n' | sed 's/\.yaml$//' | sort | paste -sd, -)"
    # The release namespace and any other the renderings name (serviceMonitor.namespace, ...),
    # under the "restricted" Pod Security Standard: enforced for pods, and a warning for
    # the pod template of a Deployment (no controller runs here to make its pods), which
    # the loops below treat as a refusal. Any other server warning fails the check too.
    local ns
    for ns in $( { echo "$NAMESPACE"; sed -n 's/^  namespace: *//p' "$TMP"/rendered/*.yaml; } | sort -u); do
      { k create namespace "$ns" >/dev/null &&
        k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted \
          pod-security.kubernetes.io/warn=restricted >/dev/null; } || { fail "could not create namespace $ns"; return; }
    done

    # Rendered again for this server: its version (Chart.yaml's kubeVersion is checked
    # against it, and .Capabilities.KubeVersion is what an install here would see; helm
    # template's default is its own client-go's) and the CRD groups it serves.
    local kube_version case file args rendered name out objects accepted
    kube_version="$("$KUBE_BIN/kube-apiserver" --version | awk '{print $2}')"
    mkdir -p "$TMP/server"
    for case in "${CASES[@]}"; do
      name=${case%%:*} file=${case#*:}
      args=()
      [[ -n "$file" ]] && args=(-f "$file")
      "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" "${args[@]}" --kube-version "$kube_version" \
        --api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1 >"$TMP/server/$name.yaml" 2>"$TMP/err" ||
        { cat "$TMP/err" >&2; fail "helm template --kube-version $kube_version ($name)"; rm -f "$TMP/server/$name.yaml"; }
    done
    for rendered in "$TMP"/server/*.yaml; do
      name="$(basename "$rendered" .yaml)"
      objects="$(grep -c '^kind:' "$rendered")"
      if out="$(k apply --dry-run=server --validate=strict -n "$NAMESPACE" -f "$rendered" 2>&1)"; then
        accepted="$(grep -c 'created (server dry run)' <<<"$out" || true)"
        if grep -q '^Warning:' <<<"$out"; then
          grep '^Warning:' <<<"$out" >&2
          fail "the API server warned about the $name rendering"
        elif ((accepted == objects)); then
          echo "server   $name: $accepted/$objects objects accepted"
        else
          echo "$out" >&2
          fail "the API server accepted $accepted of the $objects objects of the $name rendering"
        fi
      else
        echo "$out" >&2
        fail "the API server rejected the $name rendering"
      fi
    done

    # ci/server-bad: what only the server catches. A *-values.yaml file must pass helm lint
    # --strict and render (the schema lets it through), and its rendering is sent; any
    # other file is a manifest, sent as it is.
    local file expected manifest
    for file in "$CHART"/ci/server-bad/*.yaml; do
      [[ -f "$file" ]] || { fail "no $CHART/ci/server-bad/*.yaml: nothing shows the server step can fail"; break; }
      expected="$(sed -n 's/^# expect-error: //p' "$file" | head -n 1)"
      [[ -n "$expected" ]] || { fail "$file has no '# expect-error: <message>' line"; continue; }
      manifest="$file"
      if [[ "$file" == *-values.yaml ]]; then
        manifest="$TMP/server-bad-$(basename "$file")"
        if ! "$HELM" lint --strict "$CHART" -f "$file" >"$TMP/err" 2>&1 ||
            ! "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$file" --kube-version "$kube_version" \
              --api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1 >"$manifest" 2>>"$TMP/err"; then
          cat "$TMP/err" >&2
          fail "$file must pass helm lint --strict and render (only the server may refuse it)"
          continue
        fi
      fi
      if out="$(k apply --dry-run=server --validate=strict -n "$NAMESPACE" -f "$manifest" 2>&1)" &&
          ! grep -q '^Warning:' <<<"$out"; then
        echo "$out" >&2
        fail "the API server accepted $file, but it must reject it with: $expected"
      elif grep -qF -- "$expected" <<<"$out"; then
        echo "rejected $(basename "$file"): $(grep -oF -- "$expected" <<<"$out" | head -n 1)"
      else
        echo "$out" >&2
        fail "the API server rejected $file, but without the message: $expected"
      fi
    done
    kube_server_stop
    echo "server step: $((SECONDS - started))s"
  }
  server_check
fi

say "check_chart: $([[ $FAILURES -eq 0 ]] && echo OK || echo "$FAILURES failure(s)")$( ((SKIPPED)) && echo ", server step SKIPPED")"
((FAILURES == 0)) || exit 1
((SKIPPED == 0)) || exit 3
