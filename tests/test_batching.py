"""The hand-off from the request path to the log writers (exporter.batching), and the writers' priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from exporter.accesslog import LineWriterHandler
from exporter.batching import BACKGROUND_NICE, BatchQueue
from exporter.config import Telemetry
from exporter.requestlog import RequestLog
from tests.logdb import wait_until


def test_full_batches_are_due_at_once_and_the_rest_waits_for_the_flush_interval():
    queue = BatchQueue(limit=100, batch_size=3, flush_interval=3600)
    for i in range(7):
        assert queue.put(i)
    assert queue.batches(idle_timeout=0) == [[0, 1, 2], [3, 4, 5]]
    assert len(queue) == 1
    assert queue.batches(idle_timeout=0.05) == []  # the last item is not due for an hour


def test_a_partial_batch_is_handed_out_once_the_flush_interval_has_passed():
    queue = BatchQueue(limit=100, batch_size=1000, flush_interval=0.05)
    queue.put("a")
    queue.put("b")
    due: list[list[str]] = []
    for _ in range(200):  # a bound, not a timing assertion: 200 waits of up to 1 s
        due = queue.batches(idle_timeout=1.0)
        if due:
            break
    assert due == [["a", "b"]] and len(queue) == 0


def test_a_full_queue_refuses_items_and_keeps_what_it_holds():
    queue = BatchQueue(limit=3, batch_size=10, flush_interval=3600)
    assert [queue.put(i) for i in range(5)] == [True, True, True, False, False]
    queue.close()
    assert queue.batches() == [[0, 1, 2]] and queue.closed_and_empty


def test_a_full_batch_wakes_a_waiting_writer():
    queue = BatchQueue(limit=100, batch_size=2, flush_interval=3600)
    got: list[list[list[int]]] = []
    writer = threading.Thread(target=lambda: got.append(queue.batches(idle_timeout=60)))
    writer.start()
    queue.put(1)
    queue.put(2)
    writer.join(60)
    assert not writer.is_alive() and got == [[[1, 2]]]


def test_closing_hands_out_everything_in_batches_then_ends():
    queue = BatchQueue(limit=100, batch_size=4, flush_interval=3600)
    for i in range(10):
        queue.put(i)
    queue.close()
    assert queue.closing
    assert queue.batches(idle_timeout=60) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert queue.closed_and_empty


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per thread is Linux's")
def test_the_log_writers_run_at_a_lower_cpu_priority_than_the_request_path(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    expected = min(base + BACKGROUND_NICE, 19)
    request_log = RequestLog(tmp_path / "log.db", Telemetry())
    request_log.start()
    handler = LineWriterHandler(str(tmp_path / "access.log"))
    try:
        writers = [request_log._thread, handler._thread]
        for writer in writers:
            wait_until(lambda w=writer: os.getpriority(os.PRIO_PROCESS, w.native_id) == expected,
                       f"{writer.name} at niceness {expected}")
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller's is untouched
    finally:
        request_log.close()
        handler.close()
