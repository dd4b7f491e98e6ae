"""Worker for test_resume.py: a short training run that can SIGKILL itself at a chosen step and phase.

    python resume_worker.py OUT_DIR [--kill PHASE:STEP] [--resume] [--max-steps N] [--guided]

PHASE is `generate` (after rollouts are scored), `backward` (after the loss is computed), `save` (halfway through
writing a checkpoint: model written, optimizer and RNG states not yet) or `saved` (right after checkpoint STEP is
complete; STEP counts checkpoints, so `saved:N` is after the last step of an N-step run). STEP otherwise counts
optimizer steps from 0. `--guided` turns on the per-question options (adaptive prefix ratio and rescue), whose state
the checkpoints carry.
"""

import argparse
import json
import os
import signal

import torch
from datasets import Dataset
from transformers.trainer_utils import get_last_checkpoint

from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer
from prefix_rft.trl.cpu import cpu_trainer_kwargs

MAX_STEPS = 6
# 6 questions, 2 per step: steps 3-5 revisit those of steps 0-2 and are planned from the per-question state. The parity
# reward succeeds about half the time: steps 3-5 plan 2, 2 and 1 adapted ratios, and step 5 a solved (on-policy) slot.
GUIDED = {"prefix_success_target": 0.5, "prefix_rescue_max_success": 0.6}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillableTrainer(PrefixRFTTrainer):
    kill_phase: str | None = None
    kill_step: int = -1

    def _should_die(self, phase: str) -> bool:
        return self.kill_phase == phase and self.state.global_step == self.kill_step

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self._should_die("generate"):
            die()
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._should_die("backward"):
            die()
        return loss

    def _save_optimizer_and_scheduler(self, output_dir):
        # global_step was already incremented when checkpoint `step` is written, hence the +1
        if self.kill_phase == "save" and self.state.global_step == self.kill_step + 1:
            die()
        super()._save_optimizer_and_scheduler(output_dir)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.kill_phase == "saved" and self.state.global_step == self.kill_step:
            die()


def reward(completions, answer, **kwargs):
    # deterministic and varied: reward 1 for completions whose length has the parity of the answer
    return [float(len(c[0]["content"]) % 2 == int(a) % 2) for c, a in zip(completions, answer)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--kill", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS)
    parser.add_argument("--guided", action="store_true")
    opts = parser.parse_args()
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(tokenizer, "test")
    demos = [f"{a}+{b} is {a + b}. ans: {a + b}" for a, b in [(12, 30), (17, 18), (40, 20), (25, 25), (9, 9), (3, 4)]]
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": d.split(" is")[0]}], "demos": [d], "answer": d.split(": ")[1]}
            for d in demos
        ]
    )
    args = PrefixRFTConfig(
        **{**cpu_trainer_kwargs(opts.out_dir, seed=0, max_steps=opts.max_steps), "save_strategy": "steps"},
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=24,
        learning_rate=1e-2,
        save_steps=1,
        disable_tqdm=True,
        log_completions=False,
        prefix_ratio_decay_steps=opts.max_steps,
        **(GUIDED if opts.guided else {}),
    )
    trainer = KillableTrainer(
        model=model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    if opts.kill:
        phase, step = opts.kill.split(":")
        trainer.kill_phase, trainer.kill_step = phase, int(step)
    checkpoint = get_last_checkpoint(opts.out_dir) if opts.resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    record = {"params": params.tolist(), "log_history": trainer.state.log_history, "resumed_from": checkpoint}
    with open(os.path.join(opts.out_dir, "final.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
