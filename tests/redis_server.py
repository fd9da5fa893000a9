"""A real redis-server for the tests: started on a free loopback port, stopped and restarted on
demand.

Readiness is read from the server's own log line, not waited for with a
sleep. Data is kept in an append-only file fsynced on every write, so a
restart mid-run finds what was there, as a production Redis with AOF does.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path

READY = "Ready to accept connections"
REQUIRE_ENV = (
    "BROKER_GUARD_REQUIRE_REDIS"  # set by .ci/run: a missing redis-server fails instead of skipping
)


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, *, durable: bool = True) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        # AOF fsynced on every write (a restart keeps everything); else Redis's defaults, no
        # snapshots
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
        ]
        args += ["--save", "", "--daemonize", "no", "--logfile", ""]
        if self.durable:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
        )
        assert self.process.stdout is not None
        # raw reads: a buffered reader would hide lines from select()
        fd = self.process.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        while READY.encode() not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:  # exited, or the deadline passed
                break
            seen += chunk
        if READY.encode() in seen:
            return
        self.stop()
        raise RuntimeError(
            f"redis-server on port {self.port} did not "
            f"start:\n{seen[-3000:].decode(errors='replace')}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, as an operator's restart does); clients see connections
        refused."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def redis_required() -> bool:
    return bool(os.environ.get(REQUIRE_ENV))
