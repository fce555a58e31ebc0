"""Debian's sshd as a vsock service for the tests: one connection on stdin and stdout.

``sshd -i`` behind ``vsockctl listen --exec``, as the README's recipe runs it.
sshd is unpacked by scripts/vm-packages (not installed). The passwd lines it
needs are bind-mounted over /etc/passwd in a mount namespace of sshd's own,
so the machine's users stay as they are. Used in the VM by the ssh tests and,
through ``python -m tests.sshd DIR PUBKEY`` run by the agent, in the hybrid
stage's VM (which prints the command to give ``--exec``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SSHD = Path("/opt/vsockctl-vm/openssh-server/usr/sbin/sshd")
# A uid-0 login of the test's own: no shadow entry, so no locked root account
# can refuse it, and sshd's privilege separation user where the machine has none.
USER = "vsocktest"
USERS = f"{USER}:x:0:0:vsockctl test:/root:/bin/sh\n"
PRIVSEP_USER = "sshd:x:65534:65534:sshd:/run/sshd:/usr/sbin/nologin\n"


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def serve_command(directory: Path, client_pubkey: str) -> str:
    """Write sshd's files under ``directory``; the command that serves one connection."""
    keygen(directory / "host_key")
    (directory / "authorized_keys").write_text(client_pubkey)
    passwd = Path("/etc/passwd").read_text()
    passwd += USERS + ("" if "\nsshd:" in passwd else PRIVSEP_USER)
    (directory / "passwd").write_text(passwd)
    (directory / "sshd_config").write_text(
        f"HostKey {directory}/host_key\n"
        f"AuthorizedKeysFile {directory}/authorized_keys\n"
        "PermitRootLogin yes\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile none\n"
    )
    (directory / "serve.sh").write_text(
        "mkdir -p /run/sshd\n"
        f"mount --bind {directory}/passwd /etc/passwd\n"
        f"exec {SSHD} -i -e -f {directory}/sshd_config\n"
    )
    return f"unshare -m sh {directory}/serve.sh"


def ssh_args(key: Path, host: str, port: int, *command: str) -> list[str]:
    """ssh through ``vsockctl connect %h:%p`` to ``host`` (systemd's forms: vsock/CID,
    vsock-mux/PATH ...)."""
    return [
        "ssh", "-n", "-F", "/dev/null", "-i", str(key), "-p", str(port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60",
        "-o", "ProxyCommand=vsockctl connect %h:%p",
        f"{USER}@{host}", *command,
    ]  # fmt: skip


if __name__ == "__main__":
    where = Path(sys.argv[1])
    where.mkdir(parents=True, exist_ok=True)
    print(serve_command(where, sys.argv[2]))
