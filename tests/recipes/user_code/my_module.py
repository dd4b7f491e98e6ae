"""A user's reward module, outside the package: `--reward_funcs my_module.my_reward` imports it as `trl grpo` does."""

CALLS: list[int] = []  # batch sizes seen, so a test can tell the function was called


def my_reward(completions: list, **kwargs) -> list[float]:
    """1.0 for a completion of odd length: rewards differ within a group even for an untrained model."""
    CALLS.append(len(completions))
    return [float(len(completion[-1]["content"]) % 2) for completion in completions]


def infinite_reward(completions: list, **kwargs) -> list[float]:
    """An infinite reward, which the trainer refuses with a ValueError at the step that scores it."""
    return [float("inf")] * len(completions)
