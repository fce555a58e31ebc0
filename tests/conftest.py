"""Shared fixtures, and the rule for the ``vsock`` marker.

Tests marked ``vsock`` move real bytes over AF_VSOCK, which needs the loopback
transport (CID 1). The development and CI machines lack it, and must never
send anywhere else, so those tests skip there and run in the VM tier
(``scripts/vmtest``), where skipping them is a failure.
"""

from __future__ import annotations

import os
import platform
import tempfile

# Every --json record a test makes vsockctl print (in-process or as a subprocess)
# is checked against its declaration in vsockctl/events/ before it goes out.
os.environ["VSOCKCTL_CHECK_EVENTS"] = "1"
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from tests.nested.agent_client import GuestError
from vsockctl.cli import cli
from vsockctl.cli.env import Env

if TYPE_CHECKING:
    from tests.hybrid.vm import HybridVm
    from tests.nested.guest import NestedGuest

LOOPBACK = Path("/sys/module/vsock_loopback").is_dir()
IN_VM = os.environ.get("VSOCKCTL_VM_TIER") == "1"


NESTED_READY = IN_VM and bool(os.environ.get("VSOCKCTL_NESTED_INITRAMFS"))
# The hybrid stage runs here, on the machine, with the test VM behind a real mux.
HYBRID_STAGE = os.environ.get("VSOCKCTL_HYBRID_STAGE") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="no vsock loopback here; runs in the VM tier (scripts/vmtest)")
    skip_nested = pytest.mark.skip(
        reason="needs the nested guest inside the test VM (scripts/vmtest --nested)"
    )
    # Markers, not keywords: a parameter's id ("vsock") is a keyword too.
    items.sort(key=lambda item: item.get_closest_marker("nested_last") is not None)  # stable
    skip_hybrid = pytest.mark.skip(
        reason="needs the test VM behind vhost-device-vsock (scripts/vmtest --hybrid)"
    )
    for item in items:
        if item.get_closest_marker("nested") and not NESTED_READY:
            item.add_marker(skip_nested)
        elif item.get_closest_marker("hybrid") and not HYBRID_STAGE:
            item.add_marker(skip_hybrid)
        elif item.get_closest_marker("vsock") and not LOOPBACK:
            item.add_marker(skip)


Invoke = Callable[..., Result]


@pytest.fixture
def invoke() -> Invoke:
    """Run the CLI in-process: ``invoke(["info", "--json"], env=Env(...), input=b"...")``."""

    def run(
        args: Sequence[str], env: Env | None = None, input: bytes | str | None = None
    ) -> Result:
        runner = CliRunner()
        return runner.invoke(cli, list(args), obj=env, input=input, catch_exceptions=False)

    return run


class VmTierTally:
    """Counts vsock test outcomes in the VM, where a skip or an empty run is a failure."""

    def __init__(self, config: pytest.Config, where: str) -> None:
        self.config = config
        self.where = where
        self.passed = self.failed = self.skipped = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.skipped += 1
        elif report.failed:
            self.failed += 1
            # At once, not at the end: a VM run that is cut short keeps why it failed.
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\n--- {report.nodeid} ({report.when}) ---")
                reporter.write_line(report.longreprtext[-6000:])
        elif report.when == "call" and report.passed:
            self.passed += 1

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.passed == 0 or self.skipped:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        verdict = "ok" if self.passed and not self.skipped and not self.failed else "FAILED"
        terminalreporter.write_line(
            f"{self.where}: {self.passed} tests passed, "
            f"{self.failed} failed, {self.skipped} skipped "
            f"({verdict}; a skip or an empty run fails the VM tier)"
        )


def pytest_configure(config: pytest.Config) -> None:
    if IN_VM:
        where = f"VM tier, kernel {platform.release()}"
        config.pluginmanager.register(VmTierTally(config, where), "vm-tier-tally")
    elif HYBRID_STAGE:
        where = "hybrid stage (this machine and the test VM behind vhost-device-vsock)"
        config.pluginmanager.register(VmTierTally(config, where), "vm-tier-tally")


# -- the nested guest (tests marked ``nested``; scripts/vmtest --nested) --------------------

STAGE_FIGURES: list[str] = []


def _boot(guest: NestedGuest | HybridVm, what: str) -> dict[str, Any]:
    """``guest`` booted, or the test failed with why (its console's last lines)."""
    try:
        return guest.boot()
    except GuestError as exc:
        guest.shutdown()
        pytest.fail(f"{what} did not boot: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def nested_guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NestedGuest]:
    """The guest inside the test VM, booted once per run; its console comes with a failure."""
    from tests.nested.guest import from_environment

    guest = from_environment(tmp_path_factory.mktemp("nested"))
    ready = _boot(guest, "the nested guest")
    STAGE_FIGURES.append(
        f"nested guest: kernel {ready['kernel']}, CID {ready['cid']}, up in "
        f"{guest.boot_seconds:.0f} s (the agent started {ready['started_at']} s after the "
        f"kernel, its preload took {ready['preload_seconds']} s)"
    )
    yield guest
    guest.shutdown()


@pytest.fixture
def nested_figures() -> list[str]:
    """Lines for the run's summary (figures the tests print but do not assert)."""
    return STAGE_FIGURES


# -- the test VM behind a real hybrid mux (tests marked ``hybrid``; scripts/vmtest --hybrid) --


@pytest.fixture(scope="session")
def hybrid_vm() -> Iterator[HybridVm]:
    """The test VM with vhost-device-vsock as its vsock device, booted once per run."""
    from tests.hybrid.vm import HybridVm

    with tempfile.TemporaryDirectory(prefix="vsk-hy", dir="/tmp") as name:
        vm = HybridVm(Path(name), os.environ.get("VSOCKCTL_HYBRID_KERNEL", "6.12"))
        ready = _boot(vm, "the hybrid stage's VM")
        STAGE_FIGURES.append(
            f"hybrid stage: VM kernel {ready['kernel']}, CID {ready['cid']}, up in "
            f"{vm.boot_seconds:.0f} s behind vhost-device-vsock"
        )
        yield vm
        vm.shutdown()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in STAGE_FIGURES:
        terminalreporter.write_line(line)
