"""The documentation site: the generated pages current (the references, the architecture page's layers), every
Python example of docs/*.md run as written on random weights, README's links.

Examples: the ```python fences of a page run in order in one namespace (a page reads as one session), from the
repository root; a fence right after a `<!-- no-run -->` line is skipped (it needs a camera, a broker or data that
does not ship)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
FENCE = re.compile(r"^(?P<mark><!-- no-run -->\n)?```python\n(?P<code>.*?)^```$", re.S | re.M)


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_are_current():
    gen_docs = _gen_docs()
    for page, make in gen_docs.PAGES.items():
        assert page.exists(), f"{page.relative_to(REPO)} missing: run python scripts/gen_docs.py"
        assert page.read_text() == make(), f"{page.relative_to(REPO)} is stale: run python scripts/gen_docs.py"


def test_the_staleness_check_sees_a_changed_page(tmp_path, monkeypatch):
    gen_docs = _gen_docs()
    page = tmp_path / "cli.md"
    page.write_text(gen_docs.cli_page().replace("`vos track`", "`vos follow`"))
    monkeypatch.setattr(gen_docs, "PAGES", {page: gen_docs.cli_page}, raising=True)
    monkeypatch.setattr(gen_docs, "REPO", tmp_path)
    assert gen_docs.main(["--check"]) == 1
    assert gen_docs.main([]) == 0 and gen_docs.main(["--check"]) == 0


def examples() -> list[tuple[str, list[tuple[int, str]]]]:
    """(page, [(line, code)]) for every page with Python examples to run."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        fences = [
            (text.count("\n", 0, m.start("code")) + 1, m.group("code"))
            for m in FENCE.finditer(text)
            if not m.group("mark")
        ]
        if fences:
            found.append((str(page.relative_to(REPO)), fences))
    return found


def test_no_run_fences_are_few_and_marked():
    marked = sum(len(re.findall(r"<!-- no-run -->\n```python", p.read_text())) for p in DOCS.rglob("*.md"))
    assert marked <= 3
    for page in DOCS.rglob("*.md"):
        text = page.read_text()
        assert text.count("```python") == len(FENCE.findall(text)), f"{page}: a ```python fence not closed by ```"


@pytest.mark.parametrize(("page", "fences"), examples(), ids=[page for page, _ in examples()])
def test_python_examples_run(page, fences, monkeypatch):
    monkeypatch.chdir(REPO)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in fences:
        exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102


def test_every_page_is_in_the_site_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = [str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")]
    assert [p for p in pages if p not in nav] == [], "add the page to nav in mkdocs.yml"
    assert not os.path.exists(DOCS / "guide.md")


def test_readme_links_resolve():
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", text)
    assert links and [link for link in links if not (REPO / link).exists()] == []
