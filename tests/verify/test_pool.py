"""WorkerPool with stdlib functions as the work, so each outcome is easy to provoke."""

import os
import sys
import threading
import time

import pytest

from prefix_rft.verify.pool import WorkerPool


@pytest.fixture
def sleeper():
    pool = WorkerPool(time.sleep, num_workers=2, timeout=1.0)
    yield pool
    pool.close()


def test_ok_call_returns_the_result():
    pool = WorkerPool(pow, num_workers=1, timeout=5.0)
    try:
        assert pool.call(2, 10) == ("ok", 1024)
    finally:
        pool.close()


def test_exception_is_reported_and_worker_survives():
    pool = WorkerPool(int, num_workers=1, timeout=5.0)
    try:
        status, message = pool.call("seven")
        assert status == "error" and message.startswith("ValueError")
        assert pool.call("7") == ("ok", 7)
    finally:
        pool.close()


def test_overrunning_call_times_out_on_time_and_pool_keeps_serving(sleeper):
    sleeper.call(0)  # wait for the workers to start, so only the call itself is timed
    start = time.monotonic()
    assert sleeper.call(30) == ("timeout", None)
    assert time.monotonic() - start < 1.0 + 1.0
    # both the replacement and the untouched worker serve
    assert [sleeper.call(0)[0] for _ in range(4)] == ["ok"] * 4


def test_dead_worker_is_a_crash_and_is_replaced():
    pool = WorkerPool(os._exit, num_workers=1, timeout=5.0)
    try:
        assert pool.call(3) == ("crash", 3)
        assert pool.call(4) == ("crash", 4)  # a fresh worker answered (and died) again
    finally:
        pool.close()


def test_timeout_in_one_thread_does_not_disturb_another(sleeper):
    sleeper.call(0)
    results = {}
    slow = threading.Thread(target=lambda: results.update(slow=sleeper.call(30)))
    slow.start()
    results["fast"] = [sleeper.call(0.01) for _ in range(3)]
    slow.join()
    assert results == {"slow": ("timeout", None), "fast": [("ok", None)] * 3}


def test_worker_that_cannot_start_makes_the_call_raise():
    # the initializer runs first in the worker; sys.exit ends it before it reports ready
    pool = WorkerPool(abs, num_workers=1, timeout=5.0, initializer=sys.exit)
    try:
        with pytest.raises(RuntimeError, match="did not start"):
            pool.call(-1)
    finally:
        pool.close()


def test_closed_pool_refuses_calls():
    pool = WorkerPool(abs, num_workers=1, timeout=5.0)
    pool.close()
    with pytest.raises(RuntimeError):
        pool.call(-1)


def _call_in_child(pool, results):
    results.put(pool.call(-3))


def test_forked_child_starts_its_own_workers():
    # e.g. a DataLoader worker forked after the pool was built: it must not talk over the parent's pipes
    import multiprocessing

    pool = WorkerPool(abs, num_workers=1, timeout=5.0)
    try:
        assert pool.call(-1) == ("ok", 1)
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_call_in_child, args=(pool, results))
        child.start()
        assert results.get(timeout=60) == ("ok", 3)
        child.join(timeout=10)
        assert pool.call(-2) == ("ok", 2)  # the parent's worker was left alone
    finally:
        pool.close()


def test_closing_a_pool_mid_read_does_not_steal_the_next_pools_messages(monkeypatch):
    # The race behind a flaky CI run: pool A's start-up thread is inside recv() when A is closed. If close() freed the
    # pipe's fd right away, pool B's new pipe reused the number and A's thread read B's "ready" message.
    from multiprocessing.connection import Connection
    from types import SimpleNamespace

    original_recv = Connection._recv
    in_recv, b_built, a_done = threading.Event(), threading.Event(), threading.Event()

    def descheduled_first_recv(self, size):
        if in_recv.is_set():
            a_done.wait(timeout=2.0)  # B's reader comes second, so a stale A always reads first
            return original_recv(self, size)
        in_recv.set()
        handle = self._handle  # the fd number is taken first, as in Connection._recv ...
        b_built.wait(timeout=1.0)  # ... then the thread stalls until B exists (or 1 s, if close() waits for it)
        try:
            return original_recv(SimpleNamespace(_handle=handle), size)
        finally:
            a_done.set()

    monkeypatch.setattr(Connection, "_recv", descheduled_first_recv)
    pool_a = WorkerPool(abs, num_workers=1, timeout=5.0)
    assert in_recv.wait(timeout=60)
    pool_a.close()
    pool_b = WorkerPool(abs, num_workers=1, timeout=5.0, start_timeout=10.0)
    b_built.set()
    try:
        assert pool_b.call(-5) == ("ok", 5)
    finally:
        pool_b.close()


def test_close_does_not_wait_for_a_reader_whose_pipe_another_process_keeps_open(monkeypatch):
    # A process forked while a worker starts inherits the worker's end of the pipe; killing the worker then gives the
    # parent's reader no EOF, so close() must wake it some other way rather than wait out its 60 s poll.
    import multiprocessing
    import signal

    from prefix_rft.verify import pool as pool_module

    real_pipe, held = multiprocessing.Pipe, []

    def pipe_with_an_extra_holder():
        parent_end, child_end = real_pipe()
        held.append(os.dup(child_end.fileno()))  # stands in for the forked process
        return parent_end, child_end

    monkeypatch.setattr(pool_module.multiprocessing, "Pipe", pipe_with_an_extra_holder)
    pool = WorkerPool(abs, num_workers=1, timeout=5.0, initializer=signal.pause, start_timeout=60.0)
    time.sleep(0.5)  # the start-up thread is now polling a worker that will never report ready
    start = time.monotonic()
    pool.close()
    try:
        assert time.monotonic() - start < 20.0
    finally:
        for fd in held:
            os.close(fd)
