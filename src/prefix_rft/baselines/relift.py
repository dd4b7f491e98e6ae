"""ReLIFT (Ma et al. 2025, arXiv 2506.07527; docs/results.md): RL steps, interleaved with SFT on the hardest questions.

After every RL step, each question whose G rollouts all failed joins a buffer (once, unless
`relift_buffer_repeats`; a question is its `id` column, else its prompt, as for the per-question state:
`trl.questions.question_key`). When the buffer holds `relift_sft_batch` questions, the oldest that many are taken
(the newest with `relift_buffer_order="newest_first"`, the authors' order) and one SFT step is run on their
demonstrations (NLL, token mean over the batch, minus an entropy bonus if `relift_sft_entropy_coef`) with a
separate AdamW optimizer; the rest stays for later. The buffer is filled from every rank's groups in rank order, so
all ranks hold the same buffer and trigger, batch and train as one process with the same global batch would; each
rank computes its share of the batch and the trainer sums the SFT gradients over ranks itself, so it runs under DDP
and DeepSpeed ZeRO-1/2 in fp32 (ZeRO-3, FSDP and DeepSpeed in bf16/fp16 are refused). The buffer and that
optimizer are saved in checkpoints, so a resumed run continues exactly; a buffer saved before questions were keyed
by `question_key` (keyed by the prompt's JSON) is re-keyed when it is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

from prefix_rft.data import row_demos
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.fields import refuse_unused
from prefix_rft.trl.questions import question_key
from prefix_rft.trl.rollouts import Rollout
from prefix_rft.trl.run_dir import RankState
from prefix_rft.trl.trainer import PrefixRFTTrainer

BUFFER_FILE = "relift_buffer.json"
OPTIMIZER_FILE = "relift_optimizer.pt"


def all_failed_groups(rewards: torch.Tensor, group_size: int) -> list[int]:
    """Indices of groups with no reward > 0 (ReLIFT's `solve_none`). rewards: (N,), groups contiguous.

    A NaN reward (a row no reward function scored) is no success either.
    """
    return (~(rewards.view(-1, group_size) > 0)).all(dim=1).nonzero().flatten().tolist()


def add_to_buffer(
    buffer: list[dict], items: list[dict], key: str = "key", *, front: bool = False, repeats: bool = False
) -> None:
    """Add `items` behind the buffer, or in front of it (`front`, in their order), each question once unless
    `repeats` (then an item whose `key` is already buffered enters again, as ReLIFT's authors' buffer does)."""
    present, new = {item[key] for item in buffer}, []
    for item in items:
        if repeats or item[key] not in present:
            new.append(item)
            present.add(item[key])
    if front:
        buffer[:0] = new
    else:
        buffer.extend(new)


def has_legacy_key(item: dict) -> bool:
    """The item is keyed as checkpoints wrote it before questions were keyed by `question_key`: its prompt's JSON."""
    return item["key"] == json.dumps(item["prompt"])


def rekey_legacy_items(buffer: list[dict], ids: dict[str, Any]) -> list[dict]:
    """`buffer` with each legacy key (`has_legacy_key`) replaced by the question's key (`question_key`): `ids` maps
    such a key to its training row's `id` (where the dataset has that column), else the prompt is the question. Order
    kept; an item whose new key is already present is dropped."""
    items = []
    for item in buffer:
        if has_legacy_key(item):
            item = {**item, "key": question_key({"prompt": item["prompt"], "id": ids.get(item["key"])})}
        items.append(item)
    rekeyed: list[dict] = []
    add_to_buffer(rekeyed, items)
    return rekeyed


def take_sft_batch(buffer: list[dict], size: int) -> list[dict] | None:
    """The first `size` items (the oldest, or the newest when `add_to_buffer` puts them in front), removed from the
    buffer, once it holds at least `size`; otherwise None."""
    if len(buffer) < size:
        return None
    batch = buffer[:size]
    del buffer[:size]
    return batch


@dataclass
class ReliftConfig(PrefixRFTConfig):
    num_hybrid: int = field(default=0, metadata={"help": "ReLIFT's RL steps are plain on-policy GRPO: must stay 0."})
    relift_sft_batch: int = field(default=64, metadata={"help": "Buffered questions that trigger one SFT step."})
    relift_sft_learning_rate: float = field(default=1e-6, metadata={"help": "Learning rate of the SFT optimizer."})
    relift_sft_max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient clipping of the SFT step (the authors' sft_grad_clip: 1.0)."}
    )
    entropy_coef: float = field(default=0.001, metadata={"help": "RL steps' entropy bonus (the authors': 0.001)."})
    relift_buffer_order: Literal["oldest_first", "newest_first"] = field(
        default="oldest_first",
        metadata={
            "help": "Which buffered questions an SFT step trains: 'oldest_first' (a queue), or 'newest_first' (the "
            "authors': each step's failures go in front, and the first relift_sft_batch are trained)."
        },
    )
    relift_buffer_repeats: bool = field(
        default=False,
        metadata={
            "help": "A buffered question that fails again enters again (the authors' buffer); else it keeps its place."
        },
    )
    relift_sft_entropy_coef: float = field(
        default=0.0,
        metadata={"help": "Entropy bonus of the SFT loss, over the demo tokens (the authors': 0.001)."},
    )

    def __post_init__(self) -> None:
        # The parent refuses the options of hybrid rows and drawn prefixes when num_hybrid=0 (`refuse_hybrid_options`)
        reason = (
            "ReLIFT's RL rollouts are all on-policy (no hybrid row, no demo prefix); its SFT step trains whole demos"
        )
        refuse_unused(self, {"num_hybrid": reason})
        super().__post_init__()
        if self.relift_sft_entropy_coef < 0:
            raise ValueError(f"relift_sft_entropy_coef must be >= 0 (a bonus), got {self.relift_sft_entropy_coef}")


class _SFTStepCallback(TrainerCallback):
    def __init__(self, trainer: ReliftTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.maybe_sft_step()


class ReliftTrainer(PrefixRFTTrainer):
    """Prefix-free RL plus buffered SFT steps on questions the policy cannot solve."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.args.per_device_train_batch_size % self.num_generations:
            raise ValueError("ReliftTrainer needs per_device_train_batch_size to be a multiple of num_generations")
        self.relift_buffer: list[dict] = []
        self.sft_steps = 0
        self._sft_optimizer: torch.optim.Optimizer | None = None
        self._refuse_sharded_or_low_precision_deepspeed()
        self.add_callback(_SFTStepCallback(self))

    def _after_rollout(self, inputs: list[dict], rollout: Rollout) -> None:
        """Buffer the questions whose whole group failed, on any rank: each rank finds its own, then every rank adds
        all of them in rank order, so the buffers stay identical."""
        group_size = self.num_generations
        local = rollout.rewards[rollout.local(self.accelerator.process_index)]
        items = []
        for g in all_failed_groups(local, group_size):
            example = inputs[g * group_size]
            demos = row_demos(example)
            if demos:
                items.append({"key": question_key(example), "prompt": example["prompt"], "demo": demos[0]})
        args = self.args
        front = args.relift_buffer_order == "newest_first"
        add_to_buffer(self.relift_buffer, gather_object(items), front=front, repeats=args.relift_buffer_repeats)
        self._metrics["train"]["relift/buffer_size"].append(float(len(self.relift_buffer)))

    def maybe_sft_step(self) -> None:
        """One SFT step once the buffer holds a batch (the buffer is the same on every rank, so all ranks agree)."""
        batch = take_sft_batch(self.relift_buffer, self.args.relift_sft_batch)
        if batch is None:
            return
        loss, tokens = self._sft_step(batch)
        self.sft_steps += 1
        self._metrics["train"]["relift/sft_loss"].append(loss)
        self._metrics["train"]["relift/sft_steps"].append(float(self.sft_steps))
        self._metrics["train"]["relift/sft_demo_tokens"].append(tokens)

    def _sft_step(self, batch: list[dict]) -> tuple[float, float]:
        """One step of the SFT optimizer on the token mean over `batch` (the same on every rank) of the NLL minus
        `relift_sft_entropy_coef` x the entropy; returns the NLL's mean and the demo tokens it trained on all ranks.

        It runs beside the RL optimizer, not through it: the forward goes through the bare module and the gradients
        are taken with `autograd.grad`, so neither DDP's hooks nor DeepSpeed's engine see them, and they are summed
        over ranks here. Rank r takes items r, r + world, ... of the batch and divides its NLL sum by the global token
        count, so the sum is the gradient of the token mean over the whole batch, as one process computes it; every
        rank then holds the same gradient and takes the same step.
        """
        trained = [p for p in self.model.parameters() if p.requires_grad]
        share = batch[self.accelerator.process_index :: self.accelerator.num_processes]
        if share:
            nll_sum, tokens, entropy_sum = self._sft_nll(share)
        else:  # a batch smaller than the world leaves this rank nothing; it still joins the reductions
            nll_sum = tokens = entropy_sum = torch.zeros((), device=self.accelerator.device)
        total_tokens = self.accelerator.reduce(tokens, "sum")
        objective = (nll_sum - self.args.relift_sft_entropy_coef * entropy_sum) / total_tokens
        grads = torch.autograd.grad(objective, trained, allow_unused=True) if share else [None] * len(trained)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(trained, grads, strict=True)]
        flat = torch.cat([g.flatten() for g in grads])
        flat = self.accelerator.reduce(flat, "sum")
        offset = 0
        for p in trained:
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        torch.nn.utils.clip_grad_norm_(trained, self.args.relift_sft_max_grad_norm)
        optimizer = self._relift_optimizer()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._refresh_deepspeed_master_weights()
        return float(self.accelerator.reduce(nll_sum.detach(), "sum") / total_tokens), float(total_tokens)

    def _refresh_deepspeed_master_weights(self) -> None:
        """ZeRO-1/2 keeps fp32 master copies of the weights in its optimizer and would overwrite the SFT update with
        them at its next step; copy the updated weights into them."""
        if self.is_deepspeed_enabled:
            self.accelerator.deepspeed_engine_wrapped.engine.optimizer.refresh_fp32_params()

    def _refuse_sharded_or_low_precision_deepspeed(self) -> None:
        """The SFT step needs the full fp32 weights on every rank: plain DDP or DeepSpeed ZeRO-1/2 in fp32."""
        if self.is_fsdp_enabled:
            raise ValueError("ReliftTrainer does not support FSDP: its SFT step needs every rank to hold all weights")
        if not self.is_deepspeed_enabled:
            return
        stage = self.accelerator.state.deepspeed_plugin.zero_stage
        if stage == 3:
            raise ValueError(
                "ReliftTrainer does not support DeepSpeed ZeRO-3: its SFT step needs every rank to hold all weights; "
                "use ZeRO-2 or DDP"
            )
        if self.args.bf16 or self.args.fp16:
            raise ValueError(
                "ReliftTrainer does not support DeepSpeed with bf16/fp16: its SFT step would round ZeRO's fp32 master "
                "weights to the module's precision; use fp32 DeepSpeed or DDP with autocast"
            )

    def _relift_optimizer(self) -> torch.optim.Optimizer:
        if self._sft_optimizer is None:
            self._sft_optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.args.relift_sft_learning_rate)
        return self._sft_optimizer

    def _sft_nll(self, batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed NLL of the demonstrations (+ EOS) after their prompts, how many tokens it sums over, and the policy's
        entropy summed over those tokens (0 unless `relift_sft_entropy_coef`)."""
        sequences, masks = [], []
        for prompt_ids, item in zip(self._sft_prompt_ids(batch), batch, strict=True):
            demo_ids = self._demo_ids(item["demo"]) + [self._tokenizer.eos_token_id]
            sequences.append(prompt_ids + demo_ids)
            masks.append([0] * len(prompt_ids) + [1] * len(demo_ids))
        width = max(len(s) for s in sequences)
        pad = self._tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=self.accelerator.device)
        loss_mask = torch.tensor([[0] * (width - len(m)) + m for m in masks], device=ids.device)[:, 1:].bool()
        attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=ids.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the positions
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].float()
        all_logps = torch.log_softmax(logits, dim=-1)  # (B, T, V)
        logps = all_logps.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        entropy_sum = torch.zeros((), device=ids.device)
        if self.args.relift_sft_entropy_coef:  # (B, T, V) more memory, so only when the bonus is on
            entropy_sum = -((all_logps.exp() * all_logps).sum(-1) * loss_mask).sum()
        return -(logps * loss_mask).sum(), loss_mask.sum().float(), entropy_sum

    def _sft_prompt_ids(self, batch: list[dict]) -> list[list[int]]:
        """The prompts' ids as the RL step generated from them: TRL's `_tokenize_prompts` (its chat template,
        `chat_template_kwargs`), outside a rollout, so no hint is added (placement.py)."""
        prompt_ids, images, multimodal_fields = self._tokenize_prompts([item["prompt"] for item in batch])
        if images is not None or multimodal_fields:
            raise NotImplementedError("ReliftTrainer's SFT step on prompts with images or multimodal fields")
        return [list(ids) for ids in prompt_ids]

    def _rank_states(self) -> list[RankState]:
        """The parent's states and the buffer (the same on every rank)."""
        buffer = RankState(BUFFER_FILE, "ReLIFT buffer", self._buffer_state, self._load_buffer_state)
        return [*super()._rank_states(), buffer]

    def _buffer_state(self) -> dict[str, Any]:
        return {"buffer": self.relift_buffer, "sft_steps": self.sft_steps}

    def _load_buffer_state(self, saved: dict[str, Any]) -> None:
        buffer = saved["buffer"]  # re-keyed only if legacy: re-keying drops repeats (`relift_buffer_repeats`)
        legacy = any(has_legacy_key(item) for item in buffer)
        self.relift_buffer = rekey_legacy_items(buffer, self._legacy_ids(buffer)) if legacy else buffer
        self.sft_steps = saved["sft_steps"]

    # The SFT optimizer's state (tensors, not JSON) rides along with the RNG state beside the buffer (`_rank_states`).
    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self._sft_optimizer is not None:
            path = os.path.join(output_dir, f"{self.accelerator.process_index}_{OPTIMIZER_FILE}")
            torch.save(self._sft_optimizer.state_dict(), path)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        # Every rank holds the same optimizer state; all read rank 0's, so they agree on the next SFT step (a rank
        # alone in it would wait in its reductions) even if the checkpoint was written by another world size.
        optimizer_path = None if checkpoint is None else os.path.join(checkpoint, f"0_{OPTIMIZER_FILE}")
        if optimizer_path is not None and os.path.exists(optimizer_path):
            self._relift_optimizer().load_state_dict(torch.load(optimizer_path, weights_only=True))

    def _legacy_ids(self, buffer: list[dict]) -> dict[str, Any]:
        """Legacy key (a prompt's JSON) -> `id` of the first training row asking that prompt, for the buffer's legacy
        items; empty when there are none, or the training set has no `id` column or is iterable (those items are
        then keyed by their prompt)."""
        legacy = {item["key"] for item in buffer if has_legacy_key(item)}
        dataset = self.train_dataset
        if not legacy or not hasattr(dataset, "__len__") or "id" not in (getattr(dataset, "column_names", None) or ()):
            return {}
        ids: dict[str, Any] = {}
        for row in dataset.select_columns(["prompt", "id"]):
            ids.setdefault(json.dumps(row["prompt"]), row["id"])
        return {key: ids[key] for key in legacy if key in ids}
