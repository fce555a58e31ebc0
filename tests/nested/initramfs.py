"""The nested guest's whole root file system, as one initramfs held in RAM.

Python over 9p under two levels of emulation took 37 s to start; from RAM it
takes a fraction of that. So the guest gets an uncompressed ``newc`` cpio
archive (the kernel unpacks it without a decompressor, which would be slow
there) holding:

- busybox (its shell runs ``/init``), socat (the guest's peer) and the shared
  libraries they and Python need, found with ``ldd``;
- this Python, at the same absolute paths, so it finds its standard library as
  it does here; of the library, the modules the agent's preload imports (and
  the whole of each package among them);
- the site packages vsockctl imports (click, rich, psutil and theirs), on
  ``PYTHONPATH`` under ``/opt/vsockctl/site``, and the checkout's ``vsockctl``
  and ``tests/nested`` under ``/opt/vsockctl/src``;
- the guest kernel's virtio, virtio-console and vsock modules, decompressed, in
  dependency order (a built-in one is simply not there);
- ``/init``, which mounts the basics, loads the modules and starts the agent.

    python -m tests.nested.initramfs DIR KERNEL_VERSION [CHECKOUT]

writes DIR/initramfs.cpio, and DIR/vmlinux: the kernel uncompressed, to boot
without the BIOS's loader (see :func:`extract_vmlinux`).
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

SITE = "/opt/vsockctl/site"
SRC = "/opt/vsockctl/src"
# What the guest loads, by module name; dependencies come from modules.dep.
GUEST_MODULES = ("virtio_pci", "virtio_console", "vmw_vsock_virtio_transport", "vsock_diag")
MERGED_USR = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for module in $(cat /modules/order); do
    insmod /modules/$module.ko || echo "nested init: insmod $module failed"
done
port=""
for tries in $(seq 100); do
    for name in /sys/class/virtio-ports/*/name; do
        found=/dev/$(basename "$(dirname "$name")")
        [ "$(cat "$name" 2>/dev/null)" = vsockctl.agent ] && port=$found
    done
    [ -n "$port" ] && [ -e "$port" ] && break
    sleep 0.2
done
echo "nested init: modules loaded, agent port ${port:-missing}, up $(cut -d' ' -f1 /proc/uptime) s"
export PATH=/usr/bin:/usr/sbin:/bin:/sbin HOME=/root PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=%(src)s:%(site)s VSOCKCTL_NESTED_GUEST=1
%(python)s -m tests.nested.agent "$port" || echo "nested init: the agent exited ($?)"
poweroff -f
"""


class Cpio:
    """Writes a newc archive: directories made as needed, each path once."""

    def __init__(self, out: Path) -> None:
        self.file = out.open("wb")
        self.seen: set[str] = set()
        self.inode = 1

    def _entry(
        self, name: str, mode: int, data: bytes, mtime: int = 0, rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name = name.lstrip("/")
        if name in self.seen:
            return
        parent = os.path.dirname(name)
        if parent and parent not in self.seen:
            self.directory(parent)
        self.seen.add(name)
        self.inode += 1
        fields = (self.inode, mode, 0, 0, 1, mtime, len(data), 0, 0, *rdev, len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.file.write(header + name.encode() + b"\0")
        self.file.write(b"\0" * (-(len(header) + len(name) + 1) % 4))
        self.file.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, b"")

    def console(self) -> None:
        """/dev/console, which the kernel opens for init's stdin, stdout and stderr."""
        self._entry("dev/console", stat.S_IFCHR | 0o600, b"", rdev=(5, 1))

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def data(self, name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        self._entry(name, stat.S_IFREG | mode, data, mtime)

    def copy(self, source: str | Path, name: str | None = None) -> None:
        """A file under its own path (or ``name``), mode and mtime kept (byte code checks it)."""
        if str(name or source).lstrip("/") in self.seen:  # a library many others need
            return
        info = os.stat(source)
        self.data(str(name or source), _content(source), info.st_mode & 0o777, int(info.st_mtime))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, b"")
        self.file.close()


def _content(path: str | Path) -> bytes:
    """A file's bytes; a program or library without its symbols, when strip(1) is here.

    Every byte is unpacked by the guest's kernel under two levels of emulation, and
    libpython alone carries some 20 MB of debug symbols.
    """
    data = Path(path).read_bytes()
    if not data.startswith(b"\x7fELF") or shutil.which("strip") is None:
        return data
    with tempfile.TemporaryDirectory() as scratch:
        stripped = Path(scratch) / "stripped"
        run = subprocess.run(
            ["strip", "--strip-unneeded", "-o", str(stripped), str(path)],
            capture_output=True,
            check=False,
        )
        return stripped.read_bytes() if run.returncode == 0 else data


def in_guest(path: str) -> str:
    """Where ``path`` lands in the guest's merged /usr (/lib/x.so is /usr/lib/x.so)."""
    for top, usr in MERGED_USR.items():
        if path == top or path.startswith(top + "/"):
            return "/" + usr + path[len(top) :]
    return path


def copy_binary(cpio: Cpio, path: str, name: str | None = None) -> None:
    """A program or library, under the path it is asked for, with its libraries."""
    cpio.copy(os.path.realpath(path), in_guest(name or path))
    add_libraries(cpio, path)


def add_libraries(cpio: Cpio, path: str) -> None:
    for library in shared_libraries(path):
        cpio.copy(os.path.realpath(library), in_guest(library))


def shared_libraries(path: str) -> list[str]:
    run = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
    found = []
    for line in run.stdout.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            candidate = words[words.index("=>") + 1]
        else:
            candidate = words[0] if words else ""
        if candidate.startswith("/"):
            found.append(candidate)
    return found


def module_files(kernel: str, names: Iterable[str]) -> list[Path]:
    """The .ko files ``names`` need, each after those it depends on."""
    root = Path("/lib/modules") / kernel
    depends: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        module, _, rest = line.partition(":")
        depends[module] = rest.split()
        by_name[Path(module).name.split(".ko")[0].replace("-", "_")] = module
    order: list[str] = []

    def visit(module: str) -> None:
        for dependency in depends.get(module, []):
            visit(dependency)
        if module not in order:
            order.append(module)

    for name in names:
        if name in by_name:  # else built in
            visit(by_name[name])
    return [root / module for module in order]


def add_modules(cpio: Cpio, kernel: str) -> None:
    names = []
    for path in module_files(kernel, GUEST_MODULES):
        name = path.name.split(".ko")[0]
        raw = path.read_bytes()
        if path.name.endswith(".xz"):
            raw = lzma.decompress(raw)
        elif not path.name.endswith(".ko"):
            raise SystemExit(f"initramfs: cannot unpack {path} (only .ko and .ko.xz)")
        cpio.data(f"/modules/{name}.ko", raw)
        names.append(name)
    cpio.data("/modules/order", "\n".join(names).encode() + b"\n")


def python_files(checkout: Path) -> dict[str, list[str]]:
    """Run the agent's preload here and list the files it imported, by where they live."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    run = subprocess.run(
        [sys.executable, "-m", "tests.nested.agent", "--list-imports"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=checkout,
    )
    listed: dict[str, list[str]] = json.loads(run.stdout)
    return listed


def add_tree(cpio: Cpio, directory: Path, name: str) -> None:
    """Every file below ``directory``, as ``name``/..., less optimised byte code."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d not in ("tests", "test")]
        for file in files:
            if ".opt-" in file:
                continue
            source = Path(root) / file
            cpio.copy(source, name + "/" + str(source.relative_to(directory)))
            if ".so" in source.suffixes:
                add_libraries(cpio, str(source))


def add_python(cpio: Cpio, checkout: Path) -> str:
    """This interpreter, its needed library, vsockctl and its packages; returns its path."""
    listed = python_files(checkout)
    stdlib, site = Path(listed["stdlib"][0]), Path(listed["site"][0])
    copy_binary(cpio, sys._base_executable)  # type: ignore[attr-defined]
    for file in listed["stdlib"][1:]:
        path = Path(file)
        if path.name == "__init__.py":
            add_tree(cpio, path.parent, str(path.parent))
        elif path.suffix == ".so":
            copy_binary(cpio, file)
        else:
            cpio.copy(path)
            for cached in (path.parent / "__pycache__").glob(path.stem + ".cpython-*.pyc"):
                if ".opt-" not in cached.name:
                    cpio.copy(cached)
    cpio.copy(stdlib / "os.py")  # how Python finds its prefix
    for top in listed["site"][1:]:
        path = site / top
        if path.is_dir():
            add_tree(cpio, path, f"{SITE}/{top}")
        else:
            cpio.copy(path, f"{SITE}/{top}")
            if path.suffix == ".so":
                add_libraries(cpio, str(path))
    add_tree(cpio, checkout / "vsockctl", f"{SRC}/vsockctl")
    cpio.copy(checkout / "tests" / "__init__.py", f"{SRC}/tests/__init__.py")
    add_tree(cpio, checkout / "tests" / "nested", f"{SRC}/tests/nested")
    return str(sys._base_executable)  # type: ignore[attr-defined]


def build(out: Path, kernel: str, checkout: Path) -> None:
    cpio = Cpio(out)
    try:
        for top, usr in MERGED_USR.items():
            cpio.directory(usr)
            cpio.symlink(top, usr)
        cpio.console()
        cpio.copy(_which("busybox"), "/usr/bin/busybox")
        copy_binary(cpio, _which("socat"), "/usr/bin/socat")
        python = add_python(cpio, checkout)
        cpio.symlink("/usr/bin/python3", python)
        wrapper = f'#!/bin/sh\nexec {python} -m vsockctl "$@"\n'
        cpio.data("/usr/bin/vsockctl", wrapper.encode(), 0o755)
        add_modules(cpio, kernel)
        script = INIT % {"src": SRC, "site": SITE, "python": python}
        cpio.data("/init", script.encode(), 0o755)
    finally:
        cpio.close()


def _which(program: str) -> str:
    found = shutil.which(program, path=f"{os.environ.get('PATH', '')}:/usr/bin:/bin")
    if found is None:
        raise SystemExit(f"initramfs: {program} not found (scripts/vm-packages installs it)")
    return found


def extract_vmlinux(bzimage: Path, out: Path) -> None:
    """The kernel ELF inside Debian's xz-compressed bzImage, which QEMU boots directly (PVH).

    That skips the BIOS's loader and the kernel's own decompression: a third of the
    boot at one level of emulation, minutes at two.
    """
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:  # another compression: QEMU boots the bzImage itself, only slower
        out.write_bytes(data)
        return
    out.write_bytes(lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data[start:]))


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out, kernel = Path(argv[0]), argv[1]
    out.mkdir(parents=True, exist_ok=True)
    build(out / "initramfs.cpio", kernel, Path(argv[2] if len(argv) == 3 else ".").resolve())
    extract_vmlinux(Path(f"/boot/vmlinuz-{kernel}"), out / "vmlinux")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
