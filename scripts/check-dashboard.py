#!/usr/bin/env python3
"""Checks that every query of examples/grafana/dashboard.json is valid PromQL: writes them, with
the dashboard's variables filled in, as recording rules and has `promtool check rules` parse
them. Also refuses the patterns that made the old dashboard lie: clamp_min on a denominator
(it halves ratios at low traffic) and queries not scoped to the $job variable."""
import json
import pathlib
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parent.parent
dashboard = json.loads((root / "examples/grafana/dashboard.json").read_text())
names = [v["name"] for v in dashboard["templating"]["list"]]
assert "job" in names and "instance" in names, names
problems = []
rules = []
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"]
        if "clamp_min" in expr:
            problems.append(f"{panel['title']}: clamp_min in {expr}")
        if '$job' not in expr:
            problems.append(f"{panel['title']}: not scoped to $job: {expr}")
        filled = (expr.replace("$__rate_interval", "5m")
                  .replace("$instance", ".*").replace("$job", "warrant"))
        rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": filled})
if problems:
    sys.exit("\n".join(problems))
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
result = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
if result.returncode != 0:
    sys.exit(result.stdout + result.stderr)
print(f"dashboard: {len(rules)} queries parse")
