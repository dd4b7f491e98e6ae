"""SFT baseline: cross-entropy on demonstration tokens only (prompt masked), token mean, through TRL's SFTTrainer."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from prefix_rft.data import row_demos


def demo_completion_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompt-completion rows, one per (prompt, demo); prompts without demos are dropped."""
    out = []
    for row in rows:
        for demo in row_demos(row):
            if isinstance(row["prompt"], list):
                out.append({"prompt": row["prompt"], "completion": [{"role": "assistant", "content": demo}]})
            else:
                out.append({"prompt": row["prompt"], "completion": demo})
    return out


def build_sft_trainer(model, tokenizer, rows: list[dict[str, Any]], args: SFTConfig, **kwargs: Any) -> SFTTrainer:
    """SFTTrainer on the demonstrations; only completion tokens (the demo and its EOS) are in the loss. `kwargs` go to
    SFTTrainer (e.g. `peft_config`)."""
    if args.completion_only_loss is False:
        raise ValueError("the SFT baseline trains on demonstration tokens only: leave completion_only_loss on")
    dataset = Dataset.from_list(demo_completion_rows(rows))
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, **kwargs)
