"""Plots for the report, as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import base64
import io

import polars as pl


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    return buffer.getvalue()


def png_markdown(png: bytes, title: str) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def loss_curves_png(log: pl.DataFrame) -> bytes:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    runs = log.sort("step").group_by(["dataset", "student", "seed", "task"], maintain_order=True)
    for (dataset, student, seed, task), group in runs:
        label = f"{dataset}/{student}/s{seed}" + (f"/{task}" if task else "")  # a per-task run names its task
        train = group.filter(pl.col("train_loss").is_not_null())
        evals = group.filter(pl.col("eval_loss").is_not_null())
        line = ax.plot(train["step"], train["train_loss"], label=f"{label} train")[0] if train.height else None
        if evals.height:
            ax.plot(evals["step"], evals["eval_loss"], "--o", color=line.get_color() if line else None, label=f"{label} eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=6)
    return _png(fig)


def accessibility_png(points: pl.DataFrame) -> bytes:
    """Student NLL on a dataset before training vs the accuracy reached after it."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for student, group in points.group_by("student", maintain_order=True):
        ax.scatter(group["nll_before"], group["accuracy"], label=str(student[0] if isinstance(student, tuple) else student))
        for row in group.iter_rows(named=True):
            ax.annotate(row["dataset"], (row["nll_before"], row["accuracy"]), fontsize=6)
    ax.set_xlabel("student NLL per token before training")
    ax.set_ylabel("accuracy after training")
    ax.legend(fontsize=7)
    return _png(fig)


def accuracy_png(accuracy: pl.DataFrame) -> bytes:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['dataset']}\n{r['student']}" for r in accuracy.iter_rows(named=True)]
    values = accuracy["accuracy"].to_list()
    lower = [v - (v if lo is None else lo) for v, lo in zip(values, accuracy["ci_low"].to_list())]
    upper = [(v if hi is None else hi) - v for v, hi in zip(values, accuracy["ci_high"].to_list())]
    ax.bar(range(len(values)), values, yerr=[lower, upper], capsize=3)
    ax.set_xticks(range(len(values)), labels, fontsize=6, rotation=45, ha="right")
    ax.set_ylabel("accuracy (95% CI)")
    return _png(fig)


def accuracy_by_round_png(rounds: pl.DataFrame) -> bytes:
    """Validation (solid) and test (dashed) accuracy by round, one line per chain x dataset x student,
    with 95% intervals. ``rounds``: the loop report's rounds table."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (style, dataset, student), group in rounds.sort("round").group_by(["style", "dataset", "student"], maintain_order=True):
        label = f"{style}/{dataset}/{student}"
        line = None
        for split, dash in (("validation", "-o"), ("test", "--s")):
            values = group[f"{split}_accuracy"].to_list()
            low = [v - (v if lo is None else lo) for v, lo in zip(values, group[f"{split}_ci_low"].to_list())]
            high = [(v if hi is None else hi) - v for v, hi in zip(values, group[f"{split}_ci_high"].to_list())]
            drawn = ax.errorbar(
                group["round"],
                values,
                yerr=[low, high],
                fmt=dash,
                capsize=3,
                label=f"{label} {split}",
                color=line.get_color() if line else None,
            )
            line = line or drawn.lines[0]
    ax.set_xlabel("revision round")
    ax.set_xticks(sorted(set(rounds["round"].to_list())))
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6)
    return _png(fig)
