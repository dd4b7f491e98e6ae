"""benchmarks/decode_savings.py run as a script for one step: it matches every row to the `generate` call that decoded
it, whether a hybrid's prefix sat in the prompt or was forced in the call it shares with the on-policy rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_savings.py"


@pytest.mark.slow  # two 1-step runs of the shipped base: about 10 s
def test_one_step_accounts_each_hybrid_row_of_the_shared_forced_call(tmp_path):
    out = tmp_path / "decode_savings.json"
    argv = ["--steps", "1", "--prompts", "2", "--max-completion", "128", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (step,) = json.loads(out.read_text())["with_hybrid"]
    # 2 questions x 8 rollouts, the last of each group hybrid; at step 0 the prefixes are long (ratio >= 0.95), so
    # the cost model puts them in the on-policy rows' call, forced. A hybrid decodes only its continuation, all kept
    # (prefix + continuation fit the budget); the call runs as many steps as its longest row, forced prefix included,
    # so at least a hybrid's prefix + continuation, and at least their means.
    assert (step["hybrid_rows"], step["generate_calls"]) == (2, 1)
    assert step["discarded_total"] == 0 and step["hybrid_decoded_mean"] == step["hybrid_kept_mean"]
    assert step["batch_decode_iterations"] >= step["hybrid_prefix_tokens_mean"] + step["hybrid_decoded_mean"]
