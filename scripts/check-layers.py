#!/usr/bin/env python3
"""Fails when a crate of the workspace depends on something its layer may not: reads the codemap
(ARCHITECTURE.md) for each crate's `- May depend on:` (the workspace crates it may use) and
`- Never pulls in:` (external crates that must not be in its build, however indirectly), and
compares them with what `cargo metadata` resolves (normal and build dependencies; tests and
benches may use more). A crate missing from the codemap is a failure too. A target that links no
test harness (`test = false`) must hold no unit tests, or they would never run. Run from anywhere;
scripts/test runs it."""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def codemap():
    """{crate: (allowed workspace crates, forbidden external crates)} from ARCHITECTURE.md."""
    rules = {}
    crate = None
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        heading = re.match(r"^### `(warrant(?:-[a-z]+)?)`", line)
        if heading:
            crate = heading.group(1)
            rules[crate] = (set(), set())
            continue
        if crate is None:
            continue
        allowed = re.match(r"^- May depend on: (.*)$", line)
        if allowed:
            rules[crate][0].update(re.findall(r"`([\w-]+)`", allowed.group(1)))
        forbidden = re.match(r"^- Never pulls in: (.*)$", line)
        if forbidden:
            rules[crate][1].update(re.findall(r"`([\w-]+)`", forbidden.group(1)))
    return rules


def untested_targets_with_tests(metadata):
    """Targets marked `test = false` whose sources hold `#[cfg(test)]` (tests nobody would run)."""
    problems = []
    members = set(metadata["workspace_members"])
    for package in metadata["packages"]:
        if package["id"] not in members:
            continue
        src = pathlib.Path(package["manifest_path"]).parent / "src"
        for target in package["targets"]:
            if target.get("test", True) or not {"lib", "bin"} & set(target["kind"]):
                continue
            entry = pathlib.Path(target["src_path"])
            # A library owns its folder; a binary at src/main.rs owns only that file (the
            # library owns the rest), a binary in src/bin/NAME/ owns its folder.
            owns_folder = "lib" in target["kind"] or entry.parent != src
            files = sorted(entry.parent.rglob("*.rs")) if owns_folder else [entry]
            for file in files:
                if "#[cfg(test)]" in file.read_text():
                    problems.append(
                        f"{file.relative_to(ROOT)} holds unit tests, but {package['name']}'s "
                        f"{target['name']} target has `test = false`, so they never run"
                    )
    return problems


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
    )
    names = {p["id"]: p["name"] for p in metadata["packages"]}
    members = {names[i] for i in metadata["workspace_members"]}
    edges = {}
    for node in metadata["resolve"]["nodes"]:
        edges[names[node["id"]]] = {
            names[dep["pkg"]]
            for dep in node["deps"]
            if any(kind["kind"] in (None, "build") for kind in dep["dep_kinds"])
        }
    rules = codemap()
    problems = untested_targets_with_tests(metadata)
    for crate in sorted(members):
        if crate not in rules:
            problems.append(f"{crate}: not in the codemap (ARCHITECTURE.md, `### `{crate}``)")
            continue
        allowed, forbidden = rules[crate]
        for dep in sorted(edges.get(crate, set()) & members):
            if dep not in allowed:
                problems.append(f"{crate} depends on {dep}, which the codemap does not allow")
        closure, queue = set(), [crate]
        while queue:
            for dep in edges.get(queue.pop(), set()):
                if dep not in closure:
                    closure.add(dep)
                    queue.append(dep)
        for dep in sorted(closure & forbidden):
            problems.append(f"{crate} pulls in {dep}, which the codemap forbids it")
    for problem in problems:
        print(f"check-layers: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-layers: {len(members)} crates keep to their layers")


if __name__ == "__main__":
    main()
