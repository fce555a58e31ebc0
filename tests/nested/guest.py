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

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.nested.agent_client import AgentClient, GuestError

GUEST_CID = 3
BOOT_TIMEOUT = 900.0  # seconds; a boot under two levels of emulation takes minutes


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


class NestedGuest(AgentClient):
    def __init__(self, workdir: Path, kernel: Path, initramfs: Path, cid: int = GUEST_CID) -> None:
        super().__init__(workdir)
        self.kernel = kernel
        self.initramfs = initramfs
        self.cid = cid
        self.qemu: subprocess.Popen[bytes] | None = None

    # -- life ------------------------------------------------------------------------------

    def boot(self, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
        load_vhost()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        command = qemu_command(self.kernel, self.initramfs, self.workdir, self.cid)
        with (self.workdir / "qemu.log").open("wb") as log:
            self.qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self.await_ready(started, timeout, "the guest")

    def check_alive(self) -> None:
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
