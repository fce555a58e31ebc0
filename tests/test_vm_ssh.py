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

pytestmark = [pytest.mark.vsock, pytest.mark.timeout(180)]

SSHD = Path("/opt/vsockctl-vm/openssh-server/usr/sbin/sshd")
# A uid-0 login of the test's own: no shadow entry, so no locked root account
# can refuse it, and sshd's privilege separation user where the machine has none.
USERS = "vsocktest:x:0:0:vsockctl test:/root:/bin/sh\n"
PRIVSEP_USER = "sshd:x:65534:65534:sshd:/run/sshd:/usr/sbin/nologin\n"


@pytest.fixture
def sshd_command(tmp_path: Path) -> str:
    """A command that serves one ssh connection on its stdin and stdout (``sshd -i``).

    The passwd lines it needs are bind-mounted over /etc/passwd in a mount
    namespace of sshd's own: the VM's users stay as they are.
    """
    if not SSHD.exists() or shutil.which("ssh") is None:
        pytest.fail("sshd or ssh missing: scripts/vm-packages installs them")
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)],
            check=True,
        )
    (tmp_path / "authorized_keys").write_bytes((tmp_path / "client_key.pub").read_bytes())
    passwd = Path("/etc/passwd").read_text()
    passwd += USERS + ("" if "\nsshd:" in passwd else PRIVSEP_USER)
    (tmp_path / "passwd").write_text(passwd)
    (tmp_path / "sshd_config").write_text(
        f"HostKey {tmp_path}/host_key\n"
        f"AuthorizedKeysFile {tmp_path}/authorized_keys\n"
        "PermitRootLogin yes\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile none\n"
    )
    (tmp_path / "serve.sh").write_text(
        "mkdir -p /run/sshd\n"
        f"mount --bind {tmp_path}/passwd /etc/passwd\n"
        f"exec {SSHD} -i -e -f {tmp_path}/sshd_config\n"
    )
    return f"unshare -m sh {tmp_path}/serve.sh"


def ssh_args(key: Path, port: int, *command: str) -> list[str]:
    return [
        "ssh", "-n", "-F", "/dev/null", "-i", str(key), "-p", str(port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60",
        "-o", "ProxyCommand=vsockctl connect %h:%p",
        f"vsocktest@vsock/{LOCAL}", *command,
    ]  # fmt: skip


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
            ssh_args(tmp_path / "client_key", port, remote),
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
