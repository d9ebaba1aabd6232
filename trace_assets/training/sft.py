"""Supervised fine-tuning of one student on one dataset with TRL's SFTTrainer.

Prompt/completion pairs with completion-only loss: the student learns the trace, not the question.
Heavy imports live inside the functions so the Dagster definitions load without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trace_assets.experiment import TrainingConfig
from trace_assets.training.format import student_prompt


@dataclass(frozen=True)
class TrainRun:
    """One SFT run: the base model it starts from, the examples it sees (dicts with prompt,
    completion, difficulty, example_id), its seed, where it saves, and on what it runs."""

    base_model: str
    examples: list[dict]
    seed: int
    output_dir: str
    device: str = "cpu"
    dtype: str = "auto"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainRun:
        return cls(**json.loads(text))


@dataclass
class TrainResult:
    path: str
    content_hash: str
    train_examples: int
    eval_examples: int
    train_tokens: int
    wall_s: float
    log: list[dict] = field(default_factory=list)
    world_size: int = 1  # data-parallel processes that trained it
    steady_tokens_per_s: float | None = None  # after the warm-up steps (see Throughput); None for very short runs

    def write(self, path: Path) -> None:
        """Atomically: a process killed while writing leaves the old file or none, never half a record."""
        staging = path.with_name(path.name + ".partial")
        staging.write_text(json.dumps(asdict(self)))
        os.replace(staging, path)

    @classmethod
    def read(cls, path: Path) -> TrainResult:
        return cls(**json.loads(path.read_text()))


def split_train_eval(examples: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded held-out slice for eval loss; at least one example stays in training."""
    shuffled = sorted(examples, key=lambda e: e["example_id"])
    random.Random(seed).shuffle(shuffled)
    n_eval = min(len(shuffled) - 1, math.floor(len(shuffled) * eval_fraction)) if len(shuffled) > 1 else 0
    return shuffled[n_eval:], shuffled[:n_eval]


def curriculum_order(examples: list[dict]) -> list[dict]:
    """Easy to hard by difficulty (reasoning steps), ties broken by id so the order is reproducible."""
    return sorted(examples, key=lambda e: (e["difficulty"], e["example_id"]))


# Files a training run leaves in its model folder that say where and how it ran, not what it learnt:
# the trainer's pickled arguments name the output folder, so they differ between data folders.
NOT_HASHED = frozenset({"training_args.bin"})


def directory_hash(folder: Path) -> str:
    """Hash of every weight and config file in a saved model folder (``NOT_HASHED`` aside), so the
    same weights trained in two data folders have the same hash."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in NOT_HASHED):
        digest.update(file.relative_to(folder).as_posix().encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def log_rows(log_history: list[dict]) -> list[dict]:
    """TRL/transformers log history as (step, train_loss, eval_loss, learning_rate, tokens_seen) rows."""
    rows = []
    for entry in log_history:
        if "loss" not in entry and "eval_loss" not in entry:
            continue
        rows.append(
            {
                "step": int(entry.get("step", 0)),
                "train_loss": entry.get("loss"),
                "eval_loss": entry.get("eval_loss"),
                "learning_rate": entry.get("learning_rate"),
                "tokens_seen": int(entry["num_tokens"]) if entry.get("num_tokens") is not None else None,
            }
        )
    return rows


def train_sft(run: TrainRun, config: TrainingConfig) -> TrainResult | None:
    """Fine-tune ``run.base_model`` on ``run.examples`` with ``config``.

    Under torchrun every rank calls this; rank 0 returns the result, the others None.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from trace_assets.generation.weight_swap import keep_base_engine_files
    from trace_assets.students import load_tokenizer

    base_model, seed, output_dir, device, dtype = run.base_model, run.seed, Path(run.output_dir), run.device, run.dtype
    tokenizer = load_tokenizer(base_model)
    train, held_out = split_train_eval(run.examples, config.eval_fraction, seed)
    if config.curriculum:
        train = curriculum_order(train)

    def to_dataset(rows: list[dict]):
        return Dataset.from_list(
            [{"prompt": student_prompt(row["prompt"], tokenizer), "completion": row["completion"].strip()} for row in rows]
        )

    cuda = device.startswith("cuda")
    use_bf16 = cuda and dtype in ("auto", "bfloat16")
    model = AutoModelForCausalLM.from_pretrained(
        base_model, dtype=torch.bfloat16 if use_bf16 else torch.float32, attn_implementation=attention_for(config, cuda)
    )
    staging = output_dir.with_name(output_dir.name + ".partial")
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 owns the files
    if main_process:
        shutil.rmtree(staging, ignore_errors=True)
    args = SFTConfig(
        output_dir=str(staging / "trainer"),
        seed=seed,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        # Packed rows are flattened into one padding-free sequence whose position ids restart at every
        # example; the attention mask is built from them, so no token attends across examples.
        packing=config.packing,
        packing_strategy="bfd",
        # Every flattened batch padded to one length (its rows' full size): a batch of another length
        # recompiled the model (93 s on an H100 in the middle of a 60-step run, bench/gpu.py sft).
        # Best-fit-decreasing rows are ~99% full, so the padding costs ~1%.
        pad_to_multiple_of=config.max_length * config.batch_size if config.packing and cuda else None,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        gradient_checkpointing=config.gradient_checkpointing,  # TRL's default is on
        torch_compile=config.compile and cuda,
        completion_only_loss=True,
        shuffle_dataset=not config.curriculum,
        train_sampling_strategy="sequential" if config.curriculum else "random",
        logging_steps=config.logging_steps or (10 if cuda else 1),
        # True checks every step's loss for NaN on the host, a GPU sync a step (the host can then never
        # queue work ahead); a NaN loss is better seen in the log than averaged away anyway
        logging_nan_inf_filter=False,
        eval_strategy="steps" if held_out else "no",
        eval_steps=max(1, config.max_steps // 4) if config.max_steps > 0 else 0.25,
        save_strategy="no",
        report_to="none",
        bf16=use_bf16,
        use_cpu=device == "cpu",
        disable_tqdm=False,
    )
    throughput = Throughput()
    trainer = lean_trainer_class(config.fused_lm_head)(
        model=model,
        args=args,
        train_dataset=to_dataset(train),
        eval_dataset=to_dataset(held_out) if held_out else None,
        processing_class=tokenizer,
        callbacks=[throughput, LogFinalStep()],
    )
    started = time.perf_counter()
    trainer.train()
    if held_out:
        trainer.evaluate()
    wall = time.perf_counter() - started
    final = staging / "model"
    trainer.save_model(str(final))  # every rank calls it; only the main process writes
    if not main_process:
        return None
    tokenizer.save_pretrained(str(final))
    keep_base_engine_files(base_model, str(final))  # the base's tokens and generation defaults: one engine serves both
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    content_hash = directory_hash(final)
    (final / "trace_assets.json").write_text(json.dumps({"base_model": base_model, "seed": seed, "hash": content_hash}))
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    final.rename(output_dir)
    shutil.rmtree(staging, ignore_errors=True)
    rows = log_rows(trainer.state.log_history)
    tokens = max((r["tokens_seen"] or 0 for r in rows), default=0)
    return TrainResult(
        str(output_dir), content_hash, len(train), len(held_out), tokens, wall, rows, args.world_size, throughput.tokens_per_s()
    )


def lean_trainer_class(fused: bool = True):
    """TRL's SFTTrainer with its loss and none of its per-step metrics.

    The loss is TRL's own: the mean NLL of the completion tokens, with ``fused`` from TRL's fused LM head
    (``fused_lm_head=True``), which projects only the labelled positions through the LM head, in tiles,
    so the (tokens x vocabulary) float32 logits are never materialised; without, the model's own loss over
    the full logits (``training.fused_lm_head: false``). What it leaves out is the
    entropy and top-1 accuracy TRL logs, and the three host syncs a step they cost (bench/gpu.py sft:
    0.77 of a bare loop's tokens/s with them on an H200). Tokens seen are still counted for the
    training log."""
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    class LeanSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self._total_train_tokens += _batch_tokens(inputs) // self._tp_size
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            if not fused:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)
            tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as TRL's: DDP averages
            if not return_outputs:
                return loss
            # prediction_step (predict(), compute_metrics) reads the logits, which the fused head never makes
            with torch.no_grad():
                full = model(**{key: value for key, value in inputs.items() if key != "labels"}, use_cache=False)
            return loss, full

    return LeanSFTTrainer


def _batch_tokens(inputs: dict) -> int:
    """Tokens of a batch as TRL counts them (padding-free: the flattened length), without a sync."""
    if "attention_mask" in inputs:
        return int(inputs["attention_mask"].sum())
    return int(inputs["position_ids"].size(1))


def attention_for(config: TrainingConfig, cuda: bool) -> str:
    """The attention kernel: FlexAttention's document masks for packed rows on a GPU (flash-attn has
    no wheel for our GPU machines), PyTorch's SDPA otherwise. Both honour the packed position ids."""
    if config.attention != "auto":
        return config.attention
    return "flex_attention" if cuda and config.packing else "sdpa"


class _Callback:
    """A trainer callback without importing transformers here: events it doesn't define do nothing."""

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


class Throughput(_Callback):
    """A trainer callback: training tokens/s once the first ``warmup`` optimizer steps (compilation,
    allocator growth) are over, from the tokens the trainer counts at each logged step."""

    def __init__(self, warmup: int = 3):
        self.warmup = warmup
        self.marks: list[tuple[float, int]] = []  # (time, tokens seen) at logged steps after the warm-up

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if logs and "num_tokens" in logs and "loss" in logs and state.global_step >= self.warmup:
            _synchronize()  # a logged step has synchronised for its loss already: this costs nothing more
            self.marks.append((time.perf_counter(), int(logs["num_tokens"])))

    def tokens_per_s(self) -> float | None:
        if len(self.marks) < 2:
            return None
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None


class LogFinalStep(_Callback):
    """Log the last step's loss too, so a run shorter than ``logging_steps`` still has a loss."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
        return control


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def train_sft_launched(runs: list[TrainRun], config: TrainingConfig, env: dict[str, str], records: list[str]) -> None:
    """:func:`train_sft` for each of ``runs`` in turn, in ``config.processes`` data-parallel processes
    started once by torchrun; rank 0 writes each run's result to its entry of ``records`` as it ends.

    ``env`` carries the claimed cards (CUDA_VISIBLE_DEVICES), which is also why a single-GPU run
    goes through here: a process can't pick its card after CUDA has started. On CPU the ranks
    talk over gloo. TRL's progress bar (rank 0) streams to the step's log. Raises when a run wrote
    no record; the runs before it are saved.
    """
    with tempfile.TemporaryDirectory(prefix="trace_assets_sft_") as folder:
        job = Path(folder) / "job.json"
        job.write_text(
            json.dumps({"runs": [run.to_json() for run in runs], "config": config.model_dump_json(), "records": records})
        )
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={config.processes}",
            "-m",
            "trace_assets.training.launch",
            str(job),
        ]
        completed = subprocess.run(command, env={**os.environ, **env}, stdout=sys.stderr)
    missing = [run.output_dir for run, record in zip(runs, records) if not Path(record).exists()]
    if completed.returncode != 0 or missing:
        raise RuntimeError(
            f"SFT with {config.processes} process(es) failed (torchrun exit {completed.returncode}); its log is "
            f"above. {len(runs) - len(missing)} of {len(runs)} run(s) finished and were saved; nothing was saved "
            f"for {', '.join(missing)}."
        )


def train_one_launched(run: TrainRun, config: TrainingConfig, env: dict[str, str]) -> TrainResult:
    """One run through :func:`train_sft_launched` (the benchmarks time a single launched run)."""
    with tempfile.TemporaryDirectory(prefix="trace_assets_sft_record_") as folder:
        record = Path(folder) / "result.json"
        train_sft_launched([run], config, env, [str(record)])
        return TrainResult.read(record)
