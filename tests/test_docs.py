"""The documentation as a clone sees it: links that resolve, no path outside the repository.

    python -m pytest -q tests/test_docs.py
"""
import re
from pathlib import Path

import pytest

from helpers import ROOT

DOC_PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md",
                    *(ROOT / "results4comparison").rglob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
# What a clone cannot follow (a folder beside the repository, a path of one machine) and the old
# name of the method page, now docs/method.md.
FORBIDDEN = re.compile(r"\.\./shared|/work/|\bSPEC\b")


def headings(path):
    """GitHub's anchors of a Markdown page's headings (lower case, punctuation dropped, spaces to -)."""
    anchors, seen = set(), {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = re.sub(r"`|\*\*|__", "", match.group(1))
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        # GitHub numbers repeated headings: slug, slug-1, slug-2 ...
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def links(path):
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is text, not a link
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_the_slug_rule_on_known_headings(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# LLM refinement, and using another LLM\n## 1.2 Preprocessing: raw files\n"
                    "```\n# not a heading\n```\n## Flags\n## Flags\n### `--threads`\n")
    assert headings(page) == {"llm-refinement-and-using-another-llm", "12-preprocessing-raw-files",
                              "flags", "flags-1", "--threads"}


def test_links_are_found_outside_code_only(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](docs/a.md) ![img](x.png) [web](https://example.org) [top](#top)\n"
                    "`[no](code.md)`\n```\n[no](block.md)\n```\n")
    assert links(page) == ["docs/a.md", "x.png", "#top"]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in headings(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def user_facing_files():
    """README, docs, bench, the results (pages, logs, run records), every module and the tests (this
    file, which spells the patterns, left out)."""
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    files += [p for p in (ROOT / "results4comparison").rglob("*") if p.suffix in (".md", ".out", ".json", ".tex")]
    files += [p for p in (ROOT / "bench").rglob("*") if p.suffix in (".md", ".py", ".sh")]
    files += [p for p in ROOT.rglob("*.py") if not ({".venv", "venv", "dataset", "result"}
                                                    & set(p.relative_to(ROOT).parts))]
    return sorted(set(files) - {Path(__file__).resolve()})


def test_no_path_outside_the_repository_and_no_spec_reference():
    found = []
    for path in user_facing_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if FORBIDDEN.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, f"{len(found)} lines name ../shared, a machine path or SPEC:\n" + "\n".join(found)


def test_method_sections_cited_exist():
    """Every "docs/method.md §n" (or "method.md §n") cited anywhere names a numbered section there."""
    sections = {re.match(r"#+\s+(\d+(?:\.\d+)*)", line).group(1)
                for line in (ROOT / "docs" / "method.md").read_text(encoding="utf-8").splitlines()
                if re.match(r"#+\s+\d", line)}
    assert {"1", "1.1", "1.2", "1.3", "2", "3", "4", "5", "6"} <= sections
    cited = set()
    for path in [*ROOT.rglob("*.py"), *ROOT.rglob("*.md")]:
        if {".venv", "venv", "dataset", "result"} & set(path.relative_to(ROOT).parts):
            continue
        for match in re.finditer(r"method\.md\)? ?§ ?(\d+(?:\.\d+)*)", path.read_text(encoding="utf-8")):
            cited.add((match.group(1).rstrip("."), str(path.relative_to(ROOT))))
    missing = sorted(f"{where}: §{number}" for number, where in cited if number not in sections)
    assert not missing, missing
