"""How a student sees a problem: one prompt format shared by NLL, SFT and evaluation."""

from __future__ import annotations


def student_prompt(question: str, tokenizer, shots: list[tuple[str, str]] = ()) -> str:
    """The chat template's user turn for students that have one, a plain Question/Answer frame otherwise.

    ``shots`` are solved (question, solution) pairs shown first, for few-shot evaluation.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = []
        for shot_question, shot_solution in shots:
            messages += [
                {"role": "user", "content": shot_question.strip()},
                {"role": "assistant", "content": shot_solution.strip()},
            ]
        messages.append({"role": "user", "content": question.strip()})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = "".join(f"Question: {q.strip()}\nAnswer: {s.strip()}\n\n" for q, s in shots)
    return f"{prefix}Question: {question.strip()}\nAnswer: "


def student_completion(completion: str, tokenizer) -> str:
    """The completion as trained: the trace followed by the end-of-sequence token."""
    return completion.strip() + (tokenizer.eos_token or "")
