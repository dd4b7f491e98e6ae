"""Worker for test_collective_generate.py: training on 2 gloo ranks where generate and forward are collectives.

Under DeepSpeed ZeRO-3 (or FSDP) every `generate` call enters a parameter gather, every decoding step of a sharded
model is a collective (transformers sets `synced_gpus`), and so is every forward. Ranks that make different numbers
of such calls hang. This double keeps TRL's and transformers' real code and turns exactly those points into gloo
collectives that also check the call counts agree, so a mismatch fails fast instead of hanging.

Run with `torchrun --standalone --nproc_per_node 2 collective_worker.py OUT_DIR`.
"""

import json
import sys

import torch
import torch.distributed as dist
from datasets import Dataset
from transformers import GenerationMixin

from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
from prefix_rft.baselines import TrapoConfig, TrapoTrainer
from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer
from prefix_rft.trl.cpu import cpu_trainer_kwargs

DEMOS = ["12+30 is 42. ans: 42", "17+18 is 35. ans: 35", "40+20 is 60. ans: 60", "25+25 is 50. ans: 50"]
# name -> trainer settings; 2 ranks, 2 optimizer steps each.
LAYOUTS = {
    # 1 group of 8 per step: rank 0 holds rows 0-3 (on-policy), rank 1 rows 4-7 with the hybrid (row 7).
    "rank0_no_hybrid": dict(per_device_train_batch_size=4, num_generations=8),
    # the same rows with the demo as a hint in the hybrid's prompt, which always takes a call of its own.
    "rank0_no_hint": dict(per_device_train_batch_size=4, num_generations=8, prefix_placement="prompt"),
    # groups of 4 over 6 rows per rank: group 1 spans the ranks (rows 4-7); hybrids at rows 3, 7, 11.
    "groups_span_ranks": dict(per_device_train_batch_size=6, num_generations=4),
    # one generation batch serves 2 optimizer steps; all hybrids on rank 1 again.
    "steps_per_generation_2": dict(per_device_train_batch_size=2, num_generations=8, steps_per_generation=2),
    # 2 micro-batches per optimizer step with the step-wide entropy scope: the no-grad entropy pass must make the
    # same number of forwards on rank 0, which has no prefix tokens at all.
    "accumulation_2_step_scope": dict(
        per_device_train_batch_size=2,
        num_generations=8,
        gradient_accumulation_steps=2,
        prefix_entropy_scope="optimizer_step",
    ),
    # TRAPO's in-step escalation, rank 0 holding micro-group 1 (rows 0-3) and rank 1 micro-groups 2-4 (rows 4-7),
    # every reward 0 (`trapo_layout` below).
    "trapo_in_step": dict(per_device_train_batch_size=4, num_generations=8),
}
TRAPO_LAYOUTS = {"trapo_in_step"}


class CollectiveCounter:
    """Counts calls of one kind and makes each call a collective that checks every rank is at the same call."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    def enter(self) -> None:
        self.calls += 1
        counts = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, torch.tensor([self.calls]))
        if len({int(c) for c in counts}) != 1:
            raise RuntimeError(f"{self.name} call counts differ across ranks: {[int(c) for c in counts]}")


GENERATE = CollectiveCounter("generate")
FORWARD = CollectiveCounter("forward")


class CountsStandIns:
    """Counts the generate calls a rank joins without rows of its own (mixed into a trainer class)."""

    stand_ins = 0

    def _stand_in_generate(self, *args, **kwargs):
        CountsStandIns.stand_ins += 1
        return super()._stand_in_generate(*args, **kwargs)


class CountingTrainer(CountsStandIns, PrefixRFTTrainer):
    pass


class CountingTrapo(CountsStandIns, TrapoTrainer):
    pass


def install_collective_doubles() -> None:
    """Every generate call gathers (ZeRO-3's GatheredParameters) and decodes with synced_gpus, as ZeRO-3 does."""
    original = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        GENERATE.enter()
        kwargs["synced_gpus"] = True  # transformers' own lock-step decoding for sharded models
        return original(self, *args, **kwargs)

    GenerationMixin.generate = generate


def reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 2) for c in completions]


def no_reward(completions, **kwargs):
    return [0.0] * len(completions)


def run_layout(name: str, settings: dict, out_dir: str, tokenizer) -> dict:
    torch.manual_seed(0)
    model = build_model(tokenizer, "test")
    model.register_forward_pre_hook(lambda module, args: FORWARD.enter())  # ZeRO-3 gathers each forward's params
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": d[:5]}], "demos": [d], "answer": d[-2:]} for d in DEMOS]
    )
    trapo = name in TRAPO_LAYOUTS
    args = (TrapoConfig if trapo else PrefixRFTConfig)(
        **cpu_trainer_kwargs(f"{out_dir}/{name}", seed=0, max_steps=2),
        max_completion_length=24,
        learning_rate=1e-2,
        disable_tqdm=True,
        log_completions=False,
        **settings,
    )
    before = GENERATE.calls, FORWARD.calls, CountsStandIns.stand_ins
    trainer = (CountingTrapo if trapo else CountingTrainer)(
        model=model,
        reward_funcs=[no_reward if trapo else reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    return {
        "generate_calls": GENERATE.calls - before[0],
        "forward_calls": FORWARD.calls - before[1],
        "stand_in_generate_calls": CountsStandIns.stand_ins - before[2],
        "hybrid_rows": [h.get("prefix/hybrid_rows") for h in trainer.state.log_history],
        "steps": trainer.state.global_step,
    }


def main(out_dir: str) -> None:
    install_collective_doubles()
    tokenizer = build_tokenizer()
    record: dict = {"world_size": None, "layouts": {}}
    for name, settings in LAYOUTS.items():
        record["layouts"][name] = run_layout(name, settings, out_dir, tokenizer)
    record["world_size"] = dist.get_world_size()
    with open(f"{out_dir}/rank{dist.get_rank()}.json", "w") as f:
        json.dump(record, f)
    dist.barrier()
    dist.destroy_process_group()  # a clean teardown avoids a SIGABRT at interpreter exit


if __name__ == "__main__":
    main(sys.argv[1])
