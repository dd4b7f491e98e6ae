"""`PrefixRFTTrainer`: TRL's GRPOTrainer with hybrid rollouts that continue a demonstration prefix.

Unlike stock Dr. GRPO: (1) `num_hybrid` rollouts per group start from the first L tokens of a demo inside the assistant
turn, L = floor(l * |demo|) with l drawn from a decaying window (spec §3.3-3.4); (2) the completion of a hybrid is
prefix + continuation, so the reward sees the whole solution and the prefix tokens are trained too; (3) prefix tokens
get their own advantage (spec §3.7) and only the highest-entropy share keeps it (spec §3.10). Everything else
(sampling, rewards, PPO clip, Dr. GRPO aggregation, accelerate/DeepSpeed/FSDP, vLLM, checkpoints) is TRL's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import textwrap
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler, get_config_model_id

from prefix_rft.core import (
    aggregate_token_loss,
    build_prefix_mask,
    fit_prefix_to_prompt,
    hybrid_advantages,
    is_hybrid_row,
    masked_mean,
    per_token_advantages,
    ppo_clip_token_loss,
    prefix_length,
    reward_std_divisor,
    rollout_index,
    row_rng,
    select_prefix_tokens,
    sequence_level_old_logp,
)
from prefix_rft.data import row_demos, validate_rows
from prefix_rft.data.validation import PromptBudgets, ValidationReport
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.guards import NonFiniteStepGuard
from prefix_rft.trl.rollouts import BudgetedClient, BudgetedLLM, Rollout, RowPlan
from prefix_rft.trl.run_dir import check_writable, claim_output_dir

logger = logging.getLogger(__name__)
STAGING_DIR = ".staging"  # checkpoints are written here, then renamed into place
PREFIX_MARK = " ⟦/prefix⟧ "  # shown in completions tables where a hybrid's demo prefix ends
# Prompt tokens allowed when the model states no context length: a 1 MB prompt would otherwise ask for ~1 TB.
DEFAULT_PROMPT_TOKEN_LIMIT = 32_768
# Trainer arguments that replace or bypass the rollouts that start hybrid rows from their demo prefixes.
REFUSED_TRAINER_ARGUMENTS = {
    "tools": "TRL's tool loop regenerates a subset of rows without their demo prefixes",
    "environment_factory": "its tool loop regenerates a subset of rows without their demo prefixes",
    "rollout_func": "it replaces the generation that starts hybrid rows from their demo prefixes",
}


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler with the permutation of epoch e drawn from seed + e.

    Stock RepeatSampler draws each epoch's permutation from one generator that runs on across epochs, so a run resumed
    after the first epoch restarts it and replays epoch 0's order. Transformers calls `set_epoch` before every epoch,
    including the one a resumed run starts in; epoch 0 gets exactly the stock order.
    """

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed + epoch)


class PrefixRFTTrainer(GRPOTrainer):
    """GRPOTrainer for Prefix-RFT. Takes the same arguments; `args` must be a `PrefixRFTConfig`.

    The dataset needs a `prompt` column (text or chat messages) and `demos` (list of strings) or `demo` (a string);
    rows without demos train on-policy only. Other columns (e.g. `answer`) reach the reward functions.
    """

    # Model cards name the method and cite its paper (TRL's create_model_card reads these).
    _tag_names = ["trl", "prefix-rft"]
    _name = "Prefix-RFT"
    _paper = {
        "title": "Blending Supervised and Reinforcement Fine-Tuning with Prefix Sampling",
        "id": "2507.01679",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{huang2025blending,
                title        = {{Blending Supervised and Reinforcement Fine-Tuning with Prefix Sampling}},
                author       = {Zeyu Huang and Tianhao Cheng and Zihan Qiu and Zili Wang and Yinghui Xu and
                                Edoardo M. Ponti and Ivan Titov},
                year         = 2025,
                eprint       = {arXiv:2507.01679},
            }"""),
    }
    _tokens_per_micro_batch: torch.Tensor | None = None  # DAPO's divisor for the micro-batch in flight

    def __init__(self, model, reward_funcs=None, args: PrefixRFTConfig | None = None, *rest: Any, **kwargs: Any):
        for name, reason in REFUSED_TRAINER_ARGUMENTS.items():
            if kwargs.get(name) is not None:
                raise ValueError(f"PrefixRFTTrainer does not support `{name}`: {reason}")
        if args is None:  # as GRPOTrainer builds a default GRPOConfig
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = PrefixRFTConfig(f"{model_name.split('/')[-1]}-Prefix-RFT")
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        if not isinstance(self.args, PrefixRFTConfig):
            raise TypeError(f"PrefixRFTTrainer needs args of type PrefixRFTConfig, got {type(self.args).__name__}")
        self._prefix_sampler = self.args.prefix_sampler()
        self._demo_ids_cache: dict[str, list[int]] = {}
        self._rollout: Rollout | None = None  # the generation batch in flight; None outside it
        self.validation_report = self._validate_train_dataset()
        self._guard = NonFiniteStepGuard(self.args.max_consecutive_nonfinite_steps)
        self.add_callback(self._guard)
        self._install_budgeted_vllm()

    def _install_budgeted_vllm(self) -> None:
        """Give every vLLM request its own prompt and token budget (trl/rollouts.py says why and how)."""
        if not self.use_vllm:
            return
        generation = self.vllm_generation
        if generation.mode == "colocate":
            generation.llm = BudgetedLLM(generation.llm)
        elif self.accelerator.is_main_process:
            generation.vllm_client = BudgetedClient(generation.vllm_client)

    def _validate_train_dataset(self):
        """Refuse bad rows before any compute (errors name the row and field); None if skipped."""
        dataset = self.train_dataset
        if not self.args.validate_dataset or dataset is None or not hasattr(dataset, "__len__"):
            return None
        return self._validate_rows(dataset)

    def _validate_rows(self, rows) -> ValidationReport:
        """The checks `_validate_train_dataset` runs, on any sequence of rows."""
        return validate_rows(
            rows,
            reward_funcs=self.reward_funcs,
            prompt_budgets=self._prompt_budgets(),
            demo_length=lambda demo: len(self._tokenizer(demo, add_special_tokens=False)["input_ids"]),
            max_completion_length=self.max_completion_length,
            truncate_long_demos=self.args.prefix_truncate_long_demos,
        )

    def _prompt_budgets(self) -> PromptBudgets:
        """No prompt may outgrow the model's context less the completion budget, nor `max_prompt_length` (which
        `fit_prefix_to_prompt` enforces at run time); with `max_prompt_length=None` the context alone bounds it."""
        context = self._context_length()
        if context is None:
            limit, source = DEFAULT_PROMPT_TOKEN_LIMIT, "the limit for a model whose config states no context length"
        else:
            limit = context - self.max_completion_length
            source = (
                f"the model's context of {context} positions less max_completion_length={self.max_completion_length}"
            )
            if limit < 1:
                raise ValueError(
                    f"max_completion_length={self.max_completion_length} leaves no room for a prompt in the model's "
                    f"context of {context} positions"
                )
        max_prompt_length = self.args.max_prompt_length
        if max_prompt_length is not None and max_prompt_length < limit:
            limit, source = max_prompt_length, f"max_prompt_length={max_prompt_length}"
        return PromptBudgets(self._prompt_length, limit, source, max_prompt_length, self.args.prefix_min_len)

    def _context_length(self) -> int | None:
        """Positions the model can attend over: the smaller of what its config and its tokenizer state."""
        config = getattr(self.model, "config", None)
        stated = [getattr(config, "max_position_embeddings", None), getattr(self._tokenizer, "model_max_length", None)]
        # Tokenizers without a stated limit report a huge placeholder (int(1e30)).
        known = [n for n in stated if isinstance(n, int) and 0 < n < 10**9]
        return min(known) if known else None

    def _prompt_length(self, prompt: Any) -> int:
        if isinstance(prompt, list):
            return len(
                self.processing_class.apply_chat_template(
                    prompt, add_generation_prompt=True, tokenize=True, return_dict=True, **self.chat_template_kwargs
                )["input_ids"]
            )
        return len(self._tokenizer(prompt)["input_ids"])

    # ---------------------------------------------------------------- rollouts
    def _demo_ids(self, demo: str) -> list[int]:
        # Demos are tokenized without special tokens (fidelity row 12: the reference's BOS-inside-prefix quirk).
        ids = self._demo_ids_cache.get(demo)
        if ids is None:
            # A demo longer than the completion budget could leave no room to continue; validation refuses it
            # unless prefix_truncate_long_demos is set, in which case it is cut here (and counted at validation).
            ids = self._tokenizer(demo, add_special_tokens=False)["input_ids"][: self.max_completion_length]
            self._demo_ids_cache[demo] = ids
        return ids

    def _schedule_step(self) -> int:
        """Where the prefix-ratio schedule is read for the batch generated now (`prefix_schedule_unit`)."""
        if self.args.prefix_schedule_unit == "optimizer_step":
            return self.state.global_step
        accumulation = self.args.gradient_accumulation_steps
        # TRL's micro-batch counter restarts at 0 on resume, which is always at an optimizer-step boundary.
        return rollout_index(
            self.state.global_step, self._step % accumulation, accumulation, self.args.micro_steps_per_rollout()
        )

    def _plan_rows(self, inputs: list[dict[str, Any]]) -> Rollout:
        """Choose hybrid rows and draw (demo, prefix ratio) for each, identically on every rank."""
        args, group_size = self.args, self.num_generations
        step, schedule_step = self.state.global_step, self._schedule_step()
        offset = self.accelerator.process_index * len(inputs)
        rows = []
        for i, example in enumerate(inputs):
            global_row = offset + i
            if not is_hybrid_row(global_row, group_size, args.num_hybrid):
                rows.append(RowPlan())
                continue
            demos = row_demos(example)
            if not demos:
                rows.append(RowPlan(no_demo=True))
                continue
            # Draws are keyed by the optimizer step, so a resumed run repeats them whatever the schedule unit.
            rng = row_rng(args.prefix_seed, step, global_row // group_size, global_row % group_size)
            ratio = self._prefix_sampler.sample(schedule_step, rng)
            demo_ids = self._demo_ids(demos[int(rng.integers(len(demos)))])
            rows.append(replace(self._row_plan(demo_ids, ratio), hybrid=True))
        return Rollout(rows=rows, prompts=[x["prompt"] for x in inputs], schedule_step=schedule_step)

    def _row_plan(self, demo_ids: list[int], ratio: float) -> RowPlan:
        """Prefix-RFT reveals floor(ratio * len) demo tokens; baselines that train on whole demos override this."""
        n = prefix_length(ratio, len(demo_ids), self.args.prefix_min_len)
        return RowPlan(demo_ids=demo_ids[:n], demo_len=len(demo_ids), sampled_ratio=ratio)

    def _prefix_token_ids(self, prompt: Any, prompt_ids: list[int], demo_ids: list[int]) -> list[int]:
        """Token ids that follow `prompt_ids` when the demo prefix starts the assistant turn.

        Chat prompts go through the chat template with `continue_final_message=True` (as the reference does), so the
        model continues inside its own assistant turn; plain-text prompts get the demo tokens appended.
        """
        if not demo_ids or not isinstance(prompt, list):
            return list(demo_ids)
        text = self._tokenizer.decode(demo_ids)
        rendered = self.processing_class.apply_chat_template(
            [*prompt, {"role": "assistant", "content": text}],
            continue_final_message=True,
            tokenize=True,
            return_dict=True,
            **self.chat_template_kwargs,
        )["input_ids"]
        if list(rendered[: len(prompt_ids)]) != list(prompt_ids):
            raise ValueError(
                "the chat template renders an assistant message differently from its generation prompt, so a demo "
                "prefix cannot continue the prompt; check the template's add_generation_prompt/assistant rendering"
            )
        return list(rendered[len(prompt_ids) :])

    def _fit_prefixes(self, rollout: Rollout, prompt_ids: list[list[int]]) -> list[list[int]]:
        """Per row, the prefix tokens that follow the prompt, cut to the prompt budget (cuts counted)."""
        prefix_ids = []
        for prompt, ids, row in zip(rollout.prompts, prompt_ids, rollout.rows, strict=True):
            prefix = self._prefix_token_ids(prompt, ids, row.demo_ids)
            kept, cut = fit_prefix_to_prompt(
                len(ids), len(prefix), self.args.max_prompt_length, self.args.prefix_min_len
            )
            rollout.truncated_tokens += cut
            # A full-demo row's completion is the demo and its EOS, all of it demo tokens (prefix_mask).
            prefix_ids.append(prefix[:kept] + ([self._tokenizer.eos_token_id] if row.full_demo else []))
        return prefix_ids

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        rollout = self._rollout
        if rollout is None:  # evaluation: stock generation
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images=has_tool_images
            )
        if len(prompt_ids) != len(rollout.rows):
            raise NotImplementedError("a generation call on a subset of the batch (e.g. TRL's tool loop)")
        prefix_ids = rollout.prefix_ids = self._fit_prefixes(rollout, prompt_ids)
        budget = self.max_completion_length
        if self.use_vllm:
            completion_ids, logprobs = self._generate_vllm(prompt_ids, prefix_ids, images, multimodal_fields)
        else:
            completion_ids, logprobs = self._generate_transformers(prompt_ids, prefix_ids, images, multimodal_fields)
        completion_ids = [(p + list(c))[:budget] for p, c in zip(prefix_ids, completion_ids, strict=True)]
        if logprobs is not None:
            # Demo tokens were not sampled: NaN makes TRL's importance-sampling correction a ratio of 1 for them.
            logprobs = [([math.nan] * len(p) + list(lp))[:budget] for p, lp in zip(prefix_ids, logprobs, strict=True)]
        rollout.completion_lens = [len(c) for c in completion_ids]
        return completion_ids, logprobs

    def _row_budgets(self, prefix_ids: list[list[int]]) -> list[int]:
        """New tokens each row may sample: the completion budget left after its prefix; 1 for a full-demo row, whose
        sample is discarded (every rank must send the same number of requests)."""
        rows = self._rollout.rows
        return [
            1 if row.full_demo else max(1, self.max_completion_length - len(p))
            for row, p in zip(rows, prefix_ids, strict=True)
        ]

    def _generate_vllm(self, prompt_ids, prefix_ids, images, multimodal_fields):
        """One vLLM call with every row as its own request (prompt + prefix) and its own `max_tokens`."""
        budgets = self._row_budgets(prefix_ids)
        generation = self.vllm_generation
        if generation.mode == "server":
            all_budgets = gather_object(budgets)  # the main process sends every rank's rows
            if self.accelerator.is_main_process:
                generation.vllm_client.budgets = all_budgets
        else:
            if generation.tensor_parallel_size > 1:  # TRL gathers the prompts of the tensor-parallel group
                gathered = [None] * generation.tensor_parallel_size
                torch.distributed.all_gather_object(gathered, budgets, group=generation.tp_group)
                budgets = [b for part in gathered for b in part]
            generation.llm.budgets = budgets
        gen_prompts = [list(ids) + p for ids, p in zip(prompt_ids, prefix_ids, strict=True)]
        completion_ids, logprobs = super()._generate_single_turn(gen_prompts, images, multimodal_fields, 1)
        keep = [not row.full_demo for row in self._rollout.rows]
        completion_ids = [list(c) if k else [] for c, k in zip(completion_ids, keep, strict=True)]
        if logprobs is not None:
            logprobs = [list(lp) if k else [] for lp, k in zip(logprobs, keep, strict=True)]
        return completion_ids, logprobs

    def _generate_transformers(self, prompt_ids, prefix_ids, images, multimodal_fields):
        """`generate` calls over row groups, the same number of calls on every rank.

        Transformers left-pads a batch to its longest prompt + prefix and every row pays for that width, so rows
        without and with a prefix go in separate calls. Under ZeRO-3 or FSDP each call gathers the parameters (a
        collective), so every rank makes the call for a group that any rank has, with a one-token stand-in row when it
        has none of its own.
        """
        rows = self._rollout.rows
        generate = [i for i, row in enumerate(rows) if not row.full_demo]
        if self.use_transformers_continuous_batching or images is not None or multimodal_fields:
            groups = [generate]
        else:
            groups = [[i for i in generate if not prefix_ids[i]], [i for i in generate if prefix_ids[i]]]
        present = self._groups_present_on_any_rank(groups)
        completion_ids: list[list[int]] = [[] for _ in rows]  # full-demo rows generate nothing
        logprobs, has_logprobs = [[] for _ in rows], False
        for group, needed in zip(groups, present, strict=True):
            if not needed:
                continue
            if not group:
                self._stand_in_generate(prompt_ids, images, multimodal_fields)
                continue
            gen_prompts = [list(prompt_ids[i]) + prefix_ids[i] for i in group]
            # No row of this call can keep more new tokens than the budget left after the call's shortest prefix.
            limit = max(1, self.max_completion_length - min(len(prefix_ids[i]) for i in group))
            with self._max_new_tokens(limit):
                generated, gen_logprobs = super()._generate_single_turn(gen_prompts, images, multimodal_fields, 1)
            has_logprobs = gen_logprobs is not None
            for j, i in enumerate(group):
                completion_ids[i] = generated[j]
                if has_logprobs:
                    logprobs[i] = gen_logprobs[j]
        return completion_ids, (logprobs if has_logprobs else None)

    def _groups_present_on_any_rank(self, groups: list[list[int]]) -> list[bool]:
        """For each row group, whether any rank has rows in it (one small all-gather when there are several ranks)."""
        local = torch.tensor([len(g) > 0 for g in groups], device=self.accelerator.device)
        if self.accelerator.num_processes == 1:
            return local.tolist()
        return self.accelerator.gather(local.unsqueeze(0)).any(dim=0).tolist()

    def _stand_in_generate(self, prompt_ids, images, multimodal_fields) -> None:
        """Take part in a generate call this rank has no rows for: one row, one new token, result discarded."""
        with self._max_new_tokens(1):
            super()._generate_single_turn([list(prompt_ids[0])], images, multimodal_fields, 1)
        self._metrics["train"]["prefix/stand_in_generate_calls"].append(1.0)

    @contextmanager
    def _max_new_tokens(self, limit: int):
        """Temporarily cap transformers generation at `limit` new tokens."""
        config = getattr(self, "generation_config", None)
        if config is None:
            yield
            return
        saved, config.max_new_tokens = config.max_new_tokens, min(limit, config.max_new_tokens)
        try:
            yield
        finally:
            config.max_new_tokens = saved

    # ---------------------------------------------------------------- rewards and advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        try:
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        except Exception as error:
            raise self._locate_reward_error(inputs, prompts, completions, completion_ids_list) from error
        unscored = self._check_rewards(rewards_per_func)
        if self._rollout is not None:
            weights = self.reward_weights.to(rewards_per_func.device)
            rewards = (rewards_per_func * weights).nansum(dim=1)
            # TRL's contract: a row no function scored is unscorable (NaN), not a reward of 0; its advantages are 0
            # and it is left out of its group's baseline (core.advantages).
            self._rollout.rewards = torch.where(unscored, torch.nan, rewards)
        return rewards_per_func

    def _check_rewards(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the rows of the gathered batch that no reward function scored (every one returned None).

        Counts them, and per function the rows it left unscored while another function scored them. Refuses an
        infinite reward, and such a partly scored row unless `allow_partial_rewards`: TRL sums the functions that did
        score it, so the missing one would be dropped without a trace.
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
        if bool(partial.any()) and not self.args.allow_partial_rewards:
            row, j = partial.nonzero()[0].tolist()
            scored_by = [n for n, gone in zip(names, missing[row].tolist(), strict=True) if not gone]
            raise ValueError(
                f"reward function {names[j]!r} returned None for row {row} (of the gathered batch), which {scored_by} "
                f"scored: the row's reward would leave {names[j]!r} out. Return a number for every row, or set "
                "allow_partial_rewards=True to sum the functions that score it"
            )
        return unscored

    def _locate_reward_error(self, inputs, prompts, completions, completion_ids_list) -> Exception:
        """Re-run each reward function row by row to name the function and the row that fail."""
        for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True):
            if not callable(func) or isinstance(func, torch.nn.Module):
                continue
            for i, example in enumerate(inputs):
                columns = {k: [v] for k, v in example.items() if k not in ("prompt", "completion", "completion_ids")}
                try:
                    func(
                        prompts=[prompts[i]],
                        completions=[completions[i]],
                        completion_ids=[completion_ids_list[i]],
                        trainer_state=self.state,
                        log_extra=lambda *a: None,
                        log_metric=lambda *a: None,
                        **columns,
                    )
                except Exception as error:  # noqa: BLE001 - re-raised with its location
                    return RuntimeError(f"reward function {name!r} failed on row {i} of this rank's batch: {error!r}")
        return RuntimeError("a reward function failed on the whole batch but on no single row")

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._rollout = self._plan_rows(inputs)
        try:
            output = super()._generate_and_score_completions(inputs)
            self._add_prefix_fields(output, self._rollout)
            self._after_rollout(inputs, self._rollout)
        finally:
            self._rollout = None
        return output

    def _after_rollout(self, inputs: list[dict[str, Any]], rollout: Rollout) -> None:
        """Called once per scored training batch, before its record is dropped (ReLIFT collects failures here)."""

    def _add_prefix_fields(self, output: dict[str, Any], rollout: Rollout) -> None:
        """Add `prefix_mask` and per-token advantages (B, T) to a generation batch, and log prefix metrics."""
        device = output["completion_ids"].device
        completion_lens = torch.tensor(rollout.completion_lens, device=device)  # (B,) before any masking
        lens = torch.tensor([len(p) for p in rollout.prefix_ids], device=device)
        prefix_lens = torch.minimum(lens, completion_lens)  # (B,) the completion budget may cut a full demo's EOS
        output["prefix_mask"] = build_prefix_mask(prefix_lens, output["completion_ids"].size(1))  # (B, T)

        # The planned role decides the baseline, never the prefix length or the completion mask.
        local_hybrid = torch.tensor(rollout.hybrid, dtype=torch.bool, device=device)
        is_hybrid = self.accelerator.gather(local_hybrid)  # (N,) over all ranks, process-major like the rewards
        cont_adv, prefix_adv = self._hybrid_advantages(rollout.rewards, is_hybrid)
        rank, n = self.accelerator.process_index, len(rollout.rows)
        local = slice(rank * n, (rank + 1) * n)
        output["advantages"] = per_token_advantages(cont_adv[local], prefix_adv[local], output["prefix_mask"])
        self._replace_logged_advantages(cont_adv)
        self._log_prefix_metrics(rollout, prefix_lens, completion_lens, is_hybrid, cont_adv, prefix_adv)

    def _hybrid_advantages(self, rewards: torch.Tensor, is_hybrid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) continuation and (N,) prefix advantages of the gathered batch (spec §3.7), each divided by the reward
        std when `scale_rewards` is 'group' or 'batch' (one divisor for every advantage of a group)."""
        group_size = self.num_generations
        cont_adv, prefix_adv = hybrid_advantages(rewards, is_hybrid, group_size, self.args.prefix_advantage)
        divisor = reward_std_divisor(rewards, group_size, self.scale_rewards)  # (N,)
        return cont_adv / divisor, prefix_adv / divisor

    def _replace_logged_advantages(self, cont_adv: torch.Tensor) -> None:
        """The completions table shows the advantage each row trained with (continuation tokens for hybrids)."""
        logged = self._logs["advantages"]
        for _ in range(min(len(cont_adv), len(logged))):
            logged.pop()
        logged.extend(cont_adv.tolist())

    def _log_prefix_metrics(self, rollout, prefix_lens, completion_lens, is_hybrid, cont_adv, prefix_adv) -> None:
        metrics = self._metrics["train"]
        low, high = self._prefix_sampler.bounds(rollout.schedule_step)
        metrics["prefix/ratio_floor"].append(low)
        metrics["prefix/ratio_ceiling"].append(high)
        metrics["prefix/schedule_step"].append(float(rollout.schedule_step))
        demo_lens = [max(r.demo_len, 1) for r in rollout.rows]
        ratios = [n / d if h else 0.0 for n, d, h in zip(prefix_lens.tolist(), demo_lens, rollout.hybrid, strict=True)]
        local = torch.tensor(
            [
                sum(ratios),
                float(prefix_lens.sum()),
                float(completion_lens.sum()),
                float(sum(r.no_demo for r in rollout.rows)),
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
        metrics["prefix/hybrid_rows"].append(float(num_hybrid))
        metrics["prefix/no_demo_rows"].append(no_demo)
        metrics["prefix/truncated_tokens"].append(truncated)
        metrics["train/skipped_nonfinite_steps"].append(float(self._guard.skipped))
        # nanmean: unscored rows (NaN) have no reward to average
        metrics["reward/hybrid"].append(rewards[is_hybrid].nanmean().item() if num_hybrid else float("nan"))
        metrics["reward/on_policy"].append(rewards[~is_hybrid].nanmean().item())
        metrics["advantage/on_policy_mean"].append(cont_adv[~is_hybrid].mean().item())
        metrics["advantage/on_policy_abs_mean"].append(cont_adv[~is_hybrid].abs().mean().item())
        if num_hybrid:
            metrics["advantage/hybrid_continuation_mean"].append(cont_adv[is_hybrid].mean().item())
            metrics["advantage/hybrid_prefix_mean"].append(prefix_adv[is_hybrid].mean().item())
        self._mark_logged_prefixes(rollout, prefix_lens)

    def _mark_logged_prefixes(self, rollout: Rollout, prefix_lens: torch.Tensor) -> None:
        """Completions tables: a `prefix_len` column, and `PREFIX_MARK` where the demo prefix ends in the text."""
        self._logs["extra"]["prefix_len"].extend(gather_object(prefix_lens.tolist()))
        prefix_texts = [
            self._tokenizer.decode(ids[:n], skip_special_tokens=True) if n else None
            for ids, n in zip(rollout.prefix_ids, prefix_lens.tolist(), strict=True)
        ]
        prefix_texts = gather_object(prefix_texts)
        logged = self._logs["completion"]
        start = len(logged) - len(prefix_texts)
        for i, prefix in enumerate(prefix_texts):
            if prefix is None or start + i < 0:
                continue
            completion = logged[start + i]
            if isinstance(completion, list):  # chat: [{"role": "assistant", "content": ...}]
                content = completion[0]["content"]
                if content.startswith(prefix):
                    logged[start + i] = [{**completion[0], "content": prefix + PREFIX_MARK + content[len(prefix) :]}]
            elif completion.startswith(prefix):
                logged[start + i] = prefix + PREFIX_MARK + completion[len(prefix) :]

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        sampler.__class__ = EpochSeededRepeatSampler  # same state, plus set_epoch
        return sampler

    # ---------------------------------------------------------------- checkpoints
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs: Any):
        """Trainer.train, after making sure `output_dir` can be written and holds no other run (run_dir.py)."""
        if self.args.should_save:
            check_writable(self.args.output_dir)
            claim_output_dir(
                self.args.output_dir,
                resuming=bool(resume_from_checkpoint),
                overwrite=self.args.overwrite_output_dir,
                settings=json.loads(self.args.to_json_string()),
                leftovers=(STAGING_DIR,),
            )
        self.accelerator.wait_for_everyone()
        return super().train(resume_from_checkpoint, trial, **kwargs)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        """Trainer._run_epoch, unless the run has already reached `max_steps`.

        A run resumed from its final checkpoint (killed after writing it) restarts the epoch that checkpoint fell in,
        and transformers would train that epoch's next step before checking `max_steps`: one step too many.
        """
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        base = super()._get_output_dir(trial)
        return os.path.join(base, STAGING_DIR) if getattr(self, "_staging", False) else base

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into a staging folder, then rename it into place.

        A kill while saving leaves at most a partial staging folder, never a partial `checkpoint-N`, so the previous
        checkpoint stays the latest loadable one (`get_last_checkpoint` only looks at `checkpoint-N`).
        """
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
        if self.accelerator.is_main_process and os.path.exists(staged):
            shutil.rmtree(staged)  # left over from a run killed while saving
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state
        if self.accelerator.is_main_process:
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            # The parent's rotation ran inside the staging folder; apply save_total_limit where checkpoints live.
            rotate_checkpoints(run_dir, save_total_limit=self.args.save_total_limit, use_mtime=True)
        self.accelerator.wait_for_everyone()

    # ---------------------------------------------------------------- loss
    def _prefix_keep_mask(self, entropies: torch.Tensor, prefix_mask: torch.Tensor, inputs: dict) -> torch.Tensor:
        """(B, T) bool: tokens that keep their advantage after entropy selection of prefix tokens (fidelity 3-4)."""
        precomputed = inputs.get("prefix_keep")  # optimizer_step scope over several micro-batches (_prepare_inputs)
        if precomputed is not None:
            return precomputed
        args, pool, offset, generator = self.args, None, 0, None
        if args.prefix_entropy_scope != "local_micro_batch":  # this micro-batch on every rank
            pool, offset = self._gathered_pool(entropies[prefix_mask].float())
        if args.prefix_entropy_selection == "random":
            generator = torch.Generator().manual_seed(
                hash((args.prefix_seed, self._step, self.accelerator.process_index))
            )
        return select_prefix_tokens(
            entropies,
            prefix_mask,
            args.prefix_entropy_keep_fraction,
            args.prefix_entropy_selection,
            pool,
            pool_offset=offset,
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
        forward of the rows that have prefix tokens. The policy does not change until the step ends, so these are the
        entropies the loss would see.
        """
        masks = [inputs.get("prefix_mask", torch.zeros(1, 1, dtype=torch.bool)) for inputs in micro_batches]
        masks = [m & self._loss_mask(inputs).bool() for m, inputs in zip(masks, micro_batches, strict=True)]
        counts = [int(m.sum()) for m in masks]
        total = torch.tensor([sum(counts)], device=self.accelerator.device)
        if int(self.accelerator.reduce(total, "sum")) == 0:
            for inputs, m in zip(micro_batches, masks, strict=True):
                inputs["prefix_keep"] = torch.ones_like(m)
            return
        entropies = [self._prefix_entropies(inputs, m) for inputs, m in zip(micro_batches, masks, strict=True)]
        pool, offset = self._gathered_pool(torch.cat([e[m].float() for e, m in zip(entropies, masks, strict=True)]))
        args = self.args
        for inputs, entropy, m, count in zip(micro_batches, entropies, masks, counts, strict=True):
            inputs["prefix_keep"] = select_prefix_tokens(
                entropy,
                m,
                args.prefix_entropy_keep_fraction,
                args.prefix_entropy_selection,
                pool,
                pool_offset=offset,
            )
            offset += count

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
        # Prefix-RFT (App. A.2): zero the advantage of prefix tokens outside the top entropy share.
        keep = self._prefix_keep_mask(entropies.detach(), prefix_mask, inputs)
        advantages = advantages * keep
        old_logps = self._old_logps(logps, inputs, mask)
        token_loss, ratio = self._token_loss(logps, old_logps, advantages, prefix_mask)
        if self.use_vllm and self.vllm_importance_sampling_correction:
            token_loss = token_loss * inputs["importance_sampling_ratio"]
        mode = "train" if self.model.training else "eval"
        if self.beta != 0.0:
            token_loss = token_loss + self.beta * self._kl(logps, old_logps, inputs["ref_per_token_logps"], mask, mode)
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        # `_aggregate` keeps the signature the baselines override, so DAPO's divisor reaches it on the trainer.
        self._tokens_per_micro_batch = self._dapo_tokens(inputs, mode)
        policy_loss = self._aggregate(token_loss, logps, mask, prefix_mask)
        loss = policy_loss / accumulation - self._entropy_bonus(entropies, mask, prefix_mask, mode) / accumulation
        if self.aux_loss_enabled:  # MoE load balancing, as stock GRPOTrainer adds it
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
        self._log_loss_metrics(mode, mask, prefix_mask, keep, entropies, ratio, advantages)
        self._log_loss_terms(mode, policy_loss, aux_loss)
        return loss

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

    def _token_loss(self, logps, old_logps, advantages, prefix_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) per-token loss and PPO ratio: the same clipped objective for prefix and continuation tokens."""
        args = self.args
        return ppo_clip_token_loss(
            logps, old_logps, advantages, self.epsilon_low, self.epsilon_high, args.prefix_dual_clip, args.delta
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

    def _aggregate(self, token_loss, logps, mask, prefix_mask) -> torch.Tensor:
        """Scalar loss of a micro-batch before gradient-accumulation scaling, aggregated as `loss_type` says."""
        return aggregate_token_loss(
            token_loss, mask, self.loss_type, self.max_completion_length, self._tokens_per_micro_batch
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

    def _log_loss_metrics(self, mode, mask, prefix_mask, keep, entropies, ratio, advantages) -> None:
        mask = mask.bool()
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
