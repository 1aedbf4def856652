{{/* vim: set filetype=mustache: */}}

{{/* The chart name. */}}
{{- define "rmmwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "rmmwatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rmmwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rmmwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rmmwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rmmwatch.labels" -}}
helm.sh/chart: {{ include "rmmwatch.chart" . }}
{{ include "rmmwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: detector
app.kubernetes.io/part-of: rmmwatch
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rmmwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rmmwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The metrics Service's name, also Prometheus' job label through the ServiceMonitor. */}}
{{- define "rmmwatch.serviceName" -}}
{{- printf "%s-metrics" (include "rmmwatch.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rmmwatch.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* A number as an env value: 1048576 stays 1048576 (not 1.048576e+06), 0.002 stays 0.002. */}}
{{- define "rmmwatch.num" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* "true" when the store is sqlite (state on one volume, one process). */}}
{{- define "rmmwatch.isSqlite" -}}
{{- if eq .Values.store.type "sqlite" }}true{{ end }}
{{- end }}

{{/* "true" when more than one pod may run: replicaCount > 1 or an autoscaler. */}}
{{- define "rmmwatch.multiReplica" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.hpa.enabled .Values.keda.enabled }}true{{ end }}
{{- end }}

{{/* "true" when Kafka is used: the source, an alert sink or the dead-letter destination. */}}
{{- define "rmmwatch.usesKafka" -}}
{{- $uses := eq .Values.source.type "kafka" }}
{{- range .Values.alerts.sinks }}{{ if hasPrefix "kafka:" . }}{{ $uses = true }}{{ end }}{{ end }}
{{- if hasPrefix "kafka:" .Values.alerts.deadLetter }}{{ $uses = true }}{{ end }}
{{- if $uses }}true{{ end }}
{{- end }}

{{/* "true" when a webhook sink is configured. */}}
{{- define "rmmwatch.usesWebhook" -}}
{{- range .Values.alerts.sinks }}{{ if hasPrefix "webhook:" . }}true{{ end }}{{ end }}
{{- end }}

{{/* RMMWATCH_STORE */}}
{{- define "rmmwatch.storeUrl" -}}
{{- if eq .Values.store.type "redis" }}{{ .Values.store.redis.url }}{{ else }}{{ .Values.store.type }}{{ end }}
{{- end }}

{{/* Secret env vars in use, as a JSON object: env name -> Secret key. */}}
{{- define "rmmwatch.secretEnv" -}}
{{- $keys := .Values.secrets.keys }}
{{- $out := dict }}
{{- if include "rmmwatch.usesKafka" . }}
{{- if $keys.kafkaSaslPassword }}{{ $_ := set $out "RMMWATCH_KAFKA_SASL_PASSWORD" $keys.kafkaSaslPassword }}{{ end }}
{{- if $keys.eventHubsKafkaConnectionString }}{{ $_ := set $out "RMMWATCH_EVENTHUBS_CONNECTION_STRING" $keys.eventHubsKafkaConnectionString }}{{ end }}
{{- end }}
{{- if eq .Values.source.type "eventhub" }}
{{- if $keys.eventHubConnectionString }}{{ $_ := set $out "RMMWATCH_EVENTHUB_CONNECTION_STRING" $keys.eventHubConnectionString }}{{ end }}
{{- if $keys.eventHubCheckpointConnectionString }}{{ $_ := set $out "RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING" $keys.eventHubCheckpointConnectionString }}{{ end }}
{{- end }}
{{- if and (eq .Values.store.type "redis") $keys.redisPassword }}
{{- $_ := set $out "RMMWATCH_REDIS_PASSWORD" $keys.redisPassword }}
{{- end }}
{{- if and (include "rmmwatch.usesWebhook" .) $keys.webhookToken }}
{{- $_ := set $out "RMMWATCH_WEBHOOK_TOKEN" $keys.webhookToken }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* RMMWATCH_RULE entries, as a JSON list (empty: every bundled rule). */}}
{{- define "rmmwatch.ruleSpecs" -}}
{{- $specs := list }}
{{- range .Values.rules.bundled }}{{ $specs = append $specs (printf "bundled:%s" .) }}{{ end }}
{{- range $file, $_ := .Values.rules.custom }}{{ $specs = append $specs (printf "/etc/rmmwatch/rules/%s" $file) }}{{ end }}
{{- range .Values.rules.existingConfigMapFiles }}{{ $specs = append $specs (printf "/etc/rmmwatch/rules/%s" .) }}{{ end }}
{{- toJson $specs }}
{{- end }}

{{/* The ConfigMap holding rule files, or "" when none is mounted. */}}
{{- define "rmmwatch.rulesConfigMap" -}}
{{- if .Values.rules.existingConfigMap }}{{ .Values.rules.existingConfigMap }}
{{- else if .Values.rules.custom }}{{ printf "%s-rules" (include "rmmwatch.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The PVC mounted at /var/lib/rmmwatch, or "" for an emptyDir. */}}
{{- define "rmmwatch.claimName" -}}
{{- if and (include "rmmwatch.isSqlite" .) .Values.persistence.enabled }}
{{- default (printf "%s-data" (include "rmmwatch.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}
{{- end }}

{{/* PromQL label matchers for this release's series. */}}
{{- define "rmmwatch.metricSelector" -}}
{{- default (printf "namespace=%q, job=%q" .Release.Namespace (include "rmmwatch.serviceName" .)) .Values.prometheusRule.metricSelector }}
{{- end }}

{{/* The TCP ports the application talks to, as a JSON list of numbers. */}}
{{- define "rmmwatch.egressPorts" -}}
{{- $ports := list }}
{{- if include "rmmwatch.usesKafka" . }}
{{- $found := false }}
{{- range splitList "," .Values.source.kafka.bootstrapServers }}
{{- $port := regexFind "[0-9]+$" (trim .) }}
{{- if and (trim .) $port }}{{ $ports = append $ports (int $port) }}{{ $found = true }}{{ end }}
{{- end }}
{{- if not $found }}{{ $ports = concat $ports (list 9092 9093) }}{{ end }}
{{- end }}
{{- if eq .Values.source.type "eventhub" }}
{{- /* AMQP over TLS, AMQP over WebSockets, Blob Storage and Entra ID token requests. */}}
{{- $ports = concat $ports (list 5671 443) }}
{{- end }}
{{- if .Values.azureWorkloadIdentity.enabled }}{{ $ports = append $ports 443 }}{{ end }}
{{- if eq .Values.store.type "redis" }}
{{- $port := (urlParse .Values.store.redis.url).host | regexFind ":[0-9]+$" | trimPrefix ":" }}
{{- $ports = append $ports (int (default "6379" $port)) }}
{{- end }}
{{- range .Values.alerts.sinks }}
{{- if hasPrefix "webhook:" . }}
{{- $url := urlParse (trimPrefix "webhook:" .) }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- $ports = append $ports (int (default (ternary "443" "80" (eq $url.scheme "https")) $port)) }}
{{- end }}
{{- end }}
{{- $ports = concat $ports .Values.networkPolicy.extraEgressPorts }}
{{- $unique := list }}
{{- range $ports }}{{ if not (has (int .) $unique) }}{{ $unique = append $unique (int .) }}{{ end }}{{ end }}
{{- toJson $unique }}
{{- end }}

{{/*
Refuse configurations that cannot work, with a message that says what to change.
Included by the Deployment, so `helm template`, `helm lint` and `helm install` all stop.
*/}}
{{- define "rmmwatch.validate" -}}
{{- $v := .Values }}
{{- $store := $v.store.type }}
{{- if and (ne $store "redis") (include "rmmwatch.multiReplica" .) }}
{{- if eq $store "sqlite" }}
{{- fail (printf "rmmwatch: the sqlite store supports a single replica only (replicaCount=%v, hpa.enabled=%v, keda.enabled=%v): its state is one file on a ReadWriteOnce volume, locked by one process. Set replicaCount: 1 with hpa and keda disabled, or use store.type: redis to run several replicas." $v.replicaCount $v.hpa.enabled $v.keda.enabled) }}
{{- else }}
{{- fail (printf "rmmwatch: the %s store supports a single replica only (replicaCount=%v, hpa.enabled=%v, keda.enabled=%v): replicas would not share state. Use store.type: redis to run several replicas." $store $v.replicaCount $v.hpa.enabled $v.keda.enabled) }}
{{- end }}
{{- end }}
{{- if and $v.hpa.enabled $v.keda.enabled }}
{{- fail "rmmwatch: enable either hpa or keda, not both (KEDA manages its own HorizontalPodAutoscaler)" }}
{{- end }}
{{- if and $v.hpa.enabled (gt (int $v.hpa.minReplicas) (int $v.hpa.maxReplicas)) }}
{{- fail "rmmwatch: hpa.minReplicas must not exceed hpa.maxReplicas" }}
{{- end }}
{{- if and $v.keda.enabled (gt (int $v.keda.minReplicaCount) (int $v.keda.maxReplicaCount)) }}
{{- fail "rmmwatch: keda.minReplicaCount must not exceed keda.maxReplicaCount" }}
{{- end }}
{{- if and $v.keda.enabled (eq $v.source.type "synthetic") }}
{{- fail "rmmwatch: keda needs source.type kafka or eventhub (it scales on their lag)" }}
{{- end }}
{{- /* store */}}
{{- if eq $store "redis" }}
{{- if not (regexMatch "^rediss?://" $v.store.redis.url) }}
{{- fail "rmmwatch: store.type redis needs store.redis.url (redis://host:6379/0 or rediss://host:6380/0)" }}
{{- end }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]*@" $v.store.redis.url }}
{{- fail "rmmwatch: store.redis.url must not carry a password: put it in the Secret and name its key in secrets.keys.redisPassword" }}
{{- end }}
{{- end }}
{{- /* kafka */}}
{{- $kafka := $v.source.kafka }}
{{- if include "rmmwatch.usesKafka" . }}
{{- if and (not $kafka.bootstrapServers) (not $v.secrets.keys.eventHubsKafkaConnectionString) }}
{{- fail "rmmwatch: Kafka (the source, or a kafka: sink or dead-letter destination) needs source.kafka.bootstrapServers, or secrets.keys.eventHubsKafkaConnectionString for the Event Hubs Kafka endpoint" }}
{{- end }}
{{- if and $kafka.sasl.mechanism (not (hasPrefix "SASL_" $kafka.securityProtocol)) }}
{{- fail "rmmwatch: source.kafka.sasl.mechanism needs source.kafka.securityProtocol SASL_SSL or SASL_PLAINTEXT" }}
{{- end }}
{{- if and (hasPrefix "SASL_" $kafka.securityProtocol) (not $kafka.sasl.mechanism) (not $v.secrets.keys.eventHubsKafkaConnectionString) }}
{{- fail (printf "rmmwatch: source.kafka.securityProtocol %s needs source.kafka.sasl.mechanism" $kafka.securityProtocol) }}
{{- end }}
{{- if and (has $kafka.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) (or (not $kafka.sasl.username) (not $v.secrets.keys.kafkaSaslPassword)) }}
{{- fail (printf "rmmwatch: SASL %s needs source.kafka.sasl.username and secrets.keys.kafkaSaslPassword" $kafka.sasl.mechanism) }}
{{- end }}
{{- if and $kafka.tls.secretName (or $kafka.tls.certKey $kafka.tls.keyKey) (not (and $kafka.tls.certKey $kafka.tls.keyKey)) }}
{{- fail "rmmwatch: mutual TLS needs both source.kafka.tls.certKey and source.kafka.tls.keyKey" }}
{{- end }}
{{- end }}
{{- if eq $v.source.type "kafka" }}
{{- if not $kafka.topics }}
{{- fail "rmmwatch: source.type kafka needs source.kafka.topics" }}
{{- end }}
{{- if not $kafka.groupId }}
{{- fail "rmmwatch: source.type kafka needs source.kafka.groupId" }}
{{- end }}
{{- if and $v.keda.enabled $kafka.sasl.mechanism (not $v.keda.authenticationRef) }}
{{- fail "rmmwatch: keda's Kafka trigger needs keda.authenticationRef (a TriggerAuthentication with the SASL credentials) when source.kafka.sasl.mechanism is set" }}
{{- end }}
{{- if and $v.keda.enabled (not $kafka.bootstrapServers) }}
{{- fail "rmmwatch: keda's Kafka trigger needs source.kafka.bootstrapServers (it cannot read the Event Hubs connection string)" }}
{{- end }}
{{- end }}
{{- /* event hubs */}}
{{- $eh := $v.source.eventhub }}
{{- if eq $v.source.type "eventhub" }}
{{- if not $eh.name }}
{{- fail "rmmwatch: source.type eventhub needs source.eventhub.name" }}
{{- end }}
{{- if and (not $eh.fullyQualifiedNamespace) (not $v.secrets.keys.eventHubConnectionString) }}
{{- fail "rmmwatch: source.type eventhub needs source.eventhub.fullyQualifiedNamespace (Entra ID) or secrets.keys.eventHubConnectionString" }}
{{- end }}
{{- if and (include "rmmwatch.multiReplica" .) (or (not $eh.checkpoint.container) (and (not $eh.checkpoint.accountUrl) (not $v.secrets.keys.eventHubCheckpointConnectionString))) }}
{{- fail "rmmwatch: several Event Hubs replicas share partitions through the blob checkpoint store: set source.eventhub.checkpoint.container and checkpoint.accountUrl (Entra ID) or secrets.keys.eventHubCheckpointConnectionString" }}
{{- end }}
{{- $kedaWorkloadIdentity := and $v.azureWorkloadIdentity.enabled $eh.fullyQualifiedNamespace $eh.checkpoint.accountUrl }}
{{- $kedaSecrets := and $v.secrets.keys.eventHubConnectionString $v.secrets.keys.eventHubCheckpointConnectionString }}
{{- if and $v.keda.enabled (not $v.keda.authenticationRef) (not $kedaWorkloadIdentity) (not $kedaSecrets) }}
{{- fail "rmmwatch: keda's azure-eventhub trigger needs keda.authenticationRef, or workload identity (azureWorkloadIdentity.enabled with source.eventhub.fullyQualifiedNamespace and checkpoint.accountUrl), or both secrets.keys.eventHubConnectionString and eventHubCheckpointConnectionString" }}
{{- end }}
{{- if and $v.keda.enabled (not $eh.checkpoint.container) }}
{{- fail "rmmwatch: keda's azure-eventhub trigger reads the blob checkpoints: set source.eventhub.checkpoint.container" }}
{{- end }}
{{- end }}
{{- /* monitoring */}}
{{- if and $v.serviceMonitor.enabled (not $v.service.enabled) }}
{{- fail "rmmwatch: serviceMonitor.enabled needs service.enabled (the ServiceMonitor scrapes the metrics Service)" }}
{{- end }}
{{- /* secrets */}}
{{- if and (ne (include "rmmwatch.secretEnv" .) "{}") (not $v.secrets.existingSecret) }}
{{- fail "rmmwatch: secrets.keys name keys of a Secret, but secrets.existingSecret is empty" }}
{{- end }}
{{- if and (include "rmmwatch.usesWebhook" .) $v.secrets.keys.webhookToken (not $v.secrets.existingSecret) }}
{{- fail "rmmwatch: secrets.keys.webhookToken needs secrets.existingSecret" }}
{{- end }}
{{- if and $v.azureWorkloadIdentity.enabled (not $v.azureWorkloadIdentity.clientId) }}
{{- fail "rmmwatch: azureWorkloadIdentity.enabled needs azureWorkloadIdentity.clientId" }}
{{- end }}
{{- /* files must be written where the read-only root filesystem allows */}}
{{- range (append $v.alerts.sinks $v.alerts.deadLetter) }}
{{- if and (hasPrefix "jsonl:" .) (not (regexMatch "^jsonl:/(var/lib/rmmwatch|tmp)/" .)) }}
{{- fail (printf "rmmwatch: %q: the root filesystem is read-only; write jsonl files under /var/lib/rmmwatch/ or /tmp/" .) }}
{{- end }}
{{- end }}
{{- /* rules */}}
{{- if and $v.rules.custom $v.rules.existingConfigMap }}
{{- fail "rmmwatch: set rules.custom or rules.existingConfigMap, not both (both mount at /etc/rmmwatch/rules)" }}
{{- end }}
{{- if and $v.rules.existingConfigMap (not $v.rules.existingConfigMapFiles) }}
{{- fail "rmmwatch: rules.existingConfigMap needs rules.existingConfigMapFiles (the rule files to load)" }}
{{- end }}
{{- if and $v.rules.existingConfigMapFiles (not $v.rules.existingConfigMap) }}
{{- fail "rmmwatch: rules.existingConfigMapFiles needs rules.existingConfigMap" }}
{{- end }}
{{- /* shutdown */}}
{{- if and (not (kindIs "invalid" $v.terminationGracePeriodSeconds)) (le (float64 $v.terminationGracePeriodSeconds) (float64 $v.config.shutdownTimeoutSeconds)) }}
{{- fail (printf "rmmwatch: terminationGracePeriodSeconds (%v) must exceed config.shutdownTimeoutSeconds (%v), or SIGKILL cuts the drain short" $v.terminationGracePeriodSeconds $v.config.shutdownTimeoutSeconds) }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: set, or the shutdown timeout + 10 s. */}}
{{- define "rmmwatch.gracePeriod" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int (ceil .Values.config.shutdownTimeoutSeconds)) 10 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* A mapping value: " {}" on the same line when empty, else indented YAML on the next lines.
Usage: key:{{ include "rmmwatch.mapping" (dict "value" $selector "indent" 12) }} */}}
{{- define "rmmwatch.mapping" -}}
{{- if .value }}{{ toYaml .value | nindent .indent }}{{ else }} {}{{ end }}
{{- end }}
