"""The option table is the one definition: README, docs, --help, presets and parser agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from wd_support import REPO, WATCHDOG_ENV

from reviewkit.watchdog import PRESETS, IdlePolicy
from reviewkit.watchdog.commands import build_parser as command_parser
from reviewkit.watchdog.options import build_parser
from reviewkit.watchdog.optiontable import BY_DEST, COMMAND_OPTIONS, OPTIONS, PRESET_NAMES, markdown_table

DOCS = [REPO / "README.md", REPO / "docs" / "watchdog.md"]
OPTION_HEADER = "| flag | environment | default | meaning |"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table(text: str, header: str) -> list[list[str]]:
    """The rows (cells) of the markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_option_table_of_each_document_is_the_table(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert text.count(OPTION_HEADER) == 1, f"{doc.name} should have one option table"
    expected = markdown_table()
    assert _table(text, OPTION_HEADER) == _table(expected, OPTION_HEADER), (
        f"{doc.name}'s option table differs from reviewkit/watchdog/optiontable.py; it should read:\n{expected}"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_preset_table_of_each_document_has_the_presets(doc: Path) -> None:
    """Columns named by a variable (`IDLE_LIMIT`) hold that setting's value in each preset's row."""
    rows = _table(doc.read_text(encoding="utf-8"), "| preset |")
    by_env = {f"`{o.env}`": o.dest for o in OPTIONS if o.presets}
    columns = {i: by_env[cell] for i, cell in enumerate(rows[0]) if cell in by_env}
    assert set(columns.values()) >= {"idle_threshold", "idle_limit", "min_runtime"}
    seen = []
    for row in rows[2:]:
        name = next(n for n in PRESET_NAMES if re.search(rf"\b{n}\b", row[0]))
        seen.append(name)
        for i, dest in columns.items():
            number = float(re.match(r"[\d.]+", row[i]).group())  # "5 %", "300 s", "3"
            assert number == PRESETS[name][dest], f"{doc.name}: {name} {dest} is {row[i]!r}"
    assert seen == list(PRESET_NAMES)


def test_defaults_and_presets_come_from_the_table() -> None:
    assert IdlePolicy() == IdlePolicy.preset("default")
    for dest, value in PRESETS["default"].items():
        assert getattr(IdlePolicy(), dest) == value == BY_DEST[dest].default
    assert set(PRESETS) == set(PRESET_NAMES)


def test_help_lists_every_option_with_its_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    flags = {s for action in parser._actions for s in action.option_strings} - {"-h", "--help"}  # noqa: SLF001
    assert flags == {o.flag for o in OPTIONS}
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for o in OPTIONS:
        assert re.search(rf"{o.flag} ", text), o.flag
        if o.env:
            assert f"env {o.env}" in text
        if o.shown_default() != "–":
            assert f"default {o.shown_default().strip('`')}" in text
    for command, options in COMMAND_OPTIONS.items():
        actions = command_parser(command)._actions  # noqa: SLF001
        assert {s for a in actions for s in a.option_strings} - {"-h", "--help"} == {o.flag for o in options}


def test_the_tests_clear_every_variable_of_the_table() -> None:
    """A new option's variable must be cleared too, or a developer's shell leaks into the tests."""
    assert {o.env for opts in (OPTIONS, *COMMAND_OPTIONS.values()) for o in opts if o.env} <= set(WATCHDOG_ENV)
