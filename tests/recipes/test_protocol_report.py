"""The protocol's tuning table, rendered from selection.json as the protocol writes it."""

from prefix_rft.recipes.protocol_report import tuning_table

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
        "| sft_best_rft | sft_learning_rate | 0.000125: 42.0, **0.00025: 44.0**, 0.0005: 43.5 | 0.00025 (SFT only) | "
        "100: 45.0, 101: 43.0 | at an edge after every extension | final |"
    )
    assert lines[3] == (
        "| prefix_rft | learning_rate | 1.5e-05: 38.0, **3e-05: 41.2**, 6e-05: 39.5 | 3e-05 | 100: 40.0, 101: 42.5 | "
        "bracketed | reference |"
    )
    assert lines[5] == (
        "Spread of paired differences to prefix_rft over the tuning seeds: sigma = 1.23 points; cut 2.47 points "
        "behind the best; the budget pays for 6 finalists; tuning spent 12.0 CPU-hours."
    )
