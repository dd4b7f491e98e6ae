"""Server-mode rollout requests at the paper's layout: how many HTTP calls `BudgetedClient` makes, how many are in
flight together, and the wall time when every call costs a fixed latency (the server batches concurrent calls).

    python benchmarks/server_calls.py [--questions 128] [--latency 0.1] [--repeats 3] [--out FILE]

128 questions x 8 rollouts, the last of each group a hybrid whose prefix is a uniform share of a 4096-token demo, so
its budget is M - prefix with M = 8192; the other 7 rows share the prompt and M. The engine is a stand-in client whose
every call sleeps `--latency` seconds and returns 32 tokens per sample (samples that stopped early, so that list
handling does not hide the call pattern); it measures the client's calls, not decoding. `extra_decoded_fraction` is
the bucket cost, an upper bound: max_tokens requested beyond the rows' own budgets, over those budgets (a sample that
stops at EOS before its budget decodes nothing extra). Run it with PYTHONPATH pointing at another checkout to
compare: only `BudgetedClient(client)`, `.budgets` and `.generate` are used.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

from common import provenance, write_report

from prefix_rft.trl import rollouts
from prefix_rft.trl.rollouts import BudgetedClient

MAX_TOKENS, DEMO_TOKENS, GROUP, SAMPLE_TOKENS = 8192, 4096, 8, 32


class LatencyClient:
    """A `VLLMClient` stand-in: each `generate` call takes `latency` seconds, whatever its size."""

    base_url = "http://stand-in"

    def __init__(self, latency: float):
        self.latency, self.lock = latency, threading.Lock()
        self.calls = self.in_flight = self.peak = self.requested = 0

    def _get(self, url: str) -> dict:
        return {"data": [{"id": "stand-in", "max_model_len": 2 * MAX_TOKENS}]}

    def generate(self, prompts: list, n: int = 1, max_tokens: int = 16, **kwargs) -> dict:
        with self.lock:
            self.calls, self.in_flight = self.calls + 1, self.in_flight + 1
            self.peak, self.requested = max(self.peak, self.in_flight), self.requested + len(prompts) * n * max_tokens
        time.sleep(self.latency)
        with self.lock:
            self.in_flight -= 1
        completions = [[0] * min(max_tokens, SAMPLE_TOKENS) for _ in prompts for _ in range(n)]
        return {
            "prompt_ids": list(prompts),
            "completion_ids": completions,
            "logprobs": [[[0.0]] * len(c) for c in completions],
            "logprob_token_ids": [[[0]] * len(c) for c in completions],
        }


def layout(questions: int, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """(prompts, budgets) of one step, process-major as TRL hands them to the client."""
    rng = random.Random(seed)
    prompts, budgets = [], []
    for q in range(questions):
        prompt = [1, 2, q + 3]
        prefix = int(rng.random() * DEMO_TOKENS)
        prompts += [prompt] * (GROUP - 1) + [prompt + [7] * prefix]
        budgets += [MAX_TOKENS] * (GROUP - 1) + [MAX_TOKENS - prefix]
    return prompts, budgets


def run_once(questions: int, latency: float) -> dict:
    prompts, budgets = layout(questions)
    client = LatencyClient(latency)
    wrapper = BudgetedClient(client)
    wrapper.budgets = budgets
    start = time.perf_counter()
    out = wrapper.generate(prompts=prompts, n=1, max_tokens=MAX_TOKENS)
    seconds = time.perf_counter() - start
    assert len(out["completion_ids"]) == len(prompts)
    return {
        "seconds": seconds,
        "calls": client.calls,
        "peak_in_flight": client.peak,
        "requested": client.requested,
        "budgets": sum(budgets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    runs = [run_once(args.questions, args.latency) for _ in range(args.repeats)]
    last = runs[-1]
    report = {
        "client_source": rollouts.__file__,  # which checkout's BudgetedClient was measured
        "questions": args.questions,
        "latency_s": args.latency,
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "seconds": [round(r["seconds"], 3) for r in runs],
        "calls": last["calls"],
        "peak_in_flight": last["peak_in_flight"],
        "max_tokens_requested": last["requested"],
        "row_budgets": last["budgets"],
        "extra_decoded_fraction": (last["requested"] - last["budgets"]) / last["budgets"],
        **provenance(),
    }
    print({k: v for k, v in report.items() if k not in provenance()})
    if args.out:
        write_report(args.out, report)


if __name__ == "__main__":
    main()
