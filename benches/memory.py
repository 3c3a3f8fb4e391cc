#!/usr/bin/env python3
"""`make bench-memory`: Envoy's RSS with Palisade's modules loaded.

For each variant one Envoy runs at `--concurrency 2` (two workers: the main
thread's VM plus one clone per worker), gets a few requests, and its VmRSS
(/proc/<pid>/status) is read once it has settled (no change over a few
samples). Reported: RSS and RSS added over the router-only Envoy.

Variants: router only; the empty wasm filter (the floor of any module); each
per-filter module `dist/palisade_<x>.wasm` with its bench config; the
five-module chain (run.py's `chain` variant, same configs and order); and
`dist/palisade.wasm` running the same five configs as one chain file
(errors, headers, jwt, ratelimit, schema), plus `palisade.wasm` running the
headers control alone (what the module's bytes cost, whatever the config).

RSS is robust to CPU load, so this runs beside other work; it still takes
run.py's lock so that it never runs beside a latency benchmark. Envoys are
started by pid on free 127.0.0.1 ports and stopped by pid. Python 3 standard
library only; configs and Envoy helpers come from run.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benches/run.py: configs, Envoy, helpers)

PETSTORE = "filters/schema/tests/fixtures/petstore.json"
CHAIN_FIVE = ["errors", "headers", "jwt", "ratelimit", "schema"]
SECTION_BEGIN = "<!-- memory.py: begin -->"
SECTION_END = "<!-- memory.py: end -->"


class MemEnvoy(run.Envoy):
    """run.Envoy at `--concurrency N`, not pinned (RSS does not care about cores)."""

    def __init__(self, binary: str, variant: run.Variant, workdir: Path, tag: str, concurrency: int,
                 release_mib: int = 0):
        self.port = run.free_port()
        self.admin_port = run.free_port()
        self.config_path = workdir / f"{tag}.json"
        config = run.envoy_config(variant, self.port, self.admin_port)
        if release_mib:
            # tcmalloc hands free pages back to the kernel in the background.
            config["memory_allocator_manager"] = {
                "bytes_to_release": release_mib << 20, "memory_release_interval": "0.5s"}
        self.config_path.write_text(json.dumps(config, indent=1))
        self.log_path = workdir / f"{tag}.log"
        cmd = [
            binary, "-c", str(self.config_path),
            "--concurrency", str(concurrency),
            "--disable-hot-restart",
            "--log-level", "warn",
            "--log-path", str(self.log_path),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=run.die_with_parent,
        )


def chain_file(configs: dict[str, str], order: list[str]) -> str:
    """The chain file's JSON form: one route, the controls in `order`."""
    filters = [{name: json.loads(configs[name])} for name in order]
    return json.dumps({
        "version": 1,
        "upstreams": {"u": "http://127.0.0.1:1"},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "upstream": "u", "filters": filters}],
    })


def jwt_token(dist: Path) -> Optional[str]:
    """A bench RS256 token if `make bench` minted them already (never mints)."""
    path = dist / "bench" / "jwt_tokens_RS256.json"
    try:
        return json.loads(path.read_text())[0]
    except (OSError, ValueError, IndexError, KeyError):
        return None


@dataclass
class Row:
    variant: run.Variant
    rss_kib: Optional[int] = None
    smaps: Optional[dict] = None
    tcmalloc: Optional[dict] = None
    statuses: str = ""
    error: str = ""
    settle_s: float = 0.0
    ready_s: Optional[float] = None
    size: Optional[int] = None


def build(dist: Path) -> tuple[list[run.Variant], list[str]]:
    notes: list[str] = []
    V = run.Variant
    out = [V("router", "router only", note="the baseline")]
    empty = dist / "bench" / "palisade_empty.wasm"
    if empty.is_file():
        out.append(V("empty", "empty wasm filter", http_filters=[run.wasm_filter("empty", empty, "{}")],
                     modules=[empty], note="the floor of any module"))
    configs: dict[str, str] = {}
    sources: dict[str, str] = {}
    mods: dict[str, Path] = {}
    for name in CHAIN_FIVE:
        configs[name], sources[name] = run.find_filter_config(name)
        path = dist / f"palisade_{name}.wasm"
        if path.is_file():
            mods[name] = path
            out.append(V(name, f"palisade_{name}.wasm", http_filters=[run.wasm_filter(name, path, configs[name])],
                         modules=[path], note=f"config: {sources[name]}"))
        else:
            notes.append(f"skipped {name}: {path} not found")
    if len(mods) == len(CHAIN_FIVE):
        order = [n for n in run.CHAIN_ORDER if n in mods] + sorted(n for n in mods if n not in run.CHAIN_ORDER)
        out.append(V("chain", "five modules (" + " → ".join(order) + ")",
                     http_filters=[run.wasm_filter(n, mods[n], configs[n]) for n in order],
                     modules=[mods[n] for n in order], note="run.py's `chain` variant"))
    one = dist / "palisade.wasm"
    if one.is_file():
        out.append(V("one", "palisade.wasm, whole chain (" + " → ".join(CHAIN_FIVE) + ")",
                     http_filters=[run.wasm_filter("chain", one, chain_file(configs, CHAIN_FIVE))],
                     modules=[one], note="the same five configs as one chain file"))
        petstore = json.loads((run.REPO / PETSTORE).read_text())
        pet = dict(configs, schema=json.dumps({"unmatched": "allow", "openapi": petstore}))
        out.append(V("one-petstore", "palisade.wasm, schema alone, pet-store OpenAPI",
                     http_filters=[run.wasm_filter("chain", one, chain_file(pet, ["schema"]))],
                     modules=[one], note=f"configure-time work: {PETSTORE}"))
        out.append(V("one-headers", "palisade.wasm, headers alone",
                     http_filters=[run.wasm_filter("chain", one, chain_file(configs, ["headers"]))],
                     modules=[one], note="the module's bytes with the least config"))
    else:
        notes.append(f"skipped palisade.wasm: {one} not found")
    return out, notes


def settle(envoy: MemEnvoy, interval: float, stable: int, limit: float) -> tuple[Optional[int], float]:
    """VmRSS once `stable` consecutive samples differ by < 0.25 MiB; or at `limit` seconds."""
    t0 = time.monotonic()
    last, same = envoy.rss_kib(), 0
    while time.monotonic() - t0 < limit:
        time.sleep(interval)
        now = envoy.rss_kib()
        if now is None:
            return None, time.monotonic() - t0
        same = same + 1 if last is not None and abs(now - last) < 256 else 0
        last = now
        if same >= stable:
            break
    return last, time.monotonic() - t0


def smaps_breakdown(pid: int) -> Optional[dict]:
    """RSS (KiB) by kind of mapping, from /proc/<pid>/smaps.

    - `jit code`: anonymous executable mappings (V8's wasm and JS code space);
    - `other anon`: tcmalloc's heap, V8's heaps, linear memories, stacks;
    - `envoy binary` and `other files`: file-backed pages.
    """
    kinds: dict[str, int] = {}
    kind = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
                if head:
                    perms, path = head.group(3), head.group(4).strip()
                    if path and not path.startswith("["):
                        kind = "envoy binary" if path.endswith("/envoy") else "other files"
                    elif "x" in perms:
                        kind = "jit code"
                    else:
                        kind = "other anon"
                elif line.startswith("Rss:") and kind:
                    kinds[kind] = kinds.get(kind, 0) + int(line.split()[1])
    except OSError:
        return None
    return kinds


def tcmalloc_stats(admin_port: int) -> Optional[dict]:
    """Envoy's admin `/memory` (tcmalloc): bytes in use, and free bytes it keeps."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
        conn.request("GET", "/memory")
        m = json.loads(conn.getresponse().read())
        conn.close()
        return {"in use": int(m["allocated"]) // 1024,
                "free kept": (int(m["pageheap_free"]) + int(m["total_thread_cache"])) // 1024}
    except (OSError, ValueError, KeyError):
        return None


def measure(args, v: run.Variant, workdir: Path, token: Optional[str]) -> Row:
    row = Row(v, size=sum(p.stat().st_size for p in v.modules) if v.modules else None)
    envoy = MemEnvoy(args.envoy, v, workdir, v.key, args.concurrency, args.release_mib)
    try:
        headers = dict(run.REQUEST_HEADERS)
        if token:
            headers["authorization"] = f"Bearer {token}"
        request = ("GET", headers, b"")
        t0 = time.monotonic()
        envoy.wait_ready(request, timeout=60)
        row.ready_s = time.monotonic() - t0
        codes: dict[int, int] = {}
        for _ in range(args.requests):  # new connections: both workers get some
            status, _, _ = run.http_get(envoy.port, timeout=5, request=request)
            codes[status] = codes.get(status, 0) + 1
        row.statuses = ", ".join(f"{c}×{n}" for c, n in sorted(codes.items()))
        row.rss_kib, row.settle_s = settle(envoy, args.interval, args.stable, args.limit)
        row.smaps = smaps_breakdown(envoy.proc.pid)
        row.tcmalloc = tcmalloc_stats(envoy.admin_port)
        if envoy.proc.poll() is not None:
            row.error = f"envoy exited: {envoy.log_tail()}"
    except (run.BenchError, OSError, subprocess.SubprocessError) as e:
        row.error = str(e)
    finally:
        envoy.stop()
    return row


def mib(kib: Optional[float]) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def report(args, rows: list[Row], notes: list[str], envoy_version: str) -> str:
    base = next((r.rss_kib for r in rows if r.variant.key == "router" and r.rss_kib), None)
    lines = [
        SECTION_BEGIN,
        f"## Memory: Envoy RSS at `--concurrency {args.concurrency}`",
        "",
        f"`make bench-memory` (benches/memory.py), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{envoy_version}. One Envoy per variant, {args.requests} requests, then VmRSS once it "
        f"stopped changing (< 0.25 MiB over {args.stable} samples {args.interval:g}s apart); "
        f"median of {args.repeat} start(s). Added = RSS minus the router-only Envoy's.",
        "",
        "| variant | module bytes | RSS (MiB) | added (MiB) | start to first answer (s) | answers | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = r.size
        added = "0 (baseline)" if r.variant.key == "router" else (
            f"+{(r.rss_kib - base) / 1024:.1f}" if r.rss_kib and base else "–")
        note = r.variant.note + (f"; error: {r.error}" if r.error else "")
        lines.append(f"| {r.variant.label} | {'–' if size is None else f'{size:,}'} | {mib(r.rss_kib)} "
                     f"| {added} | {'–' if r.ready_s is None else f'{r.ready_s:.2f}'} | {r.statuses} | {note} |")
    cols = ["envoy binary", "jit code", "tcmalloc in use", "tcmalloc free kept", "rest"]
    lines += [
        "",
        "Where each Envoy's RSS sits (MiB): `envoy binary`, its file-backed pages (V8's compiler "
        "and runtime are paged in once any wasm runs); `jit code`, anonymous executable memory "
        "(V8's TurboFan code for the module: Envoy turns Liftoff off, so every function is "
        "compiled at load); `tcmalloc in use` and `free kept` from the admin `/memory` "
        "(allocated; pageheap_free + thread caches: freed memory tcmalloc has not returned, "
        "mostly the compiler's scratch); `rest`, other anonymous memory (V8's heaps, linear "
        "memories, stacks) and other files.",
        "",
        "| variant | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in rows:
        if r.smaps and r.tcmalloc and r.rss_kib:
            parts = {"envoy binary": r.smaps.get("envoy binary", 0), "jit code": r.smaps.get("jit code", 0),
                     "tcmalloc in use": r.tcmalloc["in use"], "tcmalloc free kept": r.tcmalloc["free kept"]}
            parts["rest"] = r.rss_kib - sum(parts.values())
            lines.append(f"| {r.variant.label} | " + " | ".join(mib(parts[c]) for c in cols) + " |")
    lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else []) + [SECTION_END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replaces the marked memory section of `path`, or appends it."""
    old = path.read_text() if path.is_file() else ""
    pat = re.compile(re.escape(SECTION_BEGIN) + ".*?" + re.escape(SECTION_END) + r"\n?", re.S)
    new = pat.sub(lambda _: text, old, count=1) if pat.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envoy", default=os.environ.get("ENVOY_BIN"), help="Envoy binary (default $ENVOY_BIN)")
    ap.add_argument("--dist", default=str(run.REPO / "dist"))
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1, help="starts per variant (median reported)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--stable", type=int, default=3, help="equal samples that count as settled")
    ap.add_argument("--limit", type=float, default=30.0, help="max seconds to wait for RSS to settle")
    ap.add_argument("--release-mib", type=int, default=0, metavar="N",
                    help="bootstrap memory_allocator_manager: tcmalloc releases N MiB of free pages every 0.5s")
    ap.add_argument("--only", help="comma-separated variant keys (router always included)")
    ap.add_argument("--module", help="measure this file as palisade.wasm instead of dist's")
    ap.add_argument("--out", help="also write the table as a marked section of this markdown file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with configs and logs")
    args = ap.parse_args()
    if not args.envoy or not os.access(args.envoy, os.X_OK):
        print(f"memory.py: Envoy binary {args.envoy!r} not found (--envoy or ENVOY_BIN)", file=sys.stderr)
        return 2
    dist = Path(args.dist)
    workdir = Path(tempfile.mkdtemp(prefix="palisade-memory-"))
    # A snapshot of the modules: a `make build` running meanwhile cannot mix two builds in one table.
    snap = workdir / "dist"
    (snap / "bench").mkdir(parents=True)
    for p in list(dist.glob("palisade*.wasm")) + list(dist.glob("bench/palisade_empty.wasm")):
        shutil.copy(p, snap / p.relative_to(dist))
    if args.module:
        shutil.copy(args.module, snap / "palisade.wasm")
    variants, notes = build(snap)
    if args.module:
        notes.append(f"palisade.wasm: {args.module}")
    if args.only:
        keep = set(args.only.split(",")) | {"router"}
        variants = [v for v in variants if v.key in keep]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    lock = run.take_lock()  # noqa: F841  (never beside a latency benchmark)
    token = jwt_token(dist)
    if not token:
        notes.append("requests carry no JWT (no minted token in dist/bench/; run.py mints them)")
    version = subprocess.run([args.envoy, "--version"], capture_output=True, text=True).stdout.strip()
    version = "Envoy " + (version.split("version: ")[-1].split("/")[1] if "/" in version else version)
    rows: list[Row] = []
    try:
        for v in variants:
            samples = []
            for i in range(args.repeat):
                r = measure(args, v, workdir, token)
                print(f"{v.key}: {mib(r.rss_kib)} MiB after {r.settle_s:.0f}s ({r.statuses}) {r.error}",
                      file=sys.stderr, flush=True)
                samples.append(r)
            good = sorted((s for s in samples if s.rss_kib and not s.error), key=lambda s: s.rss_kib)
            rows.append(good[len(good) // 2] if good else samples[-1])
    finally:
        if args.keep:
            print(f"configs and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(args, rows, notes, version)
    print(text)
    if args.out:
        write_section(Path(args.out), text)
        print(f"written to {args.out}", file=sys.stderr)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
