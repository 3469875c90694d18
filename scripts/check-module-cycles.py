#!/usr/bin/env python3
"""Fails when Warrant's modules import each other in a cycle. Nodes are the top-level modules
and the files inside the folder modules (api::grpc, ledger::chain, ...); an edge is a `crate::`
path outside `#[cfg(test)]` code. A folder's own mod.rs and its files may refer to each other
(that is how a module is split across files); any other cycle, between two files of one folder
too, is reported with its path."""

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def node_of(path):
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[0] in ("lib", "main"):
        return None
    if len(parts) == 1 or parts[1] == "mod":
        return parts[0]
    return f"{parts[0]}::{parts[1]}"


def main():
    nodes = {}
    for path in sorted(SRC.rglob("*.rs")):
        node = node_of(path)
        if node is None:
            continue
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", path.read_text())[0]
        deps = nodes.setdefault(node, set())
        for first, second in re.findall(r"crate::(\w+)(?:::(\w+))?", text):
            target = f"{first}::{second}" if (SRC / first / f"{second}.rs").exists() else first
            deps.add(target)
        folder = node.split("::")[0]
        for second in re.findall(r"super::(\w+)", text) if "::" in node else []:
            if (SRC / folder / f"{second}.rs").exists():
                deps.add(f"{folder}::{second}")

    def family(a, b):
        # A folder module's mod.rs and its own files (not two files of one folder).
        return a.split("::")[0] == b.split("::")[0] and ("::" not in a or "::" not in b)

    edges = {n: {d for d in ds if d in nodes and d != n and not family(n, d)} for n, ds in nodes.items()}
    cycles = []
    for start in sorted(edges):
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges[node]):
                if nxt == start:
                    cycles.append(path + [start])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        if cycles:
            break
    if cycles:
        print("check-module-cycles: modules import each other: " + " -> ".join(cycles[0]), file=sys.stderr)
        sys.exit(1)
    print(f"check-module-cycles: {len(nodes)} modules, no import cycle")


if __name__ == "__main__":
    main()
