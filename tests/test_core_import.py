"""The core stays free of the terminal layer: importing it loads neither click nor rich."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import vsockctl


def core_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(vsockctl.__path__, "vsockctl.")
        if not m.name.startswith("vsockctl.cli") and m.name != "vsockctl.__main__"
    )


def test_core_imports_without_click_or_rich() -> None:
    modules = core_modules()
    assert "vsockctl.vsock.address" in modules and "vsockctl.vsock.sockets" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_public_api_from_the_package_root() -> None:
    """What a script imports from ``vsockctl`` is the core's own, and every name in
    ``__all__`` is there."""
    from vsockctl import connect, listen, parse_address
    from vsockctl.vsock import address, sockets

    assert (connect, listen, parse_address) == (
        sockets.connect,
        sockets.listen,
        address.parse_address,
    )
    assert parse_address("3:5000") == address.VsockAddress(3, 5000)
    missing = [name for name in vsockctl.__all__ if not hasattr(vsockctl, name)]
    assert missing == []


def test_version_is_the_one_in_pyproject() -> None:
    """The installed metadata, ``__version__`` and ``--version`` all say what
    pyproject.toml says (read here from the file, not through the code's own call)."""
    pyproject = Path(__file__).parent.parent / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert vsockctl.__version__ == declared
    shown = subprocess.run(
        [sys.executable, "-m", "vsockctl", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert declared in shown.stdout.split()


def test_every_public_name_keeps_its_meaning_after_every_import() -> None:
    """No submodule shares a name with what the package root exports (``vsockctl.probe``
    was both ``system.probe`` and, once imported, a module)."""
    code = (
        "import importlib, pkgutil, vsockctl\n"
        "before = {n: getattr(vsockctl, n) for n in vsockctl.__all__ if n != '__version__'}\n"
        "for m in pkgutil.walk_packages(vsockctl.__path__, 'vsockctl.'):\n"
        "    if m.name != 'vsockctl.__main__': importlib.import_module(m.name)\n"
        "print(sorted(n for n, v in before.items() if getattr(vsockctl, n) is not v))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
