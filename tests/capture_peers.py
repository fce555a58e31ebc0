"""A running ``vsockctl capture`` for the VM tier's capture tests, and peers that make traffic."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from typing import Any

from tests.peers import LOCAL, vsockctl
from tests.records import json_records

Record = dict[str, Any]


class Capture:
    """``vsockctl --json capture ARGS`` in its own process, started once it says it captures."""

    def __init__(self, *args: str) -> None:
        self.proc = vsockctl(
            "--json", "capture", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"capture did not start: {self.proc.communicate()[1]!r}")
        self.first: Record = json.loads(line)
        assert self.first["event"] == "capturing", self.first

    def stop(
        self, signum: int = signal.SIGINT, timeout: float = 60
    ) -> tuple[int, list[Record], str]:
        """Stop it (or wait for it, with ``signum`` 0): exit status, records, stderr."""
        if signum:
            self.proc.send_signal(signum)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, json_records(out), err.decode()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def of(records: list[Record], event: str) -> list[Record]:
    return [r for r in records if r["event"] == event]


def seqpacket_receiver(port: int, buffer: int | None = None) -> tuple[socket.socket, list[int]]:
    """A seqpacket listener on CID 1 whose thread accepts one peer and keeps its message sizes."""
    listener = socket.socket(socket.AF_VSOCK, socket.SOCK_SEQPACKET)
    listener.bind((socket.VMADDR_CID_ANY, port))
    listener.listen(1)
    sizes: list[int] = []

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(1 << 20):
                sizes.append(len(data))

    threading.Thread(target=run, daemon=True).start()
    return listener, sizes


def connect_local(port: int, sock_type: int = socket.SOCK_STREAM) -> socket.socket:
    sock = socket.socket(socket.AF_VSOCK, sock_type)
    sock.settimeout(30)
    sock.connect((LOCAL, port))
    return sock
