"""Training guards: skip optimizer steps with non-finite gradients, stop after too many in a row."""

from __future__ import annotations

import logging

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class NonFiniteStepGuard(TrainerCallback):
    """Skips the optimizer step of a step whose loss or gradients are NaN/inf, so the weights stay as they were.

    A NaN loss makes NaN gradients, so checking gradients catches both. Without DeepSpeed the guard drops the
    gradients before `optimizer.step()`; the verdict is all-reduced, so ranks holding different gradient shards (FSDP)
    all skip together. Under DeepSpeed, accelerate's `backward` has already run `engine.step()` by the time the Trainer
    calls `on_pre_optimizer_step`: there the engine's own overflow check (all-reduced over its ranks) skips the step,
    and the guard reads `engine.was_step_applied()`. After `max_consecutive` skipped steps in a row the run stops with
    an error; checkpoints written before stay loadable.
    """

    def __init__(self, max_consecutive: int, accelerator: Accelerator | None = None) -> None:
        self.max_consecutive = max_consecutive
        self.accelerator = accelerator
        self.consecutive = 0
        self.skipped = 0

    def on_train_begin(self, args, state, control, **kwargs):
        engine = self._deepspeed_engine()
        if engine is not None:
            require_overflow_check(engine.optimizer)
        return control

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        engine = self._deepspeed_engine()
        if engine is not None:
            finite = engine.was_step_applied()
        else:
            finite = self._finite_on_every_rank(gradients_finite(model))  # the step's one device->host sync
            if not finite:
                for p in model.parameters():
                    p.grad = None  # AdamW skips parameters without a gradient: the weights stay as they were
        self._mark_skipped(not finite)
        if finite:
            self.consecutive = 0
            return control
        self.consecutive += 1
        self.skipped += 1
        logger.warning("step %d: non-finite loss or gradient, optimizer step skipped", state.global_step + 1)
        if self.consecutive >= self.max_consecutive:
            raise RuntimeError(
                f"{self.consecutive} consecutive steps had non-finite loss or gradients (up to step "
                f"{state.global_step + 1}); stopping. The last checkpoint in {args.output_dir} is intact."
            )
        return control

    def _deepspeed_engine(self):
        accelerator = self.accelerator
        if accelerator is None or accelerator.distributed_type != DistributedType.DEEPSPEED:
            return None
        wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
        return None if wrapped is None else wrapped.engine

    def _mark_skipped(self, skipped: bool) -> None:
        """Tell the Trainer the step was skipped, so the learning-rate schedule waits, as DeepSpeed's does on overflow.

        Trainer reads `accelerator.optimizer_step_was_skipped`, i.e. each optimizer's `_is_overflow`, which accelerate
        sets only when it holds a gradient scaler (fp16); without one nothing else writes it.
        """
        if self.accelerator is None or self._deepspeed_engine() is not None:
            return
        for optimizer in getattr(self.accelerator, "_optimizers", []):
            if getattr(optimizer, "scaler", None) is None:
                optimizer._is_overflow = skipped

    def _finite_on_every_rank(self, finite: torch.Tensor) -> bool:
        """False on every rank when any rank saw a non-finite gradient (FSDP ranks check different shards).

        `finite` is a () bool tensor (`gradients_finite`); reading the verdict is the one device->host sync.
        """
        if self.accelerator is None:
            return bool(finite)
        return not on_any_rank(self.accelerator, ~finite)


def on_any_rank(accelerator: Accelerator, flag: torch.Tensor | bool) -> bool:
    """Whether `flag` (a () bool tensor or a bool) is set on any rank: one verdict that every rank takes, so ranks
    skip a step together even where their local checks could differ. One process: `flag` itself."""
    if accelerator.num_processes == 1:
        return bool(flag)
    value = torch.as_tensor(flag).float().reshape(1).to(accelerator.device)
    return float(accelerator.reduce(value, "max")) > 0.0


def gradients_finite(model: torch.nn.Module) -> torch.Tensor:
    """() bool tensor: whether every local gradient (a rank's shard under FSDP) is finite.

    The per-parameter flags stay on the device and are combined there, so the caller reads one value (one sync per
    step instead of one per parameter).
    """
    flags = []
    for p in model.parameters():
        grad = p.grad
        if grad is None:
            continue
        grad = grad.to_local() if hasattr(grad, "to_local") else grad  # an FSDP2 DTensor: check this rank's shard
        flags.append(torch.isfinite(grad).all())
    if not flags:
        return torch.tensor(True)
    device = flags[0].device  # a model spread over devices (device_map) gathers its flags on the first one
    return torch.stack([flag.to(device) for flag in flags]).all()


def require_overflow_check(optimizer) -> None:
    """Make a DeepSpeed optimizer skip steps with non-finite gradients, or refuse it.

    ZeRO-3 skips whenever its (all-reduced) gradient norm is non-finite. ZeRO-1/2 does so too, except in bf16 without
    `check_grad_overflow`, so the guard turns that check on. A plain torch optimizer (stage 0 in fp32) has no overflow
    check and would apply the step.
    """
    if hasattr(optimizer, "check_grad_overflow"):
        optimizer.check_grad_overflow = True  # ZeRO-1/2: inspect the reduced gradients, not only the norm
    elif not hasattr(optimizer, "overflow"):
        raise ValueError(
            f"the non-finite step guard needs a DeepSpeed optimizer that checks overflow; "
            f"{type(optimizer).__name__} (ZeRO stage 0 in fp32) would apply a NaN step: use ZeRO stage 1, 2 or 3"
        )
