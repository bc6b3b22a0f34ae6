"""Where recruit finds the files it comes with: rule sets, codelists, studies, mappings, letters.

The repository keeps them at its root (rules/ and letter_templates/); the wheel ships them inside
the package (recruit/shipped_rules/ and recruit/letter_templates/, see pyproject.toml), so an
installed recruit works from any folder. Both are found here, through importlib.resources, and
nowhere else. A practice's or study team's own ./rules/ folder, in the folder recruit is run from,
wins over the shipped one, so reviewed local copies are used without any option.
"""

from __future__ import annotations

from contextlib import suppress
from importlib.resources import files
from pathlib import Path

from recruit.errors import RecruitError

RULES = "rules"
LETTER_TEMPLATES = "letter_templates"
DEFAULT_RULE_SET = "instep.yaml"
# Where each folder sits inside the installed package (the repository's root folder, mapped).
_IN_PACKAGE = {RULES: "shipped_rules", LETTER_TEMPLATES: "letter_templates"}


def shipped(folder: str) -> Path:
    """The copy of rules/ or letter_templates/ that came with recruit (wheel or source checkout)."""
    package = files("recruit")
    installed = package / _IN_PACKAGE[folder]
    if installed.is_dir():
        return Path(str(installed))
    # A source checkout (editable install, or run from the clone): the folder beside recruit/.
    checkout = Path(str(package)).parent / folder
    if checkout.is_dir():
        return checkout
    raise RecruitError(f"recruit's {folder}/ folder is missing from this installation; reinstall recruit.")


def shipped_rules() -> Path:
    return shipped(RULES)


def shipped_templates() -> Path:
    return shipped(LETTER_TEMPLATES)


def rules_dirs(cwd: Path | None = None) -> list[Path]:
    """The rules folders to look in, the user's own first: ./rules (if any), then recruit's."""
    own = (cwd or Path.cwd()) / RULES
    dirs = [own] if own.is_dir() else []
    with suppress(RecruitError):  # a broken installation: the user's own folder may still do
        dirs.append(shipped_rules())
    return dirs


def rules_file(relative: str | Path, cwd: Path | None = None) -> Path:
    """A file under rules/ (e.g. "instep.yaml", "studies/instep.yaml"): ./rules/ first, else recruit's.

    Used for defaults only; a path the user gives is used as given."""
    relative = Path(relative)
    if relative.parts and relative.parts[0] == RULES:
        relative = Path(*relative.parts[1:])
    looked = rules_dirs(cwd)
    for base in looked:
        candidate = base / relative
        if candidate.is_file():
            return candidate
    where = " or ".join(str(base) for base in looked) or "(recruit's own rules are missing: reinstall it)"
    raise RecruitError(f"Cannot find rules/{relative.as_posix()}: looked in {where}.")


def default_rules() -> Path:
    """The rule set used when none is named: ./rules/instep.yaml, else the one recruit comes with."""
    return rules_file(DEFAULT_RULE_SET)


def rules_folder(relative: str | Path, marker: str, cwd: Path | None = None) -> Path:
    """A folder under rules/ holding marker (e.g. codelists/ with codelists.yaml): ./rules/ first."""
    for base in rules_dirs(cwd):
        candidate = base / relative
        if (candidate / marker).is_file():
            return candidate
    raise RecruitError(
        f"Cannot find rules/{Path(relative).as_posix()}/{marker} in {cwd or Path.cwd()} "
        "or in recruit's own rules (reinstall recruit)."
    )
