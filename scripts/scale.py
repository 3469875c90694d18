#!/usr/bin/env python3
"""Writes a policy directory for the scaling benchmarks (BENCHMARKS.md): the bundled schema and
guardrail policies, plus one generated permit per identity, scoped by principal and resource,
as many links of one per-identity grant template as asked (links.json), and as many service
accounts and datasets as asked.

    scripts/scale.py OUT_DIR --policies 1000 --identities 1000 [--links 100000] [--console]

With --console, the console's policies too (console.cedar), and the owner in Team::"security".
"""

import argparse
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--policies", type=int, default=10)
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--links", type=int, default=0)
    parser.add_argument("--console", action="store_true")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundled = ROOT / "policies"
    for name in ["schema.cedarschema", "identity.cedar", "approvals.cedar"]:
        shutil.copy(bundled / name, out / name)
    if args.console:
        shutil.copy(bundled / "console.cedar", out / "console.cedar")

    with open(out / "generated.cedar", "w") as policies:
        for i in range(args.policies):
            policies.write(
                f'@id("sa-{i}-reads-ds-{i}")\n'
                f'permit (principal == ServiceAccount::"sa-{i}", action == Action::"read", '
                f'resource == Dataset::"ds-{i}")\n'
                f'when {{ resource in principal.scopes }};\n\n'
            )

    if args.links:
        with open(out / "grants.cedar", "w") as grants:
            grants.write(
                '@id("dataset-grant")\n'
                'permit (principal == ?principal, action == Action::"read", resource == ?resource)\n'
                'when { resource in principal.scopes };\n'
            )
        with open(out / "links.json", "w") as links:
            links.write("[\n")
            for i in range(args.links):
                links.write(json.dumps({
                    "id": f"sa-{i}-reads-ds-{i}-link", "template": "dataset-grant",
                    "principal": {"type": "ServiceAccount", "id": f"sa-{i}"},
                    "resource": {"type": "Dataset", "id": f"ds-{i}"},
                }) + ("\n" if i == args.links - 1 else ",\n"))
            links.write("]\n")

    count = max(args.identities, args.policies, args.links)
    with open(out / "entities.json", "w") as entities:
        entities.write("[\n")
        teams = [{"type": "Team", "id": "security"}] if args.console else []
        rows = [
            {"uid": {"type": "Human", "id": "owner"}, "attrs": {"name": "Owner", "email": "owner@example.com"}, "parents": teams},
            {"uid": {"type": "Scope", "id": "data"}, "attrs": {"kind": "dataset-family"}, "parents": []},
        ]
        if args.console:
            rows += [
                {"uid": {"type": "Team", "id": "security"}, "attrs": {}, "parents": []},
                {"uid": {"type": "Console", "id": "warrant"}, "attrs": {}, "parents": []},
            ]
        for row in rows:
            entities.write(json.dumps(row) + ",\n")
        for i in range(count):
            entities.write(json.dumps({
                "uid": {"type": "ServiceAccount", "id": f"sa-{i}"},
                "attrs": {"owner": {"__entity": {"type": "Human", "id": "owner"}}, "status": "active",
                          "environment": "production", "privileged": False,
                          "scopes": [{"__entity": {"type": "Scope", "id": "data"}}]},
                "parents": [],
            }) + ",\n")
            last = i == count - 1
            entities.write(json.dumps({
                "uid": {"type": "Dataset", "id": f"ds-{i}"}, "attrs": {},
                "parents": [{"type": "Scope", "id": "data"}],
            }) + ("\n" if last else ",\n"))
        entities.write("]\n")


if __name__ == "__main__":
    main()
