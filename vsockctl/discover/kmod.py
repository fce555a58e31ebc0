"""Whether a kernel module can be had here: loaded, built in, loadable, or not at all.

Read from ``/sys/module`` and this kernel's ``modules.builtin`` and
``modules.dep``, so that a hint says ``modprobe NAME`` only where modprobe
would find NAME, and otherwise why not.
"""

from __future__ import annotations

import platform
from enum import StrEnum
from pathlib import Path

SYS_MODULE = Path("/sys/module")
LIB_MODULES = Path("/lib/modules")


class ModuleState(StrEnum):
    LOADED = "loaded"
    BUILTIN = "built-in"
    LOADABLE = "loadable"  # in modules.dep: modprobe finds it
    ABSENT = "absent"  # this kernel's module lists do not have it
    UNKNOWN = "unknown"  # no module lists for this kernel (/lib/modules/RELEASE absent)


def _listed(path: Path, module: str) -> bool | None:
    """Whether ``module`` is in the list at ``path`` (None: the list is unreadable)."""
    names = {module, module.replace("_", "-")}
    try:
        with path.open() as lines:
            for line in lines:
                file_name = line.split(":", 1)[0].rsplit("/", 1)[-1]
                if file_name.split(".ko", 1)[0] in names:
                    return True
    except OSError:
        return None
    return False


def module_state(
    module: str,
    release: str | None = None,
    sys_module: Path = SYS_MODULE,
    lib_modules: Path = LIB_MODULES,
) -> ModuleState:
    if (sys_module / module).is_dir():
        return ModuleState.LOADED
    tree = lib_modules / (release or platform.release())
    builtin = _listed(tree / "modules.builtin", module)
    if builtin:
        return ModuleState.BUILTIN
    loadable = _listed(tree / "modules.dep", module)
    if loadable:
        return ModuleState.LOADABLE
    return ModuleState.UNKNOWN if loadable is None else ModuleState.ABSENT


def load_hint(module: str, state: ModuleState, release: str | None = None) -> str:
    """What to do to get ``module``, true for this kernel."""
    release = release or platform.release()
    if state is ModuleState.ABSENT:
        return f"this kernel ({release}) was built without {module}"
    if state is ModuleState.UNKNOWN:
        return (
            f"this kernel's modules are not installed ({LIB_MODULES / release} is absent), "
            f"so {module} cannot be loaded here"
        )
    return f"'modprobe {module}' (as root)"
