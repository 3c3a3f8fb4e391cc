#!/usr/bin/env python3
"""`make dist` checks its own bundle: every module with its Kong meta.json,
every OCI image with the digest Istio pins, the `palisade` command, the
documents, and SHA256SUMS covering exactly the files there.

usage: release/check.py DIR   (exit 1 with the list of what is wrong)
"""
import hashlib
import json
import subprocess
import sys
from pathlib import Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(root: Path) -> list[str]:
    problems = []
    filters = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "filters").iterdir()
                     if (p / "Cargo.toml").is_file() and p.name != "core")
    modules = ["palisade"] + [f"palisade_{f}" for f in filters]
    images = ["palisade"] + filters
    expected = {"palisade", "LICENSE", "CHANGELOG.md", "README.md", "SHA256SUMS", "oci/DIGESTS"}
    for m in modules:
        expected |= {f"{m}.wasm", f"{m}.meta.json"}
        wasm = root / f"{m}.wasm"
        if wasm.is_file() and wasm.read_bytes()[:4] != b"\0asm":
            problems.append(f"{m}.wasm is not a wasm module")
        meta = root / f"{m}.meta.json"
        if meta.is_file() and "config_schema" not in json.loads(meta.read_text()):
            problems.append(f"{m}.meta.json has no config_schema")
    for i in images:
        expected.add(f"oci/{i}.tar")
    for f in sorted(expected):
        if not (root / f).is_file():
            problems.append(f"missing: {f}")
    # Each image's digest, as the tarball's index.json records it.
    digests = {}
    if (root / "oci/DIGESTS").is_file():
        for line in (root / "oci/DIGESTS").read_text().splitlines():
            name, _, digest = line.partition(" ")
            digests[name] = digest.strip()
    for i in images:
        tar = root / "oci" / f"{i}.tar"
        if not tar.is_file():
            continue
        out = subprocess.run(["tar", "-xOf", str(tar), "index.json"], capture_output=True)
        try:
            digest = json.loads(out.stdout)["manifests"][0]["digest"]
        except (ValueError, KeyError, IndexError):
            problems.append(f"oci/{i}.tar: no index.json manifest")
            continue
        if digests.get(i) != digest:
            problems.append(f"oci/DIGESTS: {i} is {digests.get(i)!r}, the image says {digest}")
    # SHA256SUMS lists every other file, each with its hash.
    sums = {}
    if (root / "SHA256SUMS").is_file():
        for line in (root / "SHA256SUMS").read_text().splitlines():
            digest, _, name = line.partition("  ")
            sums[name.removeprefix("./")] = digest
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    if set(sums) != present:
        problems.append(f"SHA256SUMS lists {sorted(set(sums) ^ present)} wrongly")
    for name, digest in sums.items():
        if (root / name).is_file() and sha256(root / name) != digest:
            problems.append(f"SHA256SUMS: {name} does not match")
    # The command runs and knows every filter.
    if (root / "palisade").is_file():
        out = subprocess.run([str(root / "palisade"), "filters"], capture_output=True, text=True)
        for f in filters:
            if f not in out.stdout:
                problems.append(f"palisade filters does not list {f}")
    return problems


def self_test(root: Path) -> list[str]:
    """The check must fail on a bundle missing a module, with a stale
    SHA256SUMS, or with a wrong digest: run on damaged copies."""
    import shutil
    import tempfile

    failures = []
    damages = {
        "a module removed": lambda d: (d / "palisade_jwt.wasm").unlink(),
        "a file changed after SHA256SUMS": lambda d: (d / "README.md").write_text("changed"),
        "a wrong image digest": lambda d: (d / "oci/DIGESTS").write_text(
            (d / "oci/DIGESTS").read_text().replace("sha256:", "sha256:0", 1)),
    }
    for what, damage in damages.items():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "bundle"
            shutil.copytree(root, copy)
            damage(copy)
            if not main(copy):
                failures.append(f"self-test: {what} was not noticed")
    return failures


if __name__ == "__main__":
    if sys.argv[1] == "--self-test":
        found = self_test(Path(sys.argv[2]))
        for p in found:
            print(f"release: {p}", file=sys.stderr)
        print(f"release: self-test {'passed' if not found else 'FAILED'}")
        sys.exit(1 if found else 0)
    found = main(Path(sys.argv[1]))
    for p in found:
        print(f"release: {p}", file=sys.stderr)
    print(f"release: {sys.argv[1]}: {'complete' if not found else f'{len(found)} problem(s)'}")
    sys.exit(1 if found else 0)
