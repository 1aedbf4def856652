#!/usr/bin/env bash
# Apache Kafka (KRaft, single combined broker+controller) for the integration
# tests: kafka.sh start|stop|restart|status
#
# Jars come from Maven Central (scripts/services/kafka/pom.xml) into
# ${RMMWATCH_CACHE:-~/.cache/rmmwatch}/kafka-<version>/libs, fetched once.
# Listeners, all on 127.0.0.1:
#   PLAINTEXT  RMMWATCH_TEST_KAFKA_BOOTSTRAP
#   SASL_SSL   RMMWATCH_TEST_KAFKA_SASL_BOOTSTRAP, mechanism PLAIN, user
#              '$ConnectionString' / password = an Event Hubs style connection
#              string, exactly like the Azure Event Hubs Kafka endpoint
#   CONTROLLER (KRaft, internal)
# State (data, certs, secret, ports) lives in <services dir>/kafka* and is kept
# across restart. Writes <services dir>/kafka.env.
set -euo pipefail
SVC_NAME=kafka
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=kafka
KAFKA_VERSION="${RMMWATCH_KAFKA_VERSION:-4.4.0}"
START_TIMEOUT="${RMMWATCH_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${RMMWATCH_KAFKA_STOP_TIMEOUT:-45}"
FETCH_TIMEOUT="${RMMWATCH_KAFKA_FETCH_TIMEOUT:-900}"
KAFKA_HEAP_OPTS="${RMMWATCH_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"

KAFKA_SRC="$SERVICES_SCRIPT_DIR/kafka"
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
STATE="$SERVICES_DIR/kafka"
DATA="$STATE/data"
TLS="$STATE/tls"
CONF="$STATE/server.properties"
PIDFILE="$SERVICES_DIR/$NAME.pid"
LOGFILE="$SERVICES_DIR/$NAME.log"   # log4j2 broker log
OUTFILE="$SERVICES_DIR/$NAME.out"   # JVM stdout/stderr, storage format output
MARKER="$CONF"                      # the broker's command line contains its config path
CA_PEM="$TLS/ca.pem"
KEYSTORE_PEM="$TLS/server-keystore.pem"
SECRET_FILE="$STATE/shared-access-key"
CLUSTER_ID_FILE="$STATE/cluster.id"
EVENTHUBS_HOST="rmmwatch-test.servicebus.windows.net"

# ---------------------------------------------------------------- prerequisites

check_java() {
  command -v java >/dev/null 2>&1 || die "java (17+) is required"
  local v
  v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -1)"
  [[ "$v" =~ ^[0-9]+$ ]] || die "could not read the Java version (java -XshowSettings:properties -version)"
  ((v >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17+, found Java $v"
}

# Fetch the broker jars once per (version, pom content).
ensure_jars() {
  local stamp_want
  stamp_want="$KAFKA_VERSION $(sha256sum "$KAFKA_SRC/pom.xml" | cut -c1-16)"
  if [[ -f "$KAFKA_HOME/.complete" && "$(cat "$KAFKA_HOME/.complete")" == "$stamp_want" ]]; then
    return 0
  fi
  lock_cache "kafka-$KAFKA_VERSION" "$FETCH_TIMEOUT"
  if [[ -f "$KAFKA_HOME/.complete" && "$(cat "$KAFKA_HOME/.complete")" == "$stamp_want" ]]; then
    return 0  # fetched by a concurrent run while we waited for the lock
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn is required to fetch the Kafka jars from Maven Central"
  local tmp="$KAFKA_HOME.tmp.$$" mlog="$CACHE_DIR/kafka-$KAFKA_VERSION-fetch.log"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME (log: $mlog)"
  local attempt ok=0
  for attempt in 1 2; do  # one retry, for a registry hiccup
    if timeout --kill-after=30 "$FETCH_TIMEOUT" mvn -B -q -Dstyle.color=never \
        -f "$KAFKA_SRC/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" \
        >"$mlog" 2>&1; then
      ok=1
      break
    fi
    ((attempt == 2)) || { log "mvn failed; retrying once"; sleep 5; }
  done
  if ((ok == 0)); then
    show_log_tail "$mlog"
    rm -rf "$tmp"
    die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log: $mlog)"
  fi
  # Maven leaves target/ next to the pom; keep the work tree clean.
  rm -rf "$KAFKA_SRC/target"
  [[ -f "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn (log: $mlog)"
  cp "$KAFKA_SRC/pom.xml" "$tmp/pom.xml"
  printf '%s\n' "$stamp_want" >"$tmp/.complete"
  rm -rf "$KAFKA_HOME"
  mv "$tmp" "$KAFKA_HOME"
}

# Self-signed CA + server cert (SAN: localhost, 127.0.0.1), made once.
ensure_tls() {
  [[ -s "$CA_PEM" && -s "$KEYSTORE_PEM" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl is required to make the test certificates"
  log "creating a test CA and server certificate in $TLS"
  rm -rf "$TLS"
  mkdir -p "$TLS"
  local olog="$TLS/openssl.log"
  {
    openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
      -keyout "$TLS/ca.key" -out "$CA_PEM" -subj "/CN=rmmwatch test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash"
    openssl req -new -nodes -newkey rsa:2048 -sha256 \
      -keyout "$TLS/server.key" -out "$TLS/server.csr" -subj "/CN=localhost"
    printf '%s\n' \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      "subjectKeyIdentifier=hash" \
      "authorityKeyIdentifier=keyid,issuer" >"$TLS/server.ext"
    openssl x509 -req -sha256 -days 3650 -in "$TLS/server.csr" \
      -CA "$CA_PEM" -CAkey "$TLS/ca.key" -CAcreateserial \
      -extfile "$TLS/server.ext" -out "$TLS/server.crt"
    # Kafka's PEM keystore wants an unencrypted PKCS#8 key followed by the chain.
    openssl pkcs8 -topk8 -nocrypt -in "$TLS/server.key" -out "$TLS/server.pk8"
  } >"$olog" 2>&1 || { show_log_tail "$olog"; die "openssl failed (log: $olog)"; }
  cat "$TLS/server.pk8" "$TLS/server.crt" "$CA_PEM" >"$KEYSTORE_PEM.tmp"
  chmod 600 "$KEYSTORE_PEM.tmp" "$TLS/ca.key" "$TLS/server.key" "$TLS/server.pk8"
  mv "$KEYSTORE_PEM.tmp" "$KEYSTORE_PEM"
}

ensure_secret() {
  if [[ ! -s "$SECRET_FILE" ]]; then
    (umask 077 && openssl rand -base64 32 >"$SECRET_FILE.tmp")
    mv "$SECRET_FILE.tmp" "$SECRET_FILE"
  fi
  if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding.
    openssl rand -base64 16 | tr '+/' '-_' | tr -d '=\n' >"$CLUSTER_ID_FILE"
  fi
}

connection_string() {
  printf 'Endpoint=sb://%s/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=%s' \
    "$EVENTHUBS_HOST" "$(tr -d '\n' <"$SECRET_FILE")"
}

write_config() {
  local conn
  conn="$(connection_string)"
  # '$ConnectionString' is literal text: single-quoted printf arguments only.
  {
    printf '%s\n' \
      "# Generated by scripts/services/kafka.sh; rewritten on every start." \
      "process.roles=broker,controller" \
      "node.id=1" \
      "controller.quorum.voters=1@$BIND_HOST:$PORT_CONTROLLER" \
      "controller.listener.names=CONTROLLER" \
      "listeners=PLAINTEXT://$BIND_HOST:$PORT_PLAINTEXT,SASL_SSL://$BIND_HOST:$PORT_SASL,CONTROLLER://$BIND_HOST:$PORT_CONTROLLER" \
      "advertised.listeners=PLAINTEXT://$BIND_HOST:$PORT_PLAINTEXT,SASL_SSL://$BIND_HOST:$PORT_SASL" \
      "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL" \
      "inter.broker.listener.name=PLAINTEXT" \
      "" \
      "# SASL_SSL listener: PLAIN over TLS, like the Event Hubs Kafka endpoint." \
      "sasl.enabled.mechanisms=PLAIN" \
      "listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN" \
      "listener.name.sasl_ssl.ssl.keystore.type=PEM" \
      "listener.name.sasl_ssl.ssl.keystore.location=$KEYSTORE_PEM" \
      "listener.name.sasl_ssl.ssl.client.auth=none"
    # shellcheck disable=SC2016  # the '$' is meant literally
    printf 'listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required %s="%s";\n' \
      'user_$ConnectionString' "$conn"
    printf '%s\n' \
      "" \
      "log.dirs=$DATA" \
      "num.partitions=1" \
      "default.replication.factor=1" \
      "min.insync.replicas=1" \
      "offsets.topic.replication.factor=1" \
      "offsets.topic.num.partitions=5" \
      "transaction.state.log.replication.factor=1" \
      "transaction.state.log.min.isr=1" \
      "transaction.state.log.num.partitions=5" \
      "share.coordinator.state.topic.replication.factor=1" \
      "share.coordinator.state.topic.min.isr=1" \
      "group.initial.rebalance.delay.ms=0" \
      "broker.heartbeat.interval.ms=500" \
      "broker.session.timeout.ms=4000" \
      "auto.create.topics.enable=true" \
      "delete.topic.enable=true" \
      "log.retention.hours=87600" \
      "log.retention.check.interval.ms=3600000" \
      "num.network.threads=2" \
      "num.io.threads=4" \
      "num.recovery.threads.per.data.dir=1" \
      "background.threads=4"
  } >"$CONF.tmp"
  chmod 600 "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

java_cmd() {
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
  printf '%s\0' java $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.yaml" -Drmmwatch.kafka.log="$LOGFILE" \
    -Dkafka.logs.dir="$SERVICES_DIR" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

format_storage() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  log "formatting KRaft storage in $DATA (cluster id $(cat "$CLUSTER_ID_FILE"))"
  mkdir -p "$DATA"
  local -a cmd
  mapfile -d '' cmd < <(java_cmd kafka.tools.StorageTool format \
    --cluster-id "$(cat "$CLUSTER_ID_FILE")" --config "$CONF" --ignore-formatted)
  printf '== %s storage format\n' "$(date '+%F %T')" >>"$OUTFILE"
  if ! timeout --kill-after=10 120 "${cmd[@]}" </dev/null >>"$OUTFILE" 2>&1; then
    show_log_tail "$OUTFILE"
    die "kafka.tools.StorageTool format failed (see $OUTFILE)"
  fi
}

write_kafka_env() {
  write_env "$NAME" \
    "RMMWATCH_TEST_KAFKA_BOOTSTRAP=$BIND_HOST:$PORT_PLAINTEXT" \
    "RMMWATCH_TEST_KAFKA_SASL_BOOTSTRAP=$BIND_HOST:$PORT_SASL" \
    "RMMWATCH_TEST_KAFKA_SASL_CA=$CA_PEM" \
    "RMMWATCH_TEST_KAFKA_SASL_USERNAME=\$ConnectionString" \
    "RMMWATCH_TEST_EVENTHUBS_CONNECTION_STRING=$(connection_string)" \
    "RMMWATCH_TEST_KAFKA_HOME=$KAFKA_HOME" \
    "RMMWATCH_TEST_KAFKA_LOG=$LOGFILE"
}

# probe_listeners TIMEOUT_PER_TRY: a real ApiVersions + Metadata round trip on
# PLAINTEXT, and TLS + SASL/PLAIN + Metadata on SASL_SSL.
probe_listeners() {
  local t=${1:-5} err
  err="$(python3 "$KAFKA_SRC/probe.py" --timeout "$t" --bootstrap "$BIND_HOST:$PORT_PLAINTEXT" 2>&1 >/dev/null)" || {
    PROBE_ERR="$err"; return 1; }
  err="$(RMMWATCH_PROBE_PASSWORD="$(connection_string)" python3 "$KAFKA_SRC/probe.py" --timeout "$t" \
    --bootstrap "$BIND_HOST:$PORT_SASL" --sasl-ssl --ca "$CA_PEM" \
    --username "\$ConnectionString" --password-env RMMWATCH_PROBE_PASSWORD 2>&1 >/dev/null)" || {
    PROBE_ERR="$err"; return 1; }
  return 0
}

is_running() { pid_alive "$PIDFILE" "$MARKER"; }

# ---------------------------------------------------------------- commands

do_start() {
  ensure_dirs
  lock_service "$NAME"
  mkdir -p "$STATE"
  load_ports "$NAME" PLAINTEXT SASL CONTROLLER
  ensure_secret
  if is_running; then
    if probe_listeners 5; then
      log "already running (pid $(read_pid "$PIDFILE"))"
      write_kafka_env
      print_env "$NAME"
      return 0
    fi
    die "pid $(read_pid "$PIDFILE") is running but does not serve ($PROBE_ERR); run '$0 stop' first"
  fi
  rm -f "$PIDFILE"
  local t0=$SECONDS
  check_java
  ensure_jars
  ensure_tls
  check_port_free "$PORT_PLAINTEXT" "kafka PLAINTEXT"
  check_port_free "$PORT_SASL" "kafka SASL_SSL"
  check_port_free "$PORT_CONTROLLER" "kafka CONTROLLER"
  write_config
  format_storage

  log "starting Kafka $KAFKA_VERSION: PLAINTEXT $BIND_HOST:$PORT_PLAINTEXT, SASL_SSL $BIND_HOST:$PORT_SASL, controller $BIND_HOST:$PORT_CONTROLLER (log: $LOGFILE)"
  local -a cmd
  mapfile -d '' cmd < <(java_cmd kafka.Kafka "$CONF")
  printf '== %s broker start\n' "$(date '+%F %T')" >>"$OUTFILE"
  spawn "$PIDFILE" "$OUTFILE" "$MARKER" "${cmd[@]}"
  guard_start "$NAME" "$PIDFILE" "$MARKER" "$STOP_TIMEOUT"

  # The timeout counts from the JVM launch (a first-time jar fetch has its own).
  local deadline=$((SECONDS + START_TIMEOUT))
  wait_for_port "$PORT_PLAINTEXT" "$START_TIMEOUT" "$PIDFILE" "$MARKER" "$LOGFILE"
  wait_for_port "$PORT_SASL" $((deadline - SECONDS > 1 ? deadline - SECONDS : 1)) "$PIDFILE" "$MARKER" "$LOGFILE"
  PROBE_ERR=""
  until probe_listeners 5; do
    if ! is_running; then
      show_log_tail "$LOGFILE"; show_log_tail "$OUTFILE" 20
      die "broker exited during startup (see $LOGFILE and $OUTFILE)"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$LOGFILE"
      log "last probe error: $PROBE_ERR"
      die "broker did not serve within ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  start_ok
  write_kafka_env
  log "ready in $((SECONDS - t0))s (pid $(read_pid "$PIDFILE"))"
  print_env "$NAME"
}

do_stop() {
  ensure_dirs
  lock_service "$NAME"
  stop_pid "$NAME" "$PIDFILE" "$MARKER" "$STOP_TIMEOUT"
}

do_status() {
  ensure_dirs
  if ! is_running; then
    log "stopped"
    return 3
  fi
  load_ports "$NAME" PLAINTEXT SASL CONTROLLER
  if probe_listeners 5; then
    log "running (pid $(read_pid "$PIDFILE")): PLAINTEXT $BIND_HOST:$PORT_PLAINTEXT, SASL_SSL $BIND_HOST:$PORT_SASL"
    print_env "$NAME"
    return 0
  fi
  log "process $(read_pid "$PIDFILE") is running but not serving: $PROBE_ERR"
  return 1
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  restart) (do_stop) && do_start ;;
  status) do_status ;;
  *) usage_exit "$0" ;;
esac
