"""ssh into a guest through vsockctl: a real OpenSSH session over AF_VSOCK, in the VM.

The README's recipe, both ends: Debian's sshd (unpacked by scripts/vm-packages,
not installed) answers one connection through ``vsockctl listen --exec 'sshd -i'``,
and Debian's ssh reaches it with ``ProxyCommand='vsockctl connect %h:%p'`` and
systemd's host form ``vsock/1``, as on systems older than systemd 256.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.peers import LOCAL, free_port, process, vsockctl_args
from tests.sshd import SSHD, keygen, serve_command, ssh_args

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(180)]


@pytest.fixture
def sshd_command(tmp_path: Path) -> str:
    """A command that serves one ssh connection on its stdin and stdout (``sshd -i``)."""
    if not SSHD.exists() or shutil.which("ssh") is None:
        pytest.fail("sshd or ssh missing: scripts/vm-packages installs them")
    keygen(tmp_path / "client_key")
    return serve_command(tmp_path, (tmp_path / "client_key.pub").read_text())


def test_ssh_logs_in_through_proxycommand_and_listen_exec(
    sshd_command: str, tmp_path: Path
) -> None:
    port = free_port()
    with process(
        vsockctl_args("listen", "--port", str(port), "--exec", sshd_command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as listener:
        assert listener.stderr is not None
        said = b""
        while b"listening on" not in said:  # the port is open
            line = listener.stderr.readline()
            assert line, said
            said += line
        remote = "echo logged in as $(id -u); cat /proc/version"
        session = subprocess.run(
            ssh_args(tmp_path / "client_key", f"vsock/{LOCAL}", port, remote),
            capture_output=True,
            timeout=120,
        )
        _, listen_err = listener.communicate(timeout=60)  # --once: done after this client
    assert session.returncode == 0, (session.stderr, listen_err)
    lines = session.stdout.decode().splitlines()
    assert lines[0] == "logged in as 0"
    assert lines[1] == Path("/proc/version").read_text().strip()  # it ran on this machine
    assert b"Accepted publickey for vsocktest" in listen_err  # sshd's own log, through --exec
    assert listener.returncode == 0, listen_err
