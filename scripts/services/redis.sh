#!/usr/bin/env bash
# Redis for the integration tests: redis.sh start|stop|restart|status
#
# Runs two Debian redis-server processes (apt-installed if missing), both on
# 127.0.0.1, no persistence (data is lost on restart; ports and secrets are kept):
#   redis      plain, no password                   RMMWATCH_TEST_REDIS_URL
#   redis-tls  TLS only (--tls-port; certificate of lib.sh's test PKI, clients
#              need none), users from an ACL file:   RMMWATCH_TEST_REDIS_TLS_URL
#                default        password RMMWATCH_TEST_REDIS_TLS_PASSWORD, every key
#                rmmwatch-acl   password RMMWATCH_TEST_REDIS_ACL_PASSWORD, only keys
#                               starting with '{rmmwatch-acl:' (the store's keys with
#                               --redis-prefix rmmwatch-acl), no @dangerous commands
# Writes <services dir>/redis.env.
set -euo pipefail
SVC_NAME=redis
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=redis
START_TIMEOUT="${RMMWATCH_REDIS_START_TIMEOUT:-30}"
STOP_TIMEOUT="${RMMWATCH_REDIS_STOP_TIMEOUT:-15}"
MARKER="redis-server"
TLS_STATE="$SERVICES_DIR/redis-tls"
ACL_FILE="$TLS_STATE/users.acl"
ACL_USER=rmmwatch-acl
ACL_PREFIX=rmmwatch-acl

pidfile_of() { printf '%s\n' "$SERVICES_DIR/$1.pid"; }
logfile_of() { printf '%s\n' "$SERVICES_DIR/$1.log"; }

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "redis-server is missing and apt-get is not available"
  log "redis-server missing: installing Debian package redis-server"
  local aptlog="$CACHE_DIR/apt-redis.log"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 600 "${sudo[@]}" apt-get install -y -q redis-server >"$aptlog" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    timeout 600 "${sudo[@]}" apt-get update -q >>"$aptlog" 2>&1 || true
    timeout 600 "${sudo[@]}" apt-get install -y -q redis-server >>"$aptlog" 2>&1 || {
      show_log_tail "$aptlog"
      die "could not install redis-server (log: $aptlog)"
    }
  fi
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
}

secret_of() { tr -d '\n' <"$TLS_STATE/$1.password"; }

# The TLS instance's passwords (random, kept) and its ACL file (rewritten on every start).
ensure_acl() {
  mkdir -p "$TLS_STATE"
  local who
  for who in default "$ACL_USER"; do
    if [[ ! -s "$TLS_STATE/$who.password" ]]; then
      (umask 077 && openssl rand -hex 16 >"$TLS_STATE/$who.password.tmp")
      mv "$TLS_STATE/$who.password.tmp" "$TLS_STATE/$who.password"
    fi
  done
  # '#<sha256>' keeps the clear password out of the file; '{' is literal in ACL key patterns.
  (umask 077 && printf '%s\n' \
    "user default on #$(secret_of default | sha256sum | cut -d' ' -f1) ~* &* +@all" \
    "user $ACL_USER on #$(secret_of "$ACL_USER" | sha256sum | cut -d' ' -f1) resetkeys ~{$ACL_PREFIX:* resetchannels +@all -@dangerous" \
    >"$ACL_FILE.tmp")
  mv "$ACL_FILE.tmp" "$ACL_FILE"
}

# redis_ping INSTANCE PORT: PING answered with PONG (over TLS, as both users, for redis-tls).
redis_ping() {
  local instance=$1 port=$2 reply
  if [[ "$instance" == redis-tls ]]; then
    local who
    for who in default "$ACL_USER"; do
      reply="$(REDISCLI_AUTH="$(secret_of "$who")" timeout 3 redis-cli --tls --cacert "$TLS_DIR/ca.pem" \
        -h "$BIND_HOST" -p "$port" --user "$who" --no-auth-warning PING 2>/dev/null)" || return 1
      [[ "$reply" == PONG* ]] || return 1
    done
    return 0
  fi
  # RESP inline PING over bash /dev/tcp; expects +PONG.
  # shellcheck disable=SC2016  # expanded by the inner bash
  reply="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "PING\r\n" >&3
    IFS= read -r line <&3; printf "%s" "$line"' "$BIND_HOST" "$port" 2>/dev/null)" || return 1
  [[ "$reply" == "+PONG"* ]]
}

is_running() { pid_alive "$(pidfile_of "$1")" "$MARKER"; }

write_redis_env() {
  write_env "$NAME" \
    "RMMWATCH_TEST_REDIS_URL=redis://$BIND_HOST:$PORT_PORT/0" \
    "RMMWATCH_TEST_REDIS_TLS_URL=rediss://$BIND_HOST:$PORT_TLS/0" \
    "RMMWATCH_TEST_REDIS_TLS_CA=$TLS_DIR/ca.pem" \
    "RMMWATCH_TEST_REDIS_TLS_PASSWORD=$(secret_of default)" \
    "RMMWATCH_TEST_REDIS_ACL_USERNAME=$ACL_USER" \
    "RMMWATCH_TEST_REDIS_ACL_PASSWORD=$(secret_of "$ACL_USER")" \
    "RMMWATCH_TEST_REDIS_ACL_PREFIX=$ACL_PREFIX"
}

# start_instance INSTANCE PORT ARGS...: start one redis-server unless it already serves.
start_instance() {
  local instance=$1 port=$2; shift 2
  local pidfile logfile
  pidfile="$(pidfile_of "$instance")"
  logfile="$(logfile_of "$instance")"
  if is_running "$instance"; then
    if redis_ping "$instance" "$port"; then
      log "$instance already running on $BIND_HOST:$port (pid $(read_pid "$pidfile"))"
      return 0
    fi
    die "pid $(read_pid "$pidfile") ($instance) is running but does not answer PING on $BIND_HOST:$port; run '$0 stop' first"
  fi
  rm -f "$pidfile"
  check_port_free "$port" "$instance"
  log "starting $instance on $BIND_HOST:$port"
  printf '== %s start\n' "$(date '+%F %T')" >>"$logfile"
  # --ignore-warnings ARM64-COW-BUG only matters on arm64 kernels; harmless elsewhere.
  spawn "$pidfile" "$SERVICES_DIR/$instance.out" "$MARKER" redis-server \
    --bind "$BIND_HOST" --protected-mode yes \
    --save '' --appendonly no --daemonize no \
    --dir "$SERVICES_DIR" --dbfilename "$instance-unused.rdb" \
    --logfile "$logfile" --loglevel notice "$@"
  guard_start "$instance" "$pidfile" "$MARKER" "$STOP_TIMEOUT"
  wait_for_port "$port" "$START_TIMEOUT" "$pidfile" "$MARKER" "$logfile"
  local deadline=$((SECONDS + START_TIMEOUT))
  until redis_ping "$instance" "$port"; do
    is_running "$instance" || { show_log_tail "$logfile"; die "$instance exited during startup"; }
    ((SECONDS < deadline)) || { show_log_tail "$logfile"; die "no PONG from $instance on $BIND_HOST:$port after ${START_TIMEOUT}s"; }
    sleep 0.1
  done
  start_ok
  log "$instance ready on $BIND_HOST:$port (pid $(read_pid "$pidfile"))"
}

do_start() {
  ensure_dirs
  lock_service "$NAME"
  load_ports "$NAME" PORT TLS
  ensure_redis
  ensure_test_pki
  ensure_acl
  local plain_was_running=0
  is_running redis && plain_was_running=1
  start_instance redis "$PORT_PORT" --port "$PORT_PORT"
  if ! (start_instance redis-tls "$PORT_TLS" --port 0 --tls-port "$PORT_TLS" \
      --tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" \
      --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients no --aclfile "$ACL_FILE"); then
    # One service: the plain instance this run started does not stay behind alone.
    ((plain_was_running == 1)) || stop_pid redis "$(pidfile_of redis)" "$MARKER" "$STOP_TIMEOUT" || true
    die "redis-tls failed to start"
  fi
  write_redis_env
  print_env "$NAME"
}

do_stop() {
  ensure_dirs
  lock_service "$NAME"
  local rc=0 instance
  for instance in redis-tls redis; do
    stop_pid "$instance" "$(pidfile_of "$instance")" "$MARKER" "$STOP_TIMEOUT" || rc=1
  done
  return "$rc"
}

do_status() {
  ensure_dirs
  if is_running redis && is_running redis-tls && load_ports "$NAME" PORT TLS \
      && redis_ping redis "$PORT_PORT" && redis_ping redis-tls "$PORT_TLS"; then
    log "running on $BIND_HOST:$PORT_PORT (pid $(read_pid "$(pidfile_of redis)")) and TLS $BIND_HOST:$PORT_TLS (pid $(read_pid "$(pidfile_of redis-tls)"))"
    print_env "$NAME"
    return 0
  fi
  log "stopped (or only one of redis, redis-tls running)"
  return 3
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  restart) (do_stop) && do_start ;;
  status) do_status ;;
  *) usage_exit "$0" ;;
esac
