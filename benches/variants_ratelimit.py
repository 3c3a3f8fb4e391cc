"""Rate-limit filter variants for `make bench` (imported by run.py).

Same policy everywhere: one bucket per value of the `x-rl-client` request
header, whose value alternates between two clients (`a`, `b`).

- native `local_ratelimit`, never limiting (buckets far larger than any run);
- native `local_ratelimit`, limiting half (client `b`'s bucket holds one
  token a day: every other request is a 429);
- this filter, never limiting (local mode: shared-data CAS per request),
  without response fields like the native filter, and with the default
  `draft` RateLimit fields;
- this filter with `count` (lockout after failures) never counting: every
  request reserves a token and gets it back in its response (two CAS), and
  with `max_in_flight` never refusing: every request takes a place and gives
  it back when its stream ends; each reported over `rl-open` (their
  baseline), the same filter with a plain rate: the extra cost of the new
  path. (The in-flight refusal is the 429 path's cost, `rl-limited`: with
  `direct_response` a request ends before the next one starts on the
  worker, so no config refuses every request deterministically.)
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


def count_config() -> str:
    """A lockout limit whose statuses never occur: reserve, then give back."""
    return json.dumps({
        "rules": [{"limits": [{"name": "bench", "key": [{"header": HEADER}], "requests": HUGE,
                               "per_s": 1, "count": {"response_status": [401, 403]}}]}],
        "response_headers": "none",
    })


def in_flight_config() -> str:
    """A concurrency limit never reached: take a place, give it back at the end."""
    return json.dumps({
        "rules": [{"limits": [{"name": "bench", "key": [{"header": HEADER}], "max_in_flight": 1000}]}],
        "response_headers": "none",
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
            "rl-count-refund", "ratelimit: local, count (lockout), never counting",
            http_filters=[ctx.wasm_filter("ratelimit", wasm, count_config())],
            rotate_header=rotate, modules=[wasm], baseline="rl-open",
            note="reserve a token at the request, give it back on the 200 (a second CAS); "
                 "reported over rl-open",
        ),
        ctx.Variant(
            "rl-in-flight", "ratelimit: local, max_in_flight, never refusing",
            http_filters=[ctx.wasm_filter("ratelimit", wasm, in_flight_config())],
            rotate_header=rotate, modules=[wasm], baseline="rl-open",
            note="take a place at the request, give it back when the stream ends (proxy_on_done); "
                 "reported over rl-open",
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
