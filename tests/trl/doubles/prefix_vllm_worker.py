"""Worker for test_vllm_prefix.py: PrefixRFTTrainer on 2 gloo processes, generating through the vLLM server double.

Layout "rank 0 has no hybrid": 4 rows per rank and groups of 8, so each step's one group has its on-policy rows 0-6
on both ranks and its hybrid (row 7) on rank 1. Run from the repository root with
`torchrun --standalone --nproc_per_node 2 -m tests.trl.doubles.prefix_vllm_worker OUT_DIR MODEL_DIR SERVER_URL PORT`
(ACCELERATE_USE_CPU=true). Each rank writes OUT_DIR/rank{R}.json.
"""

import json
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
from prefix_rft.tasks.tokenizer import build_tokenizer
from tests.helpers import base_kwargs, make_dataset
from tests.trl.doubles.ddp_vllm_worker import length_reward
from tests.trl.doubles.vllm_server import install_server_client_double


def recording(trainer_cls):
    """`trainer_cls` keeping each generation batch's local question, completion ids and prefix lengths."""

    class CompletionRecorder(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches = []

        def _add_prefix_fields(self, output, rollout):
            super()._add_prefix_fields(output, rollout)
            lens = output["completion_mask"].sum(dim=1).tolist()
            completions = [ids[:n] for ids, n in zip(output["completion_ids"].tolist(), lens, strict=True)]
            self.batches.append(
                {
                    "question": rollout.prompts[0][0]["content"],
                    "completions": completions,
                    "prefix_lens": [len(p) for p in rollout.prefix_ids],
                }
            )

    return CompletionRecorder


def run(trainer_cls, config_cls, reward, out_dir: str, model_dir: str, server_url: str, group_port: str) -> None:
    """Train `trainer_cls` 2 steps on 2 ranks of 4 rows through the server double; write each rank's record."""
    args = config_cls(
        **base_kwargs(
            Path(out_dir),
            max_steps=2,
            per_device_train_batch_size=4,
            use_vllm=True,
            vllm_mode="server",
            vllm_server_base_url=server_url,
            vllm_group_port=int(group_port),
            vllm_server_timeout=60,
        )
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        install_server_client_double(monkeypatch)
        trainer = recording(trainer_cls)(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            reward_funcs=[reward],
            args=args,
            train_dataset=make_dataset(),
            processing_class=build_tokenizer(),
        )
        trainer.train()
    record = {"world_size": trainer.accelerator.num_processes, "batches": trainer.batches}
    Path(out_dir, f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps(record))
    if dist.is_initialized():  # a clean teardown avoids a SIGABRT at interpreter exit
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    run(PrefixRFTTrainer, PrefixRFTConfig, length_reward, *sys.argv[1:5])
