"""Scoring of `PrefixRFTTrainer`: rewards, the prefix advantages of hybrid rows, and the prefix metrics (what it adds
to the completions table and the reward functions' logs: table_logs.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import torch
from trl.chat_template_utils import parse_response
from trl.data_utils import is_conversational
from trl.extras.profiling import profiling_context
from trl.trainer.utils import is_async_callable

from prefix_rft.core import (
    build_prefix_mask,
    hybrid_advantages,
    per_token_advantages,
    reward_std_divisor,
)
from prefix_rft.trl.rollouts import Rollout
from prefix_rft.trl.table_logs import TableLogsMixin, row_weighted_mean


def _short(value: Any, limit: int = 200) -> str:
    """`repr(value)`, cut to `limit` characters: a completion can be thousands of tokens."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class PrefixFields:
    """What a scored generation batch adds for the loss, and the advantages the metrics report."""

    completion_lens: torch.Tensor  # (B,) tokens of each local row's completion, prefix included, before any masking
    prefix_lens: torch.Tensor  # (B,) demo tokens in each local row's completion
    prefix_mask: torch.Tensor  # (B, T) bool, the demo tokens of the completion
    advantages: torch.Tensor  # (B, T) per-token advantages: prefix advantage on demo tokens, continuation elsewhere
    cont_adv: torch.Tensor  # (N,) continuation advantage of every row of the batch, all ranks, process-major
    prefix_adv: torch.Tensor  # (N,) prefix advantage of every row of the batch


def prefix_fields(
    rollout: Rollout,
    width: int,
    is_hybrid: torch.Tensor,
    *,
    rank: int,
    group_size: int,
    prefix_advantage: str,
    scale_rewards: str,
) -> PrefixFields:
    """The prefix mask and per-token advantages of this rank's rows of a scored batch.

    Args:
        rollout: the batch's record, with `prefix_ids`, `completion_lens` (B,) and `rewards` (N,) of all ranks.
        width: T, the padded completion length.
        is_hybrid: (N,) bool, the planned roles of all ranks' rows, process-major like the rewards.
        rank: this rank's index; its rows are rows rank * B to (rank + 1) * B of the batch.
        prefix_advantage, scale_rewards: the config values (`core.hybrid_advantages`, `core.reward_std_divisor`).
    """
    device = is_hybrid.device
    completion_lens = torch.tensor(rollout.completion_lens, device=device)  # (B,) before any masking
    lens = torch.tensor([len(p) for p in rollout.prefix_ids], device=device)
    prefix_lens = torch.minimum(lens, completion_lens)  # (B,) a prefix longer than the completion budget is cut
    prefix_mask = build_prefix_mask(prefix_lens, width)  # (B, T)
    rewards = rollout.rewards
    cont_adv, prefix_adv = hybrid_advantages(rewards, is_hybrid, group_size, prefix_advantage)
    # docs/fidelity.md#hybrid-advantage; each divided by the reward std when scale_rewards is 'group' or 'batch'
    # (one divisor for every advantage of a group)
    divisor = reward_std_divisor(rewards, group_size, scale_rewards)  # (N,)
    cont_adv, prefix_adv = cont_adv / divisor, prefix_adv / divisor
    local = rollout.local(rank)
    advantages = per_token_advantages(cont_adv[local], prefix_adv[local], prefix_mask)
    return PrefixFields(completion_lens, prefix_lens, prefix_mask, advantages, cont_adv, prefix_adv)


def weighted_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N,) the weighted sum of (N, F) per-function rewards over the functions that scored a row; NaN where none did
    (TRL's contract: such a row is unscorable, not a reward of 0; its advantages are 0 and it is left out of its
    group's baseline, core.advantages)."""
    rewards = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    return torch.where(torch.isnan(rewards_per_func).all(dim=1), torch.nan, rewards)


def _ignore(*args: Any) -> None:
    """`log_extra` / `log_metric` of a scoring pass whose logs would repeat the final scoring's."""


def _columns(inputs: list[dict[str, Any]]) -> dict[str, list]:
    """The dataset columns a reward function gets as keyword arguments (one list per column), as TRL passes them."""
    return {k: [x[k] for x in inputs] for k in inputs[0] if k not in ("prompt", "completion", "completion_ids")}


class PrefixScoringMixin(TableLogsMixin):
    """Reward and advantage hooks of `PrefixRFTTrainer` (a mixin over TRL's `GRPOTrainer`)."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rollout = self._rollout
        if rollout is not None and rollout.early_rewards:
            rewards_per_func = self._complete_rewards(inputs, prompts, completions, completion_ids_list, rollout)
        else:
            try:
                rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            except Exception as error:
                raise self._locate_reward_error(inputs, prompts, completions, completion_ids_list) from error
        self._check_rewards(rewards_per_func)
        if rollout is not None:
            rollout.rewards = weighted_rewards(rewards_per_func, self.reward_weights)
        return rewards_per_func

    def _complete_rewards(self, inputs, prompts, completions, completion_ids_list, rollout: Rollout) -> torch.Tensor:
        """(N, F) gathered per-function rewards of a batch some of whose rows `_score_rows` scored while it was
        generated: those rows' rewards as they were given, the reward functions called on the other rows only, so
        each row is scored once. The reward functions' `log_extra` columns go to the completions table in row order,
        and each `log_metric` name gets one value: the row-weighted mean of its calls' values (`row_weighted_mean`),
        so a metric logged per call means what it means when TRL scores the batch in one call."""
        local = torch.full((len(prompts), len(self.reward_funcs)), torch.nan)  # (B, F)
        for i, scores in rollout.early_rewards.items():
            local[i] = scores
        rows = [i for i in range(len(prompts)) if i not in rollout.early_rewards]
        if rows:
            local[rows] = self._reward_columns(
                [inputs[i] for i in rows],
                [prompts[i] for i in rows],
                [completions[i] for i in rows],
                [completion_ids_list[i] for i in rows],
                rows,
            )
        for column, values in rollout.extra_logs.items():
            self._log_completion_extra(column, values)
        for name, calls in rollout.metric_logs.items():
            self._log_metric(name, row_weighted_mean(calls))
        return self.accelerator.gather(local.to(self.accelerator.device))

    def _score_rows(self, inputs, prompts, prompt_ids, completion_ids, rows: list[int]) -> torch.Tensor:
        """(n,) weighted rewards of n rows of this rank, from the reward functions as `_calculate_rewards` calls them,
        neither gathered nor logged: for a pass that needs rewards before the batch is complete (TRAPO's in-step
        escalation). The per-function rewards are kept on the rollout, and the batch's scoring uses them instead of
        scoring these rows again. `rows`: their indices in this rank's batch."""
        completions = self._decoded(prompts, prompt_ids, completion_ids)
        scores = self._reward_columns(inputs, prompts, completions, completion_ids, rows)  # (n, F)
        for j, i in enumerate(rows):
            self._rollout.early_rewards[i] = scores[j]
        return weighted_rewards(scores, self.reward_weights.cpu())

    def _reward_columns(self, inputs, prompts, completions, completion_ids, rows: list[int]) -> torch.Tensor:
        """(n, F) rewards of n rows of this rank from each reward function (NaN where it returns None), called as
        TRL's `_calculate_rewards` calls them. Reward models (modules) are not supported (TRAPO refuses them).
        `rows`: the rows' indices in this rank's batch, which a failing reward function's message names and at which
        `log_extra` values are kept (`Rollout.extra_logs`); `log_metric` values are kept with the call's row count
        (`Rollout.metric_logs`)."""
        kwargs = _columns(inputs) | {
            "trainer_state": self.state,
            "log_extra": self._row_logger(rows),
            "log_metric": self._metric_logger(len(rows)),
        }
        columns = []
        for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True):
            try:
                with profiling_context(self, name):
                    out = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
                    if is_async_callable(func):
                        out = asyncio.run_coroutine_threadsafe(out, self.async_loop).result()
            except Exception as error:  # named with its function and dataset row, as when TRL scores the batch
                raise self._locate_reward_error(inputs, prompts, completions, completion_ids, rows) from error
            if len(out) != len(prompts):
                raise ValueError(f"reward function {name!r} returned {len(out)} rewards for {len(prompts)} rows")
            columns.append([torch.nan if r is None else float(r) for r in out])
        return torch.tensor(columns, dtype=torch.float32).T

    def _decoded(self, prompts, prompt_ids, completion_ids) -> list:
        """Completions as TRL's `_generate` decodes them for the reward functions (tools are refused at init)."""
        if not is_conversational({"prompt": prompts[0]}):
            return self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        tokenizer = self._tokenizer
        if any(getattr(tokenizer, name, None) is not None for name in ("response_template", "response_schema")):
            return [
                [parse_response(tokenizer, ids, prefix=prefix, tools=self.tools)]
                for ids, prefix in zip(completion_ids, prompt_ids, strict=True)
            ]
        contents = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        return [[{"role": "assistant", "content": content}] for content in contents]

    def _check_rewards(self, rewards_per_func: torch.Tensor) -> None:
        """Count the rows of the gathered batch that no reward function scored (every one returned None), and per
        function the rows it left unscored while another function scored them (TRL's multi-task pattern: the row's
        reward sums the functions that scored it). Refuses an infinite reward, and with `strict_rewards` a partly
        scored row.
        """
        names = self.reward_func_names
        infinite = torch.isinf(rewards_per_func).any(dim=1)
        if bool(infinite.any()):
            row = int(infinite.nonzero()[0, 0])
            values = dict(zip(names, rewards_per_func[row].tolist(), strict=True))
            raise ValueError(f"reward of row {row} (of the gathered batch) is not finite: {values}")
        missing = torch.isnan(rewards_per_func)  # (N, F)
        unscored = missing.all(dim=1)
        partial = missing & ~unscored.unsqueeze(1)  # (N, F)
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["reward/unscored_rows"].append(float(unscored.sum()))
        if len(names) > 1:
            for j, name in enumerate(names):
                metrics[f"reward/partial_rows/{name}"].append(float(partial[:, j].sum()))
        if bool(partial.any()) and self.args.strict_rewards:
            row, j = partial.nonzero()[0].tolist()
            scored_by = [n for n, gone in zip(names, missing[row].tolist(), strict=True) if not gone]
            raise ValueError(
                f"reward function {names[j]!r} returned None for row {row} (of the gathered batch), which {scored_by} "
                f"scored: the row's reward would leave {names[j]!r} out. Return a number for every row, or unset "
                "strict_rewards to sum the functions that score it (TRL's contract)"
            )

    def _locate_reward_error(self, inputs, prompts, completions, completion_ids_list, rows=None) -> Exception:
        """Re-run each reward function row by row to name the function and the row that fail. `rows`: the indices
        in this rank's batch of the rows given (default: all of it, in order)."""
        for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True):
            if not callable(func) or isinstance(func, torch.nn.Module):
                continue
            for i, example in enumerate(inputs):
                columns = _columns([example])
                try:
                    func(
                        prompts=[prompts[i]],
                        completions=[completions[i]],
                        completion_ids=[completion_ids_list[i]],
                        trainer_state=self.state,
                        log_extra=_ignore,
                        log_metric=_ignore,
                        **columns,
                    )
                except Exception as error:  # noqa: BLE001 - re-raised with its location
                    shown = {"completion": completions[i], **{k: v[0] for k, v in columns.items() if k != "id"}}
                    inputs_text = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
                    row = i if rows is None else rows[i]
                    return RuntimeError(
                        f"reward function {name!r} failed on {self._dataset_row(example)} (row {row} of this rank's "
                        f"batch): {error!r}; its input: {inputs_text}"
                    )
        return RuntimeError("a reward function failed on the whole batch but on no single row")

    def _dataset_row(self, example: dict[str, Any]) -> str:
        """The dataset row `example` came from: its `id` when the data has one, else its index (the first row with
        this prompt; found by a scan, which only a failure pays for)."""
        if example.get("id") is not None:
            return f"the dataset row with id {example['id']!r}"
        dataset = self.train_dataset if self.model.training else self.eval_dataset
        if dataset is None or isinstance(dataset, dict) or "prompt" not in getattr(dataset, "column_names", ()):
            return "a row without id"
        matches = [j for j, prompt in enumerate(dataset["prompt"]) if prompt == example["prompt"]]
        if not matches:
            return "a row without id"
        more = f" (and {len(matches) - 1} other rows with this prompt)" if len(matches) > 1 else ""
        return f"row {matches[0]} of the {'training' if self.model.training else 'eval'} dataset{more}"

    def _after_rollout(self, inputs: list[dict[str, Any]], rollout: Rollout) -> None:
        """Called once per scored training batch, before its record is dropped (ReLIFT collects failures here)."""

    def _gather_hybrid(self, rollout: Rollout, device: torch.device) -> torch.Tensor:
        """(N,) bool: `RowPlan.hybrid` of every rank's rows, process-major like the rewards. The planned role decides
        the baseline, never the prefix length or the completion mask."""
        return self.accelerator.gather(torch.tensor(rollout.hybrid, dtype=torch.bool, device=device))

    def _add_prefix_fields(self, output: dict[str, Any], rollout: Rollout) -> None:
        """Add `prefix_mask` and per-token advantages (B, T) to a generation batch (`prefix_fields`, from the scored
        `rollout` with its gathered `is_hybrid`), and log prefix metrics."""
        is_hybrid = rollout.is_hybrid
        fields = prefix_fields(
            rollout,
            output["completion_ids"].size(1),
            is_hybrid,
            rank=self.accelerator.process_index,
            group_size=self.num_generations,
            prefix_advantage=self.args.prefix_advantage,
            scale_rewards=self.scale_rewards,
        )
        output["prefix_mask"], output["advantages"] = fields.prefix_mask, fields.advantages
        self._replace_logged_advantages(fields.cont_adv)
        self._log_prefix_metrics(
            rollout, fields.prefix_lens, fields.completion_lens, is_hybrid, fields.cont_adv, fields.prefix_adv
        )

    def _log_prefix_metrics(self, rollout, prefix_lens, completion_lens, is_hybrid, cont_adv, prefix_adv) -> None:
        metrics = self._metrics["train"]
        low, high = self._prefix_sampler.bounds(rollout.schedule_step)
        metrics["prefix/ratio_floor"].append(low)
        metrics["prefix/ratio_ceiling"].append(high)
        metrics["prefix/schedule_step"].append(float(rollout.schedule_step))
        demo_lens = [max(r.demo_len, 1) for r in rollout.rows]
        # Demo tokens revealed: in the completion (placement 'response') or in the prompt as a hint ('prompt').
        revealed = [p + h for p, h in zip(prefix_lens.tolist(), rollout.hint_lens, strict=True)]
        ratios = [n / d if h else 0.0 for n, d, h in zip(revealed, demo_lens, rollout.hybrid, strict=True)]
        local = torch.tensor(
            [
                sum(ratios),
                float(prefix_lens.sum()),
                float(completion_lens.sum()),
                float(sum(r.role == "no_demo" for r in rollout.rows)),
                float(rollout.truncated_tokens),
            ],
            device=prefix_lens.device,
        )
        ratio_sum, prefix_tokens, completion_tokens, no_demo, truncated = self.accelerator.reduce(
            local, "sum"
        ).tolist()
        num_hybrid = int(is_hybrid.sum())
        rewards = rollout.rewards
        metrics["prefix/ratio_mean"].append(ratio_sum / num_hybrid if num_hybrid else float("nan"))
        metrics["prefix/token_fraction"].append(prefix_tokens / max(completion_tokens, 1.0))
        metrics["prefix/demo_tokens"].append(prefix_tokens)  # summed over a run: the demo tokens it put in rows
        metrics["prefix/hybrid_rows"].append(float(num_hybrid))
        metrics["prefix/no_demo_rows"].append(no_demo)
        metrics["prefix/truncated_tokens"].append(truncated)
        metrics["prefix/entropy_scope_fallback"].append(float(self.args.entropy_scope_fallback))
        metrics["train/skipped_nonfinite_steps"].append(float(self._guard.skipped))
        # nanmean: unscored rows (NaN) have no reward to average
        metrics["reward/hybrid"].append(rewards[is_hybrid].nanmean().item() if num_hybrid else float("nan"))
        if num_hybrid < len(is_hybrid):  # a guided group (every row hybrid) has no on-policy row to report
            metrics["reward/on_policy"].append(rewards[~is_hybrid].nanmean().item())
            metrics["advantage/on_policy_mean"].append(cont_adv[~is_hybrid].mean().item())
            metrics["advantage/on_policy_abs_mean"].append(cont_adv[~is_hybrid].abs().mean().item())
        if num_hybrid:
            metrics["advantage/hybrid_continuation_mean"].append(cont_adv[is_hybrid].mean().item())
            metrics["advantage/hybrid_prefix_mean"].append(prefix_adv[is_hybrid].mean().item())
        self._mark_logged_prefixes(rollout, prefix_lens)
