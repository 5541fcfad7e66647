{{/* The chart's name, and the release's full name (both at most 63 characters). */}}
{{- define "touchstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "touchstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "touchstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "touchstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "touchstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "touchstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component: api or worker. */}}
{{- define "touchstream.componentSelector" -}}
{{ include "touchstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "touchstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "touchstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "touchstream.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "touchstream.secretName" -}}
{{- default (printf "%s-api-keys" (include "touchstream.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{/* Workers never run more replicas than there are partitions: the rest would idle. */}}
{{- define "touchstream.maxWorkers" -}}
{{- min (int .Values.autoscaling.maxReplicas) (int .Values.kafka.partitions) -}}
{{- end -}}

{{/* Settings the workers and the API must share: brokers, topics, partitions, rules. */}}
{{- define "touchstream.kafkaEnv" -}}
- name: TOUCHSTREAM_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: TOUCHSTREAM_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" .Values.kafka.bootstrap | quote }}
- name: TOUCHSTREAM_APP_ID
  value: {{ .Values.kafka.appId | quote }}
- name: TOUCHSTREAM_TOPIC_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: TOUCHSTREAM_TOPIC_REPLICATION
  value: {{ .Values.kafka.replication | quote }}
- name: TOUCHSTREAM_CREATE_TOPICS
  value: {{ .Values.kafka.createTopics | quote }}
- name: TOUCHSTREAM_TOPIC_TOUCHPOINTS
  value: {{ .Values.kafka.topics.touchpoints | quote }}
- name: TOUCHSTREAM_TOPIC_DLQ
  value: {{ .Values.kafka.topics.deadLetters | quote }}
- name: TOUCHSTREAM_TOPIC_SCORES
  value: {{ .Values.kafka.topics.scores | quote }}
- name: TOUCHSTREAM_TOPIC_ALERTS
  value: {{ .Values.kafka.topics.alerts | quote }}
- name: TOUCHSTREAM_TOPIC_FOLLOWUPS
  value: {{ .Values.kafka.topics.followups | quote }}
{{- if .Values.engineConfig }}
- name: TOUCHSTREAM_ENGINE_CONFIG
  value: /etc/touchstream/engine.json
{{- end }}
{{- if .Values.detectionConfig }}
- name: TOUCHSTREAM_DETECTION_CONFIG
  value: /etc/touchstream/detection.json
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes every touchstream pod has: /tmp, and the configuration when there is one. */}}
{{- define "touchstream.commonVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if or .Values.engineConfig .Values.detectionConfig }}
- name: config
  configMap:
    name: {{ include "touchstream.fullname" . }}-config
{{- end }}
{{- end -}}

{{- define "touchstream.commonMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if or .Values.engineConfig .Values.detectionConfig }}
- name: config
  mountPath: /etc/touchstream
  readOnly: true
{{- end }}
{{- end -}}

{{/* Restart pods when their configuration changes. */}}
{{- define "touchstream.configChecksum" -}}
checksum/config: {{ list .Values.engineConfig .Values.detectionConfig | toJson | sha256sum }}
{{- end -}}
