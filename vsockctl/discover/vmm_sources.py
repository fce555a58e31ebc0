"""Where each VMM keeps a guest's vsock CID (or hybrid socket): one reader per VMM.

Each reader takes a process's command line and returns what it states, reading
only: the command line itself, the config files it names, and the VMM's
read-only API (HTTP over its Unix socket). A reader that cannot make sense of
something says so in a note instead of raising.

=====================  =====================================================
QEMU                   ``-device vhost-vsock-pci,guest-cid=N`` (also
                       ``vhost-vsock-device``, ``-ccw``, JSON ``-device {..}``);
                       ``vhost-user-vsock-*,chardev=ID`` names its backend's socket
Firecracker            ``--config-file FILE`` (JSON ``vsock.guest_cid``,
                       ``vsock.uds_path``), else ``GET /vm/config`` on ``--api-sock``
Cloud Hypervisor       ``--vsock cid=N,socket=PATH``, else ``GET /api/v1/vm.info``
                       on ``--api-socket``
crosvm                 ``--cid N`` or ``--vsock cid=N``
vhost-device-vsock     ``--vm guest-cid=N,uds-path=PATH,socket=S`` (or the older
                       ``--guest-cid N --uds-path PATH --socket S``)
systemd-vmspawn        ``--vsock-cid=N``
libvirt                ``/run/libvirt/qemu/DOMAIN.xml``: ``<vsock><cid address='N'/>``
=====================  =====================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

API_TIMEOUT = 2.0
CONFIG_MAX = 1 << 20  # a config file larger than this is not read
VHOST_VSOCK_DRIVERS = ("vhost-vsock-pci", "vhost-vsock-device", "vhost-vsock-ccw")


@dataclass
class Guest:
    """A VM found on this host and how to reach it over vsock."""

    vmm: str
    pid: int
    name: str
    cid: int | None = None
    uds: str | None = None  # hybrid vsock socket (Firecracker, Cloud Hypervisor ...)
    source: str = ""  # where the CID or socket came from
    notes: list[str] = field(default_factory=list)
    backend: str | None = None  # QEMU vhost-user-vsock: the backend's vhost-user socket


def option(argv: Sequence[str], *names: str) -> Iterator[str]:
    """Every value of ``--name VALUE`` or ``--name=VALUE`` (any of ``names``) in ``argv``."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                yield argv[index + 1]
            elif arg.startswith(name + "="):
                yield arg[len(name) + 1 :]


def first(argv: Sequence[str], *names: str) -> str | None:
    return next(option(argv, *names), None)


def keyvals(text: str) -> dict[str, str]:
    """``a=1,b=2`` (QEMU and Cloud Hypervisor style; ``,,`` is a literal comma)."""
    parts = text.replace(",,", "\0").split(",")
    pairs = (part.replace("\0", ",").partition("=") for part in parts)
    return {key: value for key, eq, value in pairs if eq}


def to_cid(text: object) -> int | None:
    try:
        cid = int(str(text), 0)
    except ValueError:
        return None
    return cid if 0 <= cid <= 0xFFFFFFFF else None


def read_config(path: str, notes: list[str]) -> str | None:
    """A config file's text, or None with a note saying why not."""
    try:
        with open(path, encoding="utf-8", errors="replace") as config:
            return config.read(CONFIG_MAX)
    except OSError as exc:
        notes.append(f"cannot read {path}: {exc.strerror}")
        return None


def http_get_json(uds: str, path: str, notes: list[str]) -> Any:
    """``GET path`` over the Unix socket ``uds`` (a VMM's API), its JSON body or None."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(API_TIMEOUT)
            sock.connect(uds)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n".encode())
            reply = _read_http(sock)
    except OSError as exc:
        notes.append(f"API {uds}: {exc.strerror or exc}")
        return None
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        notes.append(f"API {uds} GET {path}: {status.decode(errors='replace')[:60]!r}")
        return None
    try:
        return json.loads(body)
    except ValueError:
        notes.append(f"API {uds} GET {path}: the answer is not JSON")
        return None


def _read_http(sock: socket.socket) -> bytes:
    """One HTTP response: up to Content-Length if given, else to the close."""
    data = b""
    while len(data) < CONFIG_MAX:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                length = value.strip()
                is_length = key.strip().lower() == b"content-length" and length.isdigit()
                if is_length and len(body) >= int(length):
                    return data
    return data


def _vsock_section(config: Any) -> tuple[int | None, str | None]:
    """``{"vsock": {"guest_cid"|"cid": N, "uds_path"|"socket": P}}`` (Firecracker, CH)."""
    vsock = config.get("vsock") if isinstance(config, dict) else None
    if not isinstance(vsock, dict):
        return None, None
    cid = to_cid(vsock.get("guest_cid", vsock.get("cid", "")))
    uds = vsock.get("uds_path", vsock.get("socket"))
    return cid, uds if isinstance(uds, str) else None


def qemu(pid: int, argv: Sequence[str]) -> Guest:
    name = first(argv, "-name") or f"qemu-{pid}"
    if "guest=" in name:  # -name guest=NAME,debug-threads=on (libvirt)
        name = keyvals(name).get("guest", name)
    guest = Guest("qemu", pid, name.split(",", 1)[0])
    chardevs = {keyvals(c).get("id"): keyvals(c) for c in option(argv, "-chardev")}
    for device in option(argv, "-device"):
        if device.startswith("{"):  # libvirt's JSON syntax
            try:
                props = {k: str(v) for k, v in json.loads(device).items()}
            except (ValueError, AttributeError):
                guest.notes.append("a -device in JSON that does not parse")
                continue
            driver = props.get("driver", "")
        else:
            driver, _, rest = device.partition(",")
            props = keyvals(rest)
        if driver in VHOST_VSOCK_DRIVERS and to_cid(props.get("guest-cid", "")) is not None:
            guest.cid = to_cid(props["guest-cid"])
            guest.source = f"command line: -device {driver},guest-cid={guest.cid}"
        elif driver.startswith("vhost-user-vsock"):
            chardev = chardevs.get(props.get("chardev"), {})
            guest.backend = chardev.get("path")
            guest.source = f"command line: -device {driver} (backend {guest.backend})"
    if guest.cid is None and guest.backend is None:
        guest.notes.append("no vsock device")
    return guest


def firecracker(pid: int, argv: Sequence[str]) -> Guest:
    config_file, api = first(argv, "--config-file"), first(argv, "--api-sock")
    name = first(argv, "--id") or (os.path.basename(config_file) if config_file else None)
    guest = Guest("firecracker", pid, name or f"firecracker-{pid}")
    config: Any = None
    if config_file is not None and (text := read_config(config_file, guest.notes)) is not None:
        try:
            config = json.loads(text)
            guest.source = f"config file {config_file}"
        except ValueError:
            guest.notes.append(f"{config_file} is not JSON")
    if _vsock_section(config) == (None, None) and api is not None:
        config = http_get_json(api, "/vm/config", guest.notes)
        guest.source = f"API {api}: GET /vm/config"
    guest.cid, guest.uds = _vsock_section(config)
    return guest


def cloud_hypervisor(pid: int, argv: Sequence[str]) -> Guest:
    api = first(argv, "--api-socket")
    if api is not None and "=" in api:
        api = keyvals(api).get("path")
    guest = Guest("cloud-hypervisor", pid, f"cloud-hypervisor-{pid}")
    if api:
        guest.name = os.path.basename(api).removesuffix(".sock")
    vsock = first(argv, "--vsock")
    if vsock is not None:
        props = keyvals(vsock)
        guest.cid, guest.uds = to_cid(props.get("cid", "")), props.get("socket")
        guest.source = f"command line: --vsock {vsock}"
    elif api:
        info = http_get_json(api, "/api/v1/vm.info", guest.notes)
        config = info.get("config") if isinstance(info, dict) else None
        guest.cid, guest.uds = _vsock_section(config)
        guest.source = f"API {api}: GET /api/v1/vm.info"
    return guest


def crosvm(pid: int, argv: Sequence[str]) -> Guest:
    guest = Guest("crosvm", pid, first(argv, "--name") or f"crosvm-{pid}")
    if (cid := first(argv, "--cid")) is not None:
        guest.cid, guest.source = to_cid(cid), f"command line: --cid {cid}"
    elif (vsock := first(argv, "--vsock")) is not None:
        guest.cid = to_cid(keyvals(vsock).get("cid", vsock))
        guest.source = f"command line: --vsock {vsock}"
    return guest


def vhost_device_vsock(pid: int, argv: Sequence[str]) -> list[Guest]:
    """One guest per ``--vm`` (the daemon serves several), or the single older form."""
    guests = []
    for vm in option(argv, "--vm"):
        props = keyvals(vm)
        guest = Guest("vhost-device-vsock", pid, f"vhost-device-vsock-{pid}")
        guest.cid, guest.uds = to_cid(props.get("guest-cid", "3")), props.get("uds-path")
        guest.backend, guest.source = props.get("socket"), f"command line: --vm {vm}"
        guests.append(guest)
    if not guests and (uds := first(argv, "--uds-path")) is not None:
        cid = first(argv, "--guest-cid") or "3"
        guest = Guest("vhost-device-vsock", pid, f"vhost-device-vsock-{pid}", to_cid(cid), uds)
        guest.backend, guest.source = (
            first(argv, "--socket"),
            "command line: --guest-cid/--uds-path",
        )
        guests.append(guest)
    if not guests and (config := first(argv, "--config")) is not None:
        guests.append(Guest("vhost-device-vsock", pid, f"vhost-device-vsock-{pid}"))
        guests[0].notes.append(f"its guests are in {config} (YAML, not read)")
    return guests


def systemd_vmspawn(pid: int, argv: Sequence[str]) -> Guest:
    image = first(argv, "--image", "-i", "--directory", "-D")
    name = first(argv, "--machine", "-M") or (os.path.basename(image) if image else None)
    guest = Guest("systemd-vmspawn", pid, name or f"vmspawn-{pid}")
    if (cid := first(argv, "--vsock-cid")) is not None:
        guest.cid, guest.source = to_cid(cid), f"command line: --vsock-cid={cid}"
    return guest


def libvirt_domains(directory: str = "/run/libvirt/qemu") -> Iterator[tuple[int | None, Guest]]:
    """The running domains libvirt records: (QEMU's pid, the guest) from each status XML."""
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(directory)):
            if entry.endswith(".xml"):
                yield _libvirt_domain(os.path.join(directory, entry))


def _libvirt_domain(path: str) -> tuple[int | None, Guest]:
    import xml.etree.ElementTree as ElementTree  # on first use: slow to load

    guest = Guest("libvirt", 0, os.path.basename(path).removesuffix(".xml"), source=path)
    text = read_config(path, guest.notes)
    try:
        root = ElementTree.fromstring(text) if text is not None else None
    except ElementTree.ParseError as exc:
        guest.notes.append(f"{path} is not XML ({exc})")
        root = None
    if root is None:
        return None, guest
    domain = root if root.tag == "domain" else root.find("domain")
    pid = to_cid(root.get("pid", "")) if root.tag == "domstatus" else None
    if domain is not None:
        guest.name = domain.findtext("name") or guest.name
        cid = domain.find("devices/vsock/cid")
        if cid is not None:
            guest.cid = to_cid(cid.get("address", ""))
    guest.pid = pid or 0
    return pid, guest


Reader = Callable[[int, Sequence[str]], "Guest | list[Guest]"]
READERS: dict[str, Reader] = {
    "firecracker": firecracker,
    "cloud-hypervisor": cloud_hypervisor,
    "crosvm": crosvm,
    "vhost-device-vsock": vhost_device_vsock,
    "systemd-vmspawn": systemd_vmspawn,
}


def reader_for(argv: Sequence[str]) -> Reader | None:
    """The reader for a command line, by its program's name."""
    program = os.path.basename(argv[0]) if argv else ""
    if program.startswith("qemu-system") or program in ("qemu-kvm", "kvm"):
        return qemu
    return READERS.get(program)
