"""How a student sees a problem: one prompt format shared by NLL, SFT and evaluation."""

from __future__ import annotations


def student_prompt(question: str, tokenizer) -> str:
    """The chat template's user turn for instruct students; a plain Question/Answer frame for base models."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question.strip()}], tokenize=False, add_generation_prompt=True
        )
    return f"Question: {question.strip()}\nAnswer: "


def student_completion(completion: str, tokenizer) -> str:
    """The completion as trained: the trace followed by the end-of-sequence token."""
    return completion.strip() + (tokenizer.eos_token or "")
