{{/* Name of the webhook's objects (Deployment, Service, ServiceAccount). */}}
{{- define "mcp-warden.webhookName" -}}
mcp-warden-webhook
{{- end }}

{{- define "mcp-warden.labels" -}}
app.kubernetes.io/name: mcp-warden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "mcp-warden.selectorLabels" -}}
app.kubernetes.io/name: mcp-warden
app.kubernetes.io/component: webhook
{{- end }}

{{- define "mcp-warden.webhookImage" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "mcp-warden.sidecarImage" -}}
{{ .Values.sidecar.image.repository }}:{{ .Values.sidecar.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "mcp-warden.selfManaged" -}}
{{- if eq .Values.certificates.mode "self-managed" }}true{{ else if eq .Values.certificates.mode "cert-manager" }}{{ else }}{{ fail "certificates.mode must be self-managed or cert-manager" }}{{ end }}
{{- end }}

{{/* Namespaces never injected. */}}
{{- define "mcp-warden.excludedNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace }}
{{- range .Values.webhook.excludedNamespaces }}{{ $ns = append $ns . }}{{ end }}
{{- toJson ($ns | uniq) }}
{{- end }}
