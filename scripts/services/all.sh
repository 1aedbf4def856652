#!/usr/bin/env bash
# All test services: all.sh start|stop|status
#
#   start  : start kafka, redis, azurite (each is a no-op if already running),
#            then write <services dir>/env = the three <name>.env files and
#            print it. If one fails, the services this run started are stopped
#            again and the exit status is non-zero.
#   stop   : stop all three (always tries all of them).
#   status : report each; exit 0 only if all three serve.
#
# Use:  eval "$(scripts/services/all.sh start)"   or
#       scripts/services/all.sh start >/dev/null && . .services/env
set -euo pipefail
SVC_NAME=all
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVICES=(kafka redis azurite)
HERE="$SERVICES_SCRIPT_DIR"

svc_running() { "$HERE/$1.sh" status >/dev/null 2>&1; }

do_start() {
  ensure_dirs
  local started=() svc
  rm -f "$SERVICES_DIR/env"
  for svc in "${SERVICES[@]}"; do
    local was_running=0
    svc_running "$svc" && was_running=1
    if ! "$HERE/$svc.sh" start >/dev/null; then
      log "$svc failed to start"
      # Stop what this run started, newest first; leave what was already up.
      if ((was_running == 0)); then "$HERE/$svc.sh" stop || true; fi
      local i
      for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        "$HERE/${started[$i]}.sh" stop || true
      done
      die "could not start $svc; stopped: ${started[*]:-nothing else}"
    fi
    ((was_running == 1)) || started+=("$svc")
  done
  local tmp="$SERVICES_DIR/.env.tmp"
  : >"$tmp"
  for svc in "${SERVICES[@]}"; do cat "$SERVICES_DIR/$svc.env" >>"$tmp"; done
  mv -f "$tmp" "$SERVICES_DIR/env"
  log "all services ready; env file: $SERVICES_DIR/env"
  cat "$SERVICES_DIR/env"
}

do_stop() {
  ensure_dirs
  local rc=0 svc
  for svc in "${SERVICES[@]}"; do
    "$HERE/$svc.sh" stop || rc=1
  done
  rm -f "$SERVICES_DIR/env"
  return "$rc"
}

do_status() {
  local rc=0 svc
  for svc in "${SERVICES[@]}"; do
    "$HERE/$svc.sh" status >/dev/null || rc=3
  done
  if ((rc == 0)) && [[ -f "$SERVICES_DIR/env" ]]; then cat "$SERVICES_DIR/env"; fi
  return "$rc"
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) printf 'usage: %s start|stop|status\n' "$0" >&2; exit 2 ;;
esac
