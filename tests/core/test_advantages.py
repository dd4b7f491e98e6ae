import pytest
import torch

from prefix_rft.core.advantages import (
    dr_grpo_advantages,
    hybrid_advantages,
    per_token_advantages,
    reward_std_divisor,
)

# spec §3.7 worked example: on-policy rewards [1,0,0,1,0,0,0], baseline 2/7
ON_POLICY = [1.0, 0, 0, 1, 0, 0, 0]
HYBRID_LAST = torch.arange(8) == 7


def test_dr_grpo_subtracts_group_mean_without_std():
    # group mean 0.25 -> [0.75, -0.25, -0.25, -0.25]; second group all equal -> zeros
    adv = dr_grpo_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1]), group_size=4)
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])


def test_reference_on_policy_baseline_excludes_hybrid():
    # baseline 2/7 (3/8 if the hybrid leaked in): on-policy rows get 1 - 2/7 = 5/7 and -2/7
    cont, prefix = hybrid_advantages(torch.tensor([*ON_POLICY, 1.0]), HYBRID_LAST, 8)
    assert cont[0].item() == pytest.approx(5 / 7)
    assert cont[1].item() == pytest.approx(-2 / 7)
    assert prefix[0].item() == pytest.approx(5 / 7)  # on-policy rows have no prefix; both values equal


def test_reference_correct_hybrid_prefix_and_continuation():
    # r_p = 1: prefix gets 1 - 2/7 = 5/7 (0.714); continuation gets the raw reward 1.0 (singleton mean 0)
    cont, prefix = hybrid_advantages(torch.tensor([*ON_POLICY, 1.0]), HYBRID_LAST, 8)
    assert prefix[7].item() == pytest.approx(5 / 7)
    assert cont[7].item() == pytest.approx(1.0)


def test_reference_wrong_hybrid_prefix_and_continuation():
    # r_p = 0: prefix gets -2/7 (-0.286); continuation gets 0
    cont, prefix = hybrid_advantages(torch.tensor([*ON_POLICY, 0.0]), HYBRID_LAST, 8)
    assert prefix[7].item() == pytest.approx(-2 / 7)
    assert cont[7].item() == 0.0


def test_reference_two_hybrids_each_use_raw_reward():
    # G=4, rows 2 and 3 hybrid, on-policy [1, 0] -> baseline 0.5. Hybrid rewards 1 and 0:
    # prefix 0.5 and -0.5 (the n>1 defect would centre them first and give -0.5 for both); continuation 1 and 0
    cont, prefix = hybrid_advantages(torch.tensor([1.0, 0, 1, 0]), torch.tensor([False, False, True, True]), 4)
    assert prefix[2:].tolist() == pytest.approx([0.5, -0.5])
    assert cont[2:].tolist() == pytest.approx([1.0, 0.0])


def test_reference_single_on_policy_row_has_zero_baseline():
    # reference rule: groups with fewer than two members have mean 0 -> on-policy row keeps its raw reward 1
    cont, prefix = hybrid_advantages(torch.tensor([1.0, 1.0]), torch.tensor([False, True]), 2)
    assert cont.tolist() == pytest.approx([1.0, 1.0])
    assert prefix[1].item() == pytest.approx(1.0)


def test_paper_mode_shares_one_advantage_over_all_eight():
    # mean of all 8 rewards [1,0,0,1,0,0,0,1] = 3/8: hybrid gets 5/8 on prefix and continuation alike
    cont, prefix = hybrid_advantages(torch.tensor([*ON_POLICY, 1.0]), HYBRID_LAST, 8, mode="paper")
    assert cont[7].item() == pytest.approx(5 / 8)
    assert prefix[7].item() == pytest.approx(5 / 8)
    assert cont[1].item() == pytest.approx(-3 / 8)


@pytest.mark.parametrize("mode", ["reference", "paper"])
def test_both_modes_reduce_to_dr_grpo_without_hybrids(mode):
    # no hybrid: mean 0.5 of [1, 0, 1, 0] -> [0.5, -0.5, 0.5, -0.5]
    cont, prefix = hybrid_advantages(torch.tensor([1.0, 0, 1, 0]), torch.zeros(4, dtype=torch.bool), 4, mode=mode)
    assert cont.tolist() == pytest.approx([0.5, -0.5, 0.5, -0.5])
    assert prefix.tolist() == pytest.approx([0.5, -0.5, 0.5, -0.5])


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown advantage mode"):
        hybrid_advantages(torch.tensor([1.0, 0]), torch.tensor([False, True]), 2, mode="v2")


def test_per_token_advantages_put_prefix_value_on_prefix_tokens():
    mask = torch.tensor([[True, True, False], [False, False, False]])
    adv = per_token_advantages(torch.tensor([1.0, -0.5]), torch.tensor([0.25, -0.5]), mask)
    assert adv.tolist() == [[0.25, 0.25, 1.0], [-0.5, -0.5, -0.5]]


def test_group_scaling_divides_by_each_groups_std():
    # group [1,0,0,1]: mean 1/2, Bessel variance 4 * 1/4 / 3 = 1/3, std 0.57735 (+1e-4);
    # group [1,1,1,1]: std 0 -> 1e-4 (TRL's epsilon; its advantages are 0 anyway)
    divisor = reward_std_divisor(torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1]), group_size=4, scale_rewards="group")
    assert divisor.tolist() == pytest.approx([0.57735 + 1e-4] * 4 + [1e-4] * 4, abs=1e-5)


def test_batch_scaling_divides_by_the_std_of_all_rewards():
    # all 8: mean 6/8; squared deviations 6 * 1/16 + 2 * 9/16 = 1.5; / 7 = 0.2142857; std 0.46291 (+1e-4)
    divisor = reward_std_divisor(torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1]), group_size=4, scale_rewards="batch")
    assert divisor.tolist() == pytest.approx([0.46291 + 1e-4] * 8, abs=1e-5)


def test_no_scaling_divides_by_one():
    assert reward_std_divisor(torch.tensor([1.0, 0, 0, 1]), group_size=4, scale_rewards="none").tolist() == [1.0] * 4


def test_group_with_one_scored_reward_is_not_scaled():
    # NaN = unscored row: one scored reward has no std, so the group keeps divisor 1
    divisor = reward_std_divisor(torch.tensor([1.0, float("nan"), float("nan"), float("nan")]), 4, "group")
    assert divisor.tolist() == [1.0] * 4


# NaN = an unscored row (every reward function returned None). TRL's contract: advantage 0, left out of the baseline.
NAN = float("nan")


def test_unscored_row_gets_zero_and_leaves_the_dr_grpo_mean():
    # group [1, 0, NaN, 1]: mean over the 3 scored = 2/3 -> [1/3, -2/3, 0, 1/3] (nansum would give mean 2/4)
    adv = dr_grpo_advantages(torch.tensor([1.0, 0, NAN, 1]), group_size=4)
    assert adv.tolist() == pytest.approx([1 / 3, -2 / 3, 0.0, 1 / 3])


def test_unscored_on_policy_row_leaves_the_on_policy_baseline():
    # reference mode, hybrid last: scored on-policy rewards {1, 0} -> baseline 1/2 (1/3 if the NaN counted as 0)
    # on-policy: 1 - 1/2, 0 (unscored), 0 - 1/2; hybrid: continuation r = 1, prefix r - baseline = 1/2
    rewards, is_hybrid = torch.tensor([1.0, NAN, 0, 1]), torch.tensor([False, False, False, True])
    cont, prefix = hybrid_advantages(rewards, is_hybrid, group_size=4)
    assert cont.tolist() == pytest.approx([0.5, 0.0, -0.5, 1.0])
    assert prefix.tolist() == pytest.approx([0.5, 0.0, -0.5, 0.5])


def test_unscored_hybrid_row_gets_zero_on_both_parts():
    # on-policy {1, 0, 0}: baseline 1/3; the unscored hybrid trains neither its prefix nor its continuation
    rewards, is_hybrid = torch.tensor([1.0, 0, 0, NAN]), torch.tensor([False, False, False, True])
    cont, prefix = hybrid_advantages(rewards, is_hybrid, group_size=4)
    assert cont.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.0])
    assert prefix.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.0])


def test_unscored_row_in_paper_mode():
    # Eq. 3 over the scored rows {1, 0, 1}: mean 2/3 -> [1/3, 0, -2/3, 1/3] for prefix and continuation alike
    rewards, is_hybrid = torch.tensor([1.0, NAN, 0, 1]), torch.tensor([False, False, False, True])
    cont, prefix = hybrid_advantages(rewards, is_hybrid, group_size=4, mode="paper")
    assert cont.tolist() == prefix.tolist() == pytest.approx([1 / 3, 0.0, -2 / 3, 1 / 3])


def test_group_with_no_scored_row_has_zero_advantages():
    adv = dr_grpo_advantages(torch.tensor([NAN, NAN, 1.0, 0]), group_size=2)
    assert adv.tolist() == [0.0, 0.0, 0.5, -0.5]
