"""The benchmarks' student: a Qwen2.5-0.5B-shaped model with random weights built from a config
(no model hub on the GPU machine), and H-recipe examples over synthetic problems."""

from pathlib import Path


def add_student_arguments(parser) -> None:
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--intermediate", type=int, default=4864)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--train-problems", type=int, default=2048)
    parser.add_argument("--test-problems", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)


def build_student_and_data(args, work: Path):
    """Save the student to ``work/student``; return (path, parameters, train examples, test problems)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from trace_assets.problems.synthetic import generate_problems

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    base = work / "student"
    model = Qwen2ForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    del model
    problems = generate_problems(args.train_problems + args.test_problems, seed=0, min_steps=2, max_steps=6)
    train, test = problems[: args.train_problems], problems[args.train_problems :]
    examples = [
        {
            "example_id": f"H:{i}",
            "prompt": p.question,
            "completion": p.solution.replace("<<", "").replace(">>", " "),
            "difficulty": p.steps,
        }
        for i, p in enumerate(train)
    ]
    return str(base), parameters, examples, test
