"""What every task's problem loader shares, below the tasks and the problems asset: stable problem
ids, reading a JSONL problem file line by line (bad lines named by file and line) or a hub dataset's
splits row by row, and the load report (skipped lines, duplicates, contaminated train problems)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trace_assets.errors import InputError
from trace_assets.settings import HubSource, JsonlSource, SettingsError, resolve_path


class ProblemFileError(InputError):
    """A problem file that is missing, unreadable, or has a line that is not a record of its task's format."""


# A problem record is a few hundred bytes; a line this long is not one (and is not read whole).
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class ContaminationHit:
    """A train question that is the same as, or a near-duplicate of, a test question."""

    train_id: str
    test_id: str
    similarity: float  # Jaccard overlap of the number-masked word n-grams; 1.0 for an exact match


@dataclass
class LoadReport:
    """What loading saw besides the problems: skipped lines, duplicates and contaminated train problems."""

    skipped_lines: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0
    # Train problems (of the whole train pool, before sampling) that equal or nearly duplicate a
    # sampled test question; they were removed from the train split.
    contaminated: list[ContaminationHit] = field(default_factory=list)


def problem_id(question: str, task: str = "gsm8k") -> str:
    """A stable id from the normalised question text, so the same problem has the same id in every run.
    Other tasks than gsm8k (whose ids predate tasks) hash the task's name with it."""
    key = normalise_question(question) if task == "gsm8k" else f"{task}:{normalise_question(question)}"
    return "p_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def normalise_question(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().lower()


def json_object(text: str, keys: str) -> dict:
    """One JSONL line's JSON object; a ValueError saying what is wrong otherwise (``keys``: what the
    object should hold, for the message)."""
    try:
        record = json.loads(text)
    except RecursionError:
        raise ValueError("not a problem record (JSON nested too deeply)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object with {keys}, got a JSON {type(record).__name__}")
    return record


def _lines(handle) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, error) for each line of a binary file; over-long lines are not read whole."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of it
                raw = handle.readline(MAX_LINE_BYTES)
            yield number, None, f"line longer than {MAX_LINE_BYTES:,} bytes; a problem record is one short JSON object"
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as error:
            yield number, None, f"not UTF-8 text (byte {raw[error.start]:#04x} at column {error.start + 1})"


def read_jsonl(
    path: Path,
    split: str,
    skip_bad_lines: bool,
    report: LoadReport,
    parse: Callable[[str, str], dict],
    expected: str,
) -> list[dict]:
    """Parse a JSONL problem file line by line with ``parse`` (a task's record reader); a bad line is an
    error naming file and line, or counted when skipping. ``expected`` describes a record for the error
    about a file without any."""
    if not path.exists():
        raise ProblemFileError(f"{path}: problem file not found")
    rows = []
    try:
        with path.open("rb") as handle:
            for line_number, line, problem in _lines(handle):
                if line is not None and not line.strip():
                    continue
                try:
                    if problem is not None:
                        raise ValueError(problem)
                    assert line is not None, "_lines yields either a line's text or its problem"
                    rows.append(parse(line, split))
                except ValueError as error:
                    message = f"{path}:{line_number}: {error}"
                    if not skip_bad_lines:
                        raise ProblemFileError(message) from None
                    report.skipped_lines.append(message)
    except OSError as error:
        raise ProblemFileError(f"{path}: cannot read the problem file ({error.strerror or error})") from None
    if not rows:
        skipped = f" ({len(report.skipped_lines)} bad lines skipped)" if report.skipped_lines else ""
        raise ProblemFileError(f"{path}: no problems in the file{skipped}; expected one JSON object per line with {expected}")
    return rows


def read_jsonl_splits(
    files: JsonlSource, report: LoadReport, parse: Callable[[str, str], dict], expected: str
) -> dict[str, list[dict]]:
    """The train and test files a task's settings name (``files.train``, ``files.test``,
    ``files.skip_bad_lines``), each read with :func:`read_jsonl`."""
    return {
        split: read_jsonl(resolve_path(getattr(files, split)), split, files.skip_bad_lines, report, parse, expected)
        for split in ("train", "test")
    }


def count_jsonl(files: JsonlSource, key: str, n_train: int | None, parse: Callable[[str, str], dict], expected: str) -> int:
    """Reads every line of a task's train and test files as a run would (:func:`read_jsonl`) and returns
    the train problems a run would sample; a :class:`SettingsError` at ``key.train`` / ``key.test`` otherwise."""
    counts = {}
    for split in ("train", "test"):
        path = resolve_path(getattr(files, split))
        if path.is_dir():
            raise SettingsError(f"{key}.{split}", f"{path} is a folder; expected a JSONL file")
        try:
            rows = read_jsonl(path, split, files.skip_bad_lines, LoadReport(), parse, expected)
        except ProblemFileError as error:
            raise SettingsError(f"{key}.{split}", str(error)) from None
        counts[split] = len({row["problem_id"] for row in rows})
    return counts["train"] if n_train is None else min(n_train, counts["train"])


def read_hub_splits(source: HubSource, report: LoadReport, parse: Callable[[dict, str], dict]) -> dict[str, list[dict]]:
    """The train and test problems of a hub dataset (``source.train_split`` / ``source.test_split`` of
    ``source.dataset`` at ``source.config``), each row read with ``parse`` (a task's record reader, on the
    row as a dict); a bad row is an error naming dataset, split and row, or counted when skipping."""
    from datasets import load_dataset

    name = source.dataset if source.config is None else f"{source.dataset} ({source.config})"
    loaded = load_dataset(source.dataset, source.config)
    splits = {}
    for split, hub_split in (("train", source.train_split), ("test", source.test_split)):
        if hub_split not in loaded:
            raise ProblemFileError(f"{name}: no split '{hub_split}' (it has {sorted(loaded)}); set {split}_split")
        rows = []
        for index, record in enumerate(loaded[hub_split]):
            try:
                rows.append(parse(dict(record), split))
            except ValueError as error:
                message = f"{name}, split '{hub_split}', row {index}: {error}"
                if not source.skip_bad_rows:
                    raise ProblemFileError(message) from None
                report.skipped_lines.append(message)
        if not rows:
            raise ProblemFileError(f"{name}, split '{hub_split}': no problems in the task's format")
        splits[split] = rows
    return splits
