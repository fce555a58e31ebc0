"""The tests' end of the agent (:mod:`tests.nested.agent`): requests over a Unix socket
that QEMU connects to the guest's virtio-serial port.

Two guests run the agent: the nested guest inside the test VM
(:class:`tests.nested.guest.NestedGuest`) and, in the hybrid stage, the test VM
itself behind a real hybrid vsock mux (:class:`tests.hybrid.vm.HybridVm`). Each
subclass says whether its VM still runs (``check_alive``) and what its console
last said (``tail``).
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers import try_unix


class GuestError(Exception):
    """The guest did not boot, or its agent stopped answering; carries the console's tail."""


@dataclass
class Completed:
    """A guest program's end (``rc`` None: still running) and its output so far."""

    rc: int | None
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace")


class AgentClient:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir  # where QEMU puts the agent's socket (agent.sock)
        self.boot_seconds = 0.0
        self.agent: socket.socket | None = None
        self.replies = b""
        self.lock = threading.Lock()

    # -- what a guest says of itself (subclasses) ------------------------------------------

    def check_alive(self) -> None:
        """Raise GuestError, saying why, when the VM has gone."""

    def tail(self, lines: int = 60) -> str:
        return ""

    # -- the channel -----------------------------------------------------------------------

    def connect_agent(self, path: Path, deadline: float) -> socket.socket:
        while time.monotonic() < deadline:
            self.check_alive()
            if path.exists() and (sock := try_unix(path)) is not None:
                return sock
            time.sleep(0.2)
        raise GuestError("QEMU never opened the agent's socket" + self.tail())

    def await_ready(self, started: float, timeout: float, who: str) -> dict[str, Any]:
        """The agent's ready line, once QEMU's socket opens and the agent speaks (within
        ``timeout`` of ``started``); ``boot_seconds`` says how long it took."""
        deadline = started + timeout
        self.agent = self.connect_agent(self.workdir / "agent.sock", deadline)
        line = self.read_line(deadline)
        if line is None:
            raise GuestError(f"no word from {who}'s agent in {timeout:.0f} s" + self.tail())
        self.boot_seconds = time.monotonic() - started
        ready: dict[str, Any] = json.loads(line)
        return ready

    def read_line(self, deadline: float) -> bytes | None:
        assert self.agent is not None
        while b"\n" not in self.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.check_alive()
            self.agent.settimeout(min(left, 1.0))
            try:
                chunk = self.agent.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""  # QEMU went away: said below, with why
            if not chunk:
                time.sleep(0.5)
                self.check_alive()  # says why, when QEMU is gone
                raise GuestError("the guest's agent went away" + self.tail())
            self.replies += chunk
        line, self.replies = self.replies.split(b"\n", 1)
        return line

    def request(self, message: dict[str, Any], seconds: float = 0.0) -> dict[str, Any]:
        """Send one request; the reply may take ``seconds`` (what it waits for) and a margin."""
        assert self.agent is not None, "boot() first"
        with self.lock:
            self.agent.sendall(json.dumps(message).encode() + b"\n")
            line = self.read_line(time.monotonic() + seconds + 60)
        if line is None:
            raise GuestError(f"the agent did not answer {message.get('op')}" + self.tail())
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise GuestError(f"the agent could not {message.get('op')}: {reply['error']}")
        return reply

    # -- programs in the guest -------------------------------------------------------------

    def spawn(self, *argv: str, stdin: bytes = b"") -> int:
        """Start ``argv`` in the guest; ``vsockctl`` runs forked from the agent."""
        encoded = base64.b64encode(stdin).decode()
        reply = self.request({"op": "spawn", "argv": argv, "stdin": encoded})
        return int(reply["pid"])

    def wait(self, pid: int, timeout: float = 120.0) -> Completed:
        reply = self.request({"op": "wait", "pid": pid, "timeout": timeout}, timeout)
        out, err = base64.b64decode(reply["stdout"]), base64.b64decode(reply["stderr"])
        return Completed(reply["rc"], out, err)

    def kill(self, pid: int, sig: int = signal.SIGTERM, timeout: float = 60.0) -> Completed:
        self.request({"op": "signal", "pid": pid, "signal": int(sig)})
        return self.wait(pid, timeout)

    def run(self, *argv: str, stdin: bytes = b"", timeout: float = 300.0) -> Completed:
        pid = self.spawn(*argv, stdin=stdin)
        done = self.wait(pid, timeout)
        if done.rc is None:
            self.kill(pid, signal.SIGKILL)
            raise GuestError(f"{' '.join(argv)} still ran after {timeout:.0f} s: {done.text}")
        return done

    def wait_for_output(self, pid: int, text: str, timeout: float = 120.0) -> Completed:
        """Poll until ``text`` shows in the program's output (a listener saying it listens)."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.wait(pid, 0)
            if text in done.text or done.rc is not None or time.monotonic() > deadline:
                return done
            time.sleep(0.5)
