"""Worker for test_multiprocess.py: trains a tiny model for 2 steps on 2 gloo processes and records what each saw.

Run with `torchrun --standalone --nproc_per_node 2 ddp_worker.py OUT_DIR [--guided | --hinted]`. `--guided` trains 4
steps (every question twice) with the per-question options on and records each rank's per-question state.
`--hinted` hints every rollout (num_hybrid = num_generations, SEELE's loop steered by those rows), one group of 8 per
step split 4 + 4 between the ranks, 8 steps (every question twice).
"""

import json
import sys

import torch
import torch.distributed as dist
from datasets import Dataset

from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer
from prefix_rft.trl.cpu import cpu_trainer_kwargs


class RecordingTrainer(PrefixRFTTrainer):
    """Records the local prefix lengths of every generation batch."""

    local_prefix_lens: list[list[int]] = []

    def _add_prefix_fields(self, output, plan):
        super()._add_prefix_fields(output, plan)
        self.local_prefix_lens.append(output["prefix_mask"].sum(dim=1).tolist())


def reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 2) for c in completions]


HINTED = dict(
    num_hybrid=8,
    prefix_advantage="paper",
    prefix_placement="prompt",
    prefix_success_target=0.5,
    prefix_success_rows="hybrid",
    per_device_train_batch_size=4,
)


def main(out_dir: str, guided: bool, hinted: bool = False) -> None:
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(tokenizer, "test")
    demos = ["12+30 is 42. ans: 42", "17+18 is 35. ans: 35", "40+20 is 60. ans: 60", "25+25 is 50. ans: 50"]
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": d[:5]}], "demos": [d], "answer": d[-2:]} for d in demos]
    )
    settings = dict(per_device_train_batch_size=8)
    if guided:
        settings.update(prefix_success_target=0.5, prefix_rescue_max_success=0.5)
    if hinted:
        settings.update(HINTED)
    args = PrefixRFTConfig(
        **cpu_trainer_kwargs(out_dir, seed=0, max_steps=8 if hinted else 4 if guided else 2),
        num_generations=8,
        max_completion_length=24,
        learning_rate=1e-2,
        disable_tqdm=True,
        log_completions=False,
        **settings,
    )
    trainer = RecordingTrainer(
        model=model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    record = {
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "local_prefix_lens": trainer.local_prefix_lens,
        "logged_prefix_lens": list(trainer._logs["extra"]["prefix_len"]),
        "params": params.tolist(),
        "kept_fraction": [h.get("prefix/kept_fraction") for h in trainer.state.log_history if "loss" in h],
        "questions": trainer._questions.state_dict() if guided or hinted else None,
        "adaptive_rows": [h.get("prefix/adaptive_rows") for h in trainer.state.log_history if "loss" in h],
        "guided_rows": [
            (h["prefix/adaptive_rows"], h["prefix/solved_rows"])
            for h in trainer.state.log_history
            if guided and "loss" in h
        ],
    }
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(record, f)
    if dist.is_initialized():  # a clean teardown avoids a SIGABRT at interpreter exit (cpu_feasibility.md §3)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], guided="--guided" in sys.argv[2:], hinted="--hinted" in sys.argv[2:])
