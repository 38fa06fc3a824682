"""The decode sandbox: one long-lived child process per decode actor.

FFmpeg runs on hostile input. In the child, a crash (SIGSEGV, abort), a hang or a
runaway allocation (capped with RLIMIT_AS) ends only the child. The parent turns that
into the video's status row and starts a fresh child for the next video. So a poison
video costs one row, never the actor, and Ray never retries it in a loop.

Protocol: pickled (kind, payload) frames with a length prefix over the child's
stdin/stdout. The child moves its own stdout to stderr first, so anything a C
library prints cannot corrupt the stream.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa

from vidbatch.errors import Status, out_of_memory_message
from vidbatch.video_task import DecodeSettings, decode_video, failure_table

_HEADER = struct.Struct("!Q")
# The hard deadline leaves the decoder's own soft deadline (which reports a clean
# `timeout` from inside) room to fire first.
_GRACE_S = 5.0


class SandboxDied(Exception):
    pass


class SandboxStartFailed(Exception):
    """The child could not load the decoder (a memory cap too small for its libraries, a broken environment)."""


class IsolatedDecoder:
    def __init__(self, settings: DecodeSettings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def decode(self, video_id: str, uri: str) -> Iterator[pa.Table]:
        """The same tables `decode_video` yields, or a failure row if the child dies or hangs."""
        limits = self.settings.limits
        budget = limits.decode_timeout_s * 1.2 + _GRACE_S
        try:
            proc = self._ensure_child()
            assert proc.stdin is not None and proc.stdout is not None
            _send(proc.stdin, ("decode", (video_id, uri)))
            while True:
                started = time.monotonic()
                kind, payload = _recv(proc.stdout, timeout_s=budget)
                budget -= time.monotonic() - started  # only the child's working time counts
                if kind == "done":
                    return
                yield payload
        except SandboxStartFailed as exc:
            self.close()
            message = f"the decode sandbox could not start ({exc}); the next run retries it"
            yield self._failure(video_id, uri, "decode_error", "sandbox_start", message)
        except TimeoutError:
            self.close()
            yield self._failure(
                video_id,
                uri,
                "timeout",
                "timeout",
                f"the decoder made no progress within limits.decode_timeout_s={limits.decode_timeout_s:g}; "
                "the file may be hostile or damaged (each run tries it again; a slow node can miss the deadline too)",
            )
        except (SandboxDied, BrokenPipeError, EOFError):
            reason = self._death_reason()
            self.close()
            if reason == "memory":
                yield self._failure(
                    video_id,
                    uri,
                    "too_large",
                    "MemoryError",
                    out_of_memory_message(limits.decode_memory_mb),
                )
            elif reason == "signal SIGKILL":
                # Not a crash of the decoder: something outside killed it, most often the kernel's
                # OOM killer on a node short of memory (its own cap gives MemoryError first).
                yield self._failure(
                    video_id,
                    uri,
                    "decode_error",
                    "killed",
                    "the decoder process was killed (SIGKILL), most likely by the out-of-memory killer of a node "
                    "short of memory; the next run retries it",
                )
            else:
                yield self._failure(
                    video_id, uri, "decode_error", "DecoderCrash", f"the decoder crashed ({reason}); the file is damaged"
                )

    def _failure(self, video_id: str, uri: str, status: Status, error_type: str, message: str) -> pa.Table:
        """The video's row when the child could not give one. It carries the file's fingerprint, so
        a permanent failure is not decoded again every night (only when the file changes)."""
        from vidbatch.storage import source_fingerprint, stat_video

        try:
            info, _, _ = stat_video(uri, self.settings.storage)
            fingerprint: str | None = source_fingerprint(info)
        except Exception:  # gone or unreadable now: no fingerprint, so the next run looks again
            fingerprint = None
        return failure_table(video_id, status, error_type, message, source_fingerprint=fingerprint)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self.proc = None

    def _ensure_child(self) -> subprocess.Popen[bytes]:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        self.close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidbatch.isolation"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # inherits: the actor's log
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _send(self.proc.stdin, ("init", self.settings))
        try:
            kind, payload = _recv(self.proc.stdout, timeout_s=_START_TIMEOUT_S)
        except (SandboxDied, TimeoutError) as exc:
            reason = "it did not answer" if isinstance(exc, TimeoutError) else f"it ended: {self._death_reason()}"
            raise SandboxStartFailed(reason) from exc
        if kind != "ready":
            raise SandboxStartFailed(str(payload))
        return self.proc

    def _death_reason(self) -> str:
        if self.proc is None:
            return "unknown"
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code == _EXIT_MEMORY:
            return "memory"
        if code < 0:
            return f"signal {signal.Signals(-code).name}"
        return f"exit code {code}"

    def __del__(self) -> None:
        self.close()


def _send(stream: IO[bytes], message: tuple[str, Any]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv(stream: IO[bytes], *, timeout_s: float | None) -> tuple[str, Any]:
    header = _read_exactly(stream, _HEADER.size, timeout_s)
    (size,) = _HEADER.unpack(header)
    return pickle.loads(_read_exactly(stream, size, timeout_s))


def _read_exactly(stream: IO[bytes], size: int, timeout_s: float | None) -> bytes:
    fd = stream.fileno()
    chunks, remaining = [], size
    deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
    while remaining:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise SandboxDied
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --- the child ---------------------------------------------------------------------------

_EXIT_MEMORY = 86
# Starting the child: a Python start and FFmpeg's libraries (~1 s here; generous for a busy node).
_START_TIMEOUT_S = 120.0


def _child_main() -> None:
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from C code go to stderr, not into the protocol
    protocol_in = sys.stdin.buffer
    kind, settings = _recv(protocol_in, timeout_s=None)
    assert kind == "init"
    _cap_memory(settings.limits.decode_memory_mb)
    try:
        # FFmpeg's libraries load here, under the cap, so a cap too small for them is reported as
        # such once, not as a damaged file for every video.
        if os.environ.get("VIDBATCH_FAULT") == "sandbox-start":  # test-only
            raise ImportError("test fault: the decoder's libraries did not load")
        import vidbatch.decode  # noqa: F401
    except (ImportError, MemoryError, OSError) as exc:
        cap = settings.limits.decode_memory_mb
        _send(protocol_out, ("failed", f"loading the decoder failed under limits.decode_memory_mb={cap}: {exc}"[:300]))
        return
    _send(protocol_out, ("ready", None))
    while True:
        try:
            kind, payload = _recv(protocol_in, timeout_s=None)
        except SandboxDied:
            return  # the parent closed the pipe
        video_id, uri = payload
        try:
            _fault_hook(video_id)
            for table in decode_video(video_id, uri, settings):
                _send(protocol_out, ("table", table))
        except MemoryError:
            os._exit(_EXIT_MEMORY)
        _send(protocol_out, ("done", None))


def _cap_memory(megabytes: int) -> None:
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _fault_hook(video_id: str) -> None:
    """Test-only: VIDBATCH_FAULT=decode-hang:<id> | decode-crash:<id> | decode-oom:<id> | decode-killed:<id>."""
    fault = os.environ.get("VIDBATCH_FAULT", "")
    action, _, target = fault.partition(":")
    if target != video_id:
        return
    if action == "decode-hang":
        time.sleep(10**6)
    elif action == "decode-crash":
        os.abort()
    elif action == "decode-killed":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "decode-oom":
        hog = []
        while True:
            hog.append(bytearray(256 * 1024 * 1024))


if __name__ == "__main__":
    _child_main()
