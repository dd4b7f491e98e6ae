"""Non-finite steps are skipped and the run stops after too many; reward failures name the function and row."""

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.guards import NonFiniteStepGuard, require_overflow_check
from tests.helpers import make_dataset, train_args


def model_with_grads(value: float) -> torch.nn.Module:
    model = torch.nn.Linear(2, 1)
    for p in model.parameters():
        p.grad = torch.full_like(p, value)
    return model


def call(guard, model, step=0):
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    state = TrainerState(global_step=step)
    return guard.on_pre_optimizer_step(args, state, TrainerControl(), model=model)


def test_finite_gradients_are_left_alone():
    guard, model = NonFiniteStepGuard(max_consecutive=2), model_with_grads(0.5)
    call(guard, model)
    assert all(p.grad is not None for p in model.parameters())
    assert guard.skipped == 0


def test_nan_gradients_are_dropped_so_the_step_changes_nothing():
    guard, model = NonFiniteStepGuard(max_consecutive=2), model_with_grads(float("nan"))
    before = [p.detach().clone() for p in model.parameters()]
    call(guard, model)
    torch.optim.AdamW(model.parameters(), lr=1.0).step()
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert guard.skipped == 1


def test_run_stops_after_consecutive_non_finite_steps():
    guard = NonFiniteStepGuard(max_consecutive=2)
    call(guard, model_with_grads(float("inf")), step=0)
    with pytest.raises(RuntimeError, match=r"2 consecutive steps had non-finite loss or gradients \(up to step 2\)"):
        call(guard, model_with_grads(float("nan")), step=1)


def test_a_finite_step_resets_the_count():
    guard = NonFiniteStepGuard(max_consecutive=2)
    call(guard, model_with_grads(float("nan")))
    call(guard, model_with_grads(1.0))
    call(guard, model_with_grads(float("nan")))
    assert (guard.skipped, guard.consecutive) == (2, 1)


HOST_READS = ("__bool__", "__float__", "__int__", "item", "tolist")  # each copies a device value to the host


def count_host_reads(monkeypatch) -> list[str]:
    """Record every Python-side read of a tensor's value to the host (on a GPU, each one waits for the device)."""
    reads: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


@pytest.mark.parametrize("bad_layer", [None, 0, 9])
def test_the_check_reads_one_value_per_step_whatever_the_parameter_count(monkeypatch, bad_layer):
    # 10 linear layers: 20 gradients; one verdict read, whether all are finite or the first or last holds a NaN
    model = torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(10)))
    for i, layer in enumerate(model):
        for p in layer.parameters():
            p.grad = torch.full_like(p, float("nan") if i == bad_layer else 0.5)
    guard = NonFiniteStepGuard(max_consecutive=2)
    reads = count_host_reads(monkeypatch)
    call(guard, model)
    monkeypatch.undo()
    assert reads == ["__bool__"]
    assert guard.skipped == (0 if bad_layer is None else 1)


def test_deepspeed_optimizer_without_an_overflow_check_is_refused():
    # ZeRO stage 0 in fp32 hands the steps to the plain torch optimizer, which would apply a NaN step
    with pytest.raises(ValueError, match=r"AdamW \(ZeRO stage 0 in fp32\) would apply a NaN step: use ZeRO stage 1"):
        require_overflow_check(torch.optim.AdamW(torch.nn.Linear(2, 1).parameters()))


class FailsOnAnswer42:
    __name__ = "fails_on_42"

    def __call__(self, completions, answer, **kwargs):
        return [float(int(a) // (int(a) - 42)) for a in answer]


def failing_reward_message(tmp_path, model, tokenizer, dataset) -> tuple[str, int]:
    """(the error of a batch scored by FailsOnAnswer42, the batch position of its first row answering 42)."""
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FailsOnAnswer42()],
        args=train_args(tmp_path),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    first_42 = next(i for i, row in enumerate(batch) if row["answer"] == "42")
    trainer.model.train()
    with pytest.raises(RuntimeError) as error:
        trainer._generate_and_score_completions(batch)
    return str(error.value), first_42


def test_reward_exception_names_function_dataset_row_and_input(tmp_path, model, tokenizer):
    # int(42) // (42 - 42) divides by zero on the rows of the question whose answer is 42: dataset row 1 once the
    # first two rows swap places (the first batch holds rows 0 and 1, so its 42-rows come second)
    swapped = make_dataset().select([1, 0, 2, 3])
    message, first_42 = failing_reward_message(tmp_path, model, tokenizer, swapped)
    assert first_42 != 1
    assert message.startswith(
        f"reward function 'fails_on_42' failed on row 1 of the training dataset (row {first_42} of this rank's batch):"
        " ZeroDivisionError('integer division or modulo by zero'); its input: completion="
    )
    assert message.endswith(", demos=['12+30 is 42. ans: 42'], answer='42'")


def test_reward_exception_names_the_row_by_its_id(tmp_path, model, tokenizer):
    dataset = make_dataset().map(lambda row, i: {"id": f"q{i}"}, with_indices=True)
    message, first_42 = failing_reward_message(tmp_path, model, tokenizer, dataset)
    assert message.startswith(
        f"reward function 'fails_on_42' failed on the dataset row with id 'q0' (row {first_42} of this rank's batch)"
    )


def test_trainer_refuses_bad_dataset_before_training(tmp_path, model, tokenizer):
    dataset = make_dataset().map(lambda row, i: {"answer": "" if i == 2 else row["answer"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"row 2: field 'answer' is missing or empty"):
        PrefixRFTTrainer(
            model=model,
            reward_funcs=[FailsOnAnswer42()],
            args=train_args(tmp_path),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
