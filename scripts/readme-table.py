#!/usr/bin/env python3
"""Rewrites the README's environment variable table from `etcd-backup --help` (one source: VARS).
   scripts/readme-table.py target/debug/etcd-backup"""
import re, subprocess, sys

out = subprocess.run([sys.argv[1], "--help"], capture_output=True, text=True, check=True).stdout
body = out.split("Environment variables (aliases in brackets):\n")[1].split("\n\nExit codes")[0].split("\n")
rows = []
for head, doc in zip(body[0::2], body[1::2]):
    m = re.match(r"(\S+)(?: \[(.*)\])?", head.strip())
    name, aliases = m.group(1), m.group(2) or ""
    doc = doc.strip()
    d = re.search(r" \(default: (.*)\)$", doc)
    default = d.group(1) if d else ""
    if d:
        doc = doc[: d.start()]
    aliases = ", ".join(f"`{a.strip()}`" for a in aliases.split(",")) if aliases else ""
    rows.append(f"| `{name}` | {aliases} | {f'`{default}`' if default else ''} | {doc} |")
table = "| Variable | Aliases | Default | Meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
readme = open("README.md").read()
pattern = r"\| Variable \| Aliases \| Default \| Meaning \|\n(?:\|.*\|\n)+"
assert len(re.findall(pattern, readme)) == 1, "expected one table in README.md"
open("README.md", "w").write(re.sub(pattern, lambda _: table, readme))
