"""The hybrid stage's VM by hand, for experiments and benchmarks.

    python -m tests.hybrid up DIR                 boot; stay up until Ctrl-C or SIGTERM
    python -m tests.hybrid run DIR 'COMMAND'      run COMMAND in that VM (sh -c)

``up`` starts vhost-device-vsock with its mux at ``DIR/mux.sock`` and boots the
test VM behind it (as the stage does); then this machine reaches guest ports
with ``vsockctl ... --uds DIR/mux.sock`` and the VM's programs reach CID 2 port
P at ``DIR/mux.sock_P``. ``run`` takes the agent for one command, so one
``run`` at a time.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from tests.hybrid.vm import HybridVm
from tests.nested.agent_client import GuestError


def up(workdir: Path) -> int:
    vm = HybridVm(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        ready = vm.boot()
        if vm.agent is not None:
            vm.agent.close()  # the channel is 'run''s from now on
            vm.agent = None
        print(f"hybrid: up in {vm.boot_seconds:.0f} s: {ready}; mux {vm.mux}", flush=True)
        while True:
            vm.check_alive()
            time.sleep(1)
    except GuestError as exc:
        print(f"hybrid: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        vm.shutdown()


def run(workdir: Path, command: str) -> int:
    vm = HybridVm(workdir)
    vm.agent = vm.connect_agent(workdir / "agent.sock", time.monotonic() + 10)
    try:
        done = vm.run("sh", "-c", command, timeout=3600)
    except GuestError as exc:
        print(f"hybrid: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(done.stdout)
    sys.stderr.buffer.write(done.stderr)
    return done.rc if done.rc is not None else 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "up":
        return up(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "run":
        return run(Path(argv[1]), argv[2])
    print("\n".join((__doc__ or "").strip().splitlines()[2:4]), file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
