#!/usr/bin/env bash
# Redis for the integration tests: redis.sh start|stop|restart|status
#
# Runs Debian's redis-server (apt-installed if missing) on 127.0.0.1:<port>,
# no persistence (data is lost on restart; the port is kept).
# Writes <services dir>/redis.env with RMMWATCH_TEST_REDIS_URL.
set -euo pipefail
SVC_NAME=redis
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=redis
START_TIMEOUT="${RMMWATCH_REDIS_START_TIMEOUT:-30}"
STOP_TIMEOUT="${RMMWATCH_REDIS_STOP_TIMEOUT:-15}"
PIDFILE="$SERVICES_DIR/$NAME.pid"
LOGFILE="$SERVICES_DIR/$NAME.log"
OUTFILE="$SERVICES_DIR/$NAME.out"
MARKER="redis-server"

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

redis_ping() {
  # RESP inline PING over bash /dev/tcp; expects +PONG.
  local port=$1 reply
  # shellcheck disable=SC2016  # expanded by the inner bash
  reply="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "PING\r\n" >&3
    IFS= read -r line <&3; printf "%s" "$line"' "$BIND_HOST" "$port" 2>/dev/null)" || return 1
  [[ "$reply" == "+PONG"* ]]
}

is_running() { pid_alive "$PIDFILE" "$MARKER"; }

do_start() {
  ensure_dirs
  lock_service "$NAME"
  load_ports "$NAME" PORT
  local port=$PORT_PORT
  if is_running; then
    if redis_ping "$port"; then
      log "already running on $BIND_HOST:$port (pid $(read_pid "$PIDFILE"))"
      write_env "$NAME" "RMMWATCH_TEST_REDIS_URL=redis://$BIND_HOST:$port/0"
      print_env "$NAME"
      return 0
    fi
    die "pid $(read_pid "$PIDFILE") is running but does not answer PING on $BIND_HOST:$port; run '$0 stop' first"
  fi
  rm -f "$PIDFILE"
  ensure_redis
  check_port_free "$port" redis
  log "starting redis-server on $BIND_HOST:$port"
  printf '== %s start\n' "$(date '+%F %T')" >>"$LOGFILE"
  # --ignore-warnings ARM64-COW-BUG only matters on arm64 kernels; harmless elsewhere.
  spawn "$PIDFILE" "$OUTFILE" "$MARKER" redis-server \
    --bind "$BIND_HOST" --port "$port" --protected-mode yes \
    --save '' --appendonly no --daemonize no \
    --dir "$SERVICES_DIR" --dbfilename "$NAME-unused.rdb" \
    --logfile "$LOGFILE" --loglevel notice
  guard_start "$NAME" "$PIDFILE" "$MARKER" "$STOP_TIMEOUT"
  wait_for_port "$port" "$START_TIMEOUT" "$PIDFILE" "$MARKER" "$LOGFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until redis_ping "$port"; do
    is_running || { show_log_tail "$LOGFILE"; die "redis-server exited during startup"; }
    ((SECONDS < deadline)) || { show_log_tail "$LOGFILE"; die "no PONG from $BIND_HOST:$port after ${START_TIMEOUT}s"; }
    sleep 0.2
  done
  start_ok
  write_env "$NAME" "RMMWATCH_TEST_REDIS_URL=redis://$BIND_HOST:$port/0"
  log "ready: redis://$BIND_HOST:$port/0 (pid $(read_pid "$PIDFILE"))"
  print_env "$NAME"
}

do_stop() {
  ensure_dirs
  lock_service "$NAME"
  stop_pid "$NAME" "$PIDFILE" "$MARKER" "$STOP_TIMEOUT"
}

do_status() {
  ensure_dirs
  if is_running && load_ports "$NAME" PORT && redis_ping "$PORT_PORT"; then
    log "running on $BIND_HOST:$PORT_PORT (pid $(read_pid "$PIDFILE"))"
    print_env "$NAME"
    return 0
  fi
  log "stopped"
  return 3
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  restart) (do_stop) && do_start ;;
  status) do_status ;;
  *) usage_exit "$0" ;;
esac
