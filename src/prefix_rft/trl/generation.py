"""Rollouts of `PrefixRFTTrainer`: which rows are hybrid, their demo prefixes, and generation with per-row budgets.

Every rank plans every row the same way without communication (`core.is_hybrid_row`, `core.row_rng`), and makes
the same generate calls (docs/scale.md), so ZeRO-3 / FSDP collectives stay matched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from transformers import LogitsProcessor, LogitsProcessorList

from prefix_rft.core import (
    CallShapes,
    demo_part,
    fit_prefixes,
    force_prefix_scores,
    is_hybrid_row,
    prefer_shared_call,
    prefix_length,
    rollout_index,
    row_rng,
)
from prefix_rft.data import row_demos
from prefix_rft.trl.demo_cache import DemoIdsCache
from prefix_rft.trl.rollouts import BudgetedClient, BudgetedLLM, Rollout, RowPlan


class ForcedPrefix(LogitsProcessor):
    """Forces each row's demo prefix (`core.force_prefix_scores`): forced [rows, longest prefix], -1 past a row's
    prefix. The decoding step is the length of `input_ids` past the padded prompt, seen at the first call."""

    def __init__(self, forced: torch.Tensor) -> None:
        self.forced, self.prompt_width = forced, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_width is None:
            self.prompt_width = input_ids.size(1)
        return force_prefix_scores(scores, self.forced, input_ids.size(1) - self.prompt_width)


def plan_rows(
    inputs: list[dict[str, Any]],
    *,
    step: int,
    schedule_step: int,
    rank_offset: int,
    group_size: int,
    num_hybrid: int,
    seed: int,
    draw_ratio: Callable[[int, np.random.Generator], float],
    demo_ids: Callable[[str], list[int]],
    choose_demo: Callable[[list[str], int, np.random.Generator], str],
    row_plan: Callable[[list[int], float], RowPlan],
    rescues: Callable[[dict[str, Any]], bool],
    question_ratio: Callable[[dict[str, Any], float], tuple[float, bool]],
) -> Rollout:
    """Choose this rank's hybrid rows and draw (demo, prefix ratio) for each, identically on every rank.

    Args:
        inputs: this rank's rows; row i is row `rank_offset + i` of the batch over all ranks.
        step: the optimizer step, which keys the draws (`core.row_rng`), so a resumed run repeats them.
        schedule_step: where the prefix-ratio schedule is read (`draw_ratio(schedule_step, rng)`).
        demo_ids: a demo's token ids; `row_plan(demo_ids, ratio)` the hybrid row it makes.
        choose_demo: a slot's demo among its question's, given its group position and the row's generator.
        rescues: whether a question's hybrid slots carry a prefix (`prefix_rescue_max_success`).
        question_ratio: (ratio, adapted) of a question, given the drawn ratio (`prefix_success_target`).
    """
    rows = []
    for i, example in enumerate(inputs):
        global_row = rank_offset + i
        if not is_hybrid_row(global_row, group_size, num_hybrid):
            rows.append(RowPlan())
            continue
        demos = row_demos(example)
        if not demos:
            rows.append(RowPlan(role="no_demo"))
            continue
        if not rescues(example):  # solved last time, so no prefix is spent
            rows.append(RowPlan(role="solved"))
            continue
        # The ratio is drawn even when the question's adapted ratio replaces it, so the demo choice stays the same.
        rng = row_rng(seed, step, global_row // group_size, global_row % group_size)
        ratio, adapted = question_ratio(example, draw_ratio(schedule_step, rng))
        ids = demo_ids(choose_demo(demos, global_row % group_size, rng))  # none: nothing to reveal, runs unguided
        rows.append(replace(row_plan(ids, ratio), adapted=adapted) if ids else RowPlan(role="no_demo"))
    return Rollout(rows=rows, prompts=[x["prompt"] for x in inputs], schedule_step=schedule_step)


class PrefixGenerationMixin:
    """Planning and generation hooks of `PrefixRFTTrainer` (a mixin over TRL's `GRPOTrainer`)."""

    def _install_budgeted_vllm(self) -> None:
        """Give every vLLM request its own prompt and token budget (trl/rollouts.py says why and how)."""
        if not self.use_vllm:
            return
        generation = self.vllm_generation
        if generation.mode == "colocate":
            generation.llm = BudgetedLLM(generation.llm)
        elif self.accelerator.is_main_process:
            generation.vllm_client = BudgetedClient(generation.vllm_client)

    def _new_demo_cache(self) -> DemoIdsCache:
        """A demo cache that holds two generation batches' demos at the longest (`max_completion_length` tokens)."""
        rows = self.args.per_device_train_batch_size * self.args.steps_per_generation
        return DemoIdsCache(2 * rows * self.max_completion_length)

    def _demo_ids(self, demo: str) -> list[int]:
        # Demos are tokenized without special tokens (docs/fidelity.md#demo-tokenization: the reference's
        # BOS-inside-prefix quirk).
        ids = self._demo_ids_cache.get(demo)
        if ids is None:
            # A demo longer than the completion budget could leave no room to continue; validation refuses it
            # unless prefix_truncate_long_demos is set, in which case it is cut here (and counted at validation).
            text = demo_part(demo, self.args.prefix_demo_part)  # "" (no ids) when it has no part to reveal
            ids = self._tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_completion_length]
            self._demo_ids_cache.put(demo, ids)
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
        """`plan_rows` with this trainer's step, rank, options and per-question hooks."""
        args = self.args
        return plan_rows(
            inputs,
            step=self.state.global_step,
            schedule_step=self._schedule_step(),
            rank_offset=self.accelerator.process_index * len(inputs),
            group_size=self.num_generations,
            num_hybrid=args.num_hybrid,
            seed=args.prefix_seed,
            draw_ratio=self._prefix_sampler.sample,
            demo_ids=self._demo_ids,
            choose_demo=self._choose_demo,
            row_plan=self._row_plan,
            rescues=self._rescues,
            question_ratio=self._question_ratio,
        )

    def _choose_demo(self, demos: list[str], position: int, rng: np.random.Generator) -> str:
        """A hybrid slot's demo: drawn uniformly from its question's (TRAPO picks by group `position`)."""
        return demos[int(rng.integers(len(demos)))]

    def _row_plan(self, demo_ids: list[int], ratio: float) -> RowPlan:
        """Prefix-RFT reveals floor(ratio * len) demo tokens; baselines that train on whole demos override this."""
        n = prefix_length(ratio, len(demo_ids), self.args.prefix_min_len)
        return RowPlan(role="hybrid", revealed_ids=demo_ids[:n], demo_len=len(demo_ids), ratio=ratio)

    def _prefix_token_ids(self, prompt: Any, prompt_ids: list[int], revealed_ids: list[int]) -> list[int]:
        """Token ids that follow `prompt_ids` when the demo prefix starts the assistant turn.

        Chat prompts go through the chat template with `continue_final_message=True` (as the reference does), so the
        model continues inside its own assistant turn; plain-text prompts get the demo tokens appended.
        """
        if not revealed_ids or not isinstance(prompt, list):
            return list(revealed_ids)
        text = self._tokenizer.decode(revealed_ids)
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

    def _fit_prefixes(self, rollout: Rollout, prompt_ids: list[list[int]]) -> tuple[list[list[int]], int]:
        """Per row, the prefix tokens that follow the prompt, fitted to the prompt budget (`core.fit_prefixes`), and
        the tokens cut over all rows (baselines/demo_rows.py overrides it to end a whole demo with EOS)."""
        prefixes = [
            # prefix_placement='prompt': the demo is already in `ids` as a hint (trl/placement.py), not a prefix.
            self._prefix_token_ids(prompt, ids, [] if self._hint_row(row) else row.revealed_ids)
            for prompt, ids, row in zip(rollout.prompts, prompt_ids, rollout.rows, strict=True)
        ]
        args = self.args
        return fit_prefixes(
            [len(ids) for ids in prompt_ids],
            prefixes,
            max_prompt_length=args.max_prompt_length,
            min_len=args.prefix_min_len,
        )

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        rollout = self._rollout
        if rollout is None:  # evaluation: stock generation
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images=has_tool_images
            )
        if len(prompt_ids) != len(rollout.rows):
            raise NotImplementedError("a generation call on a subset of the batch (e.g. TRL's tool loop)")
        prefix_ids, cut = self._fit_prefixes(rollout, prompt_ids)
        rollout.prefix_ids, rollout.truncated_tokens = prefix_ids, rollout.truncated_tokens + cut
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
        """New tokens each row may sample: the completion budget left after its prefix; 1 for a row that generates
        nothing (`RowPlan.generates`), whose sample is discarded (every rank must send the same number of requests)."""
        rows = self._rollout.rows
        return [
            max(1, self.max_completion_length - len(p)) if row.generates else 1
            for row, p in zip(rows, prefix_ids, strict=True)
        ]

    def _generate_vllm(self, prompt_ids, prefix_ids, images, multimodal_fields):
        """One vLLM call with every row as its own request (prompt + prefix) and its own `max_tokens`, which the
        wrappers of trl/rollouts.py cut to the engine's `max_model_len`."""
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
        keep = [row.generates for row in self._rollout.rows]
        # The one-token sample of a row that generates nothing is discarded, so it is asked for after the prompt alone:
        # prompt + its given completion + 1 could exceed the engine's max_model_len, which vLLM refuses.
        gen_prompts = [list(ids) + (p if k else []) for ids, p, k in zip(prompt_ids, prefix_ids, keep, strict=True)]
        completion_ids, logprobs = super()._generate_single_turn(gen_prompts, images, multimodal_fields, 1)
        completion_ids = [list(c) if k else [] for c, k in zip(completion_ids, keep, strict=True)]
        if logprobs is not None:
            logprobs = [list(lp) if k else [] for lp, k in zip(logprobs, keep, strict=True)]
        return completion_ids, logprobs

    def _generate_transformers(self, prompt_ids, prefix_ids, images, multimodal_fields):
        """`generate` calls over row groups, the same number of calls on every rank.

        Transformers left-pads a batch to its longest prompt and every row pays for that width. Demo prefixes
        therefore join the on-policy rows' call as tokens forced during the first decoding steps (no padding to
        prompt + prefix), unless the cost model (`core.prefer_shared_call`) finds a second call with the prefix in
        the prompt cheaper; hint rows (a demo in the prompt) and prefixes containing an EOS token go in a second
        call. Under ZeRO-3 or FSDP each call gathers the parameters (a collective), so every rank makes the call for
        a group that any rank has, with a one-token stand-in row when it has none of its own.
        """
        rows = self._rollout.rows
        generate = [i for i, row in enumerate(rows) if row.generates]
        if self.use_transformers_continuous_batching or images is not None or multimodal_fields:
            groups, forced = [generate], [False]  # prefixes travel in the prompt
            present = self._groups_present_on_any_rank(groups)
        else:
            groups, forced, present = self._call_groups(generate, prompt_ids, prefix_ids)
        completion_ids: list[list[int]] = [[] for _ in rows]  # rows that generate nothing keep []
        logprobs, has_logprobs = [[] for _ in rows], False
        calls = 0
        for group, force, needed in zip(groups, forced, present, strict=True):
            if not needed:
                continue
            calls += 1
            if not group:
                self._stand_in_generate(prompt_ids, images, multimodal_fields)
                continue
            if force and any(prefix_ids[i] for i in group):
                generated, gen_logprobs = self._generate_forced(
                    group, prompt_ids, prefix_ids, images, multimodal_fields
                )
            else:
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
        self._metrics["train"]["prefix/generate_calls"].append(float(calls))
        return completion_ids, (logprobs if has_logprobs else None)

    def _call_groups(self, generate: list[int], prompt_ids, prefix_ids) -> tuple[list, list[bool], list[bool]]:
        """Row groups of the generate calls, whether each forces its prefixes, and whether any rank needs each call.

        Plain rows have no prefix; prefix rows continue a demo prefix that can be forced (`_forceable`); the rest
        (hint rows, prefixes that cannot be forced) always take the prefix-in-prompt call. One small all-gather
        gives every rank the same shapes, hence the same choice.
        """
        rows, eos = self._rollout.rows, set(self.eos_token_ids)
        hint = [self._hint_row(row) for row in rows]
        plain = [i for i in generate if not prefix_ids[i] and not hint[i]]
        prefix = [i for i in generate if prefix_ids[i] and not hint[i] and self._forceable(prefix_ids[i], eos)]
        other = sorted(set(generate) - set(plain) - set(prefix))
        ranks = self._gather_ints([*self._call_shapes(plain, prefix, prompt_ids, prefix_ids), len(other)])
        shapes = [CallShapes(*r[:-1]) for r in ranks]  # each rank's shapes, then its count of other rows
        shared = prefer_shared_call(shapes, self.max_completion_length)
        has_plain, has_prefix = any(s.plain_rows for s in shapes), any(s.prefix_rows for s in shapes)
        has_other = any(r[-1] for r in ranks)
        if shared:
            return [plain + prefix, other], [True, False], [has_plain or has_prefix, has_other]
        return [plain, prefix + other], [False, False], [has_plain, has_prefix or has_other]

    def _forceable(self, prefix: list[int], eos: set[int]) -> bool:
        """Whether decoding can force `prefix`: an EOS token would end the row, and the prefix must fit the budget."""
        return len(prefix) <= self.max_completion_length and not eos.intersection(prefix)

    @staticmethod
    def _call_shapes(plain: list[int], prefix: list[int], prompt_ids, prefix_ids) -> CallShapes:
        """This rank's `CallShapes` of rows `plain` and `prefix`."""
        return CallShapes(
            plain_rows=len(plain),
            plain_width=max((len(prompt_ids[i]) for i in plain), default=0),
            prefix_rows=len(prefix),
            prefix_prompt_width=max((len(prompt_ids[i]) for i in prefix), default=0),
            prefix_total_width=max((len(prompt_ids[i]) + len(prefix_ids[i]) for i in prefix), default=0),
            min_prefix=min((len(prefix_ids[i]) for i in prefix), default=0),
        )

    def _gather_ints(self, values: list[int]) -> list[list[int]]:
        """`values` of every rank, in rank order (one small all-gather when there are several ranks)."""
        local = torch.tensor([values], dtype=torch.long, device=self.accelerator.device)
        if self.accelerator.num_processes == 1:
            return local.tolist()
        return self.accelerator.gather(local).tolist()

    def _generate_forced(self, group: list[int], prompt_ids, prefix_ids, images, multimodal_fields):
        """One call for `group` from the prompts alone, each row's prefix forced as its first tokens; returns what
        follows the prefixes. Prefix + continuation stay within `max_completion_length` new tokens."""
        prefixes = [prefix_ids[i] for i in group]
        forced = torch.full((len(group), max(1, *map(len, prefixes))), -1, dtype=torch.long)
        for j, p in enumerate(prefixes):
            forced[j, : len(p)] = torch.tensor(p, dtype=torch.long)
        gen_prompts = [list(prompt_ids[i]) for i in group]
        with self._forcing(ForcedPrefix(forced)):
            generated, logprobs = super()._generate_single_turn(gen_prompts, images, multimodal_fields, 1)
        for j, p in enumerate(prefixes):
            if list(generated[j][: len(p)]) != p:  # a generation path that ignored the logits processor
                raise RuntimeError(f"row {group[j]}: generation did not start with its demo prefix")
        generated = [list(g)[len(p) :] for g, p in zip(generated, prefixes, strict=True)]
        if logprobs is not None:
            logprobs = [list(lp)[len(p) :] for lp, p in zip(logprobs, prefixes, strict=True)]
        return generated, logprobs

    @contextmanager
    def _forcing(self, processor: LogitsProcessor):
        """Pass `processor` to every `generate` call of the model being trained while inside."""
        model = self.accelerator.unwrap_model(self.model_wrapped)
        model.generate = partial(model.generate, logits_processor=LogitsProcessorList([processor]))
        try:
            yield
        finally:
            del model.generate  # the instance attribute: the class's generate shows through again

    def _groups_present_on_any_rank(self, groups: list[list[int]]) -> list[bool]:
        """For each row group, whether any rank has rows in it."""
        ranks = self._gather_ints([len(g) for g in groups])
        return [any(r[k] for r in ranks) for k in range(len(groups))]

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
