"""Worker for test_deepspeed.py: the trainer under real DeepSpeed ZeRO-2/3 (or DDP) on 2 CPU processes.

Run with `DS_ACCELERATOR=cpu torchrun --standalone --nproc_per_node 2 deepspeed_worker.py OUT_DIR ENGINE SCENARIO...`,
ENGINE one of `ddp`, `zero2`, `zero3`, without `ACCELERATE_USE_CPU=true` (with it accelerate ignores the DeepSpeed
config). Every scenario trains a few steps of the tiny model and records, per rank, what the test compares: the world
size, accelerate's distributed type, the logged losses and the full (gathered) weights. One launch runs several
scenarios, so the ~15 s of imports and DeepSpeed's start-up are paid once.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from collective_worker import (  # torchrun runs this file as a script, beside that one
    DEMOS,
    LAYOUTS,
    TRAPO_LAYOUTS,
    no_reward,
    reward,
)
from datasets import Dataset
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
from prefix_rft.baselines import HptConfig, HptTrainer, TrapoConfig, TrapoTrainer
from prefix_rft.baselines.relift import ReliftConfig, ReliftTrainer
from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer
from prefix_rft.trl.cpu import cpu_trainer_kwargs

STEPS = 2


def deepspeed_config(engine: str, bf16: bool = False) -> dict | None:
    """Stage 2 or 3 with the batch fields left to the Trainer ("auto"), as a user's ds_config.json would be."""
    if engine == "ddp":
        return None
    return {
        "zero_optimization": {"stage": int(engine[-1]), "stage3_gather_16bit_weights_on_model_save": True},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": bf16},
    }


def dataset(demos: list[str] = DEMOS) -> Dataset:
    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": d[:5]}], "demos": [d], "answer": d[-2:]} for d in demos]
    )


def full_weights(model: torch.nn.Module) -> list[float]:
    """Every parameter, flattened; under ZeRO-3 gathered from the shards (a collective: every rank calls it)."""
    params = list(model.parameters())
    if is_deepspeed_zero3_enabled():
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return torch.cat([p.detach().float().flatten() for p in params]).tolist()
    return torch.cat([p.detach().float().flatten() for p in params]).tolist()


class WeightsAfterEachStep(TrainerCallback):
    def __init__(self) -> None:
        self.weights: list[list[float]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights.append(full_weights(model))


def overflowing_reward(completions, trainer_state, **kwargs):
    """Rewards of +-3e38 in the first step: their spread overflows float32, so that step's loss is not finite."""
    if trainer_state.global_step == 0:
        return [3e38 if i % 2 else -3e38 for i in range(len(completions))]
    return reward(completions)


def train(
    name: str,
    out_dir: str,
    engine: str,
    tokenizer,
    *,
    trainer_class=PrefixRFTTrainer,
    rewards=reward,
    config_class=PrefixRFTConfig,
    bf16=False,
    peft_config=None,
    resume=None,
    demos=DEMOS,
    **settings,
) -> dict:
    torch.manual_seed(0)
    model = build_model(tokenizer, "test")
    initial = full_weights(model)
    kwargs = cpu_trainer_kwargs(f"{out_dir}/{name}", seed=0, max_steps=STEPS)
    kwargs.update(bf16=bf16, deepspeed=deepspeed_config(engine, bf16), max_completion_length=24, learning_rate=1e-2)
    kwargs.update(disable_tqdm=True, log_completions=False, **settings)
    args = config_class(**kwargs)
    weights = WeightsAfterEachStep()
    trainer = trainer_class(
        model=model,
        reward_funcs=[rewards],
        args=args,
        train_dataset=dataset(demos),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[weights],
    )
    trainer.train(resume_from_checkpoint=resume)
    history = trainer.state.log_history
    return {
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "steps": trainer.state.global_step,
        "losses": [h["loss"] for h in history if "loss" in h],
        "hybrid_rows": [h["prefix/hybrid_rows"] for h in history if "prefix/hybrid_rows" in h],
        "rewards": [h["reward"] for h in history if "reward" in h],  # mean reward of each step's batch
        "guided_rows": {  # TRAPO: rows guided at each level, per optimizer step
            level: [h[f"trapo/guided_rows_{level}"] for h in history if f"trapo/guided_rows_{level}" in h]
            for level in ("partial25", "partial50", "full")
        },
        "skipped": trainer._guard.skipped,
        "sft_steps": getattr(trainer, "sft_steps", None),
        "initial": initial,
        "after_step": weights.weights,  # before callbacks added later (ReLIFT's SFT step) have run
        "final": full_weights(trainer.model),
        "trainable": [n for n, p in trainer.model.named_parameters() if p.requires_grad],
        "dtype": str(next(trainer.model.parameters()).dtype),
    }


def scenario_layouts(out_dir, engine, tokenizer) -> dict:
    """The Prefix-RFT layouts of test_collective_generate.py (rank 0 without hybrids, groups spanning ranks, ...);
    its TRAPO layouts need TRAPO's trainer and reward: `scenario_trapo`."""
    return {
        name: train(name, out_dir, engine, tokenizer, **settings)
        for name, settings in LAYOUTS.items()
        if name not in TRAPO_LAYOUTS
    }


def trapo(name: str, out_dir: str, engine: str, tokenizer, rewards=no_reward, **settings) -> dict:
    """TRAPO, by default with every reward 0: every advantage is 0 and the trust-region SFT of guided prefixes
    trains."""
    return train(
        name,
        out_dir,
        engine,
        tokenizer,
        trainer_class=TrapoTrainer,
        config_class=TrapoConfig,
        rewards=rewards,
        **settings,
    )


def easy_or_prefixed(completions, answer, demos, **kwargs):
    """1 for every completion of 17+18 (answer 35), and for one that starts with the first 5 characters of its row's
    demo (`12+30`, TRAPO's 25% prefix, which the untrained model does not write by itself); else 0."""
    rows = zip(completions, answer, demos, strict=True)
    return [float(a == "35" or c[0]["content"].startswith(d[0][:5])) for c, a, d in rows]


def scenario_trapo(out_dir, engine, tokenizer) -> dict:
    """The TRAPO layouts of test_collective_generate.py (in-step escalation, micro-groups split between ranks) on
    12+30 and 17+18, one question per step: rank 0 scores positions 0-3, from whose gathered rewards rank 1 guides
    4-7, so 17+18 (solved) stays unguided while 12+30 escalates."""
    return {
        name: trapo(name, out_dir, engine, tokenizer, rewards=easy_or_prefixed, demos=DEMOS[:2], **LAYOUTS[name])
        for name in sorted(TRAPO_LAYOUTS)
    }


def scenario_trapo_previous_visit(out_dir, engine, tokenizer) -> dict:
    """previous_visit on a one-question dataset: step 1 is its first visit (unguided), step 2 its second."""
    settings = dict(LAYOUTS["trapo_in_step"], trapo_escalation="previous_visit")
    return trapo("trapo_previous_visit", out_dir, engine, tokenizer, demos=DEMOS[:1], **settings)


def scenario_guard(out_dir, engine, tokenizer) -> dict:
    """One group of 8 per step (4 rows per rank on 2 ranks); the first step's loss is not finite."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return train(
        "guard",
        out_dir,
        engine,
        tokenizer,
        rewards=overflowing_reward,
        per_device_train_batch_size=8 // world,
        num_generations=8,
    )


def scenario_resume(out_dir, engine, tokenizer) -> dict:
    """2 steps saving at each, then a fresh trainer resumed from checkpoint-1 trains step 2 again."""
    settings = dict(per_device_train_batch_size=4, num_generations=8, save_strategy="steps", save_steps=1)
    whole = train("whole", out_dir, engine, tokenizer, **settings)
    resumed = train("resumed", out_dir, engine, tokenizer, **settings, resume=f"{out_dir}/whole/checkpoint-1")
    return {"whole": whole, "resumed": resumed}


def scenario_lora(out_dir, engine, tokenizer) -> dict:
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return train(
        "lora", out_dir, engine, tokenizer, peft_config=lora, per_device_train_batch_size=4, num_generations=8
    )


def scenario_bf16(out_dir, engine, tokenizer) -> dict:
    return train("bf16", out_dir, engine, tokenizer, bf16=True, per_device_train_batch_size=4, num_generations=8)


def always_failing(completions, **kwargs):
    return [0.0] * len(completions)


def scenario_relift(out_dir, engine, tokenizer) -> dict:
    """One RL step in which every group fails, then one SFT step on the failed questions.

    Reward 0 everywhere makes every advantage 0 and there is no entropy bonus, so the RL update is exactly 0 and the
    weights move by the SFT step alone. The global batch is the same 2 questions x 8 rollouts: one group per rank on
    2 ranks, both groups in one process; relift_sft_batch=2 is the same too, so the SFT batch is both questions either
    way.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return train(
        "relift",
        out_dir,
        engine,
        tokenizer,
        trainer_class=ReliftTrainer,
        config_class=ReliftConfig,
        rewards=always_failing,
        max_steps=1,
        per_device_train_batch_size=16 // world,
        num_generations=8,
        relift_sft_batch=2,
        relift_sft_learning_rate=1e-3,
        entropy_coef=0.0,  # ReLIFT's default bonus (0.001) would move the weights in the RL step too
    )


def scenario_guard_verdict(out_dir, engine, tokenizer) -> dict:
    """Rank 1 alone holds a NaN gradient (as one FSDP shard can): both ranks must skip, or one would step alone."""
    from accelerate import Accelerator
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from prefix_rft.trl.guards import NonFiniteStepGuard

    args = TrainingArguments(output_dir=f"{out_dir}/verdict", use_cpu=True, report_to="none")  # resets accelerate
    accelerator = Accelerator(cpu=True)  # joins (or starts) the process group
    model = torch.nn.Linear(2, 1)
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan") if accelerator.process_index == 1 else 0.5)
    guard = NonFiniteStepGuard(max_consecutive=2, accelerator=accelerator)
    guard.on_pre_optimizer_step(args, TrainerState(), TrainerControl(), model=model)
    return {"skipped": guard.skipped, "gradients_left": sum(p.grad is not None for p in model.parameters())}


def fails_on_rank_0(completions, **kwargs):
    return [0.0 if dist.get_rank() == 0 else 1.0] * len(completions)


def scenario_relift_uneven(out_dir, engine, tokenizer) -> dict:
    """Only rank 0's question fails: the buffer (every rank's failures) reaches relift_sft_batch=1, so both ranks
    take the SFT step on it, rank 1 with no item of its own."""
    return train(
        "relift_uneven",
        out_dir,
        engine,
        tokenizer,
        trainer_class=ReliftTrainer,
        config_class=ReliftConfig,
        rewards=fails_on_rank_0,
        max_steps=1,
        per_device_train_batch_size=8,
        num_generations=8,
        relift_sft_batch=1,
    )


def scenario_hpt_skip(out_dir, engine, tokenizer) -> dict:
    """HPT with the authors' step skip (hpt_skip_grad_norm): refused under DeepSpeed when the trainer is built."""
    options = {"max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 8, "hpt_skip_grad_norm": 80.0}
    return train("hpt_skip", out_dir, engine, tokenizer, trainer_class=HptTrainer, config_class=HptConfig, **options)


SCENARIOS = {
    "hpt_skip": scenario_hpt_skip,
    "layouts": scenario_layouts,
    "guard": scenario_guard,
    "resume": scenario_resume,
    "lora": scenario_lora,
    "bf16": scenario_bf16,
    "relift": scenario_relift,
    "guard_verdict": scenario_guard_verdict,
    "relift_uneven": scenario_relift_uneven,
    "trapo": scenario_trapo,
    "trapo_previous_visit": scenario_trapo_previous_visit,
}


def run_scenario(name: str, out_dir: str, engine: str, tokenizer) -> dict:
    """The scenario's record, or the error it raised (every rank raises alike, so the next scenario still runs)."""
    try:
        return SCENARIOS[name](out_dir, engine, tokenizer)
    except Exception as error:  # noqa: BLE001 - the test asserts on the message
        return {"error": f"{type(error).__name__}: {error}"}


def main(out_dir: str, engine: str, scenarios: list[str]) -> None:
    tokenizer = build_tokenizer()
    record = {name: run_scenario(name, out_dir, engine, tokenizer) for name in scenarios}
    with open(f"{out_dir}/rank{os.environ.get('RANK', '0')}.json", "w") as f:
        json.dump(record, f)
    if dist.is_initialized():  # run by torchrun; `python deepspeed_worker.py ...` is the one-process reference
        dist.barrier()
        dist.destroy_process_group()  # a clean teardown avoids a SIGABRT at interpreter exit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
