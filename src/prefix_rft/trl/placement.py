"""Where a hybrid row's revealed demo goes (`prefix_placement`): the completion (Prefix-RFT) or the prompt (QuestA).

'response' (default): the demo prefix starts the assistant turn and is part of the completion (trl/generation.py).
'prompt': the revealed demo tokens are shown as a hint after the question, as QuestA builds its augmented prompts
(`problem + "\\n\\n## Hint." + partial solution`, foreverlasting1202/QuestA `AReaL/datasets/add_prefix.py`). The hint
is part of the row's prompt ids, so it is never trained and never in the completion: the model samples its whole
completion with the full `max_completion_length` budget, every completion token has its sampling log-prob (no NaN, so
TRL's importance-sampling correction applies to all of them), and the reward functions grade only what the model
wrote. The row keeps its planned hybrid role: its reward stays out of the on-policy baseline and its tokens get the
hybrid's continuation advantage (docs/fidelity.md#hint-placement).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefix_rft.core import fit_prefix_to_prompt
from prefix_rft.trl.rollouts import RowPlan

HINT_LABEL = "\n\n## Hint.\n"  # QuestA's label; the newline keeps the hint text apart from it


def with_hint(prompt: Any, hint: str) -> Any:
    """`prompt` with `hint` appended to its question: the last message of a chat (it must be the user's), or the text.

    >>> with_hint([{"role": "user", "content": "1+2="}], " h")
    [{'role': 'user', 'content': '1+2= h'}]
    """
    if not isinstance(prompt, list):
        return prompt + hint
    last = prompt[-1]
    if last.get("role") != "user":
        raise ValueError(
            f"prefix_placement='prompt' appends the hint to the question, so a chat prompt must end with a user "
            f"message; this one ends with role {last.get('role')!r}"
        )
    return [*prompt[:-1], {**last, "content": last["content"] + hint}]


def hint_prompts(
    prompts: list[Any],
    prompt_ids: list[list[int]],
    hints: list[list[int]],
    hinted_prompt: Callable[[Any, list[int], list[int]], tuple[list[int], int]],
) -> tuple[list[list[int]], list[int], int]:
    """Each row's prompt ids with its hint, the demo tokens each hint shows, and the demo tokens cut over all rows.

    Args:
        prompts: per row, the prompt as TRL received it (text or chat messages).
        prompt_ids: per row, TRL's prompt ids; a row without a hint keeps them as they are.
        hints: per row, the revealed demo tokens to show ([] for a row without a hint).
        hinted_prompt: (prompt, prompt ids, hint tokens) -> (prompt ids with a hint, demo tokens it shows), which may
            show fewer than given to fit the prompt budget (`PrefixPlacementMixin._hinted_prompt_ids`).
    """
    hinted, shown, cut = [], [], 0
    for prompt, ids, hint in zip(prompts, prompt_ids, hints, strict=True):
        ids, n = hinted_prompt(prompt, list(ids), hint) if hint else (ids, 0)
        hinted.append(ids)
        shown.append(n)
        cut += len(hint) - n
    return hinted, shown, cut


class PrefixPlacementMixin:
    """The prompt side of `prefix_placement='prompt'` (a mixin over TRL's `GRPOTrainer`)."""

    def _hint_row(self, row: RowPlan) -> bool:
        """Whether `row`'s revealed demo goes into its prompt: a hybrid (role 'hybrid') with revealed tokens. Other
        roles keep any demo they hold as their completion whatever the placement."""
        return self.args.prefix_placement == "prompt" and row.role == "hybrid" and bool(row.revealed_ids)

    def _tokenize_prompts(self, prompts: list):
        """TRL's prompt ids, with each hint row's hint added during a training rollout (`hint_prompts`; the demo
        tokens shown go to `rollout.hint_lens`, those cut to `rollout.truncated_tokens`). The ids TRL returns from here
        are the ones it generates from, trains on and stores as `prompt_ids`, so the hint is conditioned on everywhere
        and never part of a completion."""
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        rollout = self._rollout
        if rollout is None:  # evaluation: questions without hints
            return prompt_ids, images, multimodal_fields
        hints = [row.revealed_ids if self._hint_row(row) else [] for row in rollout.rows]
        if any(hints) and (images is not None or multimodal_fields):
            raise NotImplementedError("prefix_placement='prompt' with images or multimodal prompt fields")
        prompt_ids, hint_lens, cut = hint_prompts(prompts, prompt_ids, hints, self._hinted_prompt_ids)
        rollout.hint_lens, rollout.truncated_tokens = hint_lens, rollout.truncated_tokens + cut
        return prompt_ids, images, multimodal_fields

    def _hinted_prompt_ids(self, prompt: Any, prompt_ids: list[int], revealed_ids: list[int]) -> tuple[list[int], int]:
        """(prompt ids with a hint of the first n demo tokens, n), n cut so the whole fits `max_prompt_length`.

        As for a response prefix (docs/fidelity.md#prompt-budget) the question is never cut and the cut demo tokens are
        counted; a hint cut to nothing is dropped, the row staying hybrid. Each pass assumes one rendered token per
        demo token (exact for text prompts, where demo tokens are appended as they are), so it ends in a few passes.
        """
        kept, limit, min_len = len(revealed_ids), self.args.max_prompt_length, self.args.prefix_min_len
        while kept:
            hinted = self._render_hint(prompt, prompt_ids, revealed_ids[:kept])
            _, cut = fit_prefix_to_prompt(len(prompt_ids), len(hinted) - len(prompt_ids), limit)
            if not cut:
                return hinted, kept
            kept = max(0, kept - cut)
            if kept < min_len:
                raise ValueError(
                    f"prompt ({len(prompt_ids)} tokens) + a hint of prefix_min_len ({min_len}) demo tokens exceeds "
                    f"max_prompt_length={limit}"
                )
        return prompt_ids, 0

    def _render_hint(self, prompt: Any, prompt_ids: list[int], revealed_ids: list[int]) -> list[int]:
        """Prompt ids of `prompt` with the hint `HINT_LABEL + demo` after its question.

        A text prompt gets the label's and the demo's tokens appended (no re-tokenization across the seam, so the
        hint holds exactly the revealed tokens); a chat prompt is rendered again with the hint at the end of its user
        message, before the template's generation prompt.
        """
        if not isinstance(prompt, list):
            return [*prompt_ids, *self._tokenizer(HINT_LABEL, add_special_tokens=False)["input_ids"], *revealed_ids]
        hint = HINT_LABEL + self._tokenizer.decode(revealed_ids)
        return list(
            self.processing_class.apply_chat_template(
                with_hint(prompt, hint),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                **self.chat_template_kwargs,
            )["input_ids"]
        )
