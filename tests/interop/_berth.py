"""Python counterpart of lib.sh: a private Berth on a free loopback port."""
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BERTH_BIN = os.environ.get("BERTH_BIN", os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "berth"))


class Berth:
    def __enter__(self):
        if not os.access(BERTH_BIN, os.X_OK):
            subprocess.run(["cargo", "build", "-q", "-p", "berth"], cwd=ROOT, check=True)
        self.work = tempfile.mkdtemp(prefix="berth-interop.")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.host = f"127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.work, "berth.log"), "w")
        self.proc = subprocess.Popen([BERTH_BIN, "serve", "--listen", self.host, "--data-dir",
                                      os.path.join(self.work, "data")], stdout=self.log, stderr=self.log)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise RuntimeError("berth did not start")
        print(f"--- berth listening on {self.host}")
        return self

    def __exit__(self, *exc):
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
