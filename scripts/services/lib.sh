#!/usr/bin/env bash
# Shared helpers for scripts/services/*.sh. Source it; do not run it.
#
# Layout:
#   runtime state : ${RMMWATCH_SERVICES_DIR:-<repo>/.services}
#                   <name>.pid  <name>.ports  <name>.env  <name>.out  <name>.lock  ...
#   caches        : ${RMMWATCH_CACHE:-$HOME/.cache/rmmwatch}
# Everything binds to 127.0.0.1 only.
# shellcheck shell=bash

SERVICES_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SERVICES_SCRIPT_DIR/../.." && pwd)"

_abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

SERVICES_DIR="$(_abs "${RMMWATCH_SERVICES_DIR:-$REPO_ROOT/.services}")"
_home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE_DIR="$(_abs "${RMMWATCH_CACHE:-${_home:-/tmp}/.cache/rmmwatch}")"
BIND_HOST=127.0.0.1

# ---------------------------------------------------------------- logging

_svc_name="${SVC_NAME:-services}"

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$_svc_name" "$*" >&2; }
die() { printf '%s [%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$_svc_name" "$*" >&2; exit 1; }

# Print the last lines of a log file to stderr (for failure reports).
show_log_tail() {
  local file=$1 n=${2:-40}
  if [[ -s "$file" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
    tail -n "$n" "$file" >&2 || true
    printf -- '-----\n' >&2
  fi
}

ensure_dirs() { mkdir -p "$SERVICES_DIR" "$CACHE_DIR"; }

# Hold an exclusive lock on <services dir>/<name>.lock for the rest of the
# script (fd 8 for service state; fd 7 for cache installs).
lock_service() {
  local name=$1 timeout=${2:-300}
  command -v flock >/dev/null 2>&1 || return 0
  exec 8>"$SERVICES_DIR/$name.lock"
  flock -w "$timeout" 8 || die "timed out after ${timeout}s waiting for $SERVICES_DIR/$name.lock"
}
lock_cache() {
  local name=$1 timeout=${2:-900}
  command -v flock >/dev/null 2>&1 || return 0
  exec 7>"$CACHE_DIR/.$name.lock"
  flock -w "$timeout" 7 || die "timed out after ${timeout}s waiting for $CACHE_DIR/.$name.lock"
}

# ---------------------------------------------------------------- ports

# port_in_use PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/$BIND_HOST/$1") 2>/dev/null
}

# pick_free_ports N: print N distinct ports that can be bound on 127.0.0.1,
# chosen below the kernel's ephemeral range (so a client's outgoing connection
# cannot grab them while the service is stopped during a restart) and not
# claimed by any other <services dir>/*.ports file.
pick_free_ports() {
  local n=$1 claimed
  claimed="$(cat "$SERVICES_DIR"/*.ports 2>/dev/null | sed -n 's/^[A-Z_]*=\([0-9][0-9]*\)$/\1/p' | tr '\n' ' ')"
  python3 - "$n" "$BIND_HOST" "$claimed" <<'PY'
import random, socket, sys
n, host, claimed = int(sys.argv[1]), sys.argv[2], {int(p) for p in sys.argv[3].split()}
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    lo = 32768
top = lo - 1 if lo > 12000 else 65535
bottom = 10000 if lo > 12000 else lo
held, out = [], []
for _ in range(5000):
    if len(out) == n:
        break
    p = random.randint(bottom, top)
    if p in claimed or p in out:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, p))
        s.listen(1)
    except OSError:
        s.close()
        continue
    held.append(s)
    out.append(p)
for s in held:
    s.close()
if len(out) != n:
    sys.exit("could not find %d free ports" % n)
print("\n".join(map(str, out)))
PY
}

# load_ports NAME KEY1 KEY2 ...: sets shell variables PORT_<KEY> from
# <services dir>/NAME.ports, picking free ports (and saving them) the first
# time. Ports are kept for the life of the services dir (restart keeps them).
load_ports() {
  local name=$1; shift
  local file="$SERVICES_DIR/$name.ports" key val missing=() picked
  for key in "$@"; do
    val=""
    [[ -f "$file" ]] && val="$(sed -n "s/^$key=\\([0-9][0-9]*\\)\$/\\1/p" "$file" | tail -1)"
    if [[ -n "$val" ]]; then
      printf -v "PORT_$key" '%s' "$val"
    else
      missing+=("$key")
    fi
  done
  if ((${#missing[@]})); then
    picked="$(pick_free_ports "${#missing[@]}")" || die "could not pick free ports on $BIND_HOST"
    local i=0 p
    for p in $picked; do
      key="${missing[$i]}"
      printf -v "PORT_$key" '%s' "$p"
      printf '%s=%s\n' "$key" "$p" >>"$file"
      i=$((i + 1))
    done
  fi
}

# check_port_free PORT WHAT: fail clearly if another process holds the port.
check_port_free() {
  if port_in_use "$1"; then
    die "port $BIND_HOST:$1 ($2) is already in use by another process; stop it, or remove $SERVICES_DIR to pick new ports"
  fi
}

# wait_for_port PORT TIMEOUT_S PIDFILE MARKER LOGFILE: wait until 127.0.0.1:PORT
# accepts connections; fail early if the process dies.
wait_for_port() {
  local port=$1 timeout=$2 pidfile=$3 marker=$4 logfile=$5
  local deadline=$((SECONDS + timeout))
  while ! port_in_use "$port"; do
    if ! pid_alive "$pidfile" "$marker"; then
      show_log_tail "$logfile"
      die "process exited before $BIND_HOST:$port accepted connections (see $logfile)"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$logfile"
      die "timed out after ${timeout}s waiting for $BIND_HOST:$port (see $logfile)"
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- processes

# read_pid PIDFILE: print the pid stored in PIDFILE (empty if none).
read_pid() { if [[ -f "$1" ]]; then tr -dc '0-9' <"$1"; fi; }

# proc_running PID: true if PID exists and is not a zombie (a service whose
# parent shell is gone is reaped by PID 1, which may take a while).
proc_running() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

# pid_alive PIDFILE MARKER: true if the pid in PIDFILE is running and its
# command line contains MARKER (guards against pid reuse).
pid_alive() {
  local pid
  pid="$(read_pid "$1")"
  [[ -n "$pid" ]] || return 1
  proc_running "$pid" || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

# spawn PIDFILE OUTFILE MARKER CMD...: start CMD detached (own session, stdin
# from /dev/null, stdout+stderr appended to OUTFILE), record its pid, and wait
# (briefly) until the forked child has exec'd CMD, so that pid_alive PIDFILE
# MARKER is meaningful right after spawn returns.
spawn() {
  local pidfile=$1 outfile=$2 marker=$3; shift 3
  # In a non-interactive shell a background job is not a process-group
  # leader, so setsid(1) calls setsid() and execs CMD in place: $! is CMD's pid.
  # The lock fds (7, 8) are closed so the service does not hold our locks.
  setsid "$@" </dev/null >>"$outfile" 2>&1 7>&- 8>&- &
  local pid=$!
  printf '%s\n' "$pid" >"$pidfile"
  local i
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pidfile" "$marker" && return 0
    proc_running "$pid" || return 0  # died: the caller's wait reports it
    sleep 0.05
  done
  return 0
}

# guard_start NAME PIDFILE MARKER STOP_TIMEOUT_S: from now until start_ok,
# if the script exits with an error (a timeout, a failed readiness check, ^C),
# the process it spawned is stopped: no half-started service is left behind.
guard_start() {
  _guard=("$@")
  trap '_guard_exit' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
_guard_exit() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)) && pid_alive "${_guard[1]}" "${_guard[2]}"; then
    log "start failed: stopping the half-started ${_guard[0]}"
    (stop_pid "${_guard[@]}") || true
  fi
  exit "$rc"
}
start_ok() { trap - EXIT INT TERM; }

# stop_pid NAME PIDFILE MARKER TIMEOUT_S: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name=$1 pidfile=$2 marker=$3 timeout=$4 pid
  if ! pid_alive "$pidfile" "$marker"; then
    rm -f "$pidfile"
    log "$name is not running"
    return 0
  fi
  pid="$(read_pid "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout))
  while proc_running "$pid"; do
    if ((SECONDS >= deadline)); then
      log "$name did not exit within ${timeout}s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local kdeadline=$((SECONDS + 10))
      while proc_running "$pid"; do
        ((SECONDS < kdeadline)) || die "$name (pid $pid) survived SIGKILL"
        sleep 0.2
      done
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
  log "$name stopped"
}

# ---------------------------------------------------------------- test PKI

# The certificates every TLS test service uses, made once per services dir in
# <services dir>/tls (EC P-256 keys: quick to make):
#   ca.pem/ca.key                 "rmmwatch test CA", the CA clients trust
#   server.crt/server.key         SAN localhost, 127.0.0.1 (Kafka's TLS listeners, Redis TLS)
#   server-keystore.pem           PKCS#8 key + chain, the form Kafka's PEM keystore takes
#   misnamed.crt/.key, misnamed-keystore.pem
#                                 signed by the test CA, SAN only DNS:broker.invalid: a
#                                 client dialling 127.0.0.1 sees a hostname mismatch
#   client.crt/client.key         client certificate (EKU clientAuth) of the test CA
#   other-ca.pem, other-client.crt/.key
#                                 a second, unrelated CA and a client certificate it signed
TLS_DIR="$SERVICES_DIR/tls"

ensure_test_pki() {
  [[ -f "$TLS_DIR/.complete" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl is required to make the test certificates"
  # fd 6, closed again below: a service spawned later must not inherit this lock.
  if command -v flock >/dev/null 2>&1; then
    exec 6>"$SERVICES_DIR/tls.lock"
    flock -w 60 6 || die "timed out waiting for $SERVICES_DIR/tls.lock"
  fi
  if [[ ! -f "$TLS_DIR/.complete" ]]; then
    log "creating the test CAs and certificates in $TLS_DIR"
    local tmp="$TLS_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if ! (cd "$tmp" && _make_pki) >"$SERVICES_DIR/tls-openssl.log" 2>&1; then
      show_log_tail "$SERVICES_DIR/tls-openssl.log"
      rm -rf "$tmp"
      exec 6>&-
      die "openssl failed (log: $SERVICES_DIR/tls-openssl.log)"
    fi
    rm -rf "$TLS_DIR"
    mv "$tmp" "$TLS_DIR"
  fi
  exec 6>&-
}

# _make_pki: in the current directory. Every step checks its status itself: errexit
# does not apply inside a command whose status is tested (the caller's `if !`).
_make_pki() {
  local key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  _ca ca "rmmwatch test CA" || return 1
  _ca other-ca "rmmwatch other CA" || return 1
  _leaf server ca localhost serverAuth "DNS:localhost,IP:127.0.0.1" || return 1
  _leaf misnamed ca broker.invalid serverAuth "DNS:broker.invalid" || return 1
  _leaf client ca rmmwatch-client clientAuth "" || return 1
  _leaf other-client other-ca rmmwatch-client clientAuth "" || return 1
  # Kafka's PEM keystore wants an unencrypted PKCS#8 key (what `req -nodes` writes) followed
  # by the chain.
  cat server.key server.crt ca.pem >server-keystore.pem || return 1
  cat misnamed.key misnamed.crt ca.pem >misnamed-keystore.pem || return 1
  chmod 600 ./*.key ./*-keystore.pem || return 1
  rm -f ./*.srl
  openssl verify -CAfile ca.pem server.crt misnamed.crt client.crt || return 1
  openssl verify -CAfile other-ca.pem other-client.crt || return 1
  date '+%F %T' >.complete
}
_ca() {  # NAME CN
  openssl req -x509 -new "${key[@]}" -sha256 -days 3650 -keyout "$1.key" -out "$1.pem" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
}
_leaf() {  # NAME CA CN EXTENDED-USAGE SAN
  openssl req -new "${key[@]}" -sha256 -keyout "$1.key" -out "$1.csr" -subj "/CN=$3" || return 1
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=$4" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >"$1.ext"
  [[ -z "$5" ]] || printf 'subjectAltName=%s\n' "$5" >>"$1.ext"
  openssl x509 -req -sha256 -days 3650 -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
    -extfile "$1.ext" -out "$1.crt" || return 1
  rm -f "$1.csr" "$1.ext"
}

# ---------------------------------------------------------------- env files

# write_env NAME VAR=VALUE...: write <services dir>/NAME.env as
# "export VAR='VALUE'" lines (single-quoted, so '$' and ';' are literal).
write_env() {
  local name=$1; shift
  local tmp="$SERVICES_DIR/.$name.env.tmp" kv
  : >"$tmp"
  for kv in "$@"; do
    case "${kv#*=}" in *"'"*) die "env value for ${kv%%=*} contains a single quote" ;; esac
    printf "export %s='%s'\n" "${kv%%=*}" "${kv#*=}" >>"$tmp"
  done
  mv -f "$tmp" "$SERVICES_DIR/$name.env"
}

print_env() { cat "$SERVICES_DIR/$1.env"; }

usage_exit() {
  printf 'usage: %s start|stop|restart|status\n' "$1" >&2
  exit 2
}
