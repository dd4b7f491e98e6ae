"""The loss of `PrefixRFTTrainer`: entropy selection of prefix tokens in its three scopes, and the clipped loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefix_rft.core import (
    aggregate_token_loss,
    masked_mean,
    ppo_clip_token_loss,
    sampler_ratio_on_continuation,
    select_over_span,
    sequence_level_old_logp,
)


@dataclass(frozen=True, eq=False)
class LossBatch:
    """The micro-batch as the loss hooks (`_token_loss`, `_aggregate`) see it, built once per `_compute_loss`.

    B rows, T completion tokens. `inputs`: the micro-batch (a baseline reads its own row fields there, e.g.
    `hpt_sft_rows`, absent from evaluation batches); `mask` (B, T): the completion tokens in the loss; `prefix_mask`
    (B, T) bool: the demo tokens among them; `entropies` (B, T): the policy's entropies, detached; `dapo_tokens`:
    DAPO's divisor (`_dapo_tokens`), None for the other loss types.
    """

    inputs: dict
    mask: torch.Tensor
    prefix_mask: torch.Tensor
    entropies: torch.Tensor
    dapo_tokens: torch.Tensor | None = None

    @property
    def on_policy(self) -> torch.Tensor:
        """(B, T) the loss tokens outside the demo: those the policy generated."""
        return self.mask * ~self.prefix_mask

    def demo_of_rows(self, key: str) -> torch.Tensor:
        """(B, T) bool: the demo tokens of the rows that `inputs[key]` ((B,) bool) marks; none when the batch lacks
        the key (evaluation batches carry no baseline row fields)."""
        rows = self.inputs.get(key)
        return self.prefix_mask & (False if rows is None else rows.unsqueeze(1))


class PrefixLossMixin:
    """Loss hooks of `PrefixRFTTrainer` (a mixin over TRL's `GRPOTrainer`)."""

    sft_on_every_demo_token = False  # a baseline with an SFT term over all demo tokens sets it (`_trained_demo_mask`)
    sft_rows_key: str | None = None  # a baseline whose SFT term trains some rows' demo tokens names its row field

    def _prefix_keep_mask(self, entropies: torch.Tensor, prefix_mask: torch.Tensor, inputs: dict) -> torch.Tensor:
        """(B, T) bool: tokens that keep their advantage after entropy selection of prefix tokens.

        `prefix_keep` when `_select_over_optimizer_step` wrote it (a scope spanning several micro-batches); else the
        scope spans this micro-batch alone, selected from the loss forward's (B, T) `entropies`.
        """
        keep = inputs.get("prefix_keep")
        return keep if keep is not None else self._select_over_span([entropies], [prefix_mask])[0]

    def _select_over_span(self, entropies: list[torch.Tensor], prefix_masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """The keep mask of each micro-batch of a span, by `select_over_span` under the configured scope and mode.

        `random` is seeded by (prefix_seed, micro-batch step, rank)."""
        args, generator = self.args, None
        if args.prefix_entropy_selection == "random":
            generator = torch.Generator().manual_seed(
                hash((args.prefix_seed, self._step, self.accelerator.process_index))
            )
        return select_over_span(
            args.prefix_entropy_scope,
            entropies,
            prefix_masks,
            args.prefix_entropy_keep_fraction,
            args.prefix_entropy_selection,
            gather=self._gathered_pool,
            generator=generator,
        )

    def _gathered_pool(self, local: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(M,) every rank's `local` values concatenated in rank order, and the index where this rank's start."""
        if self.accelerator.num_processes == 1:
            return local, 0
        counts = self.accelerator.gather(torch.tensor([local.numel()], device=local.device)).tolist()
        offset = sum(counts[: self.accelerator.process_index])
        if max(counts) == 0:
            return local, offset
        padded = self.accelerator.pad_across_processes(local, dim=0)
        gathered = self.accelerator.gather(padded).view(len(counts), -1)
        return torch.cat([gathered[r, :c] for r, c in enumerate(counts)]), offset

    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        accumulation = self.args.gradient_accumulation_steps
        if self.model.training and self._needs_step_entropy_pass() and self._step % accumulation == 0:
            start = self._step % self.args.steps_per_generation
            self._select_over_optimizer_step(self._buffered_inputs[start : start + accumulation])
        return inputs

    def _needs_step_entropy_pass(self) -> bool:
        """The optimizer_step scope spans several micro-batches only with gradient accumulation; with one micro-batch
        per step it is that micro-batch on every rank, selected in the loss at no extra cost."""
        args = self.args
        return (
            args.prefix_entropy_scope == "optimizer_step"
            and args.gradient_accumulation_steps > 1
            and args.prefix_entropy_selection in ("top", "lowest")
        )

    def _select_over_optimizer_step(self, micro_batches: list[dict]) -> None:
        """Write `prefix_keep` (B, T) into each micro-batch of the optimizer step about to start.

        The threshold is taken over every prefix token of the step's micro-batches on all ranks (the paper's
        mini-batch), so their entropies under the current policy are needed before the first backward: a no-grad
        forward of the rows that have prefix tokens, skipped when no rank has any. The policy does not change until
        the step ends, so these are the entropies the loss would see.
        """
        masks = [inputs.get("prefix_mask", torch.zeros(1, 1, dtype=torch.bool)) for inputs in micro_batches]
        masks = [m & self._loss_mask(inputs).bool() for m, inputs in zip(masks, micro_batches, strict=True)]
        total = torch.tensor([sum(int(m.sum()) for m in masks)], device=self.accelerator.device)
        if int(self.accelerator.reduce(total, "sum")) == 0:  # nothing to select: no forward, no gather
            for inputs, m in zip(micro_batches, masks, strict=True):
                inputs["prefix_keep"] = torch.ones_like(m)
            return
        entropies = [self._prefix_entropies(inputs, m) for inputs, m in zip(micro_batches, masks, strict=True)]
        for inputs, keep in zip(micro_batches, self._select_over_span(entropies, masks), strict=True):
            inputs["prefix_keep"] = keep

    @staticmethod
    def _loss_mask(inputs: dict) -> torch.Tensor:
        """(B, T) completion tokens that enter the loss."""
        mask = inputs["completion_mask"]
        return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]

    @torch.no_grad()
    def _prefix_entropies(self, inputs: dict, prefix_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) policy entropies on the rows with prefix tokens (0 elsewhere).

        A rank without such rows still runs one row: under ZeRO-3 and FSDP every forward is a collective.
        """
        rows = prefix_mask.any(dim=1).nonzero(as_tuple=True)[0]
        forward_rows = rows if rows.numel() else torch.zeros(1, dtype=torch.long, device=prefix_mask.device)
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)[forward_rows]
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)[forward_rows]
        width = inputs["completion_ids"].size(1)
        _, entropies, _ = self._get_per_token_logps_and_entropies(
            self.model_wrapped, input_ids, attention_mask, width, compute_entropy=True
        )
        full = torch.zeros(prefix_mask.shape, dtype=torch.float32, device=prefix_mask.device)
        if rows.numel():
            full[rows] = entropies.float()
        self._metrics["train"]["prefix/entropy_pass_rows"].append(float(forward_rows.numel()))
        return full

    def _compute_loss(self, model, inputs):
        mask = self._loss_mask(inputs)  # (B, T)
        logps, entropies, aux_loss = self._forward(model, inputs)
        advantages = inputs["advantages"]
        if advantages.dim() == 1:  # eval batches carry TRL's (B,) advantages
            advantages = advantages.unsqueeze(1)
        prefix_mask = inputs.get("prefix_mask", torch.zeros_like(mask, dtype=torch.bool)) & mask.bool()
        mode = "train" if self.model.training else "eval"
        batch = LossBatch(inputs, mask, prefix_mask, entropies.detach(), self._dapo_tokens(inputs, mode))
        # Prefix-RFT (App. A.2): zero the advantage of prefix tokens outside the top entropy share.
        keep = self._prefix_keep_mask(batch.entropies, prefix_mask, inputs)
        advantages = advantages * keep
        old_logps = self._old_logps(logps, inputs, mask)
        token_loss, ratio = self._token_loss(logps, old_logps, advantages, batch)
        if self.use_vllm and self.vllm_importance_sampling_correction:
            token_loss = token_loss * self._sampler_ratio(inputs["importance_sampling_ratio"], prefix_mask)
        if self.beta != 0.0:
            token_loss = token_loss + self.beta * self._kl(logps, old_logps, inputs["ref_per_token_logps"], mask, mode)
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        policy_loss = self._aggregate(token_loss, logps, batch)
        loss = policy_loss / accumulation - self._entropy_bonus(entropies, mask, prefix_mask, mode) / accumulation
        if self.aux_loss_enabled:  # MoE load balancing, as stock GRPOTrainer adds it
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
        # a step's trained demo tokens: TRL logs the mean over its micro-batches, so each counts `accumulation` times
        trained = self._trained_demo_mask(batch, keep).sum() * accumulation
        self._log_loss_metrics(mode, batch, keep, ratio, advantages, trained)
        self._log_loss_terms(mode, policy_loss, aux_loss)
        return loss

    def _trained_demo_mask(self, batch: LossBatch, keep: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the demo tokens this micro-batch's loss trains, logged as `demo/trained_tokens`: the prefix
        tokens that keep their advantage after entropy selection (`keep`, (B, T) bool), all of them for a baseline
        whose SFT term trains every demo token (`sft_on_every_demo_token`), or those of the rows its `sft_rows_key`
        marks (HPT, TRAPO)."""
        if self.sft_rows_key is not None:
            return batch.demo_of_rows(self.sft_rows_key)
        return batch.prefix_mask if self.sft_on_every_demo_token else keep & batch.prefix_mask

    def _sampler_ratio(self, ratio: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
        """TRL's vLLM importance-sampling weight, (B, T) or (B, 1), as `prefix_sampler_correction` applies it.

        Demo tokens carry no sampler logprob (NaN), so TRL gives them a token ratio of 1 and its sequence ratio is the
        sampled continuation's alone. 'row' multiplies every token of the row by it, demo tokens included, and a
        sequence_mask zero drops the whole row; 'continuation' keeps demo tokens at 1 in every mode.
        """
        if self.args.prefix_sampler_correction == "row":
            return ratio
        return sampler_ratio_on_continuation(ratio, prefix_mask)

    def _forward(self, model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, T) log-probs and entropies of the completion tokens, and the MoE router aux loss (None if disabled)."""
        completion_ids = inputs["completion_ids"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        return self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
        )

    def _old_logps(self, logps: torch.Tensor, inputs: dict, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) rollout-policy log-probs as the importance ratio uses them: per token, or shifted so that every token
        of a row carries the row's ratio (`importance_sampling_level="sequence"`, GSPO)."""
        old_logps = inputs.get("old_per_token_logps")
        # TRL leaves them out when they equal the current ones (strictly on-policy micro-batches).
        old_logps = logps.detach() if old_logps is None else old_logps
        if self.importance_sampling_level == "sequence":
            return sequence_level_old_logp(logps, old_logps, mask)
        return old_logps

    def _token_loss(
        self, logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, batch: LossBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) per-token loss and (B, T) importance ratio (detached, for the clip metrics).

        `logps` (B, T): the policy's log-probs, with gradient; `old_logps` (B, T): the rollout policy's, as the ratio
        uses them (`_old_logps`); `advantages` (B, T) or (B, 1): after entropy selection of prefix tokens. Here: the
        same clipped objective for prefix and continuation tokens; the baselines override it.
        """
        args = self.args
        return ppo_clip_token_loss(
            logps, old_logps, advantages, self.epsilon_low, self.epsilon_high, args.dual_clip, args.delta
        )

    def _kl(self, logps, old_logps, ref_logps, mask, mode: str) -> torch.Tensor:
        """(B, T) k3 estimate of KL(policy || reference), logged as `kl`.

        With `use_bias_correction_kl` it is weighted by the importance ratio, which makes its gradient the unbiased
        reverse-KL gradient (TRL, DeepSeek-V3.2); the ratio is differentiable, so this matters even at ratio 1.
        """
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        if self.args.use_bias_correction_kl:
            kl = kl * torch.exp(logps - old_logps)
        totals = self.accelerator.reduce(torch.stack([(kl * mask).sum(), mask.sum()]).float(), "sum")
        self._metrics[mode]["kl"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        return kl

    def _dapo_tokens(self, inputs: dict, mode: str) -> torch.Tensor | None:
        """DAPO's divisor (TRL's): the generation batch's trained tokens on all ranks, per rank and micro-batch."""
        if self.loss_type != "dapo":
            return None
        tokens = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        # Evaluation batches are neither split into micro-batches nor accumulated.
        return tokens / self.args.steps_per_generation if mode == "train" else tokens

    def _aggregate(self, token_loss: torch.Tensor, logps: torch.Tensor, batch: LossBatch) -> torch.Tensor:
        """Scalar loss of a micro-batch before gradient-accumulation scaling, from the (B, T) `token_loss` of
        `_token_loss` (sampler correction and KL included) and the policy's (B, T) `logps`.

        Here: aggregated over `batch.mask` as `loss_type` says; the baselines override it to add their SFT term.
        """
        return aggregate_token_loss(
            token_loss, batch.mask, self.loss_type, self.max_completion_length, batch.dapo_tokens
        )

    def _entropy_bonus(self, entropies, mask, prefix_mask, mode: str) -> torch.Tensor | float:
        """Coefficient x mean entropy over the `prefix_entropy_bonus_scope` tokens (0 when disabled).

        The coefficient is `entropy_coef`, or with `use_adaptive_entropy` (Skywork-OR1) the one of the previous
        optimizer step, applied only while entropy is at or below `entropy_target`, as TRL does.
        """
        if not self._entropy_bonus_enabled:
            return 0.0
        scope = mask if self.args.prefix_entropy_bonus_scope == "all" else mask * ~prefix_mask
        coef = self.entropy_coef
        if self.use_adaptive_entropy:
            coef = coef if self._last_world_entropy <= self.args.entropy_target else 0.0
            if mode == "train":
                self._update_entropy_coef(entropies.detach(), scope)
        if mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        return coef * masked_mean(entropies, scope)

    def _update_entropy_coef(self, entropies: torch.Tensor, scope: torch.Tensor) -> None:
        """Adaptive entropy control: at each optimizer step, move `entropy_coef` by `entropy_coef_delta` towards more
        entropy when the step's mean entropy (all ranks, all micro-batches) is at or below the target, else less."""
        stats = torch.stack([(entropies * scope).sum(), scope.sum()]).float()
        window = self._entropy_window_stats
        self._entropy_window_stats = stats if window is None else window + stats
        if not self.accelerator.sync_gradients:
            return
        total = self.accelerator.reduce(self._entropy_window_stats, "sum")
        args, entropy = self.args, (total[0] / total[1].clamp(min=1.0)).item()
        if entropy <= args.entropy_target:
            self.entropy_coef = min(self.entropy_coef + args.entropy_coef_delta, args.entropy_coef_max)
        else:
            self.entropy_coef = max(self.entropy_coef - args.entropy_coef_delta, args.entropy_coef_min)
        self._last_world_entropy, self._entropy_window_stats = entropy, None

    def _log_loss_terms(self, mode: str, policy_loss: torch.Tensor, aux_loss: torch.Tensor | None) -> None:
        """`policy_loss` (the micro-batch's policy term before accumulation scaling) and the MoE `aux_loss`."""
        metrics = self._metrics[mode]
        metrics["policy_loss"].append(self.accelerator.gather(policy_loss.detach()).nanmean().item())
        if aux_loss is not None:
            metrics["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss.detach()).mean().item())

    def _log_loss_metrics(self, mode, batch: LossBatch, keep, ratio, advantages, trained) -> None:
        """The micro-batch's metrics, reduced over ranks; `trained`: its trained demo tokens x accumulation."""
        mask, prefix_mask, entropies = batch.mask.bool(), batch.prefix_mask, batch.entropies
        continuation = mask & ~prefix_mask
        low = (ratio < 1 - self.epsilon_low) & (advantages < 0)
        high = (ratio > 1 + self.epsilon_high) & (advantages > 0)
        sums = torch.stack(
            [
                (entropies * mask).sum(),
                mask.sum(),
                (entropies * prefix_mask).sum(),
                prefix_mask.sum(),
                (entropies * continuation).sum(),
                continuation.sum(),
                (keep & prefix_mask).sum(),
                (low & mask).sum(),
                (high & mask).sum(),
                trained,
            ]
        ).float()
        s = self.accelerator.reduce(sums, "sum").tolist()
        metrics = self._metrics[mode]
        metrics["entropy"].append(s[0] / max(s[1], 1.0))
        metrics["entropy/prefix"].append(s[2] / s[3] if s[3] else float("nan"))
        metrics["entropy/continuation"].append(s[4] / max(s[5], 1.0))
        metrics["prefix/kept_fraction"].append(s[6] / s[3] if s[3] else float("nan"))
        metrics["clip_ratio/low_mean"].append(s[7] / max(s[1], 1.0))
        metrics["clip_ratio/high_mean"].append(s[8] / max(s[1], 1.0))
        metrics["clip_ratio/region_mean"].append((s[7] + s[8]) / max(s[1], 1.0))
        metrics["demo/trained_tokens"].append(s[9])  # all ranks, per optimizer step
