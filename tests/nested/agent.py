"""The nested guest's agent: runs what the test VM asks, over a virtio-serial port.

The hybrid stage runs it in the test VM too, for the tests on this machine
(``python -m tests.nested.agent vsockctl.agent``: a port's name or its device).
In the nested guest it is the first Python and the only long-lived one. The control channel
is a virtio-serial port (``vsockctl.agent``), not vsock, so that the tests see
only their own vsock sockets. One JSON object a line each way; each request
gets one reply:

- ``{"op": "spawn", "argv": [...], "stdin": B64}`` starts a program with stdin
  from those bytes (or /dev/null) and stdout and stderr into files; replies
  ``{"pid": N}``. For ``argv[0] == "vsockctl"`` the agent forks and the child
  runs vsockctl's command line in-process (``cli.main``), with every module
  already imported here: a fresh interpreter costs over two minutes under two
  levels of emulation (the installed ``/usr/bin/vsockctl``, run through
  ``sh -c``, is that).
- ``{"op": "wait", "pid": N, "timeout": S}`` replies ``{"rc": RC, "stdout":
  B64, "stderr": B64}``, with ``rc`` null while it still runs (the output so
  far comes along, so ``timeout: 0`` peeks).
- ``{"op": "signal", "pid": N, "signal": SIG}`` signals its process group.

``python -m tests.nested.agent --list-imports`` preloads as the guest would and
prints the files that took (for the initramfs builder).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import pkgutil
import signal
import sys
import sysconfig
import time
import traceback
from pathlib import Path
from typing import Any

WORK = Path("/tmp/agent")


# The commands the tests run in the guest, imported before the first fork.
GUEST_COMMANDS = ("connect", "info", "listen", "ls", "recv", "send", "throughput")


def preload(everything: bool = False) -> None:
    """Import the guest's commands, and what they import when they run; with
    ``everything``, all of vsockctl (for the initramfs, so any command works there)."""
    import hashlib

    import psutil

    import vsockctl

    if everything:
        for module in pkgutil.walk_packages(vsockctl.__path__, "vsockctl."):
            if not module.name.endswith("__main__"):  # that one runs the command line
                importlib.import_module(module.name)
        # click imports it only to suggest the option or command a mistyped one meant
        importlib.import_module("difflib")
    for command in GUEST_COMMANDS:
        importlib.import_module(f"vsockctl.cli.{command}")
    for name in ("rich.console", "rich.progress", "rich.table", "rich.live", "rich.text"):
        importlib.import_module(name)
    hashlib.sha256(b"")
    psutil.Process().name()
    importlib.import_module("importlib.metadata").version("vsockctl")  # --version


def list_imports() -> dict[str, list[str]]:
    preload(everything=True)
    stdlib = sysconfig.get_paths()["stdlib"]
    site = sysconfig.get_paths()["purelib"]
    found: dict[str, list[str]] = {"stdlib": [stdlib], "site": [site]}
    tops: set[str] = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        if file.startswith(site + "/"):
            top = file[len(site) + 1 :].split("/")[0]
            if not top.startswith(("__editable__", "_distutils_hack")):  # the venv's own hooks
                tops.add(top)
        elif file.startswith(stdlib + "/"):
            found["stdlib"].append(file)
    for top in [*tops, "vsockctl"]:  # and what importlib.metadata reads of them
        tops.update(path.name for path in Path(site).glob(f"{top}-*.dist-info"))
    found["site"] += sorted(tops)
    return found


class Agent:
    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.pending = b""
        self.children: dict[int, tuple[Path, Path]] = {}
        self.count = 0
        self.ops = {"spawn": self.spawn, "wait": self.wait, "signal": self.signal}

    def send(self, reply: dict[str, Any]) -> None:
        data = json.dumps(reply).encode() + b"\n"
        while data:
            data = data[os.write(self.channel, data) :]

    def requests(self) -> Any:
        while True:
            while b"\n" not in self.pending:
                chunk = os.read(self.channel, 65536)
                if not chunk:
                    time.sleep(0.1)  # the test VM not connected (yet, or any more)
                    continue
                self.pending += chunk
            line, self.pending = self.pending.split(b"\n", 1)
            yield json.loads(line)

    def serve(self) -> None:
        for request in self.requests():
            try:
                reply = self.ops[request["op"]](request)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.send(reply)

    def spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        stdin = Path("/dev/null")
        if request.get("stdin"):
            stdin = WORK / f"{self.count}.in"
            stdin.write_bytes(base64.b64decode(request["stdin"]))
        out, err = WORK / f"{self.count}.out", WORK / f"{self.count}.err"
        argv = list(request["argv"])
        in_process = argv[0] == "vsockctl"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(argv, stdin, out, err, in_process)
        self.children[pid] = (out, err)
        return {"pid": pid}

    def wait(self, request: dict[str, Any]) -> dict[str, Any]:
        pid = int(request["pid"])
        out, err = self.children[pid]
        deadline = time.monotonic() + float(request.get("timeout", 0))
        rc = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                del self.children[pid]
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return {"rc": rc, "stdout": _b64(out), "stderr": _b64(err)}

    def signal(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            os.killpg(int(request["pid"]), int(request["signal"]))
        except ProcessLookupError:
            return {"sent": False}
        return {"sent": True}


def _b64(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except FileNotFoundError:
        return ""


def child(argv: list[str], stdin: Path, out: Path, err: Path, in_process: bool) -> None:
    """In the forked child: its own process group, the files as 0, 1 and 2, then run."""
    status = 127
    try:
        os.setpgid(0, 0)
        os.dup2(os.open(stdin, os.O_RDONLY), 0)
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        if in_process:
            from vsockctl.cli import cli

            sys.argv = argv
            status = int(cli.main(argv[1:], prog_name="vsockctl", standalone_mode=False) or 0)
        else:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execvp(argv[0], argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


def main(argv: list[str]) -> int:
    if argv == ["--list-imports"]:
        print(json.dumps(list_imports()))
        return 0
    log = os.dup(2)  # the console, for the agent's own words
    try:
        return serve(argv[0], log)
    except BaseException:
        os.write(log, traceback.format_exc().encode())
        raise


def find_port(name: str, timeout: float = 30.0) -> str:
    """The device of the virtio-serial port called ``name`` (a path is taken as it is)."""
    if name.startswith("/"):
        return name
    deadline = time.monotonic() + timeout
    while True:
        for label in Path("/sys/class/virtio-ports").glob("*/name"):
            with contextlib.suppress(OSError):
                if label.read_text().strip() == name and Path("/dev", label.parent.name).exists():
                    return f"/dev/{label.parent.name}"
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no virtio-serial port named {name}")
        time.sleep(0.2)


def serve(port: str, log: int) -> int:
    started = time.monotonic()
    port = find_port(port)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # so nothing preloaded takes the console for a terminal
    WORK.mkdir(parents=True, exist_ok=True)
    preload()
    from vsockctl.discover.system import ProbePaths, read_local_cid

    channel = os.open(port, os.O_RDWR)
    ready = {
        "ready": True,
        "kernel": os.uname().release,
        "cid": read_local_cid(ProbePaths())[0],
        "preload_seconds": round(time.monotonic() - started, 1),
        "started_at": round(started, 1),  # seconds since the kernel booted (CLOCK_MONOTONIC)
    }
    os.write(log, f"nested agent: {json.dumps(ready)}\n".encode())
    agent = Agent(channel)
    agent.send(ready)
    agent.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
