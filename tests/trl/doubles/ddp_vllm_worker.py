"""Worker for test_vllm_doubles.py: stock GRPOTrainer on 2 gloo processes, generating through the server double.

Run from the repository root with
`torchrun --standalone --nproc_per_node 2 -m tests.trl.doubles.ddp_vllm_worker OUT_DIR MODEL_DIR SERVER_URL GROUP_PORT`
(ACCELERATE_USE_CPU=true). Each rank writes OUT_DIR/rank{R}.json.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from prefix_rft.tasks.tokenizer import build_tokenizer
from tests.helpers import base_kwargs, make_dataset
from tests.trl.doubles.vllm_server import install_server_client_double


class WeightSnapshots(TrainerCallback):
    """The trainer's parameters at the end of each optimizer step, by checkpoint name."""

    def __init__(self):
        self.by_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.by_step[state.global_step] = {name: p.detach().clone() for name, p in model.named_parameters()}


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 3) for c in completions]


def main(out_dir: str, model_dir: str, server_url: str, group_port: str) -> None:
    args = GRPOConfig(
        **base_kwargs(
            Path(out_dir),
            max_steps=2,
            per_device_train_batch_size=8,  # 2 ranks x 8 rows = 2 prompts x 8 generations per step
            use_vllm=True,
            vllm_mode="server",
            vllm_server_base_url=server_url,
            vllm_group_port=int(group_port),
            vllm_server_timeout=60,
        )
    )
    snapshots = WeightSnapshots()
    with pytest.MonkeyPatch.context() as monkeypatch:
        install_server_client_double(monkeypatch)
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            reward_funcs=[length_reward],
            args=args,
            train_dataset=make_dataset(),
            processing_class=build_tokenizer(),
            callbacks=[snapshots],
        )
        trainer.train()
    rank = trainer.accelerator.process_index
    key = "sampling/sampling_logp_difference/max"
    record = {
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "has_client": hasattr(trainer.vllm_generation, "vllm_client"),
        "after_step_1": {name: t.tolist() for name, t in snapshots.by_step[1].items()},
        "logp_difference_max": [h[key] for h in trainer.state.log_history if key in h],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    if dist.is_initialized():  # a clean teardown avoids a SIGABRT at interpreter exit
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
