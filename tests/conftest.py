"""Shared fixtures, and the rule for the ``vsock`` marker.

Tests marked ``vsock`` move real bytes over AF_VSOCK, which needs the loopback
transport (CID 1). The development and CI machines lack it, and must never
send anywhere else, so those tests skip there and run in the VM tier
(``scripts/vmtest``), where skipping them is a failure.
"""

from __future__ import annotations

import os
import platform

# Every --json record a test makes vsockctl print (in-process or as a subprocess)
# is checked against its declaration in vsockctl/events.py before it goes out.
os.environ["VSOCKCTL_CHECK_EVENTS"] = "1"
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vsockctl.cli import cli
from vsockctl.cli.env import Env

LOOPBACK = Path("/sys/module/vsock_loopback").is_dir()
IN_VM = os.environ.get("VSOCKCTL_VM_TIER") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LOOPBACK:
        return
    skip = pytest.mark.skip(reason="no vsock loopback here; runs in the VM tier (scripts/vmtest)")
    for item in items:
        if "vsock" in item.keywords:
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

    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.skipped += 1
        elif report.failed:
            self.failed += 1
        elif report.when == "call" and report.passed:
            self.passed += 1

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.passed == 0 or self.skipped:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        verdict = "ok" if self.passed and not self.skipped and not self.failed else "FAILED"
        terminalreporter.write_line(
            f"VM tier, kernel {platform.release()}: {self.passed} vsock tests passed in the VM, "
            f"{self.failed} failed, {self.skipped} skipped "
            f"({verdict}; a skip or an empty run fails the VM tier)"
        )


def pytest_configure(config: pytest.Config) -> None:
    if IN_VM:
        config.pluginmanager.register(VmTierTally(), "vm-tier-tally")
