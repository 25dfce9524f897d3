"""README and docs/ as a newcomer reads them: short, linked, and true to the code."""
from __future__ import annotations

import re

from hub.config import PROJECT_DIR, TABLE_END, TABLE_START, documented_tables

README = PROJECT_DIR / "README.md"


def test_the_settings_tables_match_the_settings_in_the_code():
    for path, table in documented_tables().items():
        text = path.read_text()
        held = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
        assert held == table, f"{path.name}: run `python -m hub.config --write`"


def test_readme_stays_a_guide_and_links_every_docs_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    linked = set(re.findall(r"\(docs/([\w-]+\.md)\)", text))
    pages = {p.name for p in (PROJECT_DIR / "docs").glob("*.md")}
    assert pages <= linked, f"docs pages not linked from README: {sorted(pages - linked)}"


def test_readme_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    block = lines[lines.index("```bash") + 1:][:2]
    assert block[0].startswith("python3 -m pip install -e . && hub run")
    assert block[1].startswith("python3 -m pip install -e '.[test]' && python3 -m pytest")


def test_no_page_names_a_package_that_is_not_published():
    for path in [README, *(PROJECT_DIR / "docs").glob("*.md")]:
        assert "pip install subscription-hub" not in path.read_text(), path.name
