"""ssh over vsock in the VM: Debian's sshd behind 'vsockctl listen --exec', reached with
ProxyCommand='vsockctl connect %h:%p' and systemd's host form vsock/CID."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import free_port, keep_reading, read_until_listening, stop_process, vsockctl

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(240)]

# scripts/vm-packages unpacks Debian's openssh-server there (the machine has no sshd).
SSHD_PLACES = ("/opt/vsockctl-vm/openssh-server/usr/sbin/sshd", "/usr/sbin/sshd")


LOGIN = "vsockssh"
ROOTLIKE = "0:0:vsockctl ssh test:/tmp:/bin/sh"


def sshd() -> str:
    found = [place for place in SSHD_PLACES if os.path.exists(place)]
    assert found, f"no sshd at {SSHD_PLACES}: run scripts/vm-packages"
    return found[0]


def sshd_config(tmp: Path) -> Path:
    """Host key, the client's key authorised for root, no PAM: an sshd for one test."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp / "host"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp / "id"], check=True)
    (tmp / "authorized_keys").write_bytes((tmp / "id.pub").read_bytes())
    config = tmp / "sshd_config"
    config.write_text(
        f"HostKey {tmp}/host\nAuthorizedKeysFile {tmp}/authorized_keys\nPermitRootLogin yes\n"
        "StrictModes no\nUsePAM no\nPidFile none\n"
    )
    # The guest's /etc is throw-away. sshd separates privileges as the user sshd; and
    # root's '*' in /etc/shadow reads as a locked account without PAM, so the session
    # logs in as LOGIN, root under another name with no shadow entry.
    for name, entry in (("sshd", "74:65534:sshd:/run/sshd:/usr/sbin/nologin"), (LOGIN, ROOTLIKE)):
        try:
            pwd.getpwnam(name)
        except KeyError:
            with open("/etc/passwd", "a") as passwd:
                passwd.write(f"{name}:x:{entry}\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    return config


def test_ssh_with_vsockctl_as_proxycommand(tmp_path: Path) -> None:
    config = sshd_config(tmp_path)
    port = free_port()
    server = vsockctl(
        "--json",
        "listen",
        "--port",
        str(port),
        "-k",
        "--exec",
        f"{sshd()} -i -f {config} -E {tmp_path}/sshd.log",
        stdout=subprocess.PIPE,
    )
    try:
        read_until_listening(server.stdout)
        keep_reading(server.stdout)
        proxy = f"{sys.executable} -m vsockctl connect %h:%p"
        ssh = ["ssh", "-F", "/dev/null", "-i", str(tmp_path / "id"), "-p", str(port)]
        ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        ssh += ["-o", "BatchMode=yes", "-o", f"ProxyCommand={proxy}"]
        ssh += [f"{LOGIN}@vsock/1", "echo", "hello over vsock; uname -r"]
        session = subprocess.run(ssh, capture_output=True, timeout=180)
    finally:
        stop_process(server)
    log = (tmp_path / "sshd.log").read_text() if (tmp_path / "sshd.log").exists() else ""
    assert session.returncode == 0, (session.stderr, log)
    lines = session.stdout.decode().splitlines()
    assert lines == ["hello over vsock", os.uname().release], (lines, log)
