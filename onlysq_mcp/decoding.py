"""Admission of image decodes, so that a burst of big images queues instead of multiplying the peak memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")
# Decodes run together only while their estimated memory fits DECODE_BUDGET (one always may run), and at
# most MAX_DECODES threads at once.
DECODE_BUDGET = 256 * 1024 * 1024
MAX_DECODES = 4


class DecodeBudget:
    """Admits decodes in arrival order while the sum of their estimated memory fits `budget` bytes.

    A decode larger than the budget runs alone; work that decodes nothing (cost 0) does not queue.
    """

    def __init__(self, budget: int, threads: int) -> None:
        self._budget = budget
        self._used = 0
        self._turnstile = anyio.Lock()  # fair: the first in line is admitted first
        self._freed: anyio.Event | None = None
        self._threads = anyio.CapacityLimiter(threads)

    async def run(self, cost: int, work: Callable[[], T]) -> T:
        """`work()` in a worker thread, once `cost` bytes fit beside the decodes already running."""
        if cost == 0:
            return await anyio.to_thread.run_sync(work, limiter=self._threads)
        async with self._turnstile:
            while self._used and self._used + cost > self._budget:
                self._freed = self._freed or anyio.Event()
                await self._freed.wait()
            self._used += cost
        try:
            return await anyio.to_thread.run_sync(work, limiter=self._threads)
        finally:
            self._used -= cost
            if self._freed is not None:
                self._freed.set()
                self._freed = None
