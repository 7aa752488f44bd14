"""The README's compatibility table is the code's table, row for row."""

from __future__ import annotations

from pathlib import Path

from caldavfs.compat import QUIRKS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_quirk_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for quirk in QUIRKS:
        row = f"| {quirk.server} | {quirk.what} | {quirk.workaround} | `{quirk.where}` |"
        assert row in text, row


def test_the_readme_has_no_quirk_the_code_lacks() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Server compatibility", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| server")
            and not line.startswith("| ---")]
    assert len(rows) == len(QUIRKS)


def test_every_quirk_names_a_module_that_exists() -> None:
    package = Path(__file__).resolve().parents[2] / "caldavfs"
    for quirk in QUIRKS:
        for module in quirk.where.split(", "):
            assert (package / f"{module}.py").is_file(), quirk
