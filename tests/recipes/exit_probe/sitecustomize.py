"""Test-only start-up hook (on PYTHONPATH in test_train_multiprocess.py): at exit, each rank records whether its
process group was still alive, i.e. whether the program tore it down before exiting."""

import atexit
import json
import os
import sys


def _record() -> None:
    # Registered first, so it runs last: after the program's own exit handlers.
    distributed = sys.modules.get("torch.distributed")
    alive = bool(distributed and distributed.is_available() and distributed.is_initialized())
    path = os.path.join(os.environ["PREFIX_RFT_EXIT_PROBE"], f"exit-rank{os.environ['RANK']}.json")
    with open(path, "w") as f:
        json.dump({"rank": int(os.environ["RANK"]), "process_group_alive": alive}, f)


if "PREFIX_RFT_EXIT_PROBE" in os.environ and "RANK" in os.environ:  # a worker, not the launcher
    atexit.register(_record)
