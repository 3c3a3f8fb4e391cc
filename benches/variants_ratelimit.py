"""Rate-limit filter variants for `make bench` (imported by run.py).

Same policy everywhere: one bucket per value of the `x-rl-client` request
header, whose value alternates between two clients (`a`, `b`).

- native `local_ratelimit`, never limiting (buckets far larger than any run);
- native `local_ratelimit`, limiting half (client `b`'s bucket holds one
  token a day: every other request is a 429);
- this filter, never limiting (local mode: shared-data CAS per request),
  without response fields like the native filter, and with the default
  `draft` RateLimit fields;
- this filter, limiting (one token a day for everyone: every request but the
  first is a 429), to compare the cost of a 429 with a proxied request:
  this filter letting requests through to a real upstream (a second Envoy),
  each measured as the Envoy process's own CPU time per request.

Goals (issue 4): not limiting, at most 1.5x the empty wasm filter's cost per
request; limiting, a 429 costs less than a proxied request.

Python 3 standard library only.
"""

import json

HEADER = "x-rl-client"
CLIENTS = ["a", "b"]
HUGE = 1_000_000_000
DAY = 86400


def native_local_ratelimit(limit_b: bool) -> dict:
    """Envoy's `local_ratelimit` with one descriptor per client value."""
    big = {"max_tokens": HUGE, "tokens_per_fill": HUGE, "fill_interval": "1s"}
    tiny = {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": f"{DAY}s"}
    descriptors = [
        {"entries": [{"key": "client", "value": "a"}], "token_bucket": big},
        {"entries": [{"key": "client", "value": "b"}], "token_bucket": tiny if limit_b else big},
    ]
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench_rl",
            "token_bucket": big,
            "filter_enabled": {"runtime_key": "rl_enabled",
                               "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"runtime_key": "rl_enforced",
                                "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "descriptors": descriptors,
            "rate_limits": [{"actions": [{"request_headers": {
                "header_name": HEADER, "descriptor_key": "client"}}]}],
        },
    }


def filter_config(requests: int, per_s: int, key: list, fields: str = "none") -> str:
    return json.dumps({
        "rules": [{"limits": [{"name": "bench", "key": key, "requests": requests, "per_s": per_s}]}],
        "response_headers": fields,
    })


def variants(ctx):
    wasm = ctx.dist / "palisade_ratelimit.wasm"
    if not wasm.is_file():
        ctx.notes.append("ratelimit variants skipped: dist/palisade_ratelimit.wasm missing (make build)")
        return []
    rotate = (HEADER, CLIENTS)
    out = [
        ctx.Variant(
            "rl-native-open", "native local_ratelimit, never limiting",
            http_filters=[native_local_ratelimit(limit_b=False)], rotate_header=rotate,
            note="Envoy's own token buckets, per x-rl-client value",
        ),
        ctx.Variant(
            "rl-native-half", "native local_ratelimit, limiting half (429)",
            http_filters=[native_local_ratelimit(limit_b=True)], rotate_header=rotate,
            expected_status={200, 429},
            note="client b is out of tokens: every other answer is Envoy's 429",
        ),
        ctx.Variant(
            "rl-open", "ratelimit: local, never limiting",
            http_filters=[ctx.wasm_filter("ratelimit", wasm, filter_config(HUGE, 1, [{"header": HEADER}]))],
            rotate_header=rotate, modules=[wasm], filter_cost_of="ratelimit",
            note="compare with the empty filter (goal: <= 1.5x)",
        ),
        ctx.Variant(
            "rl-open-fields", "ratelimit: local, never limiting, RateLimit fields",
            http_filters=[ctx.wasm_filter("ratelimit", wasm,
                                          filter_config(HUGE, 1, [{"header": HEADER}], "draft"))],
            rotate_header=rotate, modules=[wasm],
            note="the default response_headers (draft): two more header writes per response",
        ),
        ctx.Variant(
            "rl-limited", "ratelimit: local, limiting every request (429)",
            http_filters=[ctx.wasm_filter("ratelimit", wasm, filter_config(1, DAY, []))],
            rotate_header=rotate, modules=[wasm], expected_status={200, 429},
            cheaper_than="rl-open-proxied",
            note="a 429 problem+json from the filter (only the very first request passes); "
                 "goal: cheaper than rl-open-proxied's request",
        ),
        ctx.Variant(
            "rl-open-proxied", "ratelimit: local, never limiting, proxied to an upstream",
            http_filters=[ctx.wasm_filter("ratelimit", wasm, filter_config(HUGE, 1, [{"header": HEADER}]))],
            rotate_header=rotate, modules=[wasm], upstream=True, baseline="rl-router-proxied",
            note="what the 429 is compared with: the same filter letting the request through to a real upstream",
        ),
        ctx.Variant(
            "rl-router-proxied", "router only, proxied to an upstream",
            upstream=True, note="baseline of the proxied variants",
        ),
    ]
    floor = ctx.dist / "bench" / "floor_ratelimit.wasm"
    if floor.is_file():
        out.append(ctx.Variant(
            "rl-floor", "floor: the local rate-limit contract's host calls, no logic",
            http_filters=[ctx.wasm_filter("floor_ratelimit", floor, "{}")], rotate_header=rotate,
            modules=[floor], filter_cost_of="ratelimit",
            note="get the key header, get the bucket from shared data, set it with CAS (benches/empty-filter)",
        ))
    else:
        ctx.notes.append("ratelimit floor skipped: dist/bench/floor_ratelimit.wasm missing (make bench-probes)")
    return out
