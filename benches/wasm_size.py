#!/usr/bin/env python3
"""Where a wasm module's bytes go, by crate: `twiggy top` output summed by the
crate that owns each function.

    cargo install twiggy --root .tools
    CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --target wasm32-wasip1 \\
        -p palisade-module --no-default-features --features export --target-dir target/prof
    python3 benches/wasm_size.py target/prof/wasm32-wasip1/release/palisade.wasm

The module must keep its `name` section (not stripped); custom sections
(names, DWARF) are listed apart, as they are not in the shipped module.
A generic function is counted under the crate that appears first in its
demangled name (`<serde_json::Value as core::fmt::Debug>::fmt` → serde_json):
monomorphised code sits in the instantiating crate's name about as often as
in the generic one's, so treat the figures as ±10%.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A path's first segment: at the start or after `<`, `(`, `[`, `&`, `*`, `,`, ` `.
CRATE = re.compile(r"(?:^|[<(\[&*, ])([A-Za-z_][A-Za-z0-9_]*)::")
PRIMITIVE = {"core", "alloc", "std"}


def crate_of(name: str) -> str:
    if name.startswith("custom section") or "subsection" in name:
        return "(custom sections: names, DWARF)"
    if name.startswith("data segment") or name.startswith("data["):
        return "(data: .rodata, .data)"
    if name.startswith(("elem[", "table[", "type[", "global[", "import ", "export ", "memory[")) or name in (
        "code section headers", "wasm magic bytes"
    ):
        return "(wasm structure)"
    crates = CRATE.findall(name)
    if not crates:
        return "(unnamed: " + ("dlmalloc/libc" if re.match(r"^[a-z_0-9]+$", name) else "other") + ")"
    # `<T as Trait>::f`: T's crate, unless T is a std type and the trait is not.
    for c in crates:
        if c not in PRIMITIVE:
            return c
    return "core/alloc/std"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wasm")
    ap.add_argument("--twiggy", default=str(REPO / ".tools/bin/twiggy"))
    ap.add_argument("-n", type=int, default=30, help="crates to list")
    args = ap.parse_args()
    out = subprocess.run([args.twiggy, "top", "-n", "1000000", "-f", "csv", args.wasm],
                         capture_output=True, text=True, check=True).stdout
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    total = 0
    for row in csv.DictReader(io.StringIO(out)):
        n = int(row["ShallowSize"])
        c = crate_of(row["Name"])
        sizes[c] = sizes.get(c, 0) + n
        counts[c] = counts.get(c, 0) + 1
        total += n
    custom = sizes.get("(custom sections: names, DWARF)", 0)
    shipped = total - custom
    print(f"{args.wasm}: {total:,} bytes, {shipped:,} without custom sections\n")
    print("| crate | bytes | % of shipped | items |")
    print("|---|---|---|---|")
    for c, n in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.n]:
        pct = "" if c.startswith("(custom") else f"{100 * n / shipped:.1f}"
        print(f"| {c} | {n:,} | {pct} | {counts[c]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
