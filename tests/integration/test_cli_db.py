"""`recruit db ...` as practice staff would use it: one clear line on failure, never a traceback."""

from __future__ import annotations

import re

import pytest
import typer.main

from recruit.cli import app
from recruit.migrate import head_revision
from tests.helpers import run_cli


def _commands(group, prefix=()):
    """Every command in the CLI tree with its short help, walked from the Click objects."""
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        yield path, cmd.get_short_help_str(limit=200)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path)


def test_help_lists_every_command_with_a_one_line_help(tmp_path):
    root = typer.main.get_command(app)
    listed = list(_commands(root))
    assert ("db", "upgrade") in [p for p, _ in listed]
    for path, short in listed:
        assert short.strip(), f"recruit {' '.join(path)} has no help"
        parent = run_cli(*path[:-1], "--help", cwd=tmp_path)
        assert parent.returncode == 0
        assert re.search(rf"\b{re.escape(path[-1])}\b", parent.stdout)
        assert short.split()[0] in parent.stdout


def test_upgrade_in_an_empty_folder_creates_the_database_at_head(tmp_path):
    first = run_cli("db", "upgrade", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "recruit.db").exists()
    assert head_revision() in first.stdout

    again = run_cli("db", "upgrade", cwd=tmp_path)
    assert again.returncode == 0
    assert "already up to date" in again.stdout

    status = run_cli("db", "status", cwd=tmp_path)
    assert status.returncode == 0
    assert str(tmp_path / "recruit.db") in status.stdout
    assert f"Revision: {head_revision()} (up to date)" in status.stdout


def test_status_before_upgrade_says_what_to_do_and_creates_nothing(tmp_path):
    status = run_cli("db", "status", cwd=tmp_path)
    assert status.returncode == 0
    assert "recruit db upgrade" in status.stdout
    assert not (tmp_path / "recruit.db").exists()


def test_environment_variable_chooses_the_database(tmp_path):
    target = tmp_path / "elsewhere" / "practice.db"
    result = run_cli("db", "upgrade", cwd=tmp_path, env={"RECRUIT_DATABASE_URL": f"sqlite:///{target}"})
    assert result.returncode == 0, result.stderr
    assert target.exists() and not (tmp_path / "recruit.db").exists()


@pytest.mark.postgres
def test_upgrade_and_status_on_postgresql(postgres_url, tmp_path):
    result = run_cli("db", "upgrade", "--db", postgres_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    status = run_cli("db", "status", "--db", postgres_url, cwd=tmp_path)
    assert "PostgreSQL server" in status.stdout and "(up to date)" in status.stdout


def _assert_one_clear_line(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    "url, words",
    [
        ("sqlite:/recruit.db", ("not a database address",)),
        ("mysterydb://host/x", ("does not know the database kind",)),
        # Port 9 on loopback: nothing listens there, so the connection is refused at once.
        ("postgresql+psycopg://root@127.0.0.1:9/test", ("Cannot reach the database server",)),
    ],
)
def test_bad_database_gives_one_clear_line(tmp_path, url, words):
    for command in ("upgrade", "status"):
        _assert_one_clear_line(run_cli("db", command, "--db", url, cwd=tmp_path), *words)


def test_read_only_folder_gives_one_clear_line(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = run_cli("db", "upgrade", cwd=folder, obey_permissions=True)
    finally:
        folder.chmod(0o755)
    _assert_one_clear_line(result, "read-only")
    assert not (folder / "recruit.db").exists()
