#!/usr/bin/env python3
"""Lints and renders deploy/helm/berth (Helm v4's library through `pip install
helm-python-sdk`; no helm binary, no cluster) in both modes, and checks the rendered objects:
kinds, replicas, the PVC of the embedded mode, the Secret-fed environment of the scale-out
mode, probes, the non-root read-only security context, the optional Ingress, and that a
scale-out release without its settings fails to render instead of starting empty."""
import base64
import os
import sys

import yaml
from helm_python import chart as hchart
from helm_python.errors import HelmError

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "helm", "berth")
SCALE_OUT = {
    "mode": "scaleOut",
    "replicaCount": 3,
    "scaleOut": {
        "s3": {"bucket": "blobs", "endpoint": "http://minio:9000", "region": "us-east-1",
               "accessKeyId": "AKIA", "secretAccessKey": "s3cr3t"},
        "databaseUrl": "postgres://berth:pw@pg/berth",
    },
}
failures = []


def check(cond, msg):
    print(f"{'ok  ' if cond else 'FAIL'} {msg}")
    if not cond:
        failures.append(msg)


def lint(values, label):
    report = hchart.lint(CHART, values, strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    check(not report.get("errors") and not problems,
          f"helm lint --strict ({label}): {report.get('errors') or problems or 'clean'}")


def render(values):
    """The chart's objects by kind (a list each), as `helm template` prints them."""
    with hchart.Chart.load(CHART) as c:
        manifests = c.render(values=values, name="reg", namespace="registry")
    objects = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.setdefault(doc["kind"], []).append(doc)
    return objects


def container_of(workload):
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def check_pod(kind, workload):
    spec, c = container_of(workload)
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{kind}: liveness GET /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{kind}: readiness GET /readyz")
    check(c["livenessProbe"]["httpGet"]["port"] == "http" and c["ports"][0]["containerPort"] == 5000,
          f"{kind}: probes on the http port 5000")
    sc = c["securityContext"]
    check(spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 65532,
          f"{kind}: runs as non-root 65532")
    check(sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
          and sc["capabilities"]["drop"] == ["ALL"], f"{kind}: read-only root, no privilege escalation, no capabilities")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    check(mounts.get("/data") == "data" and mounts.get("/tmp") == "tmp", f"{kind}: /data and a writable /tmp mounted")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env.get("BERTH_LISTEN") == "0.0.0.0:5000" and env.get("BERTH_DATA_DIR") == "/data",
          f"{kind}: listens on the pod network, data in /data")
    return spec, c, env


def main():
    # Embedded (the default values).
    lint(None, "embedded")
    objs = render(None)
    check(sorted(objs) == ["Service", "StatefulSet"], f"embedded kinds {sorted(objs)}")
    (sts,) = objs["StatefulSet"]
    check(sts["spec"]["replicas"] == 1, "embedded: one replica")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    check(claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "50Gi",
          "embedded: a 50Gi PVC named data")
    spec, c, env = check_pod("StatefulSet", sts)
    check("envFrom" not in c and env.get("BERTH_INSECURE_OPEN") == "false", "embedded: no Secret, not open")
    check(all(v["name"] != "data" for v in spec["volumes"]), "embedded: /data comes from the PVC, not a pod volume")
    (svc,) = objs["Service"]
    check(svc["spec"]["ports"][0]["port"] == 5000 and svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"],
          "Service selects the pods on port 5000")

    # Scale-out with the chart making the Secret.
    lint(SCALE_OUT, "scaleOut")
    objs = render(SCALE_OUT)
    check(sorted(objs) == ["Deployment", "Secret", "Service"], f"scaleOut kinds {sorted(objs)}")
    (dep,) = objs["Deployment"]
    check(dep["spec"]["replicas"] == 3, "scaleOut: replicaCount 3")
    spec, c, _ = check_pod("Deployment", dep)
    secrets = {s["metadata"]["name"]: s for s in objs["Secret"]}
    check(len(secrets) == 2, f"scaleOut: the settings and the token key Secrets, got {sorted(secrets)}")
    (key_secret,) = [s for n, s in secrets.items() if n.endswith("-token-key")]
    check(len(base64.b64decode(key_secret["data"]["token.key"])) == 32, "scaleOut: a 32-byte token key")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env.get("BERTH_TOKEN_KEY_FILE") == "/etc/berth/token-key/token.key",
          "scaleOut: every replica signs tokens with the shared key")
    check({"name": "token-key", "secret": {"secretName": key_secret["metadata"]["name"], "defaultMode": 0o400}}
          in spec["volumes"], "scaleOut: the token key Secret is mounted")
    (secret,) = [s for n, s in secrets.items() if not n.endswith("-token-key")]
    check(c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}], "scaleOut: env from the chart's Secret")
    data = secret["stringData"]
    check(data == {"BERTH_STORAGE": "s3", "BERTH_S3_BUCKET": "blobs", "BERTH_S3_ENDPOINT": "http://minio:9000",
                   "BERTH_S3_REGION": "us-east-1", "BERTH_DATABASE_URL": "postgres://berth:pw@pg/berth",
                   "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}, f"scaleOut: Secret keys {sorted(data)}")
    check("checksum/config" in dep["spec"]["template"]["metadata"].get("annotations", {}),
          "scaleOut: pods restart when the chart's Secret changes")
    check({"name": "data", "emptyDir": {}} in spec["volumes"], "scaleOut: /data is a per-pod emptyDir")

    # Scale-out with an existing Secret and an Ingress.
    values = {"mode": "scaleOut", "scaleOut": {"existingSecret": "berth-prod"},
              "ingress": {"enabled": True, "className": "nginx",
                          "tls": [{"secretName": "reg-tls", "hosts": ["registry.example.com"]}]}}
    lint(values, "scaleOut + existingSecret + ingress")
    objs = render(values)
    check(sorted(objs) == ["Deployment", "Ingress", "Secret", "Service"], f"existingSecret kinds {sorted(objs)}")
    check([s["metadata"]["name"].endswith("-token-key") for s in objs["Secret"]] == [True],
          "existingSecret: only the token key Secret is made")
    _, c = container_of(objs["Deployment"][0])
    check(c["envFrom"] == [{"secretRef": {"name": "berth-prod"}}], "existingSecret: env from berth-prod")
    (ing,) = objs["Ingress"]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    check(backend == {"name": objs["Service"][0]["metadata"]["name"], "port": {"name": "http"}},
          "Ingress routes to the Service's http port")
    check(ing["spec"]["ingressClassName"] == "nginx" and ing["spec"]["tls"][0]["secretName"] == "reg-tls",
          "Ingress class and TLS")

    # Misconfigurations fail at render time.
    for bad, label in [({"mode": "scaleOut"}, "scaleOut without bucket or database"),
                       ({"mode": "cluster"}, "an unknown mode")]:
        try:
            render(bad)
            check(False, f"{label} must not render")
        except HelmError as e:
            check("required" in str(e) or "mode must be" in str(e), f"{label} refused: {str(e)[:100]}")

    if failures:
        raise SystemExit(f"FAIL helm_chart.py: {len(failures)} checks failed")
    print("PASS helm_chart.py")


if __name__ == "__main__":
    sys.exit(main())
