"""What a throughput test is: the parameters the client sends in its TEST frame."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vsockctl.errors import ProtocolError
from vsockctl.events.throughput import TestDirection, TestMode

if TYPE_CHECKING:
    from vsockctl.events.throughput import TestParams


TYPES = ("stream", "seqpacket")
MAX_PARALLEL = 128
MAX_BUF = 64 << 20
MAX_SECONDS = 86400.0  # a day


class BadTestParameters(ProtocolError):
    """A test no end would run: ``problem`` says what is wrong with it."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"bad test parameters: {problem}")
        self.problem = problem


@dataclass(frozen=True)
class TestSpec:
    mode: TestMode = TestMode.THROUGHPUT
    direction: TestDirection = TestDirection.SEND
    seconds: float | None = 10.0
    nbytes: int | None = None
    buf_size: int = 1 << 20
    parallel: int = 1
    sock_type: str = "stream"
    vsock_buffer_size: int | None = 1 << 20
    rcvlowat: int | None = None
    zerocopy: bool = False
    msg_size: int = 1
    interval: float = 1.0

    def to_record(self) -> TestParams:
        return typing.cast("TestParams", asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestSpec:
        """Validated parameters from a TEST frame; ProtocolError names what is wrong."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ProtocolError(f"unknown test parameters: {', '.join(sorted(unknown))}")
        mode, direction = data.get("mode", "throughput"), data.get("direction", "send")
        if not isinstance(mode, str) or mode not in set(TestMode):
            raise BadTestParameters(f"mode {mode!r}")
        if not isinstance(direction, str) or direction not in set(TestDirection):
            raise BadTestParameters(f"direction {direction!r}")
        try:
            spec = cls(**{**data, "mode": TestMode(mode), "direction": TestDirection(direction)})
        except TypeError as exc:
            raise BadTestParameters(str(exc)) from None
        spec.check()
        return spec

    def check(self) -> None:
        if self.sock_type not in TYPES:
            raise BadTestParameters(f"socket type {self.sock_type!r}")
        if (self.seconds is None) == (self.nbytes is None):
            raise BadTestParameters("give exactly one of seconds and bytes")
        numbers: list[tuple[str, Any, float]] = [
            ("buf_size", self.buf_size, 1),
            ("parallel", self.parallel, 1),
            ("msg_size", self.msg_size, 1),
        ]
        for name, value, low in numbers:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise BadTestParameters(f"{name} must be a whole number >= {low}")
        if self.buf_size > MAX_BUF or self.msg_size > MAX_BUF:
            raise BadTestParameters(f"buffers above {MAX_BUF} bytes")
        if self.parallel > MAX_PARALLEL:
            raise BadTestParameters(f"parallel above {MAX_PARALLEL}")
        if self.seconds is not None and not (0 < float(self.seconds) <= MAX_SECONDS):
            raise BadTestParameters(f"seconds must be in (0, {MAX_SECONDS:.0f}]")
        if self.nbytes is not None and (not isinstance(self.nbytes, int) or self.nbytes < 1):
            raise BadTestParameters("bytes must be a whole number >= 1")
        if self.mode is TestMode.LATENCY and (
            self.parallel != 1 or self.direction is not TestDirection.SEND
        ):
            raise BadTestParameters("latency runs one stream, client to server and back")
