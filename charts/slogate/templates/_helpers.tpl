{{/* Names: <release>-slogate unless the release name already says slogate. */}}
{{- define "slogate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slogate.fullname" -}}
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

{{/* Component names stay under 63 characters (Service and label value limits). */}}
{{- define "slogate.controller.fullname" -}}
{{- printf "%s-controller" (include "slogate.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}

{{- define "slogate.webhook.fullname" -}}
{{- printf "%s-webhook" (include "slogate.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "slogate.webhook.tlsSecret" -}}
{{- printf "%s-tls" (include "slogate.webhook.fullname" .) }}
{{- end }}

{{- define "slogate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "slogate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slogate
{{- end }}

{{/* Selector labels must never change after install (they are immutable in workloads). */}}
{{- define "slogate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slogate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "slogate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the Prometheus credentials are mounted in the controller. */}}
{{- define "slogate.prometheus.dir" -}}/etc/slogate/prometheus{{- end }}

{{/*
Pod scheduling fields shared by both roles; `.values` is the role's block.
*/}}
{{- define "slogate.podScheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
