{{/* Chart name. */}}
{{- define "enricher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name, the prefix of every object. */}}
{{- define "enricher.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "enricher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels shared by every object of the release. */}}
{{- define "enricher.labels" -}}
helm.sh/chart: {{ include "enricher.chart" . }}
app.kubernetes.io/name: {{ include "enricher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: enrichment-fleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of one topic: (dict "root" $ "t" $topicCtx). Immutable in a
Deployment. The topic id has a label of its own; `app.kubernetes.io/component`
is the role (`worker`, `test` for the `helm test` Pods), so that a selector on
the role alone finds every worker of the fleet.
*/}}
{{- define "enricher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enricher.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: worker
enricher.example.invalid/topic-id: {{ .t.id }}
{{- end -}}

{{/* Labels of a topic's objects and pods: never in a selector. */}}
{{- define "enricher.topicLabels" -}}
{{ include "enricher.labels" .root }}
app.kubernetes.io/component: worker
enricher.example.invalid/topic-id: {{ .t.id }}
enricher.example.invalid/topic: {{ .t.name | quote }}
{{- end -}}

{{- define "enricher.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "enricher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "enricher.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
A TOML value from a values value. Helm reads numbers as float64, so whole
numbers are written as integers (the worker's config wants u64 for most keys).
*/}}
{{- define "enricher.toml.value" -}}
{{- $v := . -}}
{{- $k := kindOf $v -}}
{{- if eq $k "string" -}}
{{- toJson $v -}}
{{- else if eq $k "bool" -}}
{{- ternary "true" "false" $v -}}
{{- else if or (eq $k "float64") (eq $k "float32") -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (hasPrefix "int" $k) (hasPrefix "uint" $k) -}}
{{- $v -}}
{{- else if eq $k "slice" -}}
[{{- range $i, $e := $v -}}{{- if $i }}, {{ end -}}{{- include "enricher.toml.value" $e -}}{{- end -}}]
{{- else if eq $k "map" -}}
{ {{- range $i, $key := keys $v | sortAlpha -}}{{- $e := get $v $key -}}{{- if ne (kindOf $e) "invalid" -}}{{- if $i }}, {{ else }} {{ end -}}{{- toJson $key }} = {{ include "enricher.toml.value" $e -}}{{- end -}}{{- end }} }
{{- else -}}
{{- fail (printf "cannot write a %s as TOML: %v" $k $v) -}}
{{- end -}}
{{- end -}}

{{/*
A whole TOML document: a top-level list (`tables`, a list of inline tables)
is written first, as a key of the root table; every other top-level key is a
[section] of scalars.
*/}}
{{- define "enricher.toml.document" -}}
{{- $doc := . -}}
{{- range $key := keys $doc | sortAlpha }}
{{- $v := get $doc $key }}
{{- if eq (kindOf $v) "slice" }}
{{ toJson $key }} = {{ include "enricher.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $section := keys $doc | sortAlpha }}
{{- $body := get $doc $section }}
{{- if eq (kindOf $body) "slice" }}{{ continue }}{{ end }}
{{- if ne (kindOf $body) "map" }}
{{- fail (printf "config.%s must be a table of keys" $section) }}
{{- end }}
[{{ $section }}]
{{- range $key := keys $body | sortAlpha }}
{{- $v := get $body $key }}
{{- if ne (kindOf $v) "invalid" }}
{{ toJson $key }} = {{ include "enricher.toml.value" $v }}
{{- end }}
{{- end }}
{{ end }}
{{- end -}}

{{/* Property names that would carry a secret in clear. */}}
{{- define "enricher.secretKeyPattern" -}}(?i)(password|secret|token|jaas|credential|sasl\.oauthbearer\.config){{- end -}}

{{/*
Everything about one topic, computed once and returned as JSON:
  include "enricher.topic" (dict "root" $ "topic" $t) | fromJson
Fails the render on any inconsistent value.
*/}}
{{- define "enricher.topic" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $t := .topic -}}
{{- if not $t.name }}{{ fail "topics[].name (the input topic) is required" }}{{ end -}}
{{- /* a shared worker: several input topics (or a pattern), `name` names the worker */ -}}
{{- $inputs := $t.inputTopics | default list -}}
{{- $shared := gt (len $inputs) 0 -}}
{{- if and $shared (or $t.outputTopic $t.dlqTopic) -}}
{{- fail (printf "topic %s: outputTopic and dlqTopic name one topic's output; a shared worker (inputTopics) uses config.kafka.output_topic_template and dlq_topic_template" $t.name) -}}
{{- end -}}
{{- $res := list -}}
{{- range $i := $inputs -}}
{{- if hasPrefix "^" $i -}}
{{- $res = append $res ($i | trimPrefix "^" | trimSuffix "$") -}}
{{- else -}}
{{- $res = append $res (regexQuoteMeta $i) -}}
{{- end -}}
{{- end -}}
{{- $topicRegex := ternary (join "|" $res) (regexQuoteMeta $t.name) $shared -}}
{{- $id := $t.id | default ($t.name | lower | replace "_" "-" | replace "." "-") | trunc 20 | trimSuffix "-" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $id) -}}
{{- fail (printf "topic %q: cannot derive a Kubernetes name from it; set topics[].id" $t.name) -}}
{{- end -}}
{{- $fullname := printf "%s-%s" (include "enricher.fullname" $root) $id | trunc 63 | trimSuffix "-" -}}
{{- $partitions := int64 (required (printf "topic %s: partitions is required" $t.name) $t.partitions) -}}
{{- $output := $t.outputTopic | default (printf "%s_enr" $t.name) -}}
{{- $dlq := $t.dlqTopic | default (printf "%s_dlq" $t.name) -}}
{{- $group := $t.groupId | default (printf "%s%s" $v.kafka.groupIdPrefix $t.name) -}}
{{- $replicas := int64 (ternary 1 $t.replicas (kindOf $t.replicas | eq "invalid")) -}}
{{- if gt $replicas $partitions -}}
{{- fail (printf "topic %s: replicas %d is above its %d partitions" $t.name $replicas $partitions) -}}
{{- end -}}

{{- /* autoscaling: shared defaults, then the topic's overrides */ -}}
{{- $as := mergeOverwrite (deepCopy $v.autoscaling) (deepCopy ($t.autoscaling | default dict)) -}}
{{- $hpa := $as.hpa -}}
{{- $keda := $as.keda -}}
{{- if and $hpa.enabled $keda.enabled -}}
{{- fail (printf "topic %s: enable either autoscaling.hpa or autoscaling.keda, not both (KEDA manages its own HPA)" $t.name) -}}
{{- end -}}
{{- $hpaMax := int64 (ternary $partitions $hpa.maxReplicas (kindOf $hpa.maxReplicas | eq "invalid")) -}}
{{- $kedaMax := int64 (ternary $partitions $keda.maxReplicaCount (kindOf $keda.maxReplicaCount | eq "invalid")) -}}
{{- if and $hpa.enabled (gt $hpaMax $partitions) -}}
{{- fail (printf "topic %s: autoscaling.hpa.maxReplicas %d is above its %d partitions" $t.name $hpaMax $partitions) -}}
{{- end -}}
{{- if and $keda.enabled (gt $kedaMax $partitions) -}}
{{- fail (printf "topic %s: autoscaling.keda.maxReplicaCount %d is above its %d partitions" $t.name $kedaMax $partitions) -}}
{{- end -}}
{{- $_ := set $hpa "maxReplicas" $hpaMax -}}
{{- $_ := set $keda "maxReplicaCount" $kedaMax -}}

{{- /* the worker's configuration */ -}}
{{- $cfg := mergeOverwrite (deepCopy $v.config) (deepCopy ($t.config | default dict)) -}}
{{- range $s := list "kafka" "worker" "redis" "geoip" -}}
{{- if not (hasKey $cfg $s) }}{{ $_ := set $cfg $s dict }}{{ end -}}
{{- end -}}
{{- range $k := list "brokers" "group_id" "input_topic" "input_topics" "output_topic" "dlq_topic" -}}
{{- if hasKey $cfg.kafka $k }}{{ fail (printf "topic %s: config.kafka.%s is set by the chart; use kafka.* / topics[] values" $t.name $k) }}{{ end -}}
{{- end -}}
{{- if hasKey $cfg.redis "url" }}{{ fail "config.redis.url is set by the chart; use redis.url or redis.urlSecret" }}{{ end -}}
{{- range $k := list "city" "asn" -}}
{{- if hasKey $cfg.geoip $k }}{{ fail (printf "config.geoip.%s is set by the chart; use geoip.source and geoip.%sFile" $k $k) }}{{ end -}}
{{- end -}}
{{- $k := $cfg.kafka -}}
{{- $_ := set $k "brokers" $v.kafka.brokers -}}
{{- $_ := set $k "group_id" $group -}}
{{- if $shared -}}
{{- $_ := set $k "input_topics" $inputs -}}
{{- else -}}
{{- $_ := set $k "input_topic" $t.name -}}
{{- $_ := set $k "output_topic" $output -}}
{{- $_ := set $k "dlq_topic" $dlq -}}
{{- end -}}
{{- range $m := list "properties" "consumer_properties" "producer_properties" -}}
{{- $props := dict -}}
{{- range $pk, $pv := (get $k $m | default dict) -}}
{{- /* librdkafka properties are strings to the worker, whatever they look like */ -}}
{{- $kind := kindOf $pv -}}
{{- if and (or (eq $kind "float64") (eq $kind "float32")) (eq (float64 (int64 $pv)) (float64 $pv)) -}}
{{- $_ := set $props $pk (int64 $pv | toString) -}}
{{- else -}}
{{- $_ := set $props $pk (toString $pv) -}}
{{- end -}}
{{- if regexMatch (include "enricher.secretKeyPattern" $) $pk -}}
{{- fail (printf "config.kafka.%s.%s looks like a secret: pass it from a Secret (kafka.sasl.passwordSecret, kafka.tls.keyPasswordSecret), never in values" $m $pk) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $k $m $props -}}
{{- end -}}
{{- $props := $k.properties -}}
{{- $tls := $v.kafka.tls -}}
{{- $sasl := $v.kafka.sasl -}}
{{- if $sasl.enabled -}}
{{- if not $sasl.passwordSecret.name }}{{ fail "kafka.sasl.enabled needs kafka.sasl.passwordSecret.name (an existing Secret)" }}{{ end -}}
{{- if and (not $sasl.username) (not $sasl.usernameSecret.name) }}{{ fail "kafka.sasl.enabled needs kafka.sasl.username or kafka.sasl.usernameSecret.name" }}{{ end -}}
{{- $_ := set $props "security.protocol" (ternary "SASL_SSL" "SASL_PLAINTEXT" (not (not $tls.enabled))) -}}
{{- $_ := set $props "sasl.mechanism" $sasl.mechanism -}}
{{- if and $sasl.username (not $sasl.usernameSecret.name) }}{{ $_ := set $props "sasl.username" $sasl.username }}{{ end -}}
{{- else if $tls.enabled -}}
{{- $_ := set $props "security.protocol" "SSL" -}}
{{- end -}}
{{- if $tls.enabled -}}
{{- if $tls.caSecret.name }}{{ $_ := set $props "ssl.ca.location" (printf "/etc/kafka-tls/ca/%s" $tls.caSecret.key) }}{{ end -}}
{{- if $tls.clientCertSecret.name -}}
{{- $_ := set $props "ssl.certificate.location" (printf "/etc/kafka-tls/client/%s" $tls.clientCertSecret.certKey) -}}
{{- $_ := set $props "ssl.key.location" (printf "/etc/kafka-tls/client/%s" $tls.clientCertSecret.keyKey) -}}
{{- end -}}
{{- $_ := set $props "ssl.endpoint.identification.algorithm" $tls.endpointIdentification -}}
{{- end -}}
{{- if $v.redis.url -}}
{{- if regexMatch "://[^/@]*@" $v.redis.url -}}
{{- fail "redis.url must not carry credentials; put the whole URL in a Secret and set redis.urlSecret" -}}
{{- end -}}
{{- if not $v.redis.urlSecret.name }}{{ $_ := set $cfg.redis "url" $v.redis.url }}{{ end -}}
{{- end -}}
{{- if $v.redis.tlsCaSecret.name -}}
{{- if and $v.redis.url (not $v.redis.urlSecret.name) (not (hasPrefix "rediss://" $v.redis.url)) -}}
{{- fail "redis.tlsCaSecret needs a rediss:// redis.url" -}}
{{- end -}}
{{- $_ := set $cfg.redis "tls_ca_file" (printf "/etc/redis-tls/ca/%s" $v.redis.tlsCaSecret.key) -}}
{{- end -}}
{{- $g := $v.geoip -}}
{{- if ne $g.source "none" -}}
{{- if and (eq $g.source "existingClaim") (not $g.existingClaim) }}{{ fail "geoip.source existingClaim needs geoip.existingClaim" }}{{ end -}}
{{- if and (eq $g.source "configMap") (not $g.configMap) }}{{ fail "geoip.source configMap needs geoip.configMap" }}{{ end -}}
{{- if and (eq $g.source "geoipupdate") (not $g.geoipupdate.accountSecret.name) }}{{ fail "geoip.source geoipupdate needs geoip.geoipupdate.accountSecret.name" }}{{ end -}}
{{- if $g.cityFile }}{{ $_ := set $cfg.geoip "city" (printf "%s/%s" $g.mountPath $g.cityFile) }}{{ end -}}
{{- if $g.asnFile }}{{ $_ := set $cfg.geoip "asn" (printf "%s/%s" $g.mountPath $g.asnFile) }}{{ end -}}
{{- end -}}
{{- $in := $v.intel -}}
{{- if ne $in.source "none" -}}
{{- if and (eq $in.source "existingClaim") (not $in.existingClaim) }}{{ fail "intel.source existingClaim needs intel.existingClaim" }}{{ end -}}
{{- if and (eq $in.source "configMap") (not $in.configMap) }}{{ fail "intel.source configMap needs intel.configMap" }}{{ end -}}
{{- if and (eq $in.source "fetcher") (not $in.fetcher.urls) }}{{ fail "intel.source fetcher needs intel.fetcher.urls" }}{{ end -}}
{{- if not (or $in.files $in.tables) }}{{ fail (printf "intel.source %s needs intel.files or intel.tables" $in.source) }}{{ end -}}
{{- if hasKey $cfg "tables" }}{{ fail "config.tables is set by the chart; use intel.tables" }}{{ end -}}
{{- if not (hasKey $cfg "intel") }}{{ $_ := set $cfg "intel" dict }}{{ end -}}
{{- if hasKey $cfg.intel "files" }}{{ fail "config.intel.files is set by the chart; use intel.files" }}{{ end -}}
{{- $files := list -}}
{{- range $in.files }}{{ $files = append $files (printf "%s/%s" $in.mountPath .) }}{{ end -}}
{{- $_ := set $cfg.intel "files" $files -}}
{{- if $in.tables -}}
{{- $tables := list -}}
{{- range $in.tables -}}
{{- $row := dict "path" (printf "%s/%s" $in.mountPath .file) -}}
{{- if .key }}{{ $_ := set $row "key" .key }}{{ end -}}
{{- if .fields }}{{ $_ := set $row "fields" .fields }}{{ end -}}
{{- $tables = append $tables $row -}}
{{- end -}}
{{- $_ := set $cfg "tables" $tables -}}
{{- end -}}
{{- else if or $in.files $in.tables -}}
{{- fail "intel.files and intel.tables need intel.source (existingClaim, configMap or fetcher)" -}}
{{- end -}}
{{- $addr := $cfg.worker.metrics_addr | default "0.0.0.0:9102" -}}
{{- $_ := set $cfg.worker "metrics_addr" $addr -}}
{{- $port := splitList ":" $addr | last | atoi -}}
{{- if or (lt $port 1) (gt $port 65535) }}{{ fail (printf "config.worker.metrics_addr %q has no valid port" $addr) }}{{ end -}}
{{- $graceMs := ternary 25000 $cfg.worker.shutdown_grace_ms (kindOf $cfg.worker.shutdown_grace_ms | eq "invalid") -}}
{{- $grace := add (ceil (divf $graceMs 1000) | int64) $v.terminationGraceExtraSeconds -}}
{{- $resources := $t.resources | default $v.resources -}}
{{- $ctx := dict "id" $id "name" $t.name "shared" $shared "inputs" $inputs "topicRegex" $topicRegex "fullname" $fullname "outputTopic" $output "dlqTopic" $dlq "groupId" $group "partitions" $partitions "replicas" $replicas "hpa" $hpa "keda" $keda "port" $port "terminationGrace" $grace "resources" $resources -}}
{{- $_ := set $ctx "toml" (include "enricher.toml.document" $cfg) -}}
{{- toJson $ctx -}}
{{- end -}}

{{/* geoipupdate's environment: the account from the existing Secret. */}}
{{- define "enricher.geoipupdateEnv" -}}
{{- $u := .Values.geoip.geoipupdate -}}
- name: GEOIPUPDATE_ACCOUNT_ID
  valueFrom:
    secretKeyRef:
      name: {{ $u.accountSecret.name }}
      key: {{ $u.accountSecret.accountIdKey }}
- name: GEOIPUPDATE_LICENSE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $u.accountSecret.name }}
      key: {{ $u.accountSecret.licenseKeyKey }}
- name: GEOIPUPDATE_EDITION_IDS
  value: {{ $u.editionIds | quote }}
- name: GEOIPUPDATE_DB_DIR
  value: {{ .Values.geoip.mountPath | quote }}
{{- end -}}

{{/*
The intel fetcher's shell script: every intel.fetcher.urls entry is
downloaded beside its file and renamed over it (an atomic replacement the
worker's hot reload picks up); a failed fetch leaves the previous file. With
MODE=once it fetches once and fails if any fetch failed (the init
container); otherwise it fetches every INTERVAL seconds for ever. Names and
URLs are checked by the values schema (no quote, no blank).
*/}}
{{- define "enricher.intelFetchScript" -}}
fetch() {
  if curl -fsSL --retry 3 --max-time 300 ${INTEL_FETCH_HEADER:+-H "$INTEL_FETCH_HEADER"} -o "$DIR/.$1.part" "$2"; then
    mv -f "$DIR/.$1.part" "$DIR/$1"
  else
    rm -f "$DIR/.$1.part"
    echo "intel-fetch: $1 from $2 failed; the previous file stays" >&2
    return 1
  fi
}
all() {
  rc=0
{{- range .Values.intel.fetcher.urls }}
  fetch {{ .name | squote }} {{ .url | squote }} || rc=1
{{- end }}
  return $rc
}
if [ "${MODE:-}" = once ]; then all; exit $?; fi
while :; do sleep "$INTERVAL"; all || true; done
{{- end -}}

{{/* The intel fetcher's environment. */}}
{{- define "enricher.intelFetchEnv" -}}
{{- $f := .Values.intel.fetcher -}}
- name: DIR
  value: {{ .Values.intel.mountPath | quote }}
- name: INTERVAL
  value: {{ $f.intervalSeconds | int | toString | quote }}
{{- if $f.headerSecret.name }}
- name: INTEL_FETCH_HEADER
  valueFrom:
    secretKeyRef:
      name: {{ $f.headerSecret.name }}
      key: {{ $f.headerSecret.key }}
{{- end }}
{{- end -}}
