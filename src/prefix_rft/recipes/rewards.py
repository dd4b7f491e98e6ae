"""The reward functions of `prefix-rft train`: our `reward: task|math|auto`, or `trl grpo`'s `reward_funcs`.

`reward_funcs` resolves as in trl/scripts/grpo.py: a name from TRL's registry (`trl.rewards`), else a dotted import
path `module.function` (the working directory is importable, as under `trl grpo`); `reward_model_name_or_path` adds a
reward model first. `reward` is a shortcut for our two functions: `task` is `prefix_rft.tasks.task_reward`, `math`
is `prefix_rft.verify.math_reward`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol


class RewardFields(Protocol):
    """The reward fields of `prefix-rft train`'s script arguments (ours and `trl grpo`'s), all this module reads."""

    reward: str | None
    reward_funcs: list[str] | None
    reward_model_name_or_path: str | None


# TRL's own names, with the arguments trl/scripts/grpo.py fixes for the one factory among them.
TRL_REWARD_NAMES = (
    "accuracy_reward",
    "reasoning_accuracy_reward",
    "think_format_reward",
    "get_soft_overlong_punishment",
)
_TRL_FACTORY_ARGS = {"get_soft_overlong_punishment": {"max_completion_len": 1280, "soft_punish_cache": 256}}


def uses_trl_rewards(script: RewardFields) -> bool:
    """True when the run takes `trl grpo`'s reward fields; refuses them together with our `reward`."""
    trl_style = bool(script.reward_funcs or script.reward_model_name_or_path)
    if trl_style and script.reward is not None:
        raise ValueError(
            f"reward={script.reward!r} and reward_funcs/reward_model_name_or_path both choose the reward: give one "
            "(reward_funcs can name ours: prefix_rft.verify.math_reward, prefix_rft.tasks.task_reward)"
        )
    return trl_style


def reward_functions(script: RewardFields, embedded: bool) -> list[Any]:
    """The trainer's `reward_funcs`: a reward model path first (if any), then functions, as `trl grpo` orders them."""
    if not uses_trl_rewards(script):
        return [builtin_reward(script.reward or "auto", embedded)]
    models = [script.reward_model_name_or_path] if script.reward_model_name_or_path else []
    return models + [load_reward_func(name) for name in script.reward_funcs or []]


def builtin_reward(kind: str, embedded: bool) -> Callable:
    """Our reward by `reward` name; 'auto' is the task reward on the embedded task and math elsewhere."""
    if kind == "auto":
        kind = "task" if embedded else "math"
    if kind == "task":
        from prefix_rft.tasks import task_reward

        return task_reward
    if kind == "math":
        from prefix_rft.verify import math_reward

        return math_reward
    raise ValueError(f"reward={kind!r}; expected 'task', 'math' or 'auto'")


def load_reward_func(name: str) -> Callable:
    """A reward function from TRL's registry or a dotted import path, as trl/scripts/grpo.py resolves it."""
    if name in TRL_REWARD_NAMES:
        import trl.rewards

        func = getattr(trl.rewards, name)
        return func(**_TRL_FACTORY_ARGS[name]) if name in _TRL_FACTORY_ARGS else func
    if "." not in name:
        raise ValueError(
            f"reward_funcs: {name!r} is not one of TRL's rewards {list(TRL_REWARD_NAMES)} nor a dotted import path "
            "(module.function)"
        )
    module_name, func_name = name.rsplit(".", 1)
    if os.getcwd() not in sys.path:  # `trl grpo` imports from the working directory too
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"reward_funcs: cannot import {module_name!r} for {name!r} ({error})") from error
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"reward_funcs: module {module_name!r} has no function {func_name!r}")
    return func
