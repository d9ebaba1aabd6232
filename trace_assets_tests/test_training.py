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
