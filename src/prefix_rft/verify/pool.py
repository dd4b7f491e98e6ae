"""A few worker processes, each serving one call at a time under a hard wall-clock timeout.

Why not `ProcessPoolExecutor`: it cannot kill one hung worker, and killing any worker breaks the whole executor and
every call in flight. Here each call owns its worker for its duration; a worker that overruns is killed and replaced
while the other workers keep serving. Callers from any thread are fine: the work runs in the workers' main threads.

Workers are spawned, never forked (the caller may hold threads, CUDA or NCCL state), and started as
`python -m prefix_rft.verify.worker` rather than by `multiprocessing`'s spawn context: that context re-imports the
caller's `__main__` script in every worker, which for a training script without an `if __name__ == "__main__":`
guard means re-running the training in each worker.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

Status = Literal["ok", "timeout", "crash", "error"]


class _Worker:
    def __init__(self, fn: Callable[..., Any], initializer: Callable[[], None] | None, timeout: float) -> None:
        self.conn, child_conn = multiprocessing.Pipe()
        fd = child_conn.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefix_rft.verify.worker", str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)},
        )
        child_conn.close()  # so that recv() sees EOF if the child dies
        # Functions travel by reference (module + name); the worker imports them. The self-destruct limit only
        # matters if this process dies without killing the worker.
        self.conn.send((fn, initializer, 2 * timeout + 10))
        self.start_error: str | None = None
        # Held by whichever thread reads or writes `conn`. kill() takes it before closing: a pipe closed while
        # another thread is inside recv() frees its fd number, the next Pipe() reuses it, and that thread then
        # reads (and corrupts) a different worker's messages.
        self.io_lock = threading.Lock()
        self._close_lock = threading.Lock()  # guards conn.close() against a concurrent fileno() in kill()

    def wait_ready(self, timeout: float) -> None:
        """Block until the worker has imported everything; on failure set `start_error`."""
        with self.io_lock:
            try:
                if not self.conn.closed and self.conn.poll(timeout) and self.conn.recv() == "ready":
                    return
            except Exception:  # EOF or broken pipe (a killed worker): both mean "not started"
                pass
        self.start_error = f"verifier worker did not start within {timeout:.0f}s (exit code {self.process.poll()})"

    def exit_code(self) -> int | None:
        try:
            return self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill the process, wake any thread reading the pipe, and close the pipe once no thread is using it."""
        self.process.kill()
        self.process.wait()
        # The kill gives a reader EOF only if no other process (e.g. one forked meanwhile) holds the worker's end;
        # shutting the socket down wakes it regardless, without freeing the fd number.
        with self._close_lock, contextlib.suppress(OSError):
            if not self.conn.closed:
                with socket.socket(fileno=os.dup(self.conn.fileno())) as duplicate:
                    duplicate.shutdown(socket.SHUT_RDWR)
        with self.io_lock, self._close_lock:
            self.conn.close()


class WorkerPool:
    """`num_workers` processes running `fn`; `call` returns `(status, value)` and never hangs.

    Status is "ok" (value is fn's result), "timeout" (no reply within `timeout` s; the worker was killed and
    replaced), "crash" (the worker died; replaced) or "error" (fn raised; value is the message).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        num_workers: int,
        timeout: float,
        initializer: Callable[[], None] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        if num_workers < 1 or timeout <= 0:
            raise ValueError(f"need num_workers >= 1 and timeout > 0, got {num_workers} and {timeout}")
        self._fn, self._initializer = fn, initializer
        self.num_workers, self.timeout, self.start_timeout = num_workers, timeout, start_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._start()
        atexit.register(self.close)

    def _start(self) -> None:
        self._owner_pid = os.getpid()
        self._workers: set[_Worker] = set()
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for _ in range(self.num_workers):
            self._spawn()

    def _spawn(self) -> None:
        """Start a worker; it joins the idle queue once started, so no call waits on a worker's imports."""
        if self._closed:  # a call finishing after close() must not start workers nobody will kill
            return
        worker = _Worker(self._fn, self._initializer, self.timeout)
        with self._lock:
            self._workers.add(worker)
        idle = self._idle

        def enqueue_when_ready() -> None:
            worker.wait_ready(self.start_timeout)
            idle.put(worker)  # also on failure: the caller that takes it raises, so it is never silent

        threading.Thread(target=enqueue_when_ready, daemon=True).start()

    def _retire(self, worker: _Worker) -> None:
        """Kill `worker` and start a replacement."""
        worker.kill()
        with self._lock:
            self._workers.discard(worker)
        self._spawn()

    def call(self, *args: Any) -> tuple[Status, Any]:
        if self._closed:
            raise RuntimeError("WorkerPool is closed")
        if os.getpid() != self._owner_pid:
            # A forked child (e.g. a DataLoader worker) must not share the parent's pipes: start its own workers.
            self._start()
        worker = self._idle.get()
        if worker.start_error is not None:
            self._retire(worker)
            raise RuntimeError(worker.start_error)
        status: Status = "crash"  # also if interrupted (KeyboardInterrupt): a worker mid-call cannot be reused
        try:
            status, value = self._run(worker, args)
            return status, value
        finally:
            if status in ("ok", "error"):
                self._idle.put(worker)
            else:
                self._retire(worker)

    def _run(self, worker: _Worker, args: tuple) -> tuple[Status, Any]:
        deadline = time.monotonic() + self.timeout
        with worker.io_lock:
            try:
                worker.conn.send(args)
                if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    return "timeout", None
                return worker.conn.recv()
            except (EOFError, OSError):  # broken pipe, EOF, or closed by close(): the worker process is gone
                pass
        return "crash", worker.exit_code()

    def close(self) -> None:
        """Kill every worker; the pool cannot be used afterwards."""
        self._closed = True
        atexit.unregister(self.close)
        if os.getpid() != self._owner_pid:
            return
        with self._lock:
            workers, self._workers = list(self._workers), set()
        for worker in workers:
            worker.kill()
