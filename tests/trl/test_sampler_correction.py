"""TRL's vLLM importance-sampling correction on hybrid rows (`prefix_sampler_correction`,
docs/fidelity.md#sampler-correction).

Demo tokens were not sampled: they carry a NaN sampler logprob, so TRL's token ratio is 1 on them and its sequence
ratio is the sampled continuation's. 'continuation' (default) keeps demo tokens at weight 1 in every mode; 'row' is
TRL's own use, where a sequence ratio weights the whole row and a sequence_mask zero drops its demo tokens too.
"""

import math

import pytest
import torch

from tests.helpers import colocate_trainer, fix_forward, generate_batch, loss_inputs, train_loss

from .doubles.vllm_colocate import install_colocate_double

MODES = ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
E_HALF = math.exp(0.5)  # 1.6487


# One row: 2 demo tokens, then 2 sampled ones whose sampler logprobs are -1.0 and -2.0 where the trainer's are -0.5 and
# -1.5 (log-ratios 0.5 and 0.5; demo tokens NaN -> 0). With vllm_importance_sampling_clip_max 2, TRL's weights are
#   token_truncate:    [1, 1, e^0.5, e^0.5] (1.6487 < 2, not clipped)     token_mask: the same (none above 2)
#   sequence_truncate: e^(0.5 + 0.5) = 2.718 -> clipped to [[2]]           sequence_mask: 2.718 > 2 -> [[0]]
# The policy's logps equal the old ones (PPO ratio 1) and every advantage is 1 with every demo token kept, so each
# token's loss is -weight, and Dr. GRPO divides the row's sum by max_completion_length 24.
TRL_WEIGHTS = {
    "token_truncate": [[1.0, 1.0, E_HALF, E_HALF]],
    "token_mask": [[1.0, 1.0, E_HALF, E_HALF]],
    "sequence_truncate": [[2.0]],
    "sequence_mask": [[0.0]],
}
EXPECTED_LOSS = {  # (continuation, row)
    "token_truncate": (-(2 + 2 * E_HALF) / 24, -(2 + 2 * E_HALF) / 24),
    "token_mask": (-(2 + 2 * E_HALF) / 24, -(2 + 2 * E_HALF) / 24),
    "sequence_truncate": (-(1 + 1 + 2 + 2) / 24, -(4 * 2) / 24),
    "sequence_mask": (-(1 + 1) / 24, 0.0),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("correction", ["continuation", "row"])
def test_hand_worked_loss_in_trls_four_modes(tmp_path, monkeypatch, model_dir, tokenizer, mode, correction):
    install_colocate_double(monkeypatch)
    trainer, _ = colocate_trainer(
        tmp_path,
        model_dir,
        tokenizer,
        vllm_importance_sampling_mode=mode,
        vllm_importance_sampling_clip_max=2.0,
        prefix_entropy_selection="all",
        prefix_sampler_correction=correction,
    )
    fix_forward(trainer, [[-0.5, -0.3, -0.5, -1.5]])
    inputs = loss_inputs(
        [[1.0, 1.0, 1.0, 1.0]],
        prefix_mask=[[True, True, False, False]],
        importance_sampling_ratio=TRL_WEIGHTS[mode],
    )
    expected = EXPECTED_LOSS[mode][0 if correction == "continuation" else 1]
    assert train_loss(trainer, inputs) == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_demo_tokens_keep_weight_one_against_a_bf16_sampler(tmp_path, monkeypatch, model_dir, tokenizer, mode):
    # The double samples a bf16 copy of the fp32 policy, so TRL's ratios are not 1. Bounds [0.999, 1.001] make the
    # mask modes drop and the truncate modes clip what differs by more than 0.1%.
    install_colocate_double(monkeypatch, dtype=torch.bfloat16)
    trainer, _ = colocate_trainer(
        tmp_path,
        model_dir,
        tokenizer,
        vllm_importance_sampling_mode=mode,
        vllm_importance_sampling_clip_min=0.999,
        vllm_importance_sampling_clip_max=1.001,
    )
    _, out = generate_batch(trainer)
    mask, prefix = out["completion_mask"].bool(), out["prefix_mask"]
    assert prefix.sum(dim=1).tolist() == [0] * 7 + [19] + [0] * 7 + [19]
    sampled = out["sampling_per_token_logps"]
    assert torch.isnan(sampled[prefix]).all() and not torch.isnan(sampled[mask & ~prefix]).any()
    # TRL's log-ratio per sampled token, recomputed here: bf16 sampling makes it differ from 0.
    log_ratio = torch.nan_to_num((out["old_per_token_logps"] - sampled) * mask, nan=0.0)
    assert log_ratio[mask & ~prefix].abs().max() > 1e-3
    if mode.startswith("sequence"):  # one weight per row, over its sampled continuation only
        sequence = log_ratio.sum(dim=1, keepdim=True).exp()
        expected = (
            sequence.clamp(0.999, 1.001)
            if mode == "sequence_truncate"
            else sequence * ((sequence >= 0.999) & (sequence <= 1.001))
        )
        torch.testing.assert_close(out["importance_sampling_ratio"], expected)
    ratio = out["importance_sampling_ratio"]
    weights = trainer._sampler_ratio(ratio, prefix & mask)
    assert (weights[prefix] == 1).all()  # demo tokens: never weighted, never masked
    continuation = mask & ~prefix
    assert torch.equal(weights[continuation], ratio.expand_as(weights)[continuation])
    if mode == "sequence_mask":  # a masked hybrid keeps its demo tokens; TRL's own use ('row') drops them
        masked_hybrids = [row for row in (7, 15) if ratio[row, 0] == 0]
        assert masked_hybrids
        trainer.args.prefix_sampler_correction = "row"
        row_weights = trainer._sampler_ratio(ratio, prefix & mask)
        assert all((row_weights[row] == 0).all() for row in masked_hybrids)


def test_an_unknown_sampler_correction_is_refused_by_name(tmp_path):
    from tests.helpers import train_args

    with pytest.raises(ValueError, match=r"prefix_sampler_correction='prefix' is not supported; expected one of"):
        train_args(tmp_path, prefix_sampler_correction="prefix")


@pytest.mark.parametrize("vllm", [{}, {"use_vllm": True, "vllm_importance_sampling_correction": False}])
def test_row_correction_without_a_vllm_correction_is_refused(tmp_path, vllm):
    # no vLLM, or vLLM with TRL's correction off: there is no sampler weight for 'row' to apply
    from tests.helpers import train_args

    with pytest.raises(ValueError, match=r"prefix_sampler_correction='row' has no effect: .* use_vllm=True and vllm_"):
        train_args(tmp_path, prefix_sampler_correction="row", **vllm)
