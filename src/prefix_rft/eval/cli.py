"""`prefix-rft eval`: avg@k and pass@k of a model on the math benchmarks, as a table, a JSON and per-sample JSONL.

prefix-rft eval --model Qwen/Qwen2.5-Math-7B --k 32 --max-new-tokens 8192 --output-dir runs/eval
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from prefix_rft.data.jsonl import iter_jsonl
from prefix_rft.eval.benchmarks import BENCHMARKS, load_benchmark
from prefix_rft.eval.harness import evaluate, write_samples
from prefix_rft.eval.metrics import average
from prefix_rft.eval.prompts import TEMPLATES, build_messages
from prefix_rft.setup_errors import (
    blame,
    check_output_dir,
    positive_int,
    reports_setup_errors,
    setup_stage,
    vllm_installed,
)
from prefix_rft.verify import MathVerifier, last_boxed


def top_p(text: str) -> float:
    """argparse type: a probability mass in (0, 1] (outside it, top-p would keep no token or filter nothing)."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefix-rft eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local checkpoint or hub name")
    parser.add_argument(
        "--benchmarks",
        default=",".join(BENCHMARKS),
        help="comma-separated: shipped names, NAME=PATH (jsonl/json/parquet) or NAME=HUB_ID[:SPLIT]",
    )
    parser.add_argument("--k", type=positive_int, default=2, help="completions per problem (avg@k, pass@1..k)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding; implies --k 1")
    parser.add_argument("--temperature", type=float, default=0.6, help="sampling only: greedy decoding ignores it")
    parser.add_argument("--top-p", type=top_p, default=0.95)
    parser.add_argument("--max-new-tokens", type=positive_int, default=8192)
    parser.add_argument("--limit", type=positive_int, help="first N problems of each benchmark")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default="no_system")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="prompts per generate call (transformers)")
    parser.add_argument("--backend", choices=("auto", "hf", "vllm"), default="auto", help="auto: vLLM if usable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verifier-mode", choices=("math_verify", "oat"), default="math_verify")
    parser.add_argument("--after-think", action="store_true", help="grade only the text after </think>")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/eval"))
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The parsed options; a sampling temperature must be a finite number > 0 (generate refuses 0 only after the model
    loads), checked only when sampling: `--greedy` ignores it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.greedy and not (math.isfinite(args.temperature) and args.temperature > 0):
        parser.error(
            f"argument --temperature: must be a positive number (for greedy decoding use --greedy), got "
            f"{args.temperature:g}"
        )
    return args


@reports_setup_errors("prefix-rft eval")
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    k = 1 if args.greedy else args.k
    backend = _resolve_backend(args.backend)
    started = time.monotonic()
    with setup_stage():  # everything that can be checked before the model loads, then the model itself
        if backend == "vllm" and not vllm_installed():
            raise ValueError(
                "--backend vllm: vLLM is not installed; pip install 'prefix-rft[vllm]' on a GPU machine, or use "
                "--backend hf"
            )
        check_model_name(args.model)
        check_output_dir("--output-dir", args.output_dir)
        benchmarks = [load_checked_benchmark(spec.strip(), args.limit) for spec in args.benchmarks.split(",")]
        with blame(f"--model {args.model}", "cannot be loaded"):
            model, tokenizer = load_model(args.model, backend, args.seed)
    with MathVerifier(mode=args.verifier_mode, after_think=args.after_think) as verifier:
        per_benchmark = dict(
            _run_benchmark(name, problems, model, tokenizer, verifier, args, k) for name, problems in benchmarks
        )
        verifier_stats = verifier.stats
    report = {
        "config": {**vars(args), "k": k, "backend": backend, "output_dir": str(args.output_dir)},
        "benchmarks": per_benchmark,
        "average": average(per_benchmark),
        "verifier": verifier_stats,
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    (args.output_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_table(per_benchmark, report["average"]))
    print(f"verifier: {json.dumps(verifier_stats)}; wall time {report['wall_time_s']}s; results in {args.output_dir}")
    return 0


def check_model_name(name: str) -> None:
    """Refuse a `--model` that is neither an existing path nor a hub id, before transformers calls it a bad repo id."""
    if Path(name).exists():
        return
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ValueError(f"--model {name}: no such file or directory, and not a hub id of the form org/name") from None


def load_checked_benchmark(spec: str, limit: int | None) -> tuple[str, list[dict]]:
    """`load_benchmark`, after reading a local JSONL source line by line so that a bad line is named by its number."""
    source = Path(spec.partition("=")[2])
    if source.suffix == ".jsonl" and source.is_file():
        for _ in iter_jsonl(source):
            pass
    return load_benchmark(spec, limit)


def _run_benchmark(
    name: str,
    problems: list[dict],
    model: Any,
    tokenizer: Any,
    verifier: MathVerifier,
    args: argparse.Namespace,
    k: int,
) -> tuple[str, dict[str, float]]:
    """Evaluate one benchmark, write its samples, return (name, metrics)."""
    rows = [{**row, "prompt": build_messages(str(row["problem"]), args.template)} for row in problems]
    result = evaluate(
        model,
        tokenizer,
        rows,
        verifier.score,
        k=k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        greedy=args.greedy,
        seed=args.seed,
        extract_fn=last_boxed,
        desc=name,
    )
    write_samples(args.output_dir / f"{name}.samples.jsonl", result.samples)
    return name, result.metrics


def _resolve_backend(backend: str) -> str:
    if backend != "auto":
        return backend
    import torch

    return "vllm" if vllm_installed() and torch.cuda.is_available() else "hf"


def load_model(name: str, backend: str, seed: int) -> tuple[Any, Any]:
    """(model, tokenizer) for transformers, or (vllm.LLM, its tokenizer)."""
    if backend == "vllm":
        from vllm import LLM

        llm = LLM(model=name, seed=seed)
        return llm, llm.get_tokenizer()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(name, dtype="auto")
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), AutoTokenizer.from_pretrained(name)


def format_table(per_benchmark: dict[str, dict[str, float]], mean: dict[str, Any]) -> str:
    """Benchmarks as rows, metrics in percent as columns, the Table 1 average last."""
    columns = [key for key in next(iter(per_benchmark.values())) if "@" in key]
    lines = [f"{'benchmark':<16}{'problems':>9}" + "".join(f"{c:>9}" for c in columns)]
    for name, metrics in per_benchmark.items():
        lines.append(f"{name:<16}{metrics['problems']:>9}" + "".join(f"{100 * metrics[c]:>9.1f}" for c in columns))
    label = f"average ({len(mean['benchmarks'])})"
    lines.append(
        f"{label:<16}{'':>9}" + "".join(f"{100 * mean[c]:>9.1f}" if c in mean else f"{'':>9}" for c in columns)
    )
    return "\n".join(lines)
