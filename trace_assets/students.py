"""Loading student models and tokenizers (transformers) for NLL, training and token counting."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from trace_assets.experiment import StudentConfig
from trace_assets.models import resolve_model

if TYPE_CHECKING:  # keeps this module importable without Dagster (the GPU benchmark carries no Dagster)
    from trace_assets.resources import DataResource, GPUResource


def student_path(student: StudentConfig, data: DataResource) -> str:
    return resolve_model(student.model, data.models_dir)


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, gpu: GPUResource, dtype: str = "auto", device: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, gpu.resolve_dtype(dtype))
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device or gpu.torch_device()).eval()


@functools.lru_cache(maxsize=8)
def token_counter(path: str):
    """Completion tokens in ``path``'s tokenizer; one counter per path, so callers can cache by counter."""
    tokenizer = load_tokenizer(path)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
