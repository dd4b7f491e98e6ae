"""Where solutions go wrong: the first mistake of each sample, by split, for the base and trained models.

Samples k completions per problem with the demo's evaluation settings (T 0.6, top-p 0.95) and classifies each with
`prefix_rft.tasks.arithmetic.first_error`: a line that is not one step (`not_steps`: a coarse line, a line cut off),
a wrong starting value, a skipped, repeated or wrong term, a step past the chain's end, an arithmetic slip, an early
stop, or a complete chain of steps (whose answer line is not judged). Writes a JSON and a stacked-bar PNG.

Run: python benchmarks/error_types.py --models base runs/demo/model [--problems 256 --k 4 --seed 0]
     [--out runs/error_types.json]   ("base" is the default base model)
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import load_model, write_report  # noqa: E402

from prefix_rft.recipes.toy import eval_rows, evaluate_split  # noqa: E402
from prefix_rft.tasks.arithmetic import STEP_OUTCOMES, first_error, problem_of_prompt  # noqa: E402

SPLITS = ("test", "ood")


def outcomes(model, tokenizer, split: str, problems: int, k: int, seed: int) -> dict:
    """Shares (in %) of samples by first mistake, the share correct, and the step of the first mistake."""
    result = evaluate_split(model, tokenizer, split, seed, k, problems, split)
    by_id = {row["id"]: problem_of_prompt(row["prompt"][0]["content"]) for row in eval_rows(split, problems, seed)}
    kinds, steps = collections.Counter(), collections.Counter()
    for sample in result.samples:
        kind, step = first_error(sample["completion"], by_id[sample["id"]])
        kinds[kind] += 1
        if kind != "complete":  # an early stop counts as a mistake at the first step not written
            steps[step] += 1
    n = len(result.samples)
    mistakes = sum(steps.values())
    return {
        "samples": n,
        "correct": round(100 * result.metrics[f"avg@{k}"], 2),
        "outcomes": {kind: round(100 * kinds[kind] / n, 2) for kind in STEP_OUTCOMES},
        "mistake_at_step_1": round(100 * steps[1] / max(1, mistakes), 2),
    }


def plot(results: dict, path: Path) -> None:
    """One stacked bar per (model, split): the shares of first mistakes."""
    labels = ["\n".join([*model.split("/"), split]) for model in results for split in SPLITS]  # paths wrap
    bottom = [0.0] * len(labels)
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 3, 4.5))
    for kind in STEP_OUTCOMES:
        shares = [results[model][split]["outcomes"][kind] for model in results for split in SPLITS]
        ax.bar(labels, shares, bottom=bottom, label=kind)
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    ax.set_ylabel("% of samples")
    ax.set_title("First mistake of each sample (T 0.6, top-p 0.95)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["base", "runs/demo/model"], help="'base' or saved models")
    parser.add_argument("--problems", type=int, default=256, help="problems per split")
    parser.add_argument("--k", type=int, default=4, help="samples per problem")
    parser.add_argument("--seed", type=int, default=0, help="the demo seed whose evaluation problems to use")
    parser.add_argument("--out", default="runs/error_types.json", help="JSON; the PNG goes beside it")
    args = parser.parse_args()

    results = {}
    for name in args.models:
        model, tokenizer = load_model(name)
        results[name] = {
            split: outcomes(model.eval(), tokenizer, split, args.problems, args.k, args.seed) for split in SPLITS
        }
    out = Path(args.out)
    write_report(out, {"settings": vars(args), "results": results})
    plot(results, out.with_suffix(".png"))

    print("| model | split | correct | " + " | ".join(STEP_OUTCOMES) + " | mistakes at step 1 |")
    print("|---" * (len(STEP_OUTCOMES) + 4) + "|")
    for name, by_split in results.items():
        for split, r in by_split.items():
            shares = " | ".join(f"{r['outcomes'][kind]:.1f}" for kind in STEP_OUTCOMES)
            print(f"| {name} | {split} | {r['correct']:.1f} | {shares} | {r['mistake_at_step_1']:.1f} |")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
