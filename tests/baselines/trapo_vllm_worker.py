"""Worker for test_trapo.py: TRAPO's in-step escalation on 2 gloo processes, generating through the vLLM server double.

4 rows per rank and groups of 8: each step's one group has positions 0-3 on rank 0 and 4-7 on rank 1, so every
micro-group is held by one rank and the other pads its requests. Run from the repository root with
`torchrun --standalone --nproc_per_node 2 -m tests.baselines.trapo_vllm_worker OUT_DIR MODEL_DIR SERVER_URL PORT`
(ACCELERATE_USE_CPU=true). Each rank writes OUT_DIR/rank{R}.json.
"""

import json
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from prefix_rft.baselines import TrapoConfig, TrapoTrainer
from prefix_rft.tasks.tokenizer import build_tokenizer
from tests.helpers import base_kwargs, make_dataset, prefix_or_easy
from tests.trl.doubles.vllm_server import install_server_client_double


class Recording(TrapoTrainer):
    """Keeps each generation batch's local question and prefix lengths."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def _add_prefix_fields(self, output, rollout):
        super()._add_prefix_fields(output, rollout)
        question = rollout.prompts[0][0]["content"]
        self.batches.append({"question": question, "prefix_lens": output["prefix_mask"].sum(dim=1).tolist()})


def main(out_dir: str, model_dir: str, server_url: str, group_port: str) -> None:
    args = TrapoConfig(
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
        trainer = Recording(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            reward_funcs=[prefix_or_easy],
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
    main(*sys.argv[1:5])
