import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest

from trace_assets.experiment import PROJECT_ROOT, load_experiment

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DAGSTER_CLI = str(Path(sys.executable).parent / "dagster")  # the venv's, for tests that run it as users do


def project_env(experiment, data, home) -> dict[str, str]:
    """The environment a `dagster` command of this project runs with: experiment, data folder, instance."""
    return {
        **os.environ,
        "TRACE_ASSETS_EXPERIMENT": str(experiment),
        "TRACE_ASSETS_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
    }


@pytest.fixture
def smoke_experiment():
    return load_experiment(PROJECT_ROOT / "experiments" / "smoke.yaml")


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tiny_model(folder, chat_template: bool = True):
    """A random-weight Llama (a few hundred KB) with a byte-level BPE tokenizer trained here, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from trace_assets.problems.synthetic import generate_problems

    corpus = [p.question + "\n" + p.solution for p in generate_problems(200, 0, 1, 4)]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>", bos_token="<|endoftext|>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        # head_dim 64: vLLM's CPU attention kernels reject smaller heads
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


def write_experiment(folder, model: str, styles=("normal", "titanium"), extra: str = "") -> Path:
    """A small experiment over a private copy of the shipped styles, every model the given one."""
    styles_dir = Path(folder) / "styles"
    if not styles_dir.exists():
        shutil.copytree(PROJECT_ROOT / "styles", styles_dir)
    text = f"""
name: test
seed: 0
problems: {{source: synthetic, n_train: 4, n_test: 3, synthetic: {{min_steps: 1, max_steps: 2}}}}
styles_dir: {styles_dir}
styles: [{", ".join(styles)}]
teacher: {{model: {model}, sampling: {{temperature: 0.7, max_tokens: 24, n: 2}}}}
judge: {{model: {model}, sampling: {{temperature: 0.0, max_tokens: 32}}}}
students: {{tiny: {{model: {model}}}}}
datasets:
  G_normal: {{recipe: G, style: normal}}
  W_normal: {{recipe: W, style: normal}}
  H: {{recipe: H}}
  H_to_normal: {{recipe: H_style, style: normal}}
  mix_normal: {{recipe: mixture, style: normal, flawed_fraction: 0.5, flaw: both}}
training: {{max_steps: 2, batch_size: 2, max_length: 256, eval_fraction: 0.25, curriculum: true}}
evaluation: {{max_tokens: 16}}
{extra}
"""
    path = Path(folder) / "experiment.yaml"
    path.write_text(text)
    return path
