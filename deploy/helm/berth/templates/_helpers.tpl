{{/* Names and labels shared by every object of the release. */}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "berth.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "berth.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "berth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret the scale-out settings come from: the user's, or the one this chart makes. */}}
{{- define "berth.configSecret" -}}
{{- default (printf "%s-config" (include "berth.fullname" .)) .Values.scaleOut.existingSecret }}
{{- end }}

{{/*
The pod template of both modes: the StatefulSet (embedded) and the Deployment (scaleOut)
differ only in where /data comes from.
*/}}
{{- define "berth.podTemplate" -}}
metadata:
  labels:
    {{- include "berth.selectorLabels" . | nindent 4 }}
  {{- if or .Values.podAnnotations (and (eq .Values.mode "scaleOut") (not .Values.scaleOut.existingSecret)) }}
  annotations:
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- if and (eq .Values.mode "scaleOut") (not .Values.scaleOut.existingSecret) }}
    {{- /* Restarts the pods when the chart-made settings change. */}}
    checksum/config: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
  {{- end }}
spec:
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: berth
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve"]
      env:
        - name: BERTH_LISTEN
          value: "0.0.0.0:5000"
        - name: BERTH_DATA_DIR
          value: /data
        - name: BERTH_INSECURE_OPEN
          value: {{ .Values.auth.insecureOpen | quote }}
        {{- if eq .Values.mode "scaleOut" }}
        - name: BERTH_TOKEN_KEY_FILE
          value: /etc/berth/token-key/token.key
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or (eq .Values.mode "scaleOut") .Values.extraEnvFromSecrets }}
      envFrom:
        {{- if eq .Values.mode "scaleOut" }}
        - secretRef:
            name: {{ include "berth.configSecret" . }}
        {{- end }}
        {{- range .Values.extraEnvFromSecrets }}
        - secretRef:
            name: {{ . }}
        {{- end }}
      {{- end }}
      ports:
        - name: http
          containerPort: 5000
          protocol: TCP
      livenessProbe:
        httpGet:
          path: {{ .Values.probes.liveness.path }}
          port: http
        initialDelaySeconds: {{ .Values.probes.liveness.initialDelaySeconds }}
        periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet:
          path: {{ .Values.probes.readiness.path }}
          port: http
        initialDelaySeconds: {{ .Values.probes.readiness.initialDelaySeconds }}
        periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: data
          mountPath: /data
        {{- /* The root filesystem is read-only; the client and uploads spool here. */}}
        - name: tmp
          mountPath: /tmp
        {{- if eq .Values.mode "scaleOut" }}
        - name: token-key
          mountPath: /etc/berth/token-key
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if eq .Values.mode "scaleOut" }}
    {{- /* Blobs and metadata are in S3 and PostgreSQL; /data keeps only per-pod files. */}}
    - name: data
      emptyDir: {}
    {{- /* One token signing key for every replica (see token-key-secret.yaml). */}}
    - name: token-key
      secret:
        secretName: {{ .Values.scaleOut.tokenKeySecret | default (printf "%s-token-key" (include "berth.fullname" .)) }}
        defaultMode: 0400
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
