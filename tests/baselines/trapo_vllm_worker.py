"""Worker for test_trapo.py: TRAPO's in-step escalation on 2 gloo processes, generating through the vLLM server double.

4 rows per rank and groups of 8: each step's one group has positions 0-3 on rank 0 and 4-7 on rank 1, so every
micro-group is held by one rank and the other pads its requests. Run from the repository root with
`torchrun --standalone --nproc_per_node 2 -m tests.baselines.trapo_vllm_worker OUT_DIR MODEL_DIR SERVER_URL PORT`
(ACCELERATE_USE_CPU=true). Each rank writes OUT_DIR/rank{R}.json (tests.trl.doubles.prefix_vllm_worker.run).
"""

import sys

from prefix_rft.baselines import TrapoConfig, TrapoTrainer
from tests.helpers import prefix_or_easy
from tests.trl.doubles.prefix_vllm_worker import run

if __name__ == "__main__":
    run(TrapoTrainer, TrapoConfig, prefix_or_easy, *sys.argv[1:5])
