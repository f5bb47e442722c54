"""Python counterpart of lib.sh: a private Berth on a free loopback port.

`host` is where a script writes, `pull_host` where it reads back: the same Berth, or, with
INTEROP_PUSH and INTEROP_PULL set (replicas.sh), the two replicas of a running pair (then
nothing is started here)."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BERTH_BIN = os.environ.get("BERTH_BIN", os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "berth"))


class Berth:
    """`tls=(cert, key)` serves HTTPS with that PEM certificate and key."""

    def __init__(self, tls=None):
        self.tls = tls

    def __enter__(self):
        self.proc = None
        if os.environ.get("INTEROP_PUSH"):
            self.host = os.environ["INTEROP_PUSH"]
            self.pull_host = os.environ.get("INTEROP_PULL") or self.host
            self.log_path = os.environ.get("INTEROP_PUSH_LOG")
            print(f"--- pushing through {self.host}, reading back through {self.pull_host}")
            return self
        if not os.access(BERTH_BIN, os.X_OK):
            subprocess.run(["cargo", "build", "-q", "-p", "berth"], cwd=ROOT, check=True)
        self.work = tempfile.mkdtemp(prefix="berth-interop.")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.host = f"127.0.0.1:{self.port}"
        self.pull_host = self.host
        self.log_path = os.path.join(self.work, "berth.log")
        self.log = open(self.log_path, "w")
        args = [BERTH_BIN, "serve", "--listen", self.host, "--data-dir", os.path.join(self.work, "data")]
        context = None
        scheme = "http"
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
            context = ssl.create_default_context(cafile=self.tls[0])
            scheme = "https"
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{scheme}://{self.host}/v2/", timeout=1, context=context)
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise RuntimeError("berth did not start")
        print(f"--- berth listening on {self.host}")
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            if exc[0] is not None and self.log_path:
                with open(self.log_path) as f:
                    print("--- last lines of replica A's log:\n" + "".join(f.readlines()[-20:]))
            return False
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if exc[0] is not None:
            with open(os.path.join(self.work, "berth.log")) as f:
                print("--- last lines of the Berth log:\n" + "".join(f.readlines()[-20:]))
        shutil.rmtree(self.work, ignore_errors=True)
        return False
