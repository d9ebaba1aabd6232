"""Every bad input a clear error: experiment files, style files and JSONL problem files.

- A table of malformed experiments, each run through ``python -m trace_assets.cli dry-run`` as a
  user would: exit status 2, one message on stderr naming the file and the key (and the named
  file and line), no traceback; and through ``dagster definitions validate`` for a few.
- Property-based tests (hypothesis): random and mutated YAML and JSONL thrown at the loaders; only
  the project's own error types (:class:`trace_assets.errors.InputError`) may come out.
"""

from __future__ import annotations

import copy
import json
import os
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trace_assets.cli import dry_run
from trace_assets.errors import InputError
from trace_assets.experiment import PROJECT_ROOT, Experiment, ExperimentError, load_experiment
from trace_assets.inputs import check_inputs
from trace_assets.problems.sources import MAX_LINE_BYTES, LoadReport, ProblemFileError, read_jsonl
from trace_assets.styles.library import StyleError, load_style
from trace_assets_tests.conftest import DAGSTER_CLI

STYLES = PROJECT_ROOT / "styles"
MODEL = "local:smollm2-135m-instruct"
GOOD_RECORD = {
    "question": "Ava has 3 apples and finds 4 more. How many apples does she have?",
    "answer": "3+4=<<3+4=7>>7\n#### 7",
}
OTHER_RECORD = {"question": "Ben has 9 cards and gives 2 away. How many are left?", "answer": "9-2=7\n#### 7"}


def base_experiment(folder: Path) -> dict:
    """A small valid experiment (synthetic problems, the shipped styles)."""
    return {
        "name": "bad_inputs",
        "problems": {"source": "synthetic", "n_train": 6, "n_test": 3, "synthetic": {"min_steps": 1, "max_steps": 2}},
        "styles_dir": str(STYLES),
        "styles": ["normal", "diamond"],
        "teacher": {"model": MODEL},
        "judge": {"model": MODEL},
        "students": {"s": {"model": MODEL}},
        "datasets": {"G_normal": {"recipe": "G", "style": "normal"}, "H": {"recipe": "H"}},
        "evaluation": {"few_shot_k": 2},
    }


def jsonl_experiment(folder: Path, train_lines: list[str] | None = None) -> dict:
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    lines = train_lines if train_lines is not None else [json.dumps(GOOD_RECORD), json.dumps(OTHER_RECORD)]
    train.write_text("".join(line + "\n" for line in lines))
    test.write_text(json.dumps({"question": "Q test?", "answer": "1+1=2\n#### 2"}) + "\n")
    data = base_experiment(folder)
    data["problems"] = {"source": "jsonl", "n_train": None, "n_test": None, "jsonl": {"train": str(train), "test": str(test)}}
    return data


def style_folder(folder: Path, edit) -> str:
    """A copy of the shipped styles with normal.yaml edited (``edit`` gets and returns its dict)."""
    styles = folder / "styles"
    styles.mkdir(exist_ok=True)
    for path in STYLES.glob("*.yaml"):
        (styles / path.name).write_text(path.read_text())
    spec = yaml.safe_load((styles / "normal.yaml").read_text())
    (styles / "normal.yaml").write_text(yaml.safe_dump(edit(spec), sort_keys=False))
    return str(styles)


def _set(path: str, value):
    """A mutation setting the dotted key ``path`` (creating sections on the way)."""

    def mutate(data, folder):
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        return data

    return mutate


def _delete(path: str):
    def mutate(data, folder):
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]
        return data

    return mutate


def _text(text: str | bytes):
    return lambda data, folder: text


def _with_style(edit):
    def mutate(data, folder):
        data["styles_dir"] = style_folder(folder, edit)
        return data

    return mutate


def _jsonl(lines: list[str] | None = None, raw: bytes | None = None):
    def mutate(data, folder):
        data = jsonl_experiment(folder, lines)
        if raw is not None:
            (folder / "train.jsonl").write_bytes(raw)
        return data

    return mutate


def _missing_train_file(data, folder):
    data = jsonl_experiment(folder)
    data["problems"]["jsonl"]["train"] = str(folder / "nope" / "train.jsonl")
    return data


def _drop(spec, key):
    spec.pop(key)
    return spec


def _empty_instruction(spec):
    spec["instruction"] = "   \n"
    return spec


def _example_breaks_checks(spec):
    spec["example"]["solution"] = "The answer is 43."
    return spec


# (id, mutation of the base experiment, strings stderr must contain)
CASES = [
    ("unknown-key", _set("trainig", {"epochs": 1}), ["unknown key 'trainig'"]),
    ("unknown-nested-key", _set("training.seed", [0]), ["unknown key 'training.seed'"]),
    ("wrong-type", _set("problems.n_train", "many"), ["problems.n_train", "valid integer", "'many'"]),
    ("list-for-mapping", _set("students", ["a", "b"]), ["key 'students'", "dictionary"]),
    ("missing-section", _delete("teacher"), ["missing required key 'teacher'"]),
    ("no-students", _set("students", {}), ["key 'students'", "at least 1"]),
    ("no-seeds", _set("training.seeds", []), ["key 'training.seeds'", "at least 1"]),
    ("repeated-seeds", _set("training.seeds", [0, 0]), ["key 'training.seeds'", "distinct"]),
    ("max-steps-zero", _set("training.max_steps", 0), ["training.max_steps", "train nothing"]),
    ("nan", _set("teacher.sampling", {"temperature": float("nan")}), ["teacher.sampling.temperature", "finite"]),
    ("empty-name", _set("name", ""), ["key 'name'"]),
    ("missing-style-file", _set("styles", ["normal", "nosuch"]), ["key 'styles[1]'", "nosuch.yaml", "style file not found"]),
    ("missing-styles-dir", _set("styles_dir", "/nonexistent/styles"), ["key 'styles_dir'", "/nonexistent/styles"]),
    ("style-missing-section", _with_style(lambda spec: _drop(spec, "rubric")), ["normal.yaml", "missing section 'rubric'"]),
    ("style-empty-text", _with_style(_empty_instruction), ["normal.yaml", "instruction", "empty"]),
    ("style-example-fails-checks", _with_style(_example_breaks_checks), ["normal.yaml", "answer_line"]),
    ("jsonl-source-without-files", _set("problems.source", "jsonl"), ["problems", "needs a 'jsonl' section"]),
    ("jsonl-file-missing", _missing_train_file, ["key 'problems.jsonl.train'", "nope/train.jsonl", "not found"]),
    (
        "jsonl-broken-line",
        _jsonl([json.dumps(GOOD_RECORD), "{oops"]),
        ["problems.jsonl.train", "train.jsonl:2:", "not valid JSON"],
    ),
    ("jsonl-no-hashes", _jsonl([json.dumps({"question": "Q?", "answer": "It is 4."})]), ["train.jsonl:1:", "'#### <number>'"]),
    (
        "jsonl-non-numeric",
        _jsonl([json.dumps({"question": "Q?", "answer": "#### four"})]),
        ["train.jsonl:1:", "'#### four' is not a number"],
    ),
    ("jsonl-missing-answer", _jsonl([json.dumps({"question": "Q?"})]), ["train.jsonl:1:", "'answer'"]),
    ("jsonl-empty", _jsonl([]), ["train.jsonl", "no problems"]),
    (
        "jsonl-not-utf8",
        _jsonl(raw=json.dumps(GOOD_RECORD).encode() + b'\n{"question": "caf\xe9"}\n'),
        ["train.jsonl:2:", "UTF-8"],
    ),
    (
        "jsonl-long-line",
        _jsonl(raw=b'{"question": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'),
        ["train.jsonl:1:", "longer than"],
    ),
    (
        "synthetic-impossible",
        _set("problems.synthetic", {"operations": ["share"], "min_steps": 5, "max_steps": 5, "max_number": 9}),
        ["key 'problems.synthetic'", "could not generate"],
    ),
    ("synthetic-too-many", _set("problems.n_train", 10**9), ["problems", "at most 100,000"]),
    ("few-shot-more-than-train", _set("evaluation.few_shot_k", 50), ["few_shot_k (50)", "n_train (6)"]),
    (
        "few-shot-more-than-file",
        lambda data, folder: {**jsonl_experiment(folder), "evaluation": {"few_shot_k": 3}},
        ["key 'evaluation.few_shot_k'", "only 2 train problems"],
    ),
    (
        "too-few-gpus",
        lambda data, folder: {**data, "gpu": {"devices": [0]}, "teacher": {"model": MODEL, "tensor_parallel_size": 2}},
        ["teacher needs 2 GPUs", "gpu.devices"],
    ),
    ("max-tokens-over-context", _set("judge.sampling", {"max_tokens": 4096}), ["key 'judge'", "max_model_len (2048)"]),
    ("openai-without-url", _set("teacher.backend", "openai"), ["key 'teacher'", "base_url"]),
    ("bad-cron", _set("evaluation.schedule", "every night"), ["evaluation.schedule", "cron"]),
    ("unknown-local-model", _set("students.s.model", "local:llama-9000"), ["key 'students.s.model'", "local:llama-9000"]),
    ("missing-model-folder", _set("students.s.model", "/nonexistent/model"), ["key 'students.s.model'", "/nonexistent/model"]),
    ("not-yaml", _text("name: [unclosed\nstyles: {\n"), ["not valid YAML", "line"]),
    ("top-level-list", _text("- name: x\n"), ["expected a mapping", "list"]),
    ("empty-file", _text(""), ["expected a mapping", "empty file"]),
    ("duplicate-key", lambda data, folder: yaml.safe_dump(data) + "students: {t: {model: x}}\n", ["duplicate key 'students'"]),
    ("not-utf8", _text(b"name: caf\xe9\n"), ["not UTF-8", ":1:"]),
]


def write_case(folder: Path, mutation) -> Path:
    result = mutation(base_experiment(folder), folder)
    path = folder / "experiment.yaml"
    if isinstance(result, bytes):
        path.write_bytes(result)
    else:
        path.write_text(result if isinstance(result, str) else yaml.safe_dump(result, sort_keys=False))
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trace_assets.cli", *args], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120
    )


def test_the_base_experiment_is_valid(tmp_path):
    experiment = check_inputs(load_experiment(write_case(tmp_path, lambda data, folder: data)))
    assert dry_run(experiment).startswith("experiment bad_inputs:")
    jsonl = check_inputs(load_experiment(write_case(tmp_path, lambda data, folder: jsonl_experiment(folder))))
    assert jsonl.problems.source == "jsonl"


@pytest.mark.parametrize(("mutation", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_dry_run_names_what_is_wrong(tmp_path, mutation, expected):
    path = write_case(tmp_path, mutation)
    result = cli("dry-run", "--experiment", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("trace-assets: error: ") and str(path) in result.stderr
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"


def test_odd_model_names_are_planned_not_crashed_on(tmp_path):
    path = write_case(tmp_path, _set("students", {"zero": {"model": "org/model-0B"}, "tiny": {"model": "org/x-0M"}}))
    result = cli("dry-run", "--experiment", str(path))
    assert result.returncode == 0, result.stderr
    assert "checkpoints[*|zero]" in result.stdout


def test_a_missing_experiment_file():
    result = cli("dry-run", "--experiment", "experiments/nope.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "experiments/nope.yaml: experiment file not found" in result.stderr


@pytest.mark.parametrize("case", ["jsonl-file-missing", "missing-style-file", "no-seeds"])
def test_definitions_validate_fails_with_the_message(tmp_path, case):
    mutation, expected = next(c[1:] for c in CASES if c[0] == case)
    path = write_case(tmp_path, mutation)
    env = {
        **os.environ,
        "TRACE_ASSETS_EXPERIMENT": str(path),
        "TRACE_ASSETS_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [DAGSTER_CLI, "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=180,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ExperimentError" in output and str(path) in output
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"


# --- JSONL edge cases ---------------------------------------------------------------------------


def _read(tmp_path, raw: bytes, skip: bool = False) -> tuple[list[dict], LoadReport]:
    path = tmp_path / "problems.jsonl"
    path.write_bytes(raw)
    report = LoadReport()
    return read_jsonl(path, "train", skip, report), report


def test_a_byte_order_mark_is_accepted(tmp_path):
    rows, _ = _read(tmp_path, b"\xef\xbb\xbf" + json.dumps(GOOD_RECORD).encode() + b"\r\n" + json.dumps(OTHER_RECORD).encode())
    assert [row["answer"] for row in rows] == ["7", "7"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"question": "' + b"x" * (2 * MAX_LINE_BYTES) + b'"}', "longer than"),
        (b"[" * 100_000 + b"\n", "nested too deeply"),
        (json.dumps({"question": " ", "answer": "#### 1"}).encode(), "empty 'question'"),
        (b"\xff\xfe", "not UTF-8"),
        (json.dumps({"question": "Q", "answer": "#### NaN"}).encode(), "is not a number"),
    ],
)
def test_bad_lines_name_file_and_line_and_can_be_skipped(tmp_path, raw, message):
    with pytest.raises(ProblemFileError, match=message) as info:
        _read(tmp_path, raw)
    assert f"{tmp_path / 'problems.jsonl'}:" in str(info.value)
    good = json.dumps(GOOD_RECORD).encode() + b"\n"
    rows, report = _read(tmp_path, good + raw + b"\n" + good.replace(b"Ava", b"Eve"), skip=True)
    assert len(rows) == 2 and len(report.skipped_lines) >= 1 and message in report.skipped_lines[0]


def test_a_file_of_only_bad_lines_is_an_error_even_when_skipping(tmp_path):
    with pytest.raises(ProblemFileError, match=r"no problems in the file \(2 bad lines skipped\)"):
        _read(tmp_path, b"{oops\nnope\n", skip=True)
    with pytest.raises(ProblemFileError, match=r"is a directory|cannot read"):
        read_jsonl(tmp_path, "train", False, LoadReport())


# --- Property-based tests -----------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)),
    # The same examples on every run, so CI can't fail on a draw no one has seen; FUZZ_RANDOM=1 explores
    # new ones (how the negative-float strategy bug in _similar was found: a random draw in a fresh clone).
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _model_keys(model) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            for inner in [arg, *getattr(arg, "__args__", ())]:
                if isinstance(inner, type) and hasattr(inner, "model_fields"):
                    keys |= _model_keys(inner)
    return keys


KNOWN_KEYS = sorted(_model_keys(Experiment) | {"question", "answer", "id", "text", "kind", "pattern", "rubric", "instruction"})
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.sampled_from([10**6, 10**12, 2**63, -(2**31)]),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.text(
        max_size=12
    ),  # no subnormals: an earlier test's native library (torch or vllm) may have set flush-to-zero, which hypothesis refuses
    st.sampled_from(
        [
            "normal",
            "diamond",
            "G",
            "H",
            "H_style",
            "mixture",
            "W",
            "jsonl",
            "synthetic",
            "gsm8k",
            "openai",
            "share",
            "/nonexistent",
            "local:other",
            MODEL,
            "0 3 * * *",
            "",
            " ",
            "####",
            "#### 4",
            "^x$",
            "(",
            "required",
            "forbidden",
            "all_lines",
            "conclusion",
            "label",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def _places(node, found=None):
    """(container, key) for every value in a nested document."""
    found = [] if found is None else found
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        found.append((node, key))
        _places(value, found)
    return found


def _similar(value):
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-2, 3 * max(2, value) + 2)
    if isinstance(value, float):  # around the value, whatever its sign (a mutation may have made it negative)
        low = min(-0.5, value - 1)
        return st.floats(low, max(low + 1, 2 * abs(value) + 1), allow_nan=False, allow_subnormal=False)
    if isinstance(value, str):
        return st.sampled_from(
            [
                "normal",
                "diamond",
                "gold",
                "titanium",
                "nosuch",
                "G",
                "W",
                "H",
                "H_style",
                "mixture",
                "share",
                "find",
                "give",
                MODEL,
                "local:other",
                value,
                value + "x",
                "",
            ]
        )
    if isinstance(value, list):
        return st.lists(st.sampled_from(value), max_size=len(value) + 2) if value else st.just([])
    if isinstance(value, dict):
        return (
            st.sets(st.sampled_from(sorted(value)), max_size=len(value)).map(lambda keys: {k: value[k] for k in keys})
            if value
            else st.just({})
        )
    return st.just(value)


def mutate_document(data: st.DataObject, document):
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        places = _places(document)
        action = data.draw(st.sampled_from(["perturb", "perturb", "replace", "delete", "add", "rename"]), label="action")
        if not places:
            break
        container, key = data.draw(st.sampled_from(places), label="place")
        if action == "perturb":  # a value of the same kind: probes the checks on sizes and names
            container[key] = data.draw(_similar(container[key]), label="similar value")
        elif action == "replace":
            container[key] = data.draw(VALUES, label="value")
        elif action == "delete":
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[data.draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), label="new key")] = data.draw(VALUES)
        elif action == "rename" and isinstance(container, dict):
            container[data.draw(st.sampled_from(KNOWN_KEYS), label="new name")] = container.pop(key)
    return document


def mutate_text(data: st.DataObject, text: str) -> str:
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        position = data.draw(st.integers(0, len(text)), label="position")
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]), label="edit")
        piece = data.draw(st.text(alphabet=string.printable + "\t\u00e9\ufeff{}[]:-#&*!|>'\"", max_size=4), label="piece")
        end = position + data.draw(st.integers(0, 6)) if kind != "insert" else position
        text = text[:position] + ("" if kind == "delete" else piece) + text[end:]
    return text


def _check_experiment_file(path: Path) -> None:
    """Loading, checking and planning either work or raise an InputError; nothing else may escape."""
    try:
        experiment = check_inputs(load_experiment(path))
    except InputError as error:
        assert str(error).strip()
        event("rejected")
        return
    event("accepted")
    assert isinstance(experiment, Experiment)
    dry_run(experiment)


@FUZZ
@given(data=st.data())
def test_mutated_experiments_raise_only_input_errors(data):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source = data.draw(st.sampled_from(["synthetic", "jsonl"]), label="source")
        document = base_experiment(folder) if source == "synthetic" else jsonl_experiment(folder)
        path = folder / "experiment.yaml"
        path.write_text(yaml.safe_dump(mutate_document(data, document), sort_keys=False))
        _check_experiment_file(path)


@FUZZ
@given(data=st.data())
def test_edited_experiment_text_raises_only_input_errors(data):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = folder / "experiment.yaml"
        path.write_text(mutate_text(data, yaml.safe_dump(base_experiment(folder), sort_keys=False)))
        _check_experiment_file(path)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_as_an_experiment_raise_only_experiment_errors(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "experiment.yaml"
        path.write_bytes(raw)
        try:
            load_experiment(path)
        except ExperimentError as error:
            assert str(path) in str(error)


@FUZZ
@given(data=st.data())
def test_mutated_style_files_raise_only_style_errors(data):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        name = data.draw(st.sampled_from(["normal", "diamond", "gold", "titanium"]), label="style")
        text = (STYLES / f"{name}.yaml").read_text()
        if data.draw(st.booleans(), label="edit text"):
            text = mutate_text(data, text)
        else:
            text = yaml.safe_dump(mutate_document(data, yaml.safe_load(text)), sort_keys=False)
        (folder / "s.yaml").write_text(text)
        try:
            style = load_style(folder, "s")
        except StyleError as error:
            assert str(folder / "s.yaml") in str(error)
            event("rejected")
            return
        event("accepted")
        assert style.system_prompt() and style.spec.rubric


GOOD_LINES = [json.dumps(GOOD_RECORD), json.dumps(OTHER_RECORD)]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_subnormal=False)
    | st.text(max_size=20)
    | st.sampled_from(["#### 4", "2+2=4\n#### 4", "#### x", "####", "#### 1,000", "#### -3.5", "<<2+2=4>>4\n#### 4"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["question", "answer"]) | st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
LINES = st.one_of(
    st.sampled_from(GOOD_LINES),
    JSON_VALUES.map(json.dumps),
    st.fixed_dictionaries({"question": st.text(max_size=30), "answer": JSON_VALUES | st.text(max_size=30)}).map(json.dumps),
    st.text(max_size=40),
).map(str.encode) | st.binary(max_size=40)


@FUZZ
@given(lines=st.lists(LINES, max_size=8), bom=st.booleans(), ending=st.sampled_from([b"\n", b"\r\n"]), skip=st.booleans())
def test_random_jsonl_raises_only_problem_file_errors(lines, bom, ending, skip):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.jsonl"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ending.join(lines))
        report = LoadReport()
        try:
            rows = read_jsonl(path, "train", skip, report)
        except ProblemFileError as error:
            assert str(path) in str(error)
            event("rejected")
            return
        event("accepted")
        assert rows and all(row["answer"] for row in rows)
        if skip:  # every line is either a problem or reported
            text_lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
            assert len(rows) + len(report.skipped_lines) <= len(text_lines)


def test_blank_lines_are_not_problems(tmp_path):
    experiment = check_inputs(load_experiment(write_case(tmp_path, _jsonl([*GOOD_LINES, "", "  "]))))
    assert experiment.problems.jsonl is not None
