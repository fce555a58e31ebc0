"""Workers: jobs reuse idle threads, busy ones get new threads, idle ones end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from vsockctl.forward.workers import Workers


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_job_after_another_runs_on_the_same_thread() -> None:
    workers = Workers(idle_seconds=10)
    seen: list[int] = []

    def job(done: threading.Event) -> None:
        seen.append(threading.get_ident())
        done.set()

    for _ in range(3):
        done = threading.Event()
        workers.run(job, done)
        assert done.wait(10)
        _until(lambda: workers.idle == 1)  # back waiting before the next job comes
    assert len(set(seen)) == 1


def test_jobs_that_block_each_get_a_thread_of_their_own() -> None:
    workers = Workers(idle_seconds=10)
    release = threading.Event()
    started = threading.Semaphore(0)
    idents: set[int] = set()

    def blocked() -> None:
        idents.add(threading.get_ident())
        started.release()
        release.wait(10)

    for _ in range(4):
        workers.run(blocked)
    for _ in range(4):
        assert started.acquire(timeout=10)  # all four run at once
    release.set()
    assert len(idents) == 4
    _until(lambda: workers.idle == 4)


def test_idle_workers_end() -> None:
    workers = Workers(name="idle-test", idle_seconds=0.1)
    done = threading.Event()
    workers.run(done.set)
    assert done.wait(10)
    _until(lambda: not any(t.name == "idle-test" for t in threading.enumerate()))
    assert workers.idle == 0


def test_a_failing_job_is_reported_and_the_worker_lives_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))
    workers = Workers(idle_seconds=10)
    workers.run(lambda: 1 / 0)
    _until(lambda: workers.idle == 1)
    assert len(reported) == 1 and isinstance(reported[0], ZeroDivisionError)
    done = threading.Event()
    workers.run(done.set)
    assert done.wait(10)
