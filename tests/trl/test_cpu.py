"""`cpu_trainer_kwargs` (trl/cpu.py): the settings of a short fp32 CPU run, accepted as they are by the config."""

from prefix_rft import PrefixRFTConfig
from prefix_rft.trl.cpu import cpu_trainer_kwargs


def test_cpu_run_settings_reach_the_config(tmp_path):
    args = PrefixRFTConfig(**cpu_trainer_kwargs(tmp_path / "out", seed=3, max_steps=2))
    assert (args.output_dir, args.max_steps, args.seed, args.prefix_seed) == (str(tmp_path / "out"), 2, 3, 3)
    assert (args.use_cpu, args.bf16, args.gradient_checkpointing) == (True, False, False)
    assert (args.save_strategy, args.report_to, args.logging_steps) == ("no", [], 1)
