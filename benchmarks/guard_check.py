"""The non-finite step guard's gradient check: one host read per step against one per parameter (its parent, 04b5a82).

On a GPU every read of a device value on the host (`bool(tensor)`, `.item()`) waits for the device to finish its
queued work; the parent checked each gradient with such a read. This counts the reads of one check of a model's
gradients (all finite, the common case) and times it, alternating the two variants, median over repeats. On this CPU
machine a read waits for nothing, so the times show only the check's own CPU cost; the read count is what a GPU pays.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/guard_check.py --repeats 50 --out docs/benchmarks/guard_check.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import write_report

from prefix_rft.tasks import build_model, build_tokenizer
from prefix_rft.trl.guards import gradients_finite

HOST_READS = ("__bool__", "__float__", "__int__", "item", "tolist")


def per_parameter(model: torch.nn.Module) -> bool:
    """The parent's check (04b5a82 `gradients_finite`): one host read per gradient, stopping at the first bad one."""
    for p in model.parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return False
    return True


def one_read(model: torch.nn.Module) -> bool:
    """The current check as the guard uses it on one process: the combined flag, read once."""
    return bool(gradients_finite(model))


VARIANTS: dict[str, Callable[[torch.nn.Module], bool]] = {"per_parameter": per_parameter, "one_read": one_read}


def host_reads(check: Callable[[torch.nn.Module], bool], model: torch.nn.Module) -> int:
    """How many tensor values one check reads on the host (counted by wrapping the Tensor methods that read one)."""
    count = 0
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(original):
        def read(self, *args, **kwargs):
            nonlocal count
            count += 1
            return original(self, *args, **kwargs)

        return read

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, counting(original))
        check(model)
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", default="3m")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(build_tokenizer(), args.model_size)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):  # alternating, so a drift in the machine's load hits both alike
        for name, check in list(VARIANTS.items())[:: 1 if repeat % 2 else -1]:
            start = time.perf_counter()
            assert check(model)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "model_size": args.model_size,
        "parameters": sum(1 for _ in model.parameters()),
        "repeats": args.repeats,
        "host_reads": {name: host_reads(check, model) for name, check in VARIANTS.items()},
        "median_seconds": medians,
        "ratio_one_read_to_per_parameter": medians["one_read"] / medians["per_parameter"],
    }
    write_report(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
