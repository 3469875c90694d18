#!/usr/bin/env python3
"""Every relative link in the README and the book (docs/book/src) names a file that exists, and
every `#anchor` on a book page names one of that page's headings, so that moving a page or
renaming a heading cannot leave a reader at a dead end. Links to the web are not followed."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def anchors(page: Path) -> set[str]:
    """The anchors mdBook and GitHub give a page's headings."""
    found = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        found.add(slug)
    return found


def links(page: Path):
    in_fence = False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in LINK.findall(line):
            yield number, target


def main() -> int:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs/book/src").rglob("*.md"))]
    problems = []
    for page in pages:
        for number, target in links(page):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}:{number}"
            if not linked.exists():
                problems.append(f"{where}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: {target}: no heading #{anchor}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"check-links: {len(pages)} pages, {len(problems)} broken link(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
