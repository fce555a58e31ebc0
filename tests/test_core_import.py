"""The core stays free of the terminal layer: importing it loads neither click nor rich."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

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
    from vsockctl import connect, listen, parse_address

    assert callable(connect) and callable(listen)
    assert str(parse_address("3:5000")) == "3:5000"


def test_version_comes_from_metadata() -> None:
    from importlib.metadata import version

    assert vsockctl.__version__ == version("vsockctl")


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
