"""Entry point of one verifier worker process: `python -m prefix_rft.verify.worker FD`.

The parent (`pool.py`) sends `(fn, initializer, self_destruct_after)` first, then one argument tuple per call, and
reads back `("ok", result)` or `("error", message)`.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection


def serve(conn: Connection) -> None:
    """Run calls until the parent closes the pipe."""
    fn, initializer, self_destruct_after = conn.recv()
    if initializer is not None:
        initializer()
    # Default SIGALRM action terminates the process even inside long C code (a big-integer power), so a worker
    # orphaned mid-call by a parent killed with SIGKILL cannot spin forever. The parent kills overrunning workers
    # itself, well before this fires.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    conn.send("ready")
    while True:
        try:
            args = conn.recv()
        except EOFError:  # the parent is gone
            return
        signal.setitimer(signal.ITIMER_REAL, self_destruct_after)
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:  # reported to the caller, who counts and logs it; the worker lives on
            reply = ("error", f"{type(exc).__name__}: {exc}")
        signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send(reply)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
