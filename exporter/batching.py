"""Handing finished requests from the event loop to a writer thread, in batches.

The request log and the access log each have a thread that writes what the request path hands it. A
`queue.Queue` wakes that thread for every item: at one request after another, that is one wake-up
per request, and each wake-up takes the GIL from the event loop in the middle of the next request
(it showed in p99 latency at one client; docs/benchmarks.md has the figures). Here the request path
only appends to a deque, which needs no lock under the GIL, and wakes the writer only when a whole
batch is waiting; otherwise the writer comes by itself once per flush interval and takes what is
there. The writer thread also runs at a lower CPU priority (`background_priority`), so a proxied
request never waits behind it for a core.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """A bounded queue read in batches of `batch_size`, or less once `flush_interval` has passed."""

    def __init__(self, limit: int, batch_size: int, flush_interval: float) -> None:
        self._items: deque[T] = deque()
        self._limit = limit
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._next_flush = time.monotonic() + flush_interval
        self._wake = threading.Event()  # a full batch waits, or the queue is closing
        self._closing = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Append without blocking; False when the queue is full (the item is not kept)."""
        items = self._items
        if len(items) >= self._limit:
            return False
        items.append(item)
        if len(items) >= self._batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def close(self) -> None:
        """From now on `batches` hands out everything left, then ends."""
        self._closing = True
        self._wake.set()

    def batches(self, idle_timeout: float = 1.0) -> list[list[T]]:
        """The batches due now, waiting for them at most `idle_timeout` seconds; [] when none.

        Full batches are due at once, the rest once flush_interval has passed since the last
        partial batch was handed out (so an item waits at most about that long), and everything
        when the queue is closing. Call it from the one writer thread only.
        """
        if not self._closing:
            self._wake.wait(max(0.0, min(idle_timeout, self._next_flush - time.monotonic())))
        self._wake.clear()  # before taking: a put after this point sets it again
        due = []
        items, size = self._items, self._batch_size
        while len(items) >= size:
            due.append([items.popleft() for _ in range(size)])
        if self._closing or time.monotonic() >= self._next_flush:
            rest = [items.popleft() for _ in range(len(items))]
            if rest:
                due.append(rest)
            self._next_flush = time.monotonic() + self._flush_interval
        return due

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def closed_and_empty(self) -> bool:
        return self._closing and not self._items


BACKGROUND_NICE = 10  # added to the process's niceness for writer threads


def background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux, where niceness is per thread).

    On two cores a writer thread inserting a second's worth of rows took a core just when the
    client, the proxy and the upstream each needed one, and p99 at one client rose well above its
    figure at nice 10 (docs/benchmarks.md). At nice 10 it still gets about a tenth of a busy core,
    many times what writing the rows takes, so it does not fall behind under load.
    Raising niceness needs no privilege; where it fails the thread just keeps its priority.
    """
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE, 19))
    except OSError:
        pass
