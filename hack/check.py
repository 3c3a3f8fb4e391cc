#!/usr/bin/env python3
"""Whether the native cargo commands of `make test`, run in its order, reuse
what the ones before built: lists each crate a later command would compile
again (same crate and target, other features or profile), exit 1 if any.
hack/Cargo.toml holds the feature union; [profile.dev.build-override] in
Cargo.toml keeps host-only crates on the same profile.

Uses cargo's unstable `--unit-graph` (RUSTC_BOOTSTRAP=1 on a stable toolchain);
not part of `make test`.

    python3 hack/check.py
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# In `make test`'s order (lint's clippy only checks, so it shares nothing).
COMMANDS = [
    "test --workspace --exclude palisade-tests",
    "build -p palisade-cli",
    "test -p palisade-tests",
    "test -p palisade-cli",
    "test -p palisade-tests --test headers --test errors --test jwt --test ratelimit --test schema --test faults",
]


def units(command: str) -> list:
    """(name, full key) of every unit: the key covers the crate, target, mode,
    features, profile and, recursively, the dependencies' keys."""
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    out = subprocess.run(["cargo", *command.split(), "--unit-graph", "-Z", "unstable-options"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    graph = json.loads(out)
    memo = {}

    def key(i):
        if i not in memo:
            u = graph["units"][i]
            profile = {k: v for k, v in u["profile"].items() if k != "name"}
            memo[i] = (u["pkg_id"], tuple(u["target"]["kind"]), u["target"]["name"], u["mode"],
                       tuple(u["features"]), json.dumps(profile, sort_keys=True), u["platform"],
                       tuple(sorted(key(d["index"]) for d in u["dependencies"])))
        return memo[i]

    out = []
    for i, u in enumerate(graph["units"]):
        name = (u["pkg_id"].split("#")[-1].split("/")[-1], u["target"]["name"], u["mode"], u["platform"])
        out.append((name, key(i)))
    return out


def main() -> int:
    built_keys, built_names, again = set(), set(), 0
    for command in COMMANDS:
        rebuilt = sorted({f"{n[0]} ({n[1]}, {n[2]})" for n, k in units(command)
                          if n in built_names and k not in built_keys})
        print(f"cargo {command}: {len(rebuilt)} crates built again")
        for r in rebuilt:
            print(f"    {r}")
        again += len(rebuilt)
        for n, k in units(command):
            built_names.add(n)
            built_keys.add(k)
    return 1 if again else 0


if __name__ == "__main__":
    sys.exit(main())
