import shutil

import pytest

from trace_assets.experiment import PROJECT_ROOT
from trace_assets.styles.library import StyleError, failed_format_checks, load_style

STYLES = PROJECT_ROOT / "styles"


@pytest.mark.parametrize("name", ["normal", "normal_plain", "gold", "titanium", "titanium_named", "diamond"])
def test_shipped_styles_load(name):
    style = load_style(STYLES, name)
    assert style.system_prompt() and style.spec.rubric
    assert len(style.version) == 16


def test_normal_plain_is_normal_without_its_worked_example():
    """Seed 000's Normal: step by step and nothing else; the teacher sees no solved problem first."""
    from trace_assets.traces.prompts import teacher_messages

    normal, plain = load_style(STYLES, "normal"), load_style(STYLES, "normal_plain")
    assert plain.spec.example is None and normal.spec.example is not None
    assert plain.spec.model_dump(exclude={"example", "description"}) == normal.spec.model_dump(exclude={"example", "description"})
    assert [m["role"] for m in teacher_messages(plain, "Q?")] == ["system", "user"]
    assert len(teacher_messages(normal, "Q?")) == 4 and plain.version != normal.version


def test_titanium_named_wants_a_name_on_every_calculation_and_the_hash_line():
    style = load_style(STYLES, "titanium_named")
    assert style.spec.answer_format == "hash"
    good = "GOAL: apples left\nF1: 8 apples\nC1: apples_left = 8 - 3 = 5\n#### 5"
    assert failed_format_checks(good, style.spec.format_checks) == []
    bare = good.replace("C1: apples_left = 8 - 3 = 5", "C1: 8 - 3 = 5")
    assert failed_format_checks(bare, style.spec.format_checks) == ["named_calculation_lines", "unnamed_calculation"]
    one_bare = good.replace("#### 5", "C2: 5 * 1 = 5\n#### 5")
    assert failed_format_checks(one_bare, style.spec.format_checks) == ["unnamed_calculation"]
    labelled = good.replace("#### 5", "ANSWER: 5")
    assert failed_format_checks(labelled, style.spec.format_checks) == ["only_labelled_lines", "answer_line"]


def test_version_changes_with_text_only(tmp_path):
    shutil.copy(STYLES / "normal.yaml", tmp_path / "normal.yaml")
    before = load_style(tmp_path, "normal").version
    text = (tmp_path / "normal.yaml").read_text()
    (tmp_path / "normal.yaml").write_text("# a comment\n\n" + text)
    assert load_style(tmp_path, "normal").version == before  # formatting only
    (tmp_path / "normal.yaml").write_text(text.replace("step by step", "carefully step by step"))
    assert load_style(tmp_path, "normal").version != before


def test_users_add_a_style_by_adding_a_file(tmp_path):
    (tmp_path / "terse.yaml").write_text(
        "description: terse\ninstruction: Answer in one line ending with '#### N'.\n"
        "rubric: [{id: short, text: One line.}]\n"
        "format_checks: [{id: one_line, kind: all_lines, pattern: '####'}]\n"
    )
    style = load_style(tmp_path, "terse")
    assert failed_format_checks("so 4 #### 4", list(style.spec.format_checks)) == []
    assert failed_format_checks("so\n#### 4", list(style.spec.format_checks)) == ["one_line"]


def test_bad_style_files_name_the_file(tmp_path):
    (tmp_path / "broken.yaml").write_text(
        "description: x\ninstruction: y\nrubric: []\nformat_checks: [{id: a, kind: sometimes, pattern: x}]\n"
    )
    with pytest.raises(StyleError, match=r"broken\.yaml.*format_checks"):
        load_style(tmp_path, "broken")
    with pytest.raises(StyleError, match="not found"):
        load_style(tmp_path, "missing")


def test_titanium_and_diamond_format_rules():
    titanium = list(load_style(STYLES, "titanium").spec.format_checks)
    good = "GOAL: apples left\nF1: 12 apples\nX1: half -> / 2\nC1: 12 / 2 = 6\nANSWER: 6"
    assert failed_format_checks(good, titanium) == []
    assert "only_labelled_lines" in failed_format_checks(good + "\nSo she has 6 apples.", titanium)
    diamond = list(load_style(STYLES, "diamond").spec.format_checks)
    prose = "She starts with 12 apples and gives away half, 12 / 2 = 6, so 6 remain.\n#### 6"
    assert failed_format_checks(prose, diamond) == []
    assert "no_lists" in failed_format_checks("1. Start with 12\n2. Halve it\n#### 6", diamond)
    assert failed_format_checks("", diamond) == ["answer_line"]
