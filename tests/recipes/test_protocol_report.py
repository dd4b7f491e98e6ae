"""The protocol's tuning table, rendered from selection.json as the protocol writes it, and the export of a
protocol's records into docs/benchmarks (benchmarks/export_protocol.py)."""

import json
import subprocess
import sys
from pathlib import Path

from prefix_rft.recipes.protocol_report import inputs_by_method, tuning_table

ROOT = Path(__file__).parents[2]

SELECTION = {  # two methods as selection.json holds them after a JSON round trip (seeds are strings there)
    "chosen": {
        "prefix_rft": {
            "field": "learning_rate",
            "value": 3e-05,
            "validation": 41.25,
            "per_seed": {"100": 40.0, "101": 42.5},
            "bracketed": True,
            "grid": {"1.5e-05": 38.0, "3e-05": 41.25, "6e-05": 39.5},
            "edge": "",
            "sft_only": False,
        },
        "sft_best_rft": {
            "field": "sft_learning_rate",
            "value": 0.00025,
            "validation": 44.0,
            "per_seed": {"100": 45.0, "101": 43.0},
            "bracketed": False,
            "grid": {"0.000125": 42.0, "0.00025": 44.0, "0.0005": 43.5},
            "edge": "at an edge after every extension",
            "sft_only": True,
            "sft_only_values": [0.000125, 0.00025],
        },
    },
    "verdict": {"prefix_rft": "reference", "sft_best_rft": "final"},
    "sigma": 1.234,
    "threshold": 2.468,
    "finalists_affordable": 6,
    "spent_hours": 11.96,
}


def test_tuning_table_lists_methods_best_first_with_the_chosen_value_in_bold():
    lines = tuning_table(SELECTION, k=4).splitlines()
    assert lines[0].startswith("| method | grid field | validation avg@4 (%) per grid value")
    assert lines[2] == (
        "| sft_best_rft | sft_learning_rate | 0.000125: 42.0 (SFT only), **0.00025: 44.0** (SFT only), 0.0005: 43.5 | "
        "0.00025 (SFT only) | 100: 45.0, 101: 43.0 | at an edge after every extension | final |"
    )
    assert lines[3] == (
        "| prefix_rft | learning_rate | 1.5e-05: 38.0, **3e-05: 41.2**, 6e-05: 39.5 | 3e-05 | 100: 40.0, 101: 42.5 | "
        "bracketed | reference |"
    )
    assert lines[5] == (
        "Spread of paired differences to prefix_rft over the tuning seeds: sigma = 1.23 points; cut 2.47 points "
        "behind the best; the budget pays for 6 finalists; tuning spent 12.0 CPU-hours."
    )


def test_finals_table_reports_each_methods_inputs_as_the_mean_over_its_seeds():
    runs = [
        {"method": "a", "inputs": {"labelled_questions": 528, "demo_tokens_trained": 100}},
        {"method": "a", "inputs": {"labelled_questions": 528, "demo_tokens_trained": 120}},
        {"method": "a", "inputs": {"labelled_questions": 528, "demo_tokens_trained": 131}},
        {"method": "b", "inputs": {"labelled_questions": 400, "demo_tokens_trained": 0}},
        {"method": "c"},  # a v1 record: no inputs
    ]
    # a: (100 + 120 + 131) / 3 = 117
    assert inputs_by_method(runs) == {
        "a": {"labelled_questions": 528, "demo_tokens_trained": 117},
        "b": {"labelled_questions": 400, "demo_tokens_trained": 0},
    }


def export(source: Path, dest: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "export_protocol.py"), str(source), str(dest)]
    return subprocess.run([*cmd, "--plots-prefix", str(dest / "plot")], capture_output=True, text=True, timeout=120)


def test_export_keeps_v2_run_records_thins_their_logs_and_renders_the_tuning_table(tmp_path):
    source = tmp_path / "v2"
    run_dir = source / "tune" / "prefix_rft" / "learning_rate=3e-05"
    (run_dir / "seed100" / "work").mkdir(parents=True)
    (run_dir / "seed100" / "work" / "prefix_rft_run.json").write_text("{}")  # the run's own files stay behind
    history = [{"step": 1, "reward": 0.5, "loss": 0.1, "entropy": 0.9}, {"step": 1, "entropy": 0.8}]
    (run_dir / "seed100.json").write_text(json.dumps({"seed": 100, "log_history": history}))
    (source / "plan.json").write_text(json.dumps({"settings": {"eval_k": 4}}))
    (source / "selection.json").write_text(json.dumps(SELECTION))
    dest = tmp_path / "export"
    assert export(source, dest).returncode == 0
    exported = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.json"))
    assert exported == ["plan.json", "selection.json", "tune/prefix_rft/learning_rate=3e-05/seed100.json"]
    record = json.loads((dest / "tune/prefix_rft/learning_rate=3e-05/seed100.json").read_text())
    assert record == {"seed": 100, "log_history": [{"step": 1, "reward": 0.5, "loss": 0.1}]}
    assert (dest / "tuning.md").read_text().splitlines()[4].startswith("| sft_best_rft | sft_learning_rate | ")


def test_export_of_a_v1_protocol_copies_it_without_a_tuning_table(tmp_path):
    v1 = ROOT / "docs" / "benchmarks" / "protocol"
    dest = tmp_path / "export"
    result = export(v1, dest)
    assert result.returncode == 0, result.stderr
    assert not (dest / "tuning.md").exists()
    assert len(list((dest / "final").rglob("*.json"))) == len(list((v1 / "final").rglob("*.json"))) > 0
