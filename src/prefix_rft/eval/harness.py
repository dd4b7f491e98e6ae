"""`evaluate`: sample k completions per row, score them, and summarise; shared by the benchmarks and the embedded task.

result = evaluate(model, tokenizer, rows, score_fn=verifier.score, k=4, max_new_tokens=1024)
result.metrics  # {"problems": ..., "avg@4": ..., "pass@1": ..., "pass@2": ..., "pass@4": ...}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from prefix_rft.eval.generate import Sampling, generate, render_prompt
from prefix_rft.eval.metrics import summarize

ScoreFn = Callable[[str, Any], float]
ExtractFn = Callable[[str], str | None]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    samples: list[dict[str, Any]]  # one per completion: id, sample, prompt, completion, extracted, answer, score


def evaluate(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    score_fn: ScoreFn,
    k: int = 1,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 8192,
    batch_size: int = 8,
    greedy: bool = False,
    seed: int = 0,
    extract_fn: ExtractFn | None = None,
    desc: str = "eval",
) -> EvalResult:
    """Generate `k` completions for every row and score each with `score_fn(completion, row["answer"])`.

    Args:
        model: a transformers causal LM, or a `vllm.LLM`.
        tokenizer: its tokenizer (for vLLM, `llm.get_tokenizer()`).
        rows: dicts with `prompt` (a string, used verbatim, or chat messages) and `answer`; `id` is optional.
        score_fn: 1.0 for a correct completion, 0.0 otherwise; pass@k counts a score of 1 as correct.
        k: completions per row; avg@k and pass@1..k are reported.
        batch_size: prompts per `generate` call (each expands to k sequences); transformers only.
        greedy: decode greedily (then k must be 1).
        extract_fn: what to show as the extracted answer in the samples (e.g. `last_boxed`); None leaves it empty.
    """
    if greedy and k != 1:
        raise ValueError("greedy decoding gives k identical completions; use k=1")
    prompts = [render_prompt(tokenizer, row["prompt"]) for row in rows]
    sampling = Sampling(k, temperature, top_p, max_new_tokens, greedy, seed)
    completions = generate(model, tokenizer, prompts, sampling, batch_size, desc)
    samples = []
    pairs = enumerate(zip(rows, prompts, completions, strict=True))
    for index, (row, prompt, row_completions) in tqdm(pairs, total=len(rows), desc=f"{desc} scoring", unit="problem"):
        for sample, completion in enumerate(row_completions):
            samples.append(
                {
                    "id": row.get("id", index),
                    "sample": sample,
                    "prompt": prompt,
                    "completion": completion,
                    "extracted": extract_fn(completion) if extract_fn else None,
                    "answer": row["answer"],
                    "score": float(score_fn(completion, row["answer"])),
                }
            )
    scores = [[s["score"] for s in samples[i : i + k]] for i in range(0, len(samples), k)]
    return EvalResult(summarize(scores), samples)


def write_samples(path: Path, samples: Sequence[dict[str, Any]]) -> None:
    """Per-sample JSONL, for reading completions next to their scores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for sample in samples:
            out.write(json.dumps(sample, ensure_ascii=False) + "\n")
