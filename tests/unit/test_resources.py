"""rules/ and letter_templates/ are found through recruit.resources: a user's ./rules/ first,
else the copy recruit comes with; and advice names commands that work where recruit was run."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest

from recruit.codelists import default_directory
from recruit.demo import DemoResult, closing_advice, find_rules
from recruit.errors import RecruitError
from recruit.invocation import recruit_command
from recruit.letters.render import templates_dir
from recruit.letters.study import default_study_file
from recruit.load.loader import default_mapping
from recruit.resources import default_rules, rules_file, shipped_rules, shipped_templates
from synthetic_ehr.codes import find_codelists_dir

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_copies_are_found_from_a_folder_without_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rules = shipped_rules()
    assert (rules / "instep.yaml").is_file() and (rules / "codelists" / "codelists.yaml").is_file()
    assert (shipped_templates() / "document.html.j2").is_file()
    assert templates_dir() == shipped_templates()
    assert default_rules() == rules / "instep.yaml"
    assert find_rules("studies/instep.yaml") == rules / "studies" / "instep.yaml"
    assert default_study_file("instep") == rules / "studies" / "instep.yaml"
    assert default_mapping() == rules / "mappings" / "synthetic_ehr.yaml"
    assert default_directory() == rules / "codelists"
    assert find_codelists_dir() == rules / "codelists"


def test_a_users_own_rules_folder_wins(tmp_path, monkeypatch):
    own = tmp_path / "rules"
    shutil.copytree(shipped_rules() / "codelists", own / "codelists")
    (own / "studies").mkdir()
    (own / "instep.yaml").write_text((shipped_rules() / "instep.yaml").read_text())
    (own / "studies" / "instep.yaml").write_text((shipped_rules() / "studies" / "instep.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert default_rules() == own / "instep.yaml"
    assert default_study_file("instep") == own / "studies" / "instep.yaml"
    assert default_directory() == own / "codelists"
    assert find_codelists_dir() == own / "codelists"
    # What the user's folder lacks still comes from recruit's own copy.
    assert default_mapping() == shipped_rules() / "mappings" / "synthetic_ehr.yaml"


def test_a_folder_named_rules_without_the_file_falls_back_and_a_missing_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "rules").mkdir()
    monkeypatch.chdir(tmp_path)
    assert default_rules() == shipped_rules() / "instep.yaml"
    with pytest.raises(RecruitError, match=r"rules/no-such-study\.yaml"):
        rules_file("rules/no-such-study.yaml")
    # A study with no settings file anywhere: the caller's message names the expected path.
    assert default_study_file("nosuch") == Path("rules") / "studies" / "nosuch.yaml"


def test_in_a_source_checkout_the_repository_folders_are_used():
    if (Path(__import__("recruit").__file__).parent / "shipped_rules").is_dir():
        pytest.skip("recruit is installed from a wheel here")
    assert shipped_rules() == ROOT / "rules"
    assert shipped_templates() == ROOT / "letter_templates"


# --- how to run recruit again ----------------------------------------------------------------


def _script(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "recruit"
    script.write_text("#!/bin/sh\n")
    return script


def test_recruit_on_path_is_named_plainly(tmp_path):
    script = _script(tmp_path / "bin")
    assert recruit_command(str(script), "/usr/bin/python3", which=lambda _: str(script)) == ["recruit"]


def test_a_script_not_on_path_is_named_by_its_path(tmp_path):
    script = _script(tmp_path / "venv" / "bin")
    other = _script(tmp_path / "elsewhere")
    assert recruit_command(".venv/bin/recruit", "/p/python", which=lambda _: None) == [".venv/bin/recruit"]
    # A different recruit first on PATH (another installation) is not the one that ran.
    assert recruit_command(str(script), "/p/python", which=lambda _: str(other)) == [str(script)]


def test_python_dash_m_is_named_with_the_interpreter_used(tmp_path):
    main = str(ROOT / "recruit" / "__main__.py")
    assert recruit_command(main, "/opt/py 3/bin/python", which=lambda _: None) == [
        "/opt/py 3/bin/python",
        "-m",
        "recruit",
    ]
    # Even when some recruit is on PATH: it may be another installation.
    assert recruit_command(main, sys.executable, which=lambda _: "/usr/bin/recruit")[1:] == ["-m", "recruit"]


def test_closing_advice_reads_back_as_the_commands_to_run(tmp_path):
    folder = tmp_path / "my demo"
    result = DemoResult(folder=folder, run_id=4, candidates=1, invited=1, not_invited=0, letters=1, replies=0)
    advice = closing_advice(result, ["/opt/py 3/bin/python", "-m", "recruit"])
    assert advice.startswith("Try: ")
    audit, evaluate = advice.removeprefix("Try: ").split(", or ")
    assert shlex.split(audit) == [
        "/opt/py 3/bin/python",
        "-m",
        "recruit",
        "audit",
        "4",
        "--db",
        f"sqlite:///{folder.as_posix()}/recruit.db",
        "--out",
        "another-report",
    ]
    assert shlex.split(evaluate)[:6] == ["/opt/py 3/bin/python", "-m", "recruit", "evaluate", "4", "--truth"]
    assert shlex.split(closing_advice(result, ["recruit"]).split(", or ")[0].removeprefix("Try: "))[:2] == [
        "recruit",
        "audit",
    ]
