"""Per-dataset statistics: pure text measures and the student's NLL before training."""

from __future__ import annotations

import gzip
import math
import re

_TEMPLATE_LINE = re.compile(r"^\s*(#{1,6}\s|[-*•]\s|\d+[.)]\s|\**[A-Za-z][A-Za-z0-9 ]{0,24}\**\s*:)")


def gzip_ratio(texts: list[str]) -> float:
    """Compressed size / raw size of the concatenated texts: lower means more repetitive, templated text."""
    raw = "\n\n".join(texts).encode()
    return len(gzip.compress(raw, compresslevel=9)) / len(raw) if raw else math.nan


def template_line_share(texts: list[str]) -> float:
    """Share of non-empty lines that start with a label, list marker or heading."""
    lines = [line for text in texts for line in text.splitlines() if line.strip()]
    if not lines:
        return math.nan
    return sum(1 for line in lines if _TEMPLATE_LINE.match(line)) / len(lines)


def mean_completion_nll(
    model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 8, max_length: int = 1024
) -> float:
    """Mean per-token negative log-likelihood of the completions given the prompts (completion tokens only)."""
    import torch

    total_nll, total_tokens = 0.0, 0
    device = next(model.parameters()).device
    for offset in range(0, len(prompts), batch_size):
        batch_ids, batch_labels = [], []
        for prompt, completion in zip(prompts[offset : offset + batch_size], completions[offset : offset + batch_size]):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
            ids = (prompt_ids + completion_ids)[:max_length]
            labels = ([-100] * len(prompt_ids) + completion_ids)[:max_length]
            batch_ids.append(ids)
            batch_labels.append(labels)
        width = max(len(ids) for ids in batch_ids)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch_ids], device=device)
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch_ids], device=device)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for lab in batch_labels], device=device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        targets = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nll += float(losses)
        total_tokens += int((targets != -100).sum())
    return total_nll / total_tokens if total_tokens else math.nan
