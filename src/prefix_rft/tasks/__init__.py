"""The embedded task: multi-step arithmetic with an expert demonstrator, its tokenizer, tiny model and base model.

`make_rows` gives prompts, demos and gold answers; `task_reward` grades completions for TRL;
`load_or_pretrain_base` pretrains the base model once (a few minutes on 2 CPU cores) and then reuses the cache.
"""

from prefix_rft.tasks.arithmetic import TaskConfig, demonstrate, is_correct, make_rows, task_reward
from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.pretrain import BaseModelConfig, load_or_pretrain_base
from prefix_rft.tasks.tokenizer import build_tokenizer

__all__ = [
    "BaseModelConfig",
    "TaskConfig",
    "build_model",
    "build_tokenizer",
    "demonstrate",
    "is_correct",
    "load_or_pretrain_base",
    "make_rows",
    "task_reward",
]
