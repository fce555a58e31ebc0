"""Threads that run one job after another, so a short job does not pay for a thread start.

``forward`` runs two blocking pumps per connection; starting two threads for each
cost more than the rest of a short connection under emulation. A job goes to an
idle worker when there is one, else to a new thread; a worker idle for
``IDLE_SECONDS`` ends, so a burst leaves no threads behind for long. Workers are
daemon threads: a job still blocked when the program ends does not hold it up.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

IDLE_SECONDS = 30.0

Job = tuple[Callable[..., object], tuple[Any, ...]]


class Workers:
    """Runs each job on an idle worker thread, or on a new one."""

    def __init__(self, name: str = "worker", idle_seconds: float = IDLE_SECONDS) -> None:
        self._name = name
        self._idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a job, less the jobs promised to them
        self.started = 0  # threads started so far

    def run(self, function: Callable[..., object], *args: Any) -> None:
        """Start ``function(*args)`` on a worker now; an exception it raises is reported
        as a thread's would be (``threading.excepthook``), and the worker lives on."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put((function, args))
                return
        self.started += 1
        threading.Thread(
            target=self._work, args=((function, args),), name=self._name, daemon=True
        ).start()

    @property
    def idle(self) -> int:
        with self._lock:
            return self._idle

    def _work(self, job: Job) -> None:
        while True:
            function, args = job
            try:
                function(*args)
            except Exception:  # reported as a thread's would be; the worker lives on
                kind, value, trace = sys.exc_info()
                hook_args = (kind, value, trace, threading.current_thread())
                threading.excepthook(threading.ExceptHookArgs(hook_args))
            with self._lock:
                self._idle += 1
            while True:
                try:
                    job = self._jobs.get(timeout=self._idle_seconds)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle and self._jobs.empty():  # no job promised: leave
                            self._idle -= 1
                            return
