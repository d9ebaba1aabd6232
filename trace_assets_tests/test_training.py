import json
import shutil
from pathlib import Path

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
def test_two_process_sft_runs_under_one_torchrun(tiny_model, tmp_path):
    """Data-parallel SFT: two ranks (gloo on CPU, NCCL on GPUs) train the job's runs one after another
    in one launch; rank 0 saves each checkpoint and its record as it ends, so a run that fails keeps
    the runs before it and names the ones that were not saved."""
    from trace_assets.experiment import TrainingConfig
    from trace_assets.training.sft import TrainResult, TrainRun, train_sft_launched

    rows = [
        {"example_id": f"e{i}", "difficulty": 1, "prompt": f"What is {i} + 1?", "completion": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
        for i in range(8)
    ]
    config = TrainingConfig(max_steps=2, batch_size=2, max_length=64, eval_fraction=0.25, processes=2)
    outputs = [tmp_path / "first", tmp_path / "second"]
    records = [str(output / "record.json") for output in outputs]
    runs = [TrainRun(tiny_model, rows, seed, str(output), "cpu", "float32") for seed, output in enumerate(outputs)]
    train_sft_launched(runs, config, env={"OMP_NUM_THREADS": "1"}, records=records)
    results = [TrainResult.read(Path(record)) for record in records]
    for output, result in zip(outputs, results):
        assert result.path == str(output) and (output / "config.json").exists()
        assert result.train_examples == 6 and result.eval_examples == 2 and result.world_size == 2
        assert [r["step"] for r in result.log if r["train_loss"] is not None] == [1, 2]
        assert not output.with_name(output.name + ".partial").exists()
    assert results[0].content_hash != results[1].content_hash  # other seeds: other weights
    bad, after = tmp_path / "bad", tmp_path / "after"
    failing = [runs[0], TrainRun(str(tmp_path / "no-such-model"), rows, 0, str(bad), "cpu", "float32")]
    failing.append(TrainRun(tiny_model, rows, 2, str(after), "cpu", "float32"))
    with pytest.raises(RuntimeError, match=f"SFT with 2 process.*1 of 3 run.*saved for {bad}, {after}"):
        train_sft_launched(failing, config, env={}, records=[records[0], str(bad / "r.json"), str(after / "r.json")])
    assert not bad.exists() and not after.exists() and Path(records[0]).exists()


def _rows(count: int) -> list[dict]:
    return [
        {
            "example_id": f"e{i}",
            "difficulty": 1,
            "prompt": f"Mia has {i} pens and buys {i + 2} more. How many pens?",
            "completion": f"She has {i} pens. {i} + {i + 2} = {2 * i + 2}.\n#### {2 * i + 2}",
        }
        for i in range(count)
    ]


def test_packed_sequences_do_not_attend_across_examples(tiny_model):
    """The padding-free batch TRL builds for packed training (one flattened sequence, position ids
    restarting at each example) gives every example the same per-token loss as running it alone, and
    changing one example's tokens leaves the others' losses unchanged: no attention leaks across."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa").eval()
    texts = [row["prompt"] + " " + row["completion"] for row in _rows(3)]
    examples = [{"input_ids": tokenizer(text)["input_ids"]} for text in texts]
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)

    def token_losses(batch) -> torch.Tensor:
        with torch.no_grad():
            # use_cache=False as in training (TRL sets it): with a KV cache transformers skips the packed-sequence mask
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0, :-1]
        targets = batch["labels"][0, 1:]
        return torch.nn.functional.cross_entropy(logits, targets.clamp(min=0), reduction="none")[targets != -100]

    packed = token_losses(collate(examples))
    alone = torch.cat([token_losses(collate([example])) for example in examples])
    assert packed.shape == alone.shape and packed.numel() == sum(len(e["input_ids"]) - 1 for e in examples)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)

    changed = [examples[0], {"input_ids": list(reversed(examples[1]["input_ids"]))}, examples[2]]
    after = token_losses(collate(changed))
    first, third = len(examples[0]["input_ids"]) - 1, len(examples[2]["input_ids"]) - 1
    torch.testing.assert_close(after[:first], packed[:first], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after[-third:], packed[-third:], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(after[first:-third], packed[first:-third])  # the changed example itself did change


def test_packed_and_unpacked_training_give_the_same_loss(tiny_model, tmp_path):
    """One optimiser step over the same examples, packed into one padding-free row or padded as a
    batch, has the same loss (completion tokens only) and leads to the same second-step loss."""
    from trace_assets.experiment import TrainingConfig
    from trace_assets.generation.types import ModelSpec
    from trace_assets.generation.weight_swap import engine_key
    from trace_assets.training.sft import TrainRun, train_sft

    rows = _rows(6)
    losses = {}
    for packing in (False, True):
        config = TrainingConfig(max_steps=2, batch_size=6, max_length=512, eval_fraction=0.0, packing=packing, learning_rate=1e-3)
        result = train_sft(TrainRun(tiny_model, rows, 0, str(tmp_path / f"packing-{packing}"), "cpu", "float32"), config)
        losses[packing] = [r["train_loss"] for r in result.log if r["train_loss"] is not None]
    assert len(losses[True]) == len(losses[False]) == 2
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
    # what the trainer writes on save (use_cache=false, the tokenizer's load flags...) leaves the saved
    # checkpoints servable by the base model's vLLM engine: their weights are swapped in, no second start
    spec = lambda path: ModelSpec(name=str(path), path=str(path))  # noqa: E731
    assert {engine_key(spec(tmp_path / f"packing-{packing}")) for packing in (False, True)} == {engine_key(spec(tiny_model))}


def test_a_run_record_is_written_whole_and_a_broken_one_means_train_again(tmp_path):
    from trace_assets.training.sft import TrainResult
    from trace_assets.training.step import RUN_RECORD, load_trained, save_result

    result = TrainResult(str(tmp_path), "abc", 8, 2, 640, 3.5, [{"step": 1, "train_loss": 2.0}])
    assert load_trained(tmp_path) is None
    save_result(tmp_path, result)
    assert load_trained(tmp_path) == result
    assert [p.name for p in tmp_path.iterdir()] == [RUN_RECORD]  # no staging file left behind
    (tmp_path / RUN_RECORD).write_text('{"path": "x", "content_hash": "ab')  # cut short by a crash
    assert load_trained(tmp_path) is None
    (tmp_path / RUN_RECORD).write_text('{"path": "x"}')  # fields missing
    assert load_trained(tmp_path) is None


def test_the_same_run_in_two_data_folders_has_the_same_key_and_hash(tmp_path):
    """A training run is identified by what it starts from and learns, not by where the data folder
    is: the same run in another data folder reuses the key, and the same weights hash the same even
    though the trainer's pickled arguments (training_args.bin) name the output folder."""
    from trace_assets.training.sft import directory_hash
    from trace_assets.training.step import base_identity, training_key

    rows = examples(3)
    keys, hashes = set(), set()
    for folder in (tmp_path / "one", tmp_path / "two"):
        base = folder / "models" / "smollm2-135m-instruct"
        keys.add(training_key(base_identity(str(base), folder), rows, "{}", 0))
        model = folder / "checkpoints" / "run"
        model.mkdir(parents=True)
        (model / "model.safetensors").write_bytes(b"weights")
        (model / "training_args.bin").write_bytes(f"output_dir={model}".encode())
        hashes.add(directory_hash(model))
    assert len(keys) == 1 and len(hashes) == 1
    assert base_identity("Qwen/Qwen2.5-0.5B", tmp_path) == "Qwen/Qwen2.5-0.5B"  # hub ids as given
    assert base_identity("/opt/models/mine", tmp_path) == "/opt/models/mine"  # folders outside the data folder too
    (model / "model.safetensors").write_bytes(b"other weights")
    assert directory_hash(model) not in hashes


def test_throughput_counts_only_logged_steps_after_the_warm_up(monkeypatch):
    from types import SimpleNamespace

    from trace_assets.training import sft

    meter = sft.Throughput(warmup=3)
    clock = iter([10.0, 12.0, 16.0])
    monkeypatch.setattr(sft.time, "perf_counter", lambda: next(clock))
    for step, tokens in ((2, 200), (4, 400), (6, 600), (10, 1400)):  # step 2: still warming up
        meter.on_log(None, SimpleNamespace(global_step=step), None, logs={"loss": 1.0, "num_tokens": tokens})
    meter.on_log(None, SimpleNamespace(global_step=11), None, logs={"eval_loss": 1.0})  # not a training log
    monkeypatch.undo()
    assert meter.tokens_per_s() == pytest.approx((1400 - 400) / (16.0 - 10.0))
    assert sft.Throughput().tokens_per_s() is None


def test_the_loss_is_logged_every_logging_steps_and_at_the_end_and_it_is_not_part_of_the_key(tiny_model, tmp_path):
    from trace_assets.experiment import TrainingConfig
    from trace_assets.training.sft import TrainRun, train_sft
    from trace_assets.training.step import checkpoint_key

    config = TrainingConfig(max_steps=5, batch_size=2, max_length=256, eval_fraction=0.0, logging_steps=2)
    result = train_sft(TrainRun(tiny_model, _rows(10), 0, str(tmp_path / "run"), "cpu", "float32"), config)
    # every second step, and the last one: a run shorter than the interval still logs its loss
    assert [r["step"] for r in result.log if r["train_loss"] is not None] == [2, 4, 5]
    every_step = config.model_copy(update={"logging_steps": 1, "gradient_checkpointing": True})
    key = lambda c: checkpoint_key(tiny_model, tmp_path, _rows(10), c, 0)  # noqa: E731
    assert key(config) == key(every_step)
    assert key(config) != key(config.model_copy(update={"learning_rate": 1e-3}))


def test_pooled_training_keeps_the_key_it_had_before_per_task_training_existed(tmp_path):
    """The experiment's per_task switch is not part of the training key, so pooled checkpoints trained
    before it existed are reused: the key below is what the code gave before the switch was added."""
    from trace_assets.experiment import TrainingConfig
    from trace_assets.training.step import checkpoint_key

    rows = [{"example_id": f"e{i}", "prompt": f"q{i}", "completion": f"a{i} #### {i}"} for i in range(3)]
    for config in (TrainingConfig(), TrainingConfig(per_task=True)):
        assert checkpoint_key("Qwen/Qwen2.5-0.5B", tmp_path, rows, config, 0) == "19f80b2a368c"


def test_a_per_task_dataset_trains_one_model_per_task_on_that_tasks_examples_alone(tmp_path, monkeypatch):
    """A per-task dataset: one run per task and seed on that task's examples only (a task without
    examples: skipped_empty), its rows naming the task; a pooled dataset beside it: one run on all, as before."""
    from pathlib import Path

    import polars as pl

    from trace_assets.experiment import StudentConfig, TrainingConfig
    from trace_assets.resources import DataResource, GPUResource
    from trace_assets.training import step
    from trace_assets.training.sft import TrainResult

    problems = pl.DataFrame(
        {
            "problem_id": ["g1", "g2", "c1", "m1"],
            "task": ["gsm8k", "gsm8k", "countdown", "math"],
            "difficulty": [1, 2, 3, 4],
        }
    )
    examples = pl.DataFrame(
        [
            {"dataset": dataset, "student": None, "problem_id": p, "example_id": f"{dataset}:{p}", "prompt": p, "completion": "c"}
            for dataset in ("G", "P")
            for p in ("g1", "g2", "c1")  # no math example
        ]
    )
    seen = []

    launches = []

    def fake_train(gpu, runs, config, log):
        launches.append(len(runs))
        for run in runs:
            Path(run.output_dir).mkdir(parents=True)
            seen.append((run.output_dir, sorted(e["problem_id"] for e in run.examples)))
            result = TrainResult(
                run.output_dir, f"hash{len(seen)}", len(run.examples), 0, 10, 0.1, [{"step": 1, "train_loss": 1.0}]
            )
            step.save_result(Path(run.output_dir), result)

    monkeypatch.setattr(step, "train", fake_train)
    model = tmp_path / "model"
    model.mkdir()
    data = DataResource(data_dir=str(tmp_path / "data"))
    config = TrainingConfig(seeds=[0, 1])
    run = step.train_checkpoints(
        GPUResource(), data, config, {"tiny": StudentConfig(model=str(model))}, examples, problems,
        ["base", "G", "P"], tmp_path / "ckpt", lambda _: None, per_task={"G"},
    )  # fmt: skip
    rows = {(r["dataset"], r["seed"], r["task"]): r for r in run.rows}
    assert sorted(rows) == sorted(
        [("base", s, None) for s in (0, 1)]
        + [("G", s, t) for s in (0, 1) for t in ("countdown", "gsm8k", "math")]
        + [("P", s, None) for s in (0, 1)]
    )
    assert rows[("G", 0, "math")]["status"] == "skipped_empty" and rows[("base", 0, None)]["status"] == "base"
    assert {r["status"] for k, r in rows.items() if k[0] != "base" and k[2] != "math"} == {"trained"}
    trained = dict(seen)
    pooled = step.training_examples(examples, "P", "tiny", problems)
    key = step.checkpoint_key(str(model), data.path, pooled, config, 0)
    # the pooled run: every example, in the folder and under the key it always had
    assert trained[str(tmp_path / "ckpt" / "P" / "tiny" / f"seed0-{key}")] == ["c1", "g1", "g2"]
    # the per-task runs: each task's examples alone, in a folder of its task
    for seed, task, ids in ((0, "gsm8k", ["g1", "g2"]), (1, "countdown", ["c1"])):
        path = Path(rows[("G", seed, task)]["path"])
        assert path.parent == tmp_path / "ckpt" / "G" / "tiny" / task and trained[str(path)] == ids
    assert rows[("G", 0, "countdown")]["train_examples"] == 1 and rows[("G", 0, "gsm8k")]["train_examples"] == 2
    assert {(r["dataset"], r["task"]) for r in run.log} == {("G", "gsm8k"), ("G", "countdown"), ("P", None)}
    assert '"per_task"' not in rows[("P", 0, None)]["config"]  # the row's task says how it was trained
    assert launches == [len(seen)] == [6]  # every run of the step in one launch
    # the step's work seconds (the study's and the loop's checkpoints record them): the six trained runs' own,
    # not the base rows nor the skipped empty ones
    assert run.train_s == pytest.approx(6 * 0.1)


def test_a_checkpoint_trained_from_a_base_without_a_pad_token_is_served_by_the_bases_engine(tiny_model, tmp_path):
    """SmolLM2 converted from its GGUF may have no pad token; training sets it to eos and the trainer
    aligns config.json with it. The saved checkpoint still gets the base's engine files."""
    from trace_assets.experiment import TrainingConfig
    from trace_assets.generation.types import ModelSpec
    from trace_assets.generation.weight_swap import engine_differences, engine_key
    from trace_assets.training.sft import TrainRun, train_sft

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        fields = json.loads((base / name).read_text())
        fields.pop("pad_token_id", None), fields.pop("pad_token", None)
        (base / name).write_text(json.dumps(fields))
    config = TrainingConfig(max_steps=1, batch_size=2, max_length=256, eval_fraction=0.0, packing=True)
    result = train_sft(TrainRun(str(base), _rows(4), 0, str(tmp_path / "trained"), "cpu", "float32"), config)
    spec = lambda path: ModelSpec(name=str(path), path=str(path))  # noqa: E731
    assert engine_differences(spec(result.path), spec(base)) == []
    assert engine_key(spec(result.path)) == engine_key(spec(base))


@pytest.mark.parametrize("packing", [False, True])
def test_the_lean_loss_is_the_models_own_loss_without_full_logits(tiny_model, tmp_path, packing):
    """LeanSFTTrainer's loss from TRL's fused LM head (only the labelled positions projected, in tiles)
    equals the model's own loss over the full logits, and its gradient the same, packed or padded."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer
    from trl import SFTConfig

    from trace_assets.students import load_tokenizer
    from trace_assets.training.format import student_prompt
    from trace_assets.training.sft import lean_trainer_class

    tokenizer = load_tokenizer(tiny_model)
    rows = [{"prompt": student_prompt(r["prompt"], tokenizer), "completion": r["completion"]} for r in _rows(6)]
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=6,
        max_length=256,
        packing=packing,
        completion_only_loss=True,
        use_cpu=True,
        report_to="none",
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trainer = lean_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()

    def loss_and_grad(compute):
        trainer.model.zero_grad()
        loss = compute(trainer, trainer.model, dict(batch))
        loss.backward()
        return float(loss.detach()), trainer.model.get_output_embeddings().weight.grad.clone()

    lean, lean_grad = loss_and_grad(type(trainer).compute_loss)
    full, full_grad = loss_and_grad(Trainer.compute_loss)  # model(**inputs, labels=...): the full logits
    assert lean == pytest.approx(full, rel=1e-5) and 2.0 < lean < 20.0
    torch.testing.assert_close(lean_grad, full_grad, rtol=1e-4, atol=1e-6)
    # predict() and compute_metrics read logits from the outputs, which the fused head never makes
    with torch.no_grad():
        loss, outputs = type(trainer).compute_loss(trainer, trainer.model, dict(batch), return_outputs=True)
    assert float(loss) == pytest.approx(lean, rel=1e-5) and outputs.logits.shape[-1] == trainer.model.config.vocab_size
    # training.fused_lm_head: false takes the model's own loss over the full logits (the same value as the
    # fused head's) and never the fused head: its outputs have the logits and no per-token log-probabilities
    unfused = lean_trainer_class(fused=False)
    plain, plain_grad = loss_and_grad(unfused.compute_loss)
    assert plain == pytest.approx(lean, rel=1e-5)
    torch.testing.assert_close(plain_grad, lean_grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        _, outputs = unfused.compute_loss(trainer, trainer.model, dict(batch), return_outputs=True)
    assert outputs.logits.shape[-1] == trainer.model.config.vocab_size and getattr(outputs, "log_probs", None) is None
