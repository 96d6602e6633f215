"""Launcher for the embedded Kafka-compatible broker (PyPI `noida-db`, pinned).

The package's console script wraps the real binary with subprocess.call and does not pass
SIGTERM on, so the broker would be killed without writing its snapshot. We start the binary
inside the package directly and signal it ourselves; it then saves `DATA_DIR/kafka.json`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def binary_path() -> Path:
    import noida_db

    path = Path(noida_db.__file__).resolve().parent / "noida-db"
    if not path.exists():
        raise RuntimeError(f"the embedded broker binary is missing at {path}; reinstall noida-db")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """One broker process bound to 127.0.0.1:`port`, keeping its data in `data_dir`."""

    def __init__(self, data_dir: str | os.PathLike, port: int, log_file=None):
        self.data_dir = Path(data_dir)
        self.port = port
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use; set SLUICE_KAFKA_PORT to a free port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(binary_path()), "start", "--data-dir", str(self.data_dir), "--only", "kafka",
             "--kafka-port", str(self.port)],
            stdout=self.log_file or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self.log_file else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal must not reach it before we flush
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded broker exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the embedded broker did not answer on port {self.port} in {timeout}s")
            time.sleep(0.1)
        log.info("embedded broker ready on %s (data in %s)", self.bootstrap_servers, self.data_dir)
        return self

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=2)
            return True
        except Exception:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the binary so it snapshots its data, then wait for it to exit."""
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded broker did not stop in %ss; killing it", timeout)
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
