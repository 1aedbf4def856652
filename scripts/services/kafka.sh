#!/usr/bin/env bash
# Apache Kafka (KRaft, single combined broker+controller) for the integration
# tests: kafka.sh start|stop|restart|status
#
# Jars come from Maven Central (scripts/services/kafka/pom.xml) into
# ${RMMWATCH_CACHE:-~/.cache/rmmwatch}/kafka-<version>/libs, fetched once.
# Listeners, all on 127.0.0.1 (certificates: lib.sh's test PKI, <services dir>/tls):
#   PLAINTEXT       RMMWATCH_TEST_KAFKA_BOOTSTRAP
#   SASL_SSL        RMMWATCH_TEST_KAFKA_SASL_BOOTSTRAP: user '$ConnectionString' /
#                   password = an Event Hubs style connection string (PLAIN), exactly
#                   like the Azure Event Hubs Kafka endpoint; and the users below
#   SSL             RMMWATCH_TEST_KAFKA_SSL_BOOTSTRAP: mutual TLS, a client certificate
#                   of the test CA required
#   SASL_PLAINTEXT  RMMWATCH_TEST_KAFKA_SASL_PLAINTEXT_BOOTSTRAP: the users below
#   MISNAMED        RMMWATCH_TEST_KAFKA_MISNAMED_BOOTSTRAP: SSL without client
#                   certificates, server certificate for broker.invalid only (a
#                   hostname mismatch for a client that dials 127.0.0.1)
#   CONTROLLER      (KRaft, internal)
# Users of both SASL listeners: rmmwatch-plain (PLAIN), rmmwatch-scram256
# (SCRAM-SHA-256) and rmmwatch-scram512 (SCRAM-SHA-512), the SCRAM ones made by
# StorageTool format --add-scram, random passwords; OAUTHBEARER with Kafka's
# unsecured validator (an unsigned JWS with a sub claim).
# State (data, secrets, ports) lives in <services dir>/kafka* and is kept across
# restart. Writes <services dir>/kafka.env.
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
CONF="$STATE/server.properties"
PIDFILE="$SERVICES_DIR/$NAME.pid"
LOGFILE="$SERVICES_DIR/$NAME.log"   # log4j2 broker log
OUTFILE="$SERVICES_DIR/$NAME.out"   # JVM stdout/stderr, storage format output
MARKER="$CONF"                      # the broker's command line contains its config path
CA_PEM="$TLS_DIR/ca.pem"
KEYSTORE_PEM="$TLS_DIR/server-keystore.pem"
MISNAMED_KEYSTORE_PEM="$TLS_DIR/misnamed-keystore.pem"
SECRET_FILE="$STATE/shared-access-key"
PLAIN_USER=rmmwatch-plain
SCRAM256_USER=rmmwatch-scram256
SCRAM512_USER=rmmwatch-scram512
SCRAM_STAMP="$DATA/rmmwatch-scram-users"  # written once format made the SCRAM users
CLUSTER_ID_FILE="$STATE/cluster.id"
EVENTHUBS_HOST="rmmwatch-test.servicebus.windows.net"
PORT_KEYS=(PLAINTEXT SASL SSL SASL_PLAINTEXT MISNAMED CONTROLLER)

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

ensure_secret() {
  if [[ ! -s "$SECRET_FILE" ]]; then
    (umask 077 && openssl rand -base64 32 >"$SECRET_FILE.tmp")
    mv "$SECRET_FILE.tmp" "$SECRET_FILE"
  fi
  local user
  for user in "$PLAIN_USER" "$SCRAM256_USER" "$SCRAM512_USER"; do
    # Hex: safe inside JAAS quotes and StorageTool's [name=...,password=...] syntax.
    if [[ ! -s "$STATE/$user.password" ]]; then
      (umask 077 && openssl rand -hex 16 >"$STATE/$user.password.tmp")
      mv "$STATE/$user.password.tmp" "$STATE/$user.password"
    fi
  done
  if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding.
    openssl rand -base64 16 | tr '+/' '-_' | tr -d '=\n' >"$CLUSTER_ID_FILE"
  fi
}

password_of() { tr -d '\n' <"$STATE/$1.password"; }

connection_string() {
  printf 'Endpoint=sb://%s/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=%s' \
    "$EVENTHUBS_HOST" "$(tr -d '\n' <"$SECRET_FILE")"
}

write_config() {
  local conn listener l
  conn="$(connection_string)"
  {
    printf '%s\n' \
      "# Generated by scripts/services/kafka.sh; rewritten on every start." \
      "process.roles=broker,controller" \
      "node.id=1" \
      "controller.quorum.voters=1@$BIND_HOST:$PORT_CONTROLLER" \
      "controller.listener.names=CONTROLLER" \
      "listeners=PLAINTEXT://$BIND_HOST:$PORT_PLAINTEXT,SASL_SSL://$BIND_HOST:$PORT_SASL,SSL://$BIND_HOST:$PORT_SSL,SASL_PLAINTEXT://$BIND_HOST:$PORT_SASL_PLAINTEXT,MISNAMED://$BIND_HOST:$PORT_MISNAMED,CONTROLLER://$BIND_HOST:$PORT_CONTROLLER" \
      "advertised.listeners=PLAINTEXT://$BIND_HOST:$PORT_PLAINTEXT,SASL_SSL://$BIND_HOST:$PORT_SASL,SSL://$BIND_HOST:$PORT_SSL,SASL_PLAINTEXT://$BIND_HOST:$PORT_SASL_PLAINTEXT,MISNAMED://$BIND_HOST:$PORT_MISNAMED" \
      "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,MISNAMED:SSL" \
      "inter.broker.listener.name=PLAINTEXT" \
      "" \
      "# SASL_SSL: PLAIN over TLS like the Event Hubs Kafka endpoint, plus SCRAM and OAUTHBEARER." \
      "listener.name.sasl_ssl.ssl.keystore.type=PEM" \
      "listener.name.sasl_ssl.ssl.keystore.location=$KEYSTORE_PEM" \
      "listener.name.sasl_ssl.ssl.client.auth=none" \
      "# SSL: mutual TLS, the client's certificate must come from the test CA." \
      "listener.name.ssl.ssl.keystore.type=PEM" \
      "listener.name.ssl.ssl.keystore.location=$KEYSTORE_PEM" \
      "listener.name.ssl.ssl.truststore.type=PEM" \
      "listener.name.ssl.ssl.truststore.location=$CA_PEM" \
      "listener.name.ssl.ssl.client.auth=required" \
      "# MISNAMED: TLS whose certificate names broker.invalid only." \
      "listener.name.misnamed.ssl.keystore.type=PEM" \
      "listener.name.misnamed.ssl.keystore.location=$MISNAMED_KEYSTORE_PEM" \
      "listener.name.misnamed.ssl.client.auth=none" \
      "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER"
    for listener in SASL_SSL SASL_PLAINTEXT; do
      l="listener.name.${listener,,}"
      printf '%s\n' "$l.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER"
      # '$ConnectionString' is literal text: single-quoted printf arguments only.
      # shellcheck disable=SC2016  # the '$' is meant literally
      printf '%s.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required %s="%s" user_%s="%s";\n' \
        "$l" 'user_$ConnectionString' "$conn" "$PLAIN_USER" "$(password_of "$PLAIN_USER")"
      printf '%s\n' \
        "$l.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;" \
        "$l.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;" \
        "$l.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"rmmwatch-broker\";" \
        "$l.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler"
    done
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
  if [[ -f "$DATA/meta.properties" ]]; then
    [[ -f "$SCRAM_STAMP" ]] && return 0
    # SCRAM users are made by format only: a data dir formatted by an older kafka.sh has none.
    die "$DATA was formatted without the SCRAM test users: stop Kafka, remove $DATA (test data only) and start again"
  fi
  log "formatting KRaft storage in $DATA (cluster id $(cat "$CLUSTER_ID_FILE")) with the SCRAM users"
  mkdir -p "$DATA"
  local -a cmd
  mapfile -d '' cmd < <(java_cmd kafka.tools.StorageTool format \
    --cluster-id "$(cat "$CLUSTER_ID_FILE")" --config "$CONF" --ignore-formatted \
    --add-scram "SCRAM-SHA-256=[name=$SCRAM256_USER,password=$(password_of "$SCRAM256_USER")]" \
    --add-scram "SCRAM-SHA-512=[name=$SCRAM512_USER,password=$(password_of "$SCRAM512_USER")]")
  printf '== %s storage format\n' "$(date '+%F %T')" >>"$OUTFILE"
  if ! timeout --kill-after=10 120 "${cmd[@]}" </dev/null >>"$OUTFILE" 2>&1; then
    show_log_tail "$OUTFILE"
    die "kafka.tools.StorageTool format failed (see $OUTFILE)"
  fi
  printf '%s %s\n' "$SCRAM256_USER" "$SCRAM512_USER" >"$SCRAM_STAMP"
}

write_kafka_env() {
  write_env "$NAME" \
    "RMMWATCH_TEST_KAFKA_BOOTSTRAP=$BIND_HOST:$PORT_PLAINTEXT" \
    "RMMWATCH_TEST_KAFKA_SASL_BOOTSTRAP=$BIND_HOST:$PORT_SASL" \
    "RMMWATCH_TEST_KAFKA_SASL_CA=$CA_PEM" \
    "RMMWATCH_TEST_KAFKA_SASL_USERNAME=\$ConnectionString" \
    "RMMWATCH_TEST_EVENTHUBS_CONNECTION_STRING=$(connection_string)" \
    "RMMWATCH_TEST_KAFKA_SSL_BOOTSTRAP=$BIND_HOST:$PORT_SSL" \
    "RMMWATCH_TEST_KAFKA_SASL_PLAINTEXT_BOOTSTRAP=$BIND_HOST:$PORT_SASL_PLAINTEXT" \
    "RMMWATCH_TEST_KAFKA_MISNAMED_BOOTSTRAP=$BIND_HOST:$PORT_MISNAMED" \
    "RMMWATCH_TEST_KAFKA_PLAIN_USERNAME=$PLAIN_USER" \
    "RMMWATCH_TEST_KAFKA_PLAIN_PASSWORD=$(password_of "$PLAIN_USER")" \
    "RMMWATCH_TEST_KAFKA_SCRAM_SHA_256_USERNAME=$SCRAM256_USER" \
    "RMMWATCH_TEST_KAFKA_SCRAM_SHA_256_PASSWORD=$(password_of "$SCRAM256_USER")" \
    "RMMWATCH_TEST_KAFKA_SCRAM_SHA_512_USERNAME=$SCRAM512_USER" \
    "RMMWATCH_TEST_KAFKA_SCRAM_SHA_512_PASSWORD=$(password_of "$SCRAM512_USER")" \
    "RMMWATCH_TEST_TLS_CA=$CA_PEM" \
    "RMMWATCH_TEST_TLS_CLIENT_CERT=$TLS_DIR/client.crt" \
    "RMMWATCH_TEST_TLS_CLIENT_KEY=$TLS_DIR/client.key" \
    "RMMWATCH_TEST_TLS_OTHER_CA=$TLS_DIR/other-ca.pem" \
    "RMMWATCH_TEST_TLS_OTHER_CLIENT_CERT=$TLS_DIR/other-client.crt" \
    "RMMWATCH_TEST_TLS_OTHER_CLIENT_KEY=$TLS_DIR/other-client.key" \
    "RMMWATCH_TEST_KAFKA_HOME=$KAFKA_HOME" \
    "RMMWATCH_TEST_KAFKA_LOG=$LOGFILE"
}

# probe_listeners TIMEOUT_PER_TRY: a real round trip (ApiVersions, authentication,
# Metadata) on every listener: PLAINTEXT; SASL_SSL with the Event Hubs user;
# SSL with the client certificate; SASL_PLAINTEXT with the PLAIN user; MISNAMED
# without the hostname check. Sets PROBE_ERR on failure.
probe_listeners() {
  local t=${1:-5} err
  err="$(RMMWATCH_PROBE_PASSWORD="$(connection_string)" RMMWATCH_PROBE_PLAIN_PASSWORD="$(password_of "$PLAIN_USER")" \
    python3 "$KAFKA_SRC/probe.py" \
      --timeout "$t" --bootstrap "$BIND_HOST:$PORT_PLAINTEXT" \
    --and --timeout "$t" --bootstrap "$BIND_HOST:$PORT_SASL" --protocol SASL_SSL --ca "$CA_PEM" \
      --username "\$ConnectionString" --password-env RMMWATCH_PROBE_PASSWORD \
    --and --timeout "$t" --bootstrap "$BIND_HOST:$PORT_SSL" --protocol SSL --ca "$CA_PEM" \
      --cert "$TLS_DIR/client.crt" --key "$TLS_DIR/client.key" \
    --and --timeout "$t" --bootstrap "$BIND_HOST:$PORT_SASL_PLAINTEXT" --protocol SASL_PLAINTEXT \
      --username "$PLAIN_USER" --password-env RMMWATCH_PROBE_PLAIN_PASSWORD \
    --and --timeout "$t" --bootstrap "$BIND_HOST:$PORT_MISNAMED" --protocol SSL --ca "$CA_PEM" --no-check-hostname \
    2>&1 >/dev/null)" || { PROBE_ERR="$err"; return 1; }
  return 0
}

is_running() { pid_alive "$PIDFILE" "$MARKER"; }

# ---------------------------------------------------------------- commands

do_start() {
  ensure_dirs
  lock_service "$NAME"
  mkdir -p "$STATE"
  load_ports "$NAME" "${PORT_KEYS[@]}"
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
  ensure_test_pki
  local key
  for key in "${PORT_KEYS[@]}"; do
    local port_var="PORT_$key"
    check_port_free "${!port_var}" "kafka $key"
  done
  write_config
  format_storage

  log "starting Kafka $KAFKA_VERSION: PLAINTEXT $BIND_HOST:$PORT_PLAINTEXT, SASL_SSL $BIND_HOST:$PORT_SASL, SSL $BIND_HOST:$PORT_SSL, SASL_PLAINTEXT $BIND_HOST:$PORT_SASL_PLAINTEXT, MISNAMED $BIND_HOST:$PORT_MISNAMED, controller $BIND_HOST:$PORT_CONTROLLER (log: $LOGFILE)"
  local -a cmd
  mapfile -d '' cmd < <(java_cmd kafka.Kafka "$CONF")
  printf '== %s broker start\n' "$(date '+%F %T')" >>"$OUTFILE"
  spawn "$PIDFILE" "$OUTFILE" "$MARKER" "${cmd[@]}"
  guard_start "$NAME" "$PIDFILE" "$MARKER" "$STOP_TIMEOUT"

  # The timeout counts from the JVM launch (a first-time jar fetch has its own).
  local deadline=$((SECONDS + START_TIMEOUT))
  for key in "${PORT_KEYS[@]}"; do
    [[ "$key" == CONTROLLER ]] && continue
    port_var="PORT_$key"
    wait_for_port "${!port_var}" $((deadline - SECONDS > 1 ? deadline - SECONDS : 1)) "$PIDFILE" "$MARKER" "$LOGFILE"
  done
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
  load_ports "$NAME" "${PORT_KEYS[@]}"
  if probe_listeners 5; then
    log "running (pid $(read_pid "$PIDFILE")): PLAINTEXT $BIND_HOST:$PORT_PLAINTEXT, SASL_SSL $BIND_HOST:$PORT_SASL, SSL $BIND_HOST:$PORT_SSL, SASL_PLAINTEXT $BIND_HOST:$PORT_SASL_PLAINTEXT, MISNAMED $BIND_HOST:$PORT_MISNAMED"
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
