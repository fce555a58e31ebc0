"""Run one command in the nested guest, by hand: ``scripts/vmrun --nested 'COMMAND'``.

Inside the test VM this boots the guest prepared by ``scripts/vmrun``, runs
COMMAND there and prints its output; the exit status is COMMAND's. A COMMAND
that is a plain ``vsockctl ...`` runs forked from the guest's agent (fast);
anything else runs under the guest's busybox ``sh -c``.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

from tests.nested.agent_client import GuestError
from tests.nested.guest import from_environment

SHELL_SIGNS = set("|&;<>()$`\\\"'*?[#~=%")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.nested 'COMMAND'", file=sys.stderr)
        return 2
    command = argv[0]
    words = shlex.split(command)
    plain = words[:1] == ["vsockctl"] and not SHELL_SIGNS & set(command)
    guest = from_environment(Path(tempfile.mkdtemp(prefix="nested-")))
    try:
        ready = guest.boot()
        print(f"nested: guest up in {guest.boot_seconds:.0f} s: {ready}", file=sys.stderr)
        done = guest.run(*(words if plain else ["sh", "-c", command]), timeout=1800)
    except GuestError as exc:
        print(f"nested: {exc}", file=sys.stderr)
        return 1
    finally:
        guest.shutdown()
    sys.stdout.buffer.write(done.stdout)
    sys.stderr.buffer.write(done.stderr)
    return done.rc if done.rc is not None else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
