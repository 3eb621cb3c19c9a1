{{/* Names and labels shared by every resource of the chart. */}}

{{- define "schematic-replicator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "schematic-replicator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "schematic-replicator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "schematic-replicator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "schematic-replicator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "schematic-replicator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "schematic-replicator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "schematic-replicator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "schematic-replicator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "schematic-replicator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key (and the Redis password): an existing one, or the one this chart creates. */}}
{{- define "schematic-replicator.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "schematic-replicator.fullname" .) }}
{{- end }}

{{/* The Secret's key holding the Redis password, or "" when Redis needs none. */}}
{{- define "schematic-replicator.redisPasswordKey" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.redisPasswordKey }}
{{- else if .Values.secrets.redisPassword }}
{{- .Values.secrets.redisPasswordKey | default "redis-password" }}
{{- end }}
{{- end }}

{{/* Settings the chart cannot run without: fail the render with one line instead of a crash-looping pod. */}}
{{- define "schematic-replicator.validate" -}}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.apiKey) }}
{{- fail "set secrets.existingSecret (a Secret holding the Schematic API key) or secrets.apiKey" }}
{{- end }}
{{- $c := .Values.config }}
{{- if not (or $c.REDIS_ADDR $c.REDIS_URL $c.REDIS_CLUSTER_ADDRS $c.REDIS_SENTINEL_ADDRS) }}
{{- fail "name the Redis: config.REDIS_ADDR, config.REDIS_URL, config.REDIS_CLUSTER_ADDRS or config.REDIS_SENTINEL_ADDRS" }}
{{- end }}
{{- range $name := list "SCHEMATIC_API_KEY" "SCHEMATIC_API_KEY_FILE" "REDIS_PASSWORD" "REDIS_PASSWORD_FILE" "HEALTH_PORT" }}
{{- if hasKey $c $name }}
{{- fail (printf "config.%s: the chart sets it (secrets go in secrets.*, the port in healthPort)" $name) }}
{{- end }}
{{- end }}
{{- end }}
