#!/usr/bin/env bash
# Azurite (Azure Blob Storage emulator) for the integration tests:
# azurite.sh start|stop|restart|status
#
# npm-installs azurite once into ${RMMWATCH_CACHE:-~/.cache/rmmwatch}/azurite-<version>
# and runs only the blob service on 127.0.0.1:<port>, in memory (blobs are
# lost on restart; the port is kept). Writes <services dir>/azurite.env.
set -euo pipefail
SVC_NAME=azurite
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=azurite
# 3.35.0 is the newest azurite 3.x whose engines accept Node 20 (3.36+ need Node >= 21/22).
AZURITE_VERSION="${RMMWATCH_AZURITE_VERSION:-3.35.0}"
START_TIMEOUT="${RMMWATCH_AZURITE_START_TIMEOUT:-60}"
STOP_TIMEOUT="${RMMWATCH_AZURITE_STOP_TIMEOUT:-15}"
INSTALL_TIMEOUT="${RMMWATCH_AZURITE_INSTALL_TIMEOUT:-900}"

AZ_HOME="$CACHE_DIR/azurite-$AZURITE_VERSION"
AZ_MAIN="$AZ_HOME/node_modules/azurite/dist/src/blob/main.js"
WORKSPACE="$SERVICES_DIR/azurite"
PIDFILE="$SERVICES_DIR/$NAME.pid"
LOGFILE="$SERVICES_DIR/$NAME.log"
MARKER="azurite/dist/src/blob/main.js"

ACCOUNT=devstoreaccount1
ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

ensure_azurite() {
  [[ -f "$AZ_HOME/.complete" && -f "$AZ_MAIN" ]] && return 0
  lock_cache "azurite-$AZURITE_VERSION" "$INSTALL_TIMEOUT"
  [[ -f "$AZ_HOME/.complete" && -f "$AZ_MAIN" ]] && return 0
  command -v node >/dev/null 2>&1 || die "node is required for azurite"
  command -v npm >/dev/null 2>&1 || die "npm is required to install azurite"
  local tmp="$AZ_HOME.tmp.$$" nlog="$CACHE_DIR/azurite-$AZURITE_VERSION-install.log"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "installing azurite@$AZURITE_VERSION with npm into $AZ_HOME (log: $nlog)"
  printf '{"name":"rmmwatch-azurite","private":true}\n' >"$tmp/package.json"
  local attempt ok=0
  for attempt in 1 2; do  # one retry, for a registry hiccup
    if (cd "$tmp" && timeout --kill-after=30 "$INSTALL_TIMEOUT" npm install --no-audit --no-fund \
        --no-update-notifier --loglevel=error "azurite@$AZURITE_VERSION") >"$nlog" 2>&1; then
      ok=1
      break
    fi
    ((attempt == 2)) || { log "npm install failed; retrying once"; sleep 5; }
  done
  if ((ok == 0)); then
    show_log_tail "$nlog"
    rm -rf "$tmp"
    die "npm install azurite@$AZURITE_VERSION failed (log: $nlog)"
  fi
  [[ -f "$tmp/node_modules/azurite/dist/src/blob/main.js" ]] || die "azurite installed but blob/main.js is missing (log: $nlog)"
  printf '%s\n' "$AZURITE_VERSION" >"$tmp/.complete"
  rm -rf "$AZ_HOME"
  mv "$tmp" "$AZ_HOME"
}

# http_ok PORT: the blob endpoint answers HTTP (any status: an unsigned list
# request gets 403, which still proves the server is up).
http_ok() {
  local code
  if command -v curl >/dev/null 2>&1; then
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
      "http://$BIND_HOST:$1/$ACCOUNT?comp=list" 2>/dev/null)" || true
    [[ -n "$code" && "$code" != 000 ]]
  else
    port_in_use "$1"
  fi
}

is_running() { pid_alive "$PIDFILE" "$MARKER"; }

write_azurite_env() {
  local url="http://$BIND_HOST:$PORT_BLOB/$ACCOUNT"
  write_env "$NAME" \
    "RMMWATCH_TEST_AZURITE_BLOB_URL=$url" \
    "RMMWATCH_TEST_AZURITE_CONNECTION_STRING=DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$ACCOUNT_KEY;BlobEndpoint=$url;"
}

do_start() {
  ensure_dirs
  lock_service "$NAME"
  load_ports "$NAME" BLOB
  if is_running; then
    if http_ok "$PORT_BLOB"; then
      log "already running on $BIND_HOST:$PORT_BLOB (pid $(read_pid "$PIDFILE"))"
      write_azurite_env
      print_env "$NAME"
      return 0
    fi
    die "pid $(read_pid "$PIDFILE") is running but $BIND_HOST:$PORT_BLOB does not answer; run '$0 stop' first"
  fi
  rm -f "$PIDFILE"
  local t0=$SECONDS
  ensure_azurite
  check_port_free "$PORT_BLOB" "azurite blob"
  rm -rf "$WORKSPACE"
  mkdir -p "$WORKSPACE"
  local -a extra=(--silent)
  [[ "${RMMWATCH_AZURITE_ACCESS_LOG:-0}" == 1 ]] && extra=()
  log "starting azurite-blob $AZURITE_VERSION on $BIND_HOST:$PORT_BLOB (log: $LOGFILE)"
  printf '== %s start\n' "$(date '+%F %T')" >>"$LOGFILE"
  # --disableTelemetry: no network but the package registries here.
  # --inMemoryPersistence: nothing on disk. It refuses --location, so the
  # workspace (azurite's default location) is given as the working directory.
  (cd "$WORKSPACE" && spawn "$PIDFILE" "$LOGFILE" "$MARKER" node "$AZ_MAIN" \
    --blobHost "$BIND_HOST" --blobPort "$PORT_BLOB" --inMemoryPersistence \
    --skipApiVersionCheck --loose --disableTelemetry "${extra[@]}")
  guard_start "$NAME" "$PIDFILE" "$MARKER" "$STOP_TIMEOUT"
  local deadline=$((SECONDS + START_TIMEOUT))
  wait_for_port "$PORT_BLOB" "$START_TIMEOUT" "$PIDFILE" "$MARKER" "$LOGFILE"
  until http_ok "$PORT_BLOB"; do
    is_running || { show_log_tail "$LOGFILE"; die "azurite exited during startup"; }
    ((SECONDS < deadline)) || { show_log_tail "$LOGFILE"; die "no HTTP answer from $BIND_HOST:$PORT_BLOB after ${START_TIMEOUT}s"; }
    sleep 0.2
  done
  start_ok
  write_azurite_env
  log "ready in $((SECONDS - t0))s: http://$BIND_HOST:$PORT_BLOB/$ACCOUNT (pid $(read_pid "$PIDFILE"))"
  print_env "$NAME"
}

do_stop() {
  ensure_dirs
  lock_service "$NAME"
  stop_pid "$NAME" "$PIDFILE" "$MARKER" "$STOP_TIMEOUT"
}

do_status() {
  ensure_dirs
  if is_running && load_ports "$NAME" BLOB && http_ok "$PORT_BLOB"; then
    log "running on $BIND_HOST:$PORT_BLOB (pid $(read_pid "$PIDFILE"))"
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
