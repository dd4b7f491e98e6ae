"""Worker for test_multiprocess.py: trains a per-question method for 2 steps on 2 gloo processes and records, per
generation batch, each rank's questions and what the method did with their rows.

Run with `torchrun --standalone --nproc_per_node 2 method_worker.py OUT_DIR METHOD` (METHOD: hpt for 2 steps; trapo,
escalating from the previous visit, for 4: every question twice; trapo_in_step for 4 steps of one question, its group
of 8 split over the two ranks: every question once; hpt_skip: hpt whose rank 1 alone sees a norm above the skip
limit). Questions whose answer is in SOLVED get reward 1 on every row,
the others 0.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset

from prefix_rft.baselines import HptConfig, HptTrainer, TrapoConfig, TrapoTrainer
from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer
from tests.helpers import DEMOS, base_kwargs  # the test puts the repository root on PYTHONPATH

SOLVED = {"42", "50"}


def reward(completions, answer, **kwargs):
    return [float(a in SOLVED) for a in answer]


def recording(trainer_cls):
    """`trainer_cls` recording, per generation batch, its local questions, prefix lengths and method row flags."""

    class Recording(trainer_cls):
        seen: list[dict] = []

        def _add_prefix_fields(self, output, rollout):
            super()._add_prefix_fields(output, rollout)
            entry = {
                "questions": [p[0]["content"] for p in rollout.prompts[:: self.num_generations]],
                "prefix_lens": output["prefix_mask"].sum(dim=1).tolist(),
            }
            for key in ("hpt_sft_rows", "hpt_rl_rows", "trapo_sft_rows"):
                if key in output:
                    entry[key] = output[key].tolist()
            self.seen.append(entry)

    return Recording


class RankOneSeesALargeNorm(HptTrainer):
    """HPT whose rank 1 reads the step's gradient norm x 1e6 (above hpt_skip_grad_norm), rank 0 the true one, as if
    the ranks' norms differed: the skip must still be one verdict for both."""

    def _get_grad_norm(self, model, grad_norm=None):
        if grad_norm is not None and self.accelerator.process_index == 1:
            grad_norm = grad_norm * 1e6
        return super()._get_grad_norm(model, grad_norm=grad_norm)


METHODS = {  # trainer, config, steps, settings
    "hpt": (HptTrainer, HptConfig, 2, {}),
    "hpt_skip": (RankOneSeesALargeNorm, HptConfig, 2, {"hpt_skip_grad_norm": 1e3}),
    "trapo": (TrapoTrainer, TrapoConfig, 4, {"trapo_escalation": "previous_visit"}),
    "trapo_in_step": (TrapoTrainer, TrapoConfig, 4, {"per_device_train_batch_size": 4}),
}


def main(out_dir: str, method: str) -> None:
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(tokenizer, "test")
    initial = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    rows = [{"prompt": [{"role": "user", "content": d[:5]}], "demos": [d], "answer": d[-2:]} for d in DEMOS]
    trainer_cls, config_cls, steps, settings = METHODS[method]
    args = config_cls(**base_kwargs(Path(out_dir), max_steps=steps, **{"per_device_train_batch_size": 8, **settings}))
    trainer = recording(trainer_cls)(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    record = {"seen": trainer.seen, "params": params.tolist(), "initial": initial}
    record["world_size"] = trainer.accelerator.num_processes
    if trainer_cls is TrapoTrainer:
        record["levels"] = trainer.escalation.state_dict()
    with open(f"{out_dir}/rank{trainer.accelerator.process_index}.json", "w") as f:
        json.dump(record, f)
    if dist.is_initialized():  # a clean teardown avoids a SIGABRT at interpreter exit (cpu_feasibility.md §3)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
