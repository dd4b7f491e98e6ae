"""`PrefixRFTTrainer`: TRL's GRPOTrainer with hybrid rollouts that continue a demonstration prefix.

Unlike stock Dr. GRPO: (1) `num_hybrid` rollouts per group start from the first L tokens of a demo inside the assistant
turn, L = floor(l * |demo|) with l drawn from a decaying window (docs/fidelity.md#demo-tokenization to
#uniform-schedule); (2) the completion of a hybrid is prefix + continuation, so the reward sees the whole solution and
the prefix tokens are trained too; (3) prefix tokens get their own advantage (#hybrid-advantage,
#prefix-advantage-several-rollouts) and only the highest-entropy share keeps it (#entropy-scope to #lowest-ablation).
Everything else (sampling, rewards, PPO clip, Dr. GRPO aggregation, accelerate/DeepSpeed/FSDP, vLLM, checkpoints) is
TRL's.

One training step reads top to bottom in `PrefixRFTTrainer._generate_and_score_completions`. The decisions are plain
functions with explicit arguments (`generation.plan_rows`, `scoring.prefix_fields`, `core.select_over_span`); the
mixins only adapt TRL's hooks to them. Mixins, not composition: TRL calls its hooks on the trainer itself
(`_tokenize_prompts`, `_generate_single_turn`, `_calculate_rewards`, `_compute_loss`), so an override has to be a
method of the trainer, and the baselines override the same hooks (`_plan_rows`, `_row_plan`, `_add_prefix_fields`,
`_after_rollout`) by subclassing; the mixins split those overrides by concern into one module each.
"""

from __future__ import annotations

import logging
import os
import shutil
import textwrap
from typing import Any

from accelerate.utils import DistributedType, parse_flag_from_env
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler, get_config_model_id

from prefix_rft.core import demo_part
from prefix_rft.data import validate_rows
from prefix_rft.data.validation import PromptBudgets, ValidationReport
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.generation import PrefixGenerationMixin
from prefix_rft.trl.guards import NonFiniteStepGuard
from prefix_rft.trl.loss import PrefixLossMixin
from prefix_rft.trl.placement import PrefixPlacementMixin
from prefix_rft.trl.questions import QuestionGuidanceMixin
from prefix_rft.trl.rollouts import Rollout
from prefix_rft.trl.run_dir import RankState, load_rank_state, prepare_output_dir, save_rank_state
from prefix_rft.trl.scoring import PrefixScoringMixin

logger = logging.getLogger(__name__)
STAGING_DIR = ".staging"  # checkpoints are written here, then renamed into place
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


class PrefixRFTTrainer(
    PrefixGenerationMixin,
    PrefixPlacementMixin,
    QuestionGuidanceMixin,
    PrefixScoringMixin,
    PrefixLossMixin,
    GRPOTrainer,
):
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
        if self.args.entropy_scope_fallback:
            logger.warning(
                "prefix_entropy_scope: steps_per_generation (%d) is not a multiple of gradient_accumulation_steps "
                "(%d), so an optimizer step spans two generation batches and the paper's 'optimizer_step' scope is "
                "impossible; the top-entropy share is per 'global_micro_batch' (prefix/entropy_scope_fallback=1)",
                self.args.steps_per_generation,
                self.args.gradient_accumulation_steps,
            )
        self._prefix_sampler = self.args.prefix_sampler()
        self._demo_ids_cache = self._new_demo_cache()  # bounded: a run can draw from many long demos
        self._rollout: Rollout | None = None  # the generation batch in flight; None outside it
        self._refuse_fsdp_fallback()
        self._init_question_stats()
        self._refuse_images()
        self.validation_report = self._validate_train_dataset()
        self._guard = NonFiniteStepGuard(self.args.max_consecutive_nonfinite_steps, self.accelerator)
        self.add_callback(self._guard)
        self._install_budgeted_vllm()

    # ---------------------------------------------------------------- one training step's generation batch
    def _generate_and_score_completions(self, inputs):
        """A training batch, top to bottom: plan rows -> generate -> score -> advantages and prefix fields -> loss.

        1. Plan (`generation.plan_rows`): each row's role, demo and prefix ratio, into a `Rollout` on `self._rollout`,
           the one record TRL's hooks below read and fill in.
        2-3. TRL's own step generates and scores; in order it calls the hooks this trainer adapts:
           `_tokenize_prompts` (placement.py: hint rows' prompt ids get their hints, `placement.hint_prompts`;
           `hint_lens`),
           `_generate_single_turn` (generation.py: prefixes fitted to the prompt budget, `core.fit_prefixes`;
           per-row token budgets, nothing sampled for a row that does not generate; completion = prefix +
           continuation; `prefix_ids` and `completion_lens`),
           `_get_per_token_logps_and_entropies` (old and reference log-probs, stock), and
           `_calculate_rewards` (scoring.py: rewards checked, weighted rewards onto `rollout.rewards`).
           Each hook computes with plain functions and writes what they return onto the record in one place.
           TRL then computes its group advantages inline, with no hook to skip or replace them; step 4 overwrites
           them. That costs a few (N,) tensor operations, where owning TRL's method would fork its ~460 lines.
           The completions table's advantage column is rewritten with the continuation advantages.
        4. Prefix fields (`scoring.prefix_fields`): every rank's planned roles onto `rollout.is_hybrid`, then
           `prefix_mask` and per-token advantages into the batch; then the per-question state (questions.py) and
           `_after_rollout` (the baselines' hook) see the scored rollout.
        5. The batch goes back to TRL, which hands it to `_prepare_inputs` (loss.py: prefix-token selection over an
           optimizer step) and `_compute_loss` (loss.py). The `Rollout` is dropped here.
        """
        if not self.model.training:  # evaluation: stock TRL, questions without prefixes
            return super()._generate_and_score_completions(inputs)
        self._rollout = rollout = self._plan_rows(inputs)
        try:
            output = super()._generate_and_score_completions(inputs)
            rollout.is_hybrid = self._gather_hybrid(rollout, output["completion_ids"].device)
            self._add_prefix_fields(output, rollout)
            self._observe_questions(inputs, rollout)
            self._after_rollout(inputs, rollout)
        finally:
            self._rollout = None
        return output

    def _refuse_fsdp_fallback(self) -> None:
        """Refuse FSDP that accelerate did not turn on, instead of training unsharded.

        accelerate 1.16 switches to FSDP only on GPUs and other accelerators; on CPU `--fsdp` or
        ACCELERATE_USE_FSDP=true leave it at DistributedType.MULTI_CPU (or NO), which trains every weight on every
        rank, with no word (docs/scale.md).
        """
        requested = bool(self.args.fsdp) or parse_flag_from_env("ACCELERATE_USE_FSDP", default=False)
        actual = self.accelerator.distributed_type
        if requested and actual != DistributedType.FSDP:
            raise ValueError(
                f"FSDP was requested (--fsdp / ACCELERATE_USE_FSDP=true) but accelerate runs {actual}: it enables "
                "FSDP only on GPUs and other accelerators, so this run would train unsharded weights on every rank. "
                "On CPU use DeepSpeed ZeRO-3 (--deepspeed, with DS_ACCELERATOR=cpu; docs/scale.md) or drop --fsdp"
            )

    def _refuse_images(self) -> None:
        """Refuse datasets with image columns: the prefix generation, entropy pass and loss forward carry no image
        inputs, so a vision-language model would train without its images."""
        datasets = {"train_dataset": self.train_dataset}
        eval_data = self.eval_dataset
        datasets |= eval_data if isinstance(eval_data, dict) else {"eval_dataset": eval_data}
        for name, dataset in datasets.items():
            columns = getattr(dataset, "column_names", None) or []
            for column in ("image", "images"):
                if column in columns:
                    raise ValueError(
                        f"PrefixRFTTrainer does not support image prompts ({name} has an {column!r} column): its "
                        "prefix generation and loss pass no image inputs to the model; use trl's GRPOTrainer"
                    )

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
            demo_length=self._demo_length,
            max_completion_length=self.max_completion_length,
            truncate_long_demos=self.args.prefix_truncate_long_demos,
        )

    def _demo_length(self, demo: str) -> int:
        """Tokens of the part of `demo` a hybrid row reveals a share of (`prefix_demo_part`)."""
        return len(self._tokenizer(demo_part(demo, self.args.prefix_demo_part), add_special_tokens=False)["input_ids"])

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

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        sampler.__class__ = EpochSeededRepeatSampler  # same state, plus set_epoch
        return sampler

    # ---------------------------------------------------------------- checkpoints
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs: Any):
        """Trainer.train, after making sure `output_dir` can be written and holds no other run (run_dir.py)."""
        prepare_output_dir(
            self.args,
            resuming=bool(resume_from_checkpoint),
            overwrite=self.args.overwrite_output_dir,
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

    def _rank_states(self) -> list[RankState]:
        """The trainer-side states every rank holds alike, checkpointed beside the RNG state: the per-question state;
        a baseline adds its own (`[*super()._rank_states(), ...]`)."""
        return self._question_rank_states()

    # Every checkpoint writes and reads the RNG state on every rank, so the trainer-side states ride along with it.
    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        for state in self._rank_states():
            save_rank_state(output_dir, self.accelerator.process_index, state.file, state.state_dict())

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        if checkpoint is None:
            return
        for state in self._rank_states():
            saved = load_rank_state(checkpoint, 0, state.file, state.what)  # rank 0's: every rank holds the same
            if saved is not None:
                state.load_state_dict(saved)

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
