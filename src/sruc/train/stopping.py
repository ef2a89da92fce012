"""When a session stops before the schedule ends: Ctrl-C, SIGTERM, ``--max-minutes``.

Either way the loop finishes the current step, saves a state and returns, so the
same command resumes the run. Under data parallelism rank 0 decides and every
rank follows (:func:`~sruc.train.distributed.agree`), so no rank stops alone.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import torch

from sruc.train.distributed import Dist, agree


class Interrupt:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a clean stop after the current step.

    The loop then saves a state and returns, so nothing since the last periodic
    save is lost; a second signal interrupts at once. Handlers are installed
    only on the main thread (Python allows no other), and restored on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self.armed = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # the second one: stop now
            self.__exit__()
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
            self.armed = True
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def time_to_stop(
    interrupt: Interrupt,
    max_minutes: float | None,
    t_start: float,
    ddp: Dist,
    device: torch.device,
) -> bool:
    """Whether to stop after this step: a signal came, or ``max_minutes`` since ``t_start``.

    Every rank must call it after every step: it may broadcast rank 0's decision.
    """
    out_of_time = max_minutes is not None and time.monotonic() - t_start >= max_minutes * 60
    return (max_minutes is not None or interrupt.armed) and agree(
        out_of_time or interrupt.requested, ddp, device
    )
