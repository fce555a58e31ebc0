"""The test VM behind a real hybrid mux: vhost-device-vsock here, the VM through vmrun.

vm = HybridVm(workdir)
vm.boot()
done = vm.run("vsockctl", "recv", "--port", "5000")   # in the VM, through its agent
... vsockctl send --uds vm.mux --port 5000 ...          # here, Unix sockets only
vm.shutdown()
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from tests.nested.agent_client import AgentClient, GuestError

GUEST_CID = 4
BOOT_TIMEOUT = 600.0
CHECKOUT = Path(__file__).resolve().parents[2]
DEVICE = Path("/opt/vsockctl-vm/vhost-device-vsock/usr/bin/vhost-device-vsock")


class HybridVm(AgentClient):
    def __init__(self, workdir: Path, kernel: str = "6.12") -> None:
        super().__init__(workdir)
        self.kernel = kernel
        self.device: subprocess.Popen[bytes] | None = None
        self.vmrun: subprocess.Popen[bytes] | None = None

    @property
    def mux(self) -> Path:
        """The host side of the guest's vsock device: ``CONNECT <port>`` here."""
        return self.workdir / "mux.sock"

    @property
    def vhost_user_socket(self) -> Path:
        return self.workdir / "vhu.sock"

    # -- life ------------------------------------------------------------------------------

    def boot(self, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
        if not DEVICE.exists():
            raise GuestError(f"{DEVICE} missing (scripts/vm-packages unpacks it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.start_device()
        command = "exec python -m tests.nested.agent vsockctl.agent"
        with (self.workdir / "vmrun.log").open("wb") as log:
            self.vmrun = subprocess.Popen(
                [str(CHECKOUT / "scripts/vmrun"), "--kernel", self.kernel,
                 "--hybrid", str(self.workdir), command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        ready = self.await_ready(started, timeout, "the VM")
        if not self.mux.exists():
            raise GuestError("the VM is up but the device made no mux socket" + self.tail())
        return ready

    def start_device(self) -> None:
        """vhost-device-vsock, with its vhost-user socket and mux here. No ``--forward-cid``
        or ``--forward-listen``: those would open real vsock sockets on this machine."""
        spec = f"guest-cid={GUEST_CID},socket={self.vhost_user_socket},uds-path={self.mux}"
        with (self.workdir / "device.log").open("wb") as log:
            self.device = subprocess.Popen(
                [str(DEVICE), "--vm", spec],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "debug")},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.vhost_user_socket.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise GuestError("vhost-device-vsock made no vhost-user socket" + self.tail())
            time.sleep(0.1)

    def check_alive(self) -> None:
        for name, proc in (("vhost-device-vsock", self.device), ("the VM (vmrun)", self.vmrun)):
            if proc is not None and proc.poll() is not None:
                raise GuestError(f"{name} exited ({proc.returncode})" + self.tail())

    def tail(self, lines: int = 40) -> str:
        said = ""
        for name in ("device.log", "vmrun.log", "console.log"):
            try:
                text = (self.workdir / name).read_text(errors="replace")
            except OSError:
                continue
            said += f"\n--- {name}, last lines ---\n" + "\n".join(text.splitlines()[-lines:])
        return said

    def device_log(self) -> str:
        return (self.workdir / "device.log").read_text(errors="replace")

    def kill_device(self) -> None:
        """Pull the backend out from under the VM (the VMM dying)."""
        assert self.device is not None
        self.device.kill()
        self.device.wait()

    def shutdown(self) -> None:
        if self.agent is not None:
            self.agent.close()
        if self.vmrun is not None and self.vmrun.poll() is None:
            # QEMU runs under timeout(1), in a process group of its own: found by its socket.
            qemus = [p for p in psutil.process_iter(["cmdline"])
                     if str(self.vhost_user_socket) in " ".join(p.info["cmdline"] or ())
                     and p.pid != (self.device.pid if self.device else None)]  # fmt: skip
            for proc in qemus:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            psutil.wait_procs(qemus, timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.vmrun.pid, signal.SIGTERM)
            try:
                self.vmrun.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.vmrun.pid, signal.SIGKILL)
                self.vmrun.wait()
        if self.device is not None and self.device.poll() is None:
            self.device.terminate()
            try:
                self.device.wait(10)
            except subprocess.TimeoutExpired:
                self.device.kill()
                self.device.wait()
