#!/usr/bin/env python3
"""Fails when Cargo.toml lists a dependency that no source of its kind names: a runtime one
that nothing under src/ uses, a build one that build.rs does not, a dev one that no test or
bench does (or that is already a runtime dependency without needing other features). Also
fails when a list is not sorted. Run from the repository root; scripts/test runs it."""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Named only by code that build.rs generates into OUT_DIR (tonic's codec for the protos).
GENERATED_USES = {"tonic-prost"}


def sources(*places):
    text = []
    for place in places:
        path = ROOT / place
        files = [path] if path.is_file() else sorted(path.rglob("*.rs"))
        text.extend(f.read_text() for f in files)
    return "\n".join(text)


def named(crate, text):
    ident = crate.replace("-", "_")
    return re.search(rf"(?<![\w:]){re.escape(ident)}::|\buse {re.escape(ident)}\b", text) is not None


def main():
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    kinds = {
        "dependencies": sources("src"),
        "build-dependencies": sources("build.rs"),
        "dev-dependencies": sources("tests", "benches", "src"),
    }
    problems = []
    for kind, text in kinds.items():
        crates = list(manifest.get(kind, {}))
        if crates != sorted(crates):
            problems.append(f"[{kind}] is not sorted")
        for crate in crates:
            if kind == "dependencies" and crate in GENERATED_USES:
                continue
            if not named(crate, text):
                problems.append(f"[{kind}] {crate}: nothing in its sources uses it")
    for problem in problems:
        print(f"check-deps: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-deps: every dependency in Cargo.toml is used")


if __name__ == "__main__":
    main()
