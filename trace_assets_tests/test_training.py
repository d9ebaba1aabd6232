import pytest

from trace_assets.training.sft import curriculum_order, log_rows, split_train_eval


def examples(n):
    return [{"example_id": f"d:p{i}:0", "difficulty": (i * 7) % 5, "prompt": "q", "completion": "c"} for i in range(n)]


def test_held_out_split_is_seeded_and_keeps_training_data():
    train, held = split_train_eval(examples(10), 0.2, seed=1)
    assert len(held) == 2 and len(train) == 8
    assert {e["example_id"] for e in train}.isdisjoint(e["example_id"] for e in held)
    assert split_train_eval(examples(10), 0.2, seed=1) == (train, held)
    assert split_train_eval(examples(10), 0.2, seed=2) != (train, held)
    assert split_train_eval(examples(1), 0.5, seed=0) == (examples(1), [])


def test_curriculum_goes_from_easy_to_hard():
    ordered = curriculum_order(examples(10))
    difficulties = [e["difficulty"] for e in ordered]
    assert difficulties == sorted(difficulties)
    assert curriculum_order(list(reversed(examples(10)))) == ordered


def test_log_rows_from_trainer_history():
    history = [
        {"loss": 2.0, "learning_rate": 1e-5, "num_tokens": 100.0, "step": 1},
        {"eval_loss": 1.9, "step": 1},
        {"train_runtime": 3.0, "step": 2},
    ]
    rows = log_rows(history)
    assert rows == [
        {"step": 1, "train_loss": 2.0, "eval_loss": None, "learning_rate": 1e-5, "tokens_seen": 100},
        {"step": 1, "train_loss": None, "eval_loss": 1.9, "learning_rate": None, "tokens_seen": None},
    ]


@pytest.mark.slow
def test_two_process_sft_under_torchrun(tiny_model, tmp_path):
    """Data-parallel SFT: two ranks (gloo on CPU, NCCL on GPUs), rank 0 saves the checkpoint."""
    from trace_assets.experiment import TrainingConfig
    from trace_assets.training.sft import TrainRun, train_sft_launched

    rows = [
        {"example_id": f"e{i}", "difficulty": 1, "prompt": f"What is {i} + 1?", "completion": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
        for i in range(8)
    ]
    config = TrainingConfig(max_steps=2, batch_size=2, max_length=64, eval_fraction=0.25, processes=2)
    output = tmp_path / "ckpt"
    result = train_sft_launched(
        TrainRun(tiny_model, rows, 0, str(output), "cpu", "float32"), config, env={"OMP_NUM_THREADS": "1"}
    )
    assert result.path == str(output) and (output / "config.json").exists()
    assert result.train_examples == 6 and result.eval_examples == 2 and result.world_size == 2
    assert [r["step"] for r in result.log if r["train_loss"] is not None] == [1, 2]
    assert not output.with_name("ckpt.partial").exists()
    with pytest.raises(RuntimeError, match="SFT with 2 process"):
        train_sft_launched(
            TrainRun(str(tmp_path / "no-such-model"), rows, 0, str(tmp_path / "bad"), "cpu", "float32"), config, env={}
        )
    assert not (tmp_path / "bad").exists()
