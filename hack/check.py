#!/usr/bin/env python3
"""Whether the native cargo commands of `make test` resolve every shared
dependency with the same features (so none of them recompiles what another
built): prints the crates whose features differ between commands, exit 1 if
any. hack/Cargo.toml lists the features to add when it fails.

Uses cargo's unstable `--unit-graph` (RUSTC_BOOTSTRAP=1 on a stable toolchain);
not part of `make test`.

    python3 hack/check.py
"""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "clippy": "clippy --workspace --all-targets",
    "unit": "test --workspace --exclude palisade-tests",
    "integration": "test -p palisade-tests",
    "cli tests": "test -p palisade-cli",
    "cli": "build -p palisade-cli",
}


def features(command: str) -> dict:
    """(crate@version, host|target) -> set of feature lists, for one command."""
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    out = subprocess.run(["cargo", *command.split(), "--unit-graph", "-Z", "unstable-options"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    graph = json.loads(out)
    units = graph["units"]
    host = [False] * len(units)
    seen = set()
    stack = [(r, False) for r in graph["roots"]]
    while stack:
        i, h = stack.pop()
        if (i, h) in seen:
            continue
        seen.add((i, h))
        kind = units[i]["target"]["kind"]
        h = h or kind == ["proc-macro"] or "custom-build" in kind
        host[i] = host[i] or h
        stack.extend((d["index"], h) for d in units[i]["dependencies"])
    found = collections.defaultdict(set)
    for i, u in enumerate(units):
        if u["pkg_id"].startswith("registry") and "custom-build" not in u["target"]["kind"]:
            key = (u["pkg_id"].split("#")[1], "host" if host[i] else "target")
            found[key].add(",".join(u["features"]))
    return found


def main() -> int:
    graphs = {name: features(cmd) for name, cmd in COMMANDS.items()}
    bad = 0
    for key in sorted(set().union(*graphs.values())):
        seen = {name: frozenset(g[key]) for name, g in graphs.items() if key in g}
        if len(set(seen.values())) > 1:
            bad += 1
            print(f"{key[0]} ({key[1]}):")
            for name, f in seen.items():
                print(f"    {name:12} {sorted(f)}")
    print(f"{bad} crates resolved differently by {', '.join(COMMANDS)}" if bad else "all commands agree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
