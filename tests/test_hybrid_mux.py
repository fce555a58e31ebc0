"""vsockctl against a real hybrid vsock mux: vhost-device-vsock here, the test VM behind it.

This machine's end speaks Unix sockets only (``--uds``, ``uds:``, ``mux.sock_PORT``);
the VM's end is real AF_VSOCK over its virtio transport to CID 2, run through the
agent. See :mod:`tests.hybrid`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hybrid.vm import HybridVm
from tests.peers import run_vsockctl, write_pattern_file

pytestmark = [pytest.mark.hybrid, pytest.mark.timeout(900)]

MIB = 1 << 20


def records(text: bytes | str) -> list[dict[str, object]]:
    lines = text.decode() if isinstance(text, bytes) else text
    return [json.loads(line) for line in lines.splitlines() if line.startswith("{")]


def test_info_in_the_vm_sees_the_device(hybrid_vm: HybridVm) -> None:
    done = hybrid_vm.run("vsockctl", "--json", "info")
    assert done.rc == 0, done.text
    assert '"local_cid": 4' in done.text, done.text


def test_host_sends_64m_to_a_guest_receiver(hybrid_vm: HybridVm, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    digest = write_pattern_file(src, 64 * MIB)
    receiver = hybrid_vm.spawn(
        "vsockctl", "recv", "--port", "5000", "--expect-sha256", digest, "/dev/null"
    )
    hybrid_vm.wait_for_output(receiver, "listening")
    sent = run_vsockctl("send", "--uds", str(hybrid_vm.mux), "--port", "5000", "--sha256",
                        str(src), timeout=600)  # fmt: skip
    got = hybrid_vm.wait(receiver, 120)
    assert sent.returncode == 0, sent.stderr
    assert got.rc == 0, got.text
