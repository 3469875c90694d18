#!/usr/bin/env python3
"""Fails when a Rust source file outside tests is over 1,000 lines or a function outside tests
is over 150 lines (from its `fn` line to its closing brace). Test modules (`#[cfg(test)] mod
tests`), `tests/` and `benches/` are not counted; generated code is not in the tree. Run from
anywhere; scripts/test runs it."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 1000
MAX_FN_LINES = 150


def without_tests(text):
    return re.split(r"\n#\[cfg\(test\)\]\s*\nmod tests", text)[0]


def long_functions(lines):
    """(name, first line, length) of every function longer than MAX_FN_LINES."""
    found = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+)?(?:const\s+)?fn\s+(\w+)", line)
        if not match:
            continue
        if line.rstrip().endswith(";"):
            continue  # a declaration without a body
        indent = match.group(1)
        for end in range(number + 1, len(lines)):
            closing = lines[end]
            if closing.startswith(indent + "}") and not closing.startswith(indent + "} "):
                break
        else:
            continue
        length = end - number + 1
        if length > MAX_FN_LINES:
            found.append((match.group(2), number + 1, length))
    return found


def main():
    problems = []
    files = sorted(ROOT.glob("src/**/*.rs")) + sorted(ROOT.glob("crates/*/src/**/*.rs"))
    for path in files:
        text = without_tests(path.read_text())
        lines = text.split("\n")
        name = path.relative_to(ROOT)
        if len(lines) > MAX_FILE_LINES:
            problems.append(f"{name}: {len(lines)} lines (at most {MAX_FILE_LINES})")
        for function, first, length in long_functions(lines):
            problems.append(f"{name}:{first}: fn {function} is {length} lines (at most {MAX_FN_LINES})")
    for problem in problems:
        print(f"check-sizes: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-sizes: {len(files)} files, none over {MAX_FILE_LINES} lines, no function over {MAX_FN_LINES}")


if __name__ == "__main__":
    main()
