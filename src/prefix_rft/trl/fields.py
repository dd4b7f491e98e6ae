"""Every `GRPOConfig` field, classified: PrefixRFTTrainer implements it, or `PrefixRFTConfig` refuses it; the
`prefix_*` fields a run without hybrid rows refuses (`refuse_hybrid_options`), and what a run whose groups are all
hybrid needs (`check_hybrid_count`).

A field is in exactly one of the two collections (tests/trl/test_fields.py checks it against the installed TRL,
so a field a new TRL adds fails the tests until it is classified here). A refused field is an error when set to
anything but its GRPOConfig default; the message names the field and gives the reason below.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from prefix_rft.core.prefix import hybrid_positions

# TrainingArguments fields: the Trainer machinery (optimizer, schedule, precision, logging, checkpoints, evaluation,
# distribution) runs unchanged, as under stock GRPOTrainer.
SUPPORTED_TRAINING_FIELDS = frozenset(
    """
    output_dir per_device_train_batch_size num_train_epochs max_steps learning_rate lr_scheduler_type
    lr_scheduler_kwargs warmup_steps optim optim_args weight_decay adam_beta1 adam_beta2 adam_epsilon
    optim_target_modules gradient_accumulation_steps average_tokens_across_devices max_grad_norm bf16 fp16
    bf16_full_eval fp16_full_eval tf32 activation_checkpointing activation_checkpointing_kwargs gradient_checkpointing
    gradient_checkpointing_kwargs torch_compile torch_compile_backend torch_compile_mode use_liger_kernel
    liger_kernel_config use_cache neftune_noise_alpha torch_empty_cache_steps logging_strategy logging_steps
    logging_first_step log_on_each_node logging_nan_inf_filter include_num_input_tokens_seen log_level
    log_level_replica disable_tqdm report_to run_name project trackio_space_id trackio_bucket_id
    trackio_static_space_id eval_strategy eval_steps eval_delay per_device_eval_batch_size prediction_loss_only
    eval_on_start eval_do_concat_batches eval_use_gather_object eval_accumulation_steps include_for_metrics
    batch_eval_metrics save_only_model save_strategy save_steps save_on_each_node save_total_limit
    enable_jit_checkpoint push_to_hub hub_token hub_private_repo hub_model_id hub_strategy hub_always_push
    hub_revision load_best_model_at_end metric_for_best_model greater_is_better ignore_data_skip
    restore_callback_states_from_checkpoint full_determinism seed data_seed use_cpu accelerator_config
    parallelism_config dataloader_drop_last dataloader_num_workers dataloader_pin_memory dataloader_persistent_workers
    dataloader_prefetch_factor dataloader_multiprocessing_context dataloader_in_order label_names
    ddp_find_unused_parameters ddp_bucket_cap_mb ddp_broadcast_buffers ddp_static_graph ddp_backend ddp_timeout fsdp
    fsdp_config deepspeed debug skip_memory_metrics do_train do_eval do_predict resume_from_checkpoint local_rank
    """.split()
)

# GRPOConfig's own fields that PrefixRFTTrainer implements. Generation, rewards, vLLM and logging are TRL's; the loss
# options are re-implemented in PrefixRFTTrainer._compute_loss with prefix tokens as ordinary trained tokens
# (docs/fidelity.md#trl-loss-type to #refused-trl-options).
SUPPORTED_GRPO_OWN_FIELDS = frozenset(
    """
    model_init_kwargs trust_remote_code router_aux_loss_coef disable_dropout cast_lm_head_to_fp32 num_generations
    num_generations_eval max_completion_length ds3_gather_for_generation shuffle_dataset pad_to_multiple_of
    generation_batch_size steps_per_generation temperature top_p top_k min_p generation_kwargs chat_template_kwargs
    repetition_penalty cache_implementation use_vllm vllm_mode vllm_model_impl vllm_enable_sleep_mode
    vllm_server_base_url vllm_server_host vllm_server_port vllm_server_timeout vllm_group_port
    vllm_gpu_memory_utilization vllm_max_model_length vllm_tensor_parallel_size beta num_iterations epsilon delta
    epsilon_high importance_sampling_level reward_weights scale_rewards loss_type mask_truncated_completions
    sync_ref_model ref_model_mixup_alpha ref_model_sync_steps entropy_coef use_adaptive_entropy entropy_coef_min
    entropy_coef_max entropy_coef_delta entropy_target vllm_importance_sampling_correction
    vllm_importance_sampling_mode vllm_importance_sampling_clip_max vllm_importance_sampling_clip_min
    use_bias_correction_kl log_completions log_multimodal num_completions_to_print log_unique_prompts
    log_completions_hub_repo use_transformers_continuous_batching transformers_continuous_batching_config
    use_transformers_paged vllm_importance_sampling_cap
    """.split()
)

SUPPORTED_GRPO_FIELDS = SUPPORTED_TRAINING_FIELDS | SUPPORTED_GRPO_OWN_FIELDS

_SAPO = "it is only read by loss_type='sapo', which PrefixRFTTrainer refuses"
_VESPO = "it is only read by loss_type='vespo', which PrefixRFTTrainer refuses"

REFUSED_GRPO_FIELDS: dict[str, str] = {
    "off_policy_mask_threshold": (
        "off-policy sequence masking compares a sequence with the policy that sampled it, and no policy sampled a "
        "hybrid's demo prefix (its sampling log-probs are NaN and would count as zero KL), so the mask has no meaning "
        "for hybrid rows"
    ),
    "multi_objective_aggregation": (
        "'normalize_then_sum' centres each reward function on the mean of the whole group, hybrid included, before "
        "the prefix advantage is formed, while the reference advantage keeps the hybrid out of the on-policy "
        "baseline; combine rewards with reward_weights ('sum_then_normalize')"
    ),
    "top_entropy_quantile": (
        "Prefix-RFT selects prefix tokens by entropy with prefix_entropy_keep_fraction; a quantile over all "
        "completion tokens would also mask on-policy tokens, which the method trains in full"
    ),
    "max_tool_calling_iterations": (
        "tool calling is not supported: TRL's tool loop regenerates a subset of rows without their demo prefixes"
    ),
    "vllm_structured_outputs_regex": (
        "the regex would constrain a hybrid's continuation from its first token, but the completion it must "
        "describe starts with the demo prefix"
    ),
    "sapo_temperature_neg": _SAPO,
    "sapo_temperature_pos": _SAPO,
    "vespo_k_pos": _VESPO,
    "vespo_lambda_pos": _VESPO,
    "vespo_k_neg": _VESPO,
    "vespo_lambda_neg": _VESPO,
    "remove_unused_columns": (
        "it drops the demos column (and every column a reward function reads) before rollouts, so no row could "
        "become a hybrid"
    ),
    "auto_find_batch_size": "TRL refuses it: a smaller batch would split the groups of num_generations rollouts",
    "label_smoothing_factor": "the policy-gradient loss has no labels to smooth (GRPO ignores it)",
    "train_sampling_strategy": "GRPO's repeat sampler, which keeps each group's rollouts together, replaces it",
    "length_column_name": "it is only read by train_sampling_strategy='group_by_length', which is refused",
}

# Loss types without a prefix meaning (TRL's other values of loss_type are supported).
REFUSED_LOSS_TYPES: dict[str, str] = {
    "cispo": (
        "CISPO replaces the PPO clip, which bounds the update of demo-prefix tokens (dual_clip, "
        "docs/fidelity.md#prefix-clip-range, #dual-clip), with a clipped-weight REINFORCE term that the reference "
        "never defines for prefix tokens"
    ),
    "sapo": (
        "SAPO's soft gate replaces the PPO clip, which bounds the update of demo-prefix tokens (dual_clip, "
        "docs/fidelity.md#prefix-clip-range, #dual-clip), and the reference never defines it for prefix tokens"
    ),
    "vespo": (
        "VESPO weights each sequence by its sampling importance ratio and by the sign of one advantage per "
        "sequence, but a hybrid mixes demo tokens that no policy sampled with sampled ones and carries two "
        "advantages (prefix and continuation)"
    ),
}

# Fields of PrefixRFTConfig that were renamed: set to anything but None, each is refused with what replaces it.
RENAMED_FIELDS = {
    "allow_partial_rewards": "a row some reward functions leave unscored (None) sums the functions that scored it by "
    "default, as TRL does; set strict_rewards=True to stop the run instead",
    "prefix_dual_clip": "set dual_clip to the same value (it bounds every token with a negative advantage, not only "
    "prefix tokens)",
}
# Former values of prefix_entropy_scope -> the value that behaves as they did.
RENAMED_SCOPES = {"batch": "global_micro_batch", "micro_batch": "local_micro_batch"}


# `prefix_*` fields that still act without hybrid rows: demos longer than the completion budget are checked at
# validation whatever num_hybrid is, and a method training on whole demos (ReLIFT's SFT step, sft_rft) reads them.
NO_HYBRID_PREFIX_FIELDS = frozenset({"prefix_truncate_long_demos"})


def refuse_unused(config: Any, unused: dict[str, str]) -> None:
    """Raise when a field of `unused` (name -> why the trainer ignores it) is set away from its default on `config`
    (a dataclass): a baseline's objective that has no place for it would otherwise train as if it were unset."""
    defaults = {f.name: f.default for f in fields(config)}
    for name, reason in unused.items():
        if getattr(config, name) != defaults[name]:
            raise ValueError(f"{name}={getattr(config, name)!r} is not used by {type(config).__name__}: {reason}")


def refuse_hybrid_options(config: Any) -> None:
    """With `num_hybrid=0`, refuse every `prefix_*` field set away from its default, but those that still act
    (`NO_HYBRID_PREFIX_FIELDS`) and the renamed ones (refused with what replaces them): each acts only on hybrid rows
    or the prefixes drawn for them. Run it before a default is filled in from another field (`prefix_seed`)."""
    if config.num_hybrid != 0:
        return
    reason = "num_hybrid=0 has no hybrid rows, and the option acts only on hybrid rows or the prefixes drawn for them"
    skipped = NO_HYBRID_PREFIX_FIELDS | RENAMED_FIELDS.keys()
    names = [f.name for f in fields(config) if f.name.startswith("prefix_") and f.name not in skipped]
    refuse_unused(config, dict.fromkeys(names, reason))


def check_hybrid_count(config: Any) -> None:
    """Refuse a `num_hybrid` that leaves a group no on-policy row, but where the settings need none: a guided group
    (`num_hybrid` = `num_generations`, as SEELE and QuestA hint every rollout) takes GRPO's advantage over its rows
    (`prefix_advantage='paper'`), and a per-question option that reads the on-policy rows is refused."""
    demo_slots = getattr(config, "WHOLE_DEMO_SLOTS", False)  # WholeDemoSlots (LUFFY, RL+SFT, CHORD, HPT, SRFT)
    if demo_slots and config.num_hybrid >= config.num_generations:
        raise ValueError(
            f"num_hybrid={config.num_hybrid} leaves {type(config).__name__} no rollout: each hybrid slot holds a "
            f"whole demonstration; at most {config.num_generations - 1}"
        )
    hybrid_positions(config.num_generations, config.num_hybrid, allow_all=not demo_slots)
    if config.num_hybrid != config.num_generations:
        return
    needs = {
        "prefix_advantage": ("paper", "the 'reference' advantage's baseline is the on-policy rows' mean"),
        "prefix_rescue_max_success": (None, "the rescue reads the on-policy rows' success"),
    }
    if config.prefix_success_target is not None:
        needs["prefix_success_rows"] = ("hybrid", "the adaptive ratio would read the on-policy rows' success")
    for name, (wanted, why) in needs.items():
        if getattr(config, name) != wanted:
            raise ValueError(
                f"num_hybrid={config.num_hybrid} = num_generations leaves no on-policy row: {name} must be "
                f"{wanted!r} ({why})"
            )
