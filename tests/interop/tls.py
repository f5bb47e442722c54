#!/usr/bin/env python3
"""Berth's TLS listener against OpenSSL, the TLS stack of Python, curl and most Linux tools.

Over TLS 1.3 and HTTP/1.1 Berth seals the records itself after rustls' handshake (blob bytes
read straight into the records); over TLS 1.2 rustls does. Both must serve pushes, whole and
ranged blob GETs on one keep-alive connection byte for byte, and OpenSSL's key updates (its
`s_client` `K` command: update ours and ask for the server's) must keep the connection going.
"""
import hashlib
import http.client
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _berth import Berth  # noqa: E402


def check(cond, msg):
    if not cond:
        raise SystemExit(f"FAIL: {msg}")
    print(f"ok  {msg}")


def self_signed(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-addext", "extendedKeyUsage=serverAuth",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def session(b, cert, version):
    """One keep-alive connection with `version` as the highest TLS version."""
    ctx = ssl.create_default_context(cafile=cert)
    ctx.maximum_version = version
    host, port = b.host.rsplit(":", 1)
    return http.client.HTTPSConnection(host, int(port), context=ctx)


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def main():
    work = tempfile.mkdtemp(prefix="berth-tls.")
    try:
        cert, key = self_signed(work)
        with Berth(tls=(cert, key)) as b:
            # Not a multiple of a record (16 KiB) or of the server's 64 KiB writes.
            blob = os.urandom(3 * 1024 * 1024 + 4321)
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            for version, name in [(ssl.TLSVersion.TLSv1_3, "TLS 1.3"), (ssl.TLSVersion.TLSv1_2, "TLS 1.2")]:
                conn = session(b, cert, version)
                repo = "tls13" if version == ssl.TLSVersion.TLSv1_3 else "tls12"
                status, _ = call(conn, "POST", f"/v2/{repo}/app/blobs/uploads/?digest={digest}", blob)
                check(status == 201, f"{name}: blob pushed over one connection")
                check(conn.sock.version() == name.replace(" ", "v"), f"{name}: negotiated {conn.sock.version()}")
                for i in range(2):
                    status, got = call(conn, "GET", f"/v2/{repo}/app/blobs/{digest}")
                    check(status == 200 and got == blob, f"{name}: whole blob, request {i + 1} on the connection")
                status, got = call(conn, "GET", f"/v2/{repo}/app/blobs/{digest}",
                                   headers={"Range": "bytes=100000-2200000"})
                check(status == 206 and got == blob[100000:2200001], f"{name}: ranged GET")
                conn.close()
            # OpenSSL's key updates, interactive commands of s_client (a line "K" or "k").
            requests = [
                f"GET /v2/tls13/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n",
                "K\n",
                f"GET /v2/tls13/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n",
                "k\n",
                "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ]
            p = subprocess.Popen(["openssl", "s_client", "-connect", b.host, "-alpn", "http/1.1",
                                  "-CAfile", cert, "-tls1_3"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for line in requests:
                p.stdin.write(line.encode())
                p.stdin.flush()
                time.sleep(0.5)
            time.sleep(1)
            p.stdin.close()
            out = p.stdout.read()
            p.wait(10)
            check(out.count(b"KEYUPDATE") == 2, "s_client sent two key updates")
            check(out.count(b"HTTP/1.1 206 Partial Content") == 2, "both ranged GETs answered around them")
            check(blob[:100] in out and blob[100:200] in out, "the bytes before and after the updates")
            check(b"HTTP/1.1 200 OK" in out, "the request after the second update answered")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
