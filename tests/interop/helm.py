#!/usr/bin/env python3
"""Helm (v4, through `pip install helm-python-sdk`, which embeds Helm as a library; no helm
binary) against Berth: package a tiny chart, push it to oci://HOST/charts over plain HTTP,
list its tags, resolve, pull it back (identical bytes), show chart. Pushes go to `b.host`, reads
to `b.pull_host` (the same Berth, or the other replica of a pair: see _berth.py)."""
import hashlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _berth import Berth  # noqa: E402

import helm_python as helm  # noqa: E402
from helm_python import chart as hchart, registry as hreg  # noqa: E402


def check(cond, msg):
    if not cond:
        raise SystemExit(f"FAIL: {msg}")
    print(f"ok  {msg}")


def main():
    with Berth() as b, tempfile.TemporaryDirectory() as tmp:
        cdir = os.path.join(tmp, "tiny")
        os.makedirs(os.path.join(cdir, "templates"))
        open(os.path.join(cdir, "Chart.yaml"), "w").write(
            "apiVersion: v2\nname: tiny\nversion: 0.1.0\ndescription: berth interop chart\n")
        open(os.path.join(cdir, "values.yaml"), "w").write("greeting: hello\n")
        open(os.path.join(cdir, "templates", "cm.yaml"), "w").write(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tiny\ndata:\n  g: {{ .Values.greeting }}\n")
        tgz = hchart.package(cdir, destination=tmp)
        check(os.path.exists(tgz), f"helm package -> {os.path.basename(tgz)}")
        client = hreg.RegistryClient(plain_http=True, credentials_file=os.path.join(tmp, "creds.json"))
        res = client.push(tgz, f"oci://{b.host}/charts", plain_http=True)
        print(f"    push result: {res}")
        ref = f"oci://{b.pull_host}/charts/tiny"
        tags = client.tags(ref)
        check(tags == ["0.1.0"], f"tags {tags}")
        desc = client.resolve(f"{ref}:0.1.0")
        check(desc.get("digest", "").startswith("sha256:"), f"resolve {desc}")
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        client.pull(ref, version="0.1.0", destination=out, plain_http=True)
        pulled = [f for f in os.listdir(out) if f.endswith(".tgz")]
        check(len(pulled) == 1, f"pulled {pulled}")
        a = hashlib.sha256(open(tgz, "rb").read()).hexdigest()
        p = hashlib.sha256(open(os.path.join(out, pulled[0]), "rb").read()).hexdigest()
        check(a == p, "pulled chart archive is byte-identical")
        shown = client.show(f"{ref}:0.1.0", output_format="chart", plain_http=True)
        check("name: tiny" in shown and "0.1.0" in shown, "show chart")
        # a second version, then tags are newest first
        tgz2 = hchart.package(cdir, destination=tmp, version="0.2.0")
        client.push(tgz2, f"oci://{b.host}/charts", plain_http=True)
        tags = client.tags(ref)
        check(tags == ["0.2.0", "0.1.0"], f"tags after second push {tags}")
    print("PASS helm.py")


if __name__ == "__main__":
    main()
