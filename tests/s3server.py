"""A real S3-compatible HTTP server for tests, plus a fault-injecting proxy in front of it.

`MotoServer` runs `moto_server` as a subprocess on 127.0.0.1 (never in-process: the
deltalake library holds the GIL in some blocking S3 calls and deadlocks against a
threaded server in the same process).  Bucket policies with an explicit Deny are
enforced by moto's object handlers even without IAM authentication, which is how
tests get a real 403 for one object.

`FaultProxy` is a small reverse proxy, also a subprocess, that forwards every request to
the moto server unchanged and can answer chosen requests with a 503 SlowDown, a reset
connection or a truncated body.  It also counts the response bytes it forwards per
object, which lets a test measure how much of a video a reader really fetched.
Control endpoints live under `/__proxy__/` (rules, stats, reset).

Run the proxy by hand with: python tests/s3server.py proxy --port P --upstream http://127.0.0.1:Q
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_HELD: list[socket.socket] = []


def dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens, for "the endpoint is down" cases. Its socket stays bound
    (never listening: a connection is refused) for this process's life: a free port let go could be taken
    by another test worker's Ray or S3 server before the test connects, and a test saw its token refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer within {timeout_s}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class MotoServer:
    """`moto_server -H 127.0.0.1 -p PORT` in its own process."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        log = open(self._log_path, "wb") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        # No IAM authentication: any credentials are accepted, bucket-policy Deny still applies.
        env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
        self._proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        _wait_http(self.endpoint + "/moto-api/", self._proc)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FaultProxy:
    """The fault-injecting reverse proxy (this file run as a script) in its own process."""

    def __init__(self, upstream: str) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FaultProxy:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "proxy", "--port", str(self.port), "--upstream", self.upstream],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_http(self.endpoint + "/__proxy__/stats", self._proc)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _control(self, name: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.endpoint}/__proxy__/{name}", data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def add_fault(self, kind: str, *, path_contains: str, method: str | None = None, times: int = 1) -> None:
        """kind: slowdown (503 SlowDown) | reset (connection reset, no answer) | truncate (half a body, then reset)."""
        self._control("rules", {"kind": kind, "path_contains": path_contains, "method": method, "times": times})

    def reset(self) -> None:
        self._control("reset", {})

    def stats(self) -> dict[str, Any]:
        return self._control("stats")

    def bytes_sent(self, path_contains: str, method: str = "GET") -> int:
        requests = self.stats()["requests"]
        return sum(r["bytes"] for r in requests if r["method"] == method and path_contains in r["path"] and r["status"] < 300)


# --- the proxy process ------------------------------------------------------------------

_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>fault-proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.faults = 0

    def take_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule["times"] > 0 and rule["path_contains"] in path and rule.get("method") in (None, method):
                    rule["times"] -= 1
                    self.faults += 1
                    return str(rule["kind"])
        return None


def _make_handler(upstream: str, state: _State) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reset(self) -> None:
            # SO_LINGER 0: close() sends a TCP RST, like a dropped connection.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True

        def _control(self) -> None:
            name = self.path.split("/__proxy__/", 1)[1].split("?")[0]
            payload = json.loads(self._body() or b"null")
            with state.lock:
                if name == "rules":
                    state.rules.append(dict(payload))
                elif name == "reset":
                    state.rules.clear()
                    state.requests.clear()
                    state.faults = 0
                answer = json.dumps({"requests": state.requests, "faults": state.faults, "rules": state.rules}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _forward(self) -> None:
            if self.path.startswith("/__proxy__/"):
                self._control()
                return
            body = self._body()
            fault = state.take_fault(self.command, self.path)
            if fault == "reset":
                self._reset()
                return
            if fault == "slowdown":
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(_SLOWDOWN)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(_SLOWDOWN)
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in self.headers.items():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        conn.putheader(key, value)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                response = conn.getresponse()
                data = response.read()
            finally:
                conn.close()
            with state.lock:
                state.requests.append(
                    {
                        "method": self.command,
                        "path": self.path.split("?")[0],
                        "status": response.status,
                        "bytes": len(data),
                        "range": self.headers.get("Range"),
                    }
                )
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fault == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._reset()
                return
            self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward  # noqa: N815

    return Handler


def serve_proxy(port: int, upstream: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(upstream, _State()))
    server.daemon_threads = True
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


# --- helpers for tests ------------------------------------------------------------------


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def deny_everyone(client: Any, bucket: str, resource_keys: list[str], actions: list[str] | None = None) -> None:
    """A bucket policy with an explicit Deny for everyone on these keys (a real 403 from moto)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyForTest",
                "Effect": "Deny",
                "Principal": "*",
                "Action": actions or ["s3:*"],
                "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in resource_keys],
            }
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for a block."""
    old = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_noise_video(
    path: str | Path, *, seconds: float, fps: int = 10, width: int = 320, height: int = 240, gop: int = 10
) -> Path:
    """An H.264 mp4 of random noise: large per second of video, so range reads are measurable."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    path = Path(path)
    with av.open(str(path), "w") as container:
        options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": "ultrafast", "crf": "20"}
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream", required=True)
    args = parser.parse_args(argv)
    serve_proxy(args.port, args.upstream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
