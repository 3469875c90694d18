#!/usr/bin/env python3
"""Fails when a manifest of the workspace (Cargo.toml and crates/*/Cargo.toml) lists a
dependency that no source of its kind names: a runtime one that nothing under its src/ uses, a
build one that build.rs does not, a dev one that no test or bench does. Also fails when a list is
not sorted, or when the workspace's shared list names a crate no member uses. Run from the
repository root; scripts/test runs it."""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Named only by code a build script generates into OUT_DIR (the protos' messages and tonic's
# codec for them), by crate.
GENERATED_USES = {"warrant-proto": {"prost", "tonic-prost"}}


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


def check(manifest_path, problems):
    manifest = tomllib.loads(manifest_path.read_text())
    here = manifest_path.parent.relative_to(ROOT)
    name = manifest["package"]["name"]
    kinds = {
        "dependencies": sources(here / "src"),
        "build-dependencies": sources(here / "build.rs") if (ROOT / here / "build.rs").exists() else "",
        "dev-dependencies": "\n".join(
            sources(here / place) for place in ("tests", "benches", "src") if (ROOT / here / place).exists()
        ),
    }
    used = set()
    for kind, text in kinds.items():
        crates = list(manifest.get(kind, {}))
        used.update(crates)
        if crates != sorted(crates):
            problems.append(f"{name}: [{kind}] is not sorted")
        for crate in crates:
            if kind == "dependencies" and crate in GENERATED_USES.get(name, ()):
                continue
            if not named(crate, text):
                problems.append(f"{name}: [{kind}] {crate}: nothing in its sources uses it")
    return used


def main():
    problems = []
    used = set()
    manifests = [ROOT / "Cargo.toml"] + sorted(ROOT.glob("crates/*/Cargo.toml"))
    for manifest in manifests:
        used |= check(manifest, problems)
    shared = list(tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["dependencies"])
    if shared != sorted(shared):
        problems.append("[workspace.dependencies] is not sorted")
    for crate in shared:
        if crate not in used:
            problems.append(f"[workspace.dependencies] {crate}: no member uses it")
    for problem in problems:
        print(f"check-deps: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-deps: every dependency of the {len(manifests)} manifests is used")


if __name__ == "__main__":
    main()
