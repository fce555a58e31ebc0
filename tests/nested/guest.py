"""A real guest inside the test VM: QEMU with a vhost-vsock device, and its agent.

The test VM becomes a vsock host (``vhost_vsock``, CID 2) and boots a nested
guest (CID 3) under QEMU (TCG) from a kernel and an initramfs that holds all
its files (:mod:`tests.nested.initramfs`). The agent in the guest
(:mod:`tests.nested.agent`) answers on a virtio-serial port that QEMU exposes
here as a Unix socket; QEMU's monitor, on another Unix socket, pauses,
resumes and powers the guest off.

    with NestedGuest(workdir, kernel, initramfs) as guest:
        done = guest.run("vsockctl", "info", "--json")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.peers import try_unix

GUEST_CID = 3
BOOT_TIMEOUT = 900.0  # seconds; a boot under two levels of emulation takes minutes


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


def qemu_command(kernel: Path, initramfs: Path, workdir: Path, cid: int) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-accel", "tcg", "-m", "768", "-smp", "1",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initramfs),
        # No speculation mitigations, crypto self-tests or timer checks: seconds each
        # at one level of emulation, minutes at two.
        "-append", "console=ttyS0 quiet panic=-1 mitigations=off cryptomgr.notests no_timer_check",
        "-serial", f"file:{workdir / 'console.log'}",
        "-device", f"vhost-vsock-pci,guest-cid={cid}",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=agent,path={workdir / 'agent.sock'},server=on,wait=off",
        "-device", "virtserialport,chardev=agent,name=vsockctl.agent",
        "-monitor", f"unix:{workdir / 'monitor.sock'},server=on,wait=off",
    ]  # fmt: skip


def load_vhost() -> None:
    """Make the test VM a vsock host; from then on CIDs above 2 go to guests, not out."""
    subprocess.run(["modprobe", "vhost_vsock"], check=True, capture_output=True)
    if not Path("/dev/vhost-vsock").exists():
        raise GuestError("modprobe vhost_vsock gave no /dev/vhost-vsock")


class NestedGuest:
    def __init__(self, workdir: Path, kernel: Path, initramfs: Path, cid: int = GUEST_CID) -> None:
        self.workdir = workdir
        self.kernel = kernel
        self.initramfs = initramfs
        self.cid = cid
        self.qemu: subprocess.Popen[bytes] | None = None
        self.agent: socket.socket | None = None
        self.replies = b""
        self.lock = threading.Lock()
        self.boot_seconds = 0.0

    # -- life ------------------------------------------------------------------------------

    def boot(self, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
        load_vhost()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        command = qemu_command(self.kernel, self.initramfs, self.workdir, self.cid)
        with (self.workdir / "qemu.log").open("wb") as log:
            self.qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = started + timeout
        self.agent = self._connect_agent(deadline)
        line = self._read_line(deadline)
        if line is None:
            raise GuestError(f"no word from the guest's agent in {timeout:.0f} s" + self.tail())
        self.boot_seconds = time.monotonic() - started
        ready: dict[str, Any] = json.loads(line)
        return ready

    def _connect_agent(self, deadline: float) -> socket.socket:
        path = self.workdir / "agent.sock"
        while time.monotonic() < deadline:
            self._check_alive()
            if path.exists() and (sock := try_unix(path)) is not None:
                return sock
            time.sleep(0.2)
        raise GuestError("QEMU never opened the agent's socket" + self.tail())

    def _check_alive(self) -> None:
        if self.qemu is not None and self.qemu.poll() is not None:
            qemu_log = (self.workdir / "qemu.log").read_text(errors="replace")[-2000:]
            raise GuestError(f"QEMU exited ({self.qemu.returncode}): {qemu_log}" + self.tail())

    def tail(self, lines: int = 60) -> str:
        try:
            console = (self.workdir / "console.log").read_text(errors="replace")
        except OSError:
            return "\n(no console log)"
        return "\n--- the guest's console, last lines ---\n" + "\n".join(
            console.splitlines()[-lines:]
        )

    def _read_line(self, deadline: float) -> bytes | None:
        assert self.agent is not None
        while b"\n" not in self.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._check_alive()
            self.agent.settimeout(min(left, 1.0))
            try:
                chunk = self.agent.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""  # QEMU went away: said below, with why
            if not chunk:
                time.sleep(0.5)
                self._check_alive()  # says why, when QEMU is gone
                raise GuestError("the guest's agent went away" + self.tail())
            self.replies += chunk
        line, self.replies = self.replies.split(b"\n", 1)
        return line

    def shutdown(self) -> None:
        if self.qemu is None:
            return
        if self.qemu.poll() is None:
            try:
                self.power_off(10)
            except (OSError, subprocess.TimeoutExpired):
                self.qemu.kill()
                self.qemu.wait()
        if self.agent is not None:
            self.agent.close()

    def power_off(self, timeout: float = 60.0) -> None:
        """QEMU's ``quit``, as a guest's power is pulled: nothing in the guest shuts down.
        Returns once QEMU has exited (raises TimeoutExpired after ``timeout``)."""
        assert self.qemu is not None, "boot() first"
        self.monitor("quit")
        self.qemu.wait(timeout)

    @property
    def alive(self) -> bool:
        return self.qemu is not None and self.qemu.poll() is None

    def __enter__(self) -> NestedGuest:
        self.boot()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # -- the agent -------------------------------------------------------------------------

    def request(self, message: dict[str, Any], seconds: float = 0.0) -> dict[str, Any]:
        """Send one request; the reply may take ``seconds`` (what it waits for) and a margin."""
        assert self.agent is not None, "boot() first"
        with self.lock:
            self.agent.sendall(json.dumps(message).encode() + b"\n")
            line = self._read_line(time.monotonic() + seconds + 60)
        if line is None:
            raise GuestError(f"the agent did not answer {message.get('op')}" + self.tail())
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise GuestError(f"the agent could not {message.get('op')}: {reply['error']}")
        return reply

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

    # -- QEMU's monitor --------------------------------------------------------------------

    def monitor(self, command: str) -> str:
        """One monitor command (``stop``, ``cont``, ``quit``); what the monitor said."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(self.workdir / "monitor.sock"))
            said = _read_until(sock, b"(qemu) ")
            sock.sendall(command.encode() + b"\n")
            # Read on until the next prompt, or until QEMU closes the monitor as it
            # quits: closing first can drop the command unread.
            said = _read_until(sock, b"(qemu) " if command != "quit" else None)
            return said.decode(errors="replace")


def _read_until(sock: socket.socket, marker: bytes | None) -> bytes:
    """What ``sock`` says up to ``marker`` (None: up to its end)."""
    data = b""
    while marker is None or marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def from_environment(workdir: Path) -> NestedGuest:
    """The guest ``scripts/vmrun --nested`` prepared: its kernel and initramfs from the env."""
    kernel = os.environ.get("VSOCKCTL_NESTED_KERNEL", "")
    initramfs = os.environ.get("VSOCKCTL_NESTED_INITRAMFS", "")
    if not kernel or not initramfs:
        raise GuestError("no nested guest prepared (run through scripts/vmtest --nested)")
    if shutil.which("qemu-system-x86_64") is None:
        raise GuestError("qemu-system-x86_64 missing (scripts/vm-packages installs it)")
    return NestedGuest(workdir, Path(kernel), Path(initramfs))
