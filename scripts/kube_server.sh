#!/usr/bin/env bash
# A throwaway Kubernetes API server (etcd + kube-apiserver, no kubelet, scheduler or
# controller-manager) on free loopback ports, in a temp dir, for server-side validation.
#
#   scripts/kube_server.sh run -- CMD [ARG...]
#       start it, run CMD with KUBECONFIG set (and KUBE_SERVER_DIR), stop it; exits with
#       CMD's status. E.g. scripts/kube_server.sh run -- kubectl api-resources
#
#   source scripts/kube_server.sh; kube_server_start DIR; ...; kube_server_stop
#       the same from a script, which must call kube_server_stop from its EXIT trap
#       (scripts/check_chart.sh does).
#
# Binaries: etcd and kube-apiserver from $KUBE_BIN (scripts/tools/kube.sh builds them;
# `run` calls it). Auth: a static token of a user in system:masters; RBAC authorization,
# as on a real cluster. Nothing is left behind: the servers are stopped (apiserver before
# etcd) on exit, error, Ctrl-C or TERM, and a watchdog kills them should this shell die
# without running its traps (SIGKILL).
set -euo pipefail

KUBE_SERVER_READY_TIMEOUT="${KUBE_SERVER_READY_TIMEOUT:-90}"
_KS_DIR=""

_ks_log() { printf 'kube_server: %s\n' "$*" >&2; }

# A free TCP port on 127.0.0.1 (the kernel's pick; a race with another process taking it
# before we bind is possible, so kube_server_start retries with new ports).
_ks_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Stop one server: TERM, then KILL after 15 s.
_ks_stop_pid() {
  local pidfile=$1 pid i
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

kube_server_stop() {
  [[ -n "$_KS_DIR" && -d "$_KS_DIR" ]] || return 0
  # The apiserver first: stopped after etcd, it would keep retrying its storage.
  _ks_stop_pid "$_KS_DIR/kube-apiserver.pid"
  _ks_stop_pid "$_KS_DIR/etcd.pid"
  _ks_stop_pid "$_KS_DIR/watchdog.pid"
  rm -rf "$_KS_DIR"
  _KS_DIR=""
}

# Print the tail of the servers' logs (for a failed start or a failed check).
kube_server_logs() {
  local name
  for name in etcd kube-apiserver; do
    [[ -f "$_KS_DIR/$name.log" ]] || continue
    printf -- '--- %s log (last 20 lines)\n' "$name" >&2
    tail -n 20 "$_KS_DIR/$name.log" >&2
  done
}

_ks_start_once() {
  local dir=$1 etcd_client etcd_peer secure token i
  etcd_client="$(_ks_free_port)" etcd_peer="$(_ks_free_port)" secure="$(_ks_free_port)"
  token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  rm -rf "$dir/etcd-data"
  printf '%s,admin,admin,system:masters\n' "$token" >"$dir/tokens.csv"

  # Both servers run in their own session (setsid), out of reach of the terminal's
  # Ctrl-C: kube_server_stop stops them, in order, from the caller's trap (and the
  # watchdog if the caller is killed). setsid does not fork here (a background job is not
  # a process group leader), so $! is the server's pid.
  # --unsafe-no-fsync: the data is thrown away; fsyncs would only slow a busy machine.
  setsid "$KUBE_BIN/etcd" --name check --data-dir "$dir/etcd-data" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "check=http://127.0.0.1:$etcd_peer" --log-level warn \
    </dev/null >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"

  # Serving cert and service-account key from openssl (above); --cert-dir keeps the
  # apiserver from writing anything outside the temp dir. Priority and fairness off: one
  # client, and it saves memory and start-up time.
  setsid "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_client" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$secure" \
    --cert-dir "$dir/certs" --tls-cert-file "$dir/serving.crt" --tls-private-key-file "$dir/serving.key" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$dir/sa.key" --service-account-signing-key-file "$dir/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --enable-priority-and-fairness=false --profiling=false \
    </dev/null >"$dir/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"

  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: check
    cluster:
      server: https://127.0.0.1:$secure
      certificate-authority: $dir/serving.crt
users:
  - name: admin
    user:
      token: $token
contexts:
  - name: check
    context: {cluster: check, user: admin}
current-context: check
EOF
  chmod 600 "$dir/kubeconfig"

  for ((i = 0; i < KUBE_SERVER_READY_TIMEOUT * 2; i++)); do
    if ! kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || ! kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then
      return 1 # one of them exited: a port taken meanwhile, or worse (the caller shows the logs)
    fi
    if curl -sf --max-time 2 --cacert "$dir/serving.crt" -H "Authorization: Bearer $token" \
        "https://127.0.0.1:$secure/readyz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  _ks_log "not ready after ${KUBE_SERVER_READY_TIMEOUT}s"
  return 1
}

# kube_server_start DIR: start the servers with their files under DIR (created; removed
# by kube_server_stop); sets KUBECONFIG to DIR/kubeconfig.
kube_server_start() {
  local dir=$1 attempt parent
  [[ -x "$KUBE_BIN/etcd" && -x "$KUBE_BIN/kube-apiserver" ]] ||
    { _ks_log "no etcd or kube-apiserver in KUBE_BIN=${KUBE_BIN:-} (run scripts/tools/kube.sh)"; return 1; }
  mkdir -p "$dir/certs"
  _KS_DIR="$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$dir/serving.key" -out "$dir/serving.crt" >/dev/null 2>&1
  openssl genrsa -out "$dir/sa.key" 2048 >/dev/null 2>&1

  # The watchdog: if this shell dies without running its traps, kill the servers.
  parent=$BASHPID
  (
    trap '' INT HUP
    while kill -0 "$parent" 2>/dev/null; do sleep 2; done
    for name in kube-apiserver etcd; do
      [[ -f "$dir/$name.pid" ]] && kill -KILL "$(cat "$dir/$name.pid")" 2>/dev/null
    done
    rm -rf "$dir"
  ) </dev/null >/dev/null 2>&1 &
  echo $! >"$dir/watchdog.pid"

  for attempt in 1 2 3; do
    if _ks_start_once "$dir"; then
      export KUBECONFIG="$dir/kubeconfig"
      # kubectl's discovery cache, keyed by host:port, would leave a directory per run in
      # ~/.kube/cache: keep it in the temp dir.
      export KUBECACHEDIR="$dir/kubectl-cache"
      return 0
    fi
    kube_server_logs
    _ks_stop_pid "$dir/kube-apiserver.pid"
    _ks_stop_pid "$dir/etcd.pid"
    ((attempt == 3)) || _ks_log "start failed (attempt $attempt); retrying on other ports"
  done
  _ks_log "could not start etcd + kube-apiserver"
  return 1
}

# CLI: run -- CMD...
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  [[ "${1:-}" == run ]] || { sed -n '2,16p' "$0" >&2; exit 2; }
  shift
  [[ "${1:-}" == -- ]] && shift
  (($# > 0)) || { _ks_log "run: no command"; exit 2; }
  if [[ -z "${KUBE_BIN:-}" ]]; then
    eval "$("$(dirname "$0")/tools/kube.sh")"
  fi
  child=""
  trap kube_server_stop EXIT
  # INT/TERM/HUP: stop CMD (with TERM: a background command ignores INT), then exit
  # through the EXIT trap.
  # shellcheck disable=SC2329 # called by the traps below
  on_signal() {
    [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null
    exit "$1"
  }
  trap 'on_signal 130' INT
  trap 'on_signal 143' TERM
  trap 'on_signal 129' HUP
  kube_server_start "$(mktemp -d "${TMPDIR:-/tmp}/rmmwatch-kube.XXXXXX")"
  export KUBE_SERVER_DIR="$_KS_DIR"
  # CMD in the background and `wait`: bash runs a trap only once its foreground command
  # has finished, but interrupts `wait` at once. (<&0: a background command's stdin
  # would be /dev/null otherwise.)
  "$@" <&0 &
  child=$!
  status=0
  wait "$child" || status=$?
  exit "$status"
fi
