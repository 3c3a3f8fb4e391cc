"""JWT filter variants for `make bench` (imported by run.py).

Same JWKS (RS256 key `rsa1`, ES256 key `ec1`), issuer, audience and
`sub` -> `x-jwt-sub` everywhere; the token travels in `authorization`.

- native `jwt_authn` without its cache, distinct tokens per request (RS256, ES256);
- native `jwt_authn` with and without its cache, one repeated token (RS256);
- this filter on Envoy (signatures by the host's `verify_signature`), distinct
  tokens (RS256, ES256) and one repeated token (RS256, ES256: the verified-token cache);
- this filter with `signature_backend: pure` (what Kong runs), distinct RS256 tokens;
- the jwt control alone in `palisade.wasm`, one repeated RS256 token, to compare
  with this filter's own module (issue 12);
- workload identity (issue 14): the repeated RS256 token plus a client address
  allow-list (`all: [client_ip, provider]`), and plus a peer read from a trusted
  `x-forwarded-client-cert` (`all: [peer, provider]`), each reported against
  `jwt-rs256-repeated` (the same token path without the extra node), so the
  figure over its baseline is what the node adds.

Distinct tokens: 2000 per algorithm, cycled by wrk (`rotate_header`); both
caches are smaller than the cycle (jwt_authn 100, this filter 1024, FIFO),
so every request of those variants verifies a signature.

Goals (issue 3): repeated token at most 1.5x the empty wasm filter's cost;
distinct tokens at most 2x native jwt_authn's cost per request.

Tokens are minted once into dist/bench/ by `jsonwebtoken` through
`cargo run -p palisade-jwt --example mint_tokens` (fixture keys, exp 2100).
Python 3 standard library only.
"""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "https://id.example.com"
AUDIENCE = "orders-api"
DISTINCT = 2000


def jwks() -> dict:
    keys = json.loads((ROOT / "filters/jwt/tests/fixtures/public_keys.json").read_text())
    return {"keys": [keys["rsa1"], keys["ec1"]]}


def tokens(ctx, alg: str) -> list:
    """DISTINCT tokens for `alg`, minted once and kept in dist/bench/."""
    path = ctx.dist / "bench" / f"jwt_tokens_{alg}.json"
    if not path.is_file():
        out = subprocess.run(
            ["cargo", "run", "--release", "-q", "-p", "palisade-jwt", "--example", "mint_tokens",
             "--", "bench", alg, str(DISTINCT)],
            cwd=ROOT, check=True, capture_output=True, timeout=1200,
        ).stdout
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out)
    values = json.loads(path.read_text())
    if len(values) != DISTINCT or len(set(values)) != DISTINCT:
        raise ValueError(f"{path}: expected {DISTINCT} distinct tokens")
    return values


def native_jwt_authn(cache: bool) -> dict:
    provider = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": json.dumps(jwks())},
        "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}],
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 100}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"corp": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "corp"}}],
        },
    }


FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
XFCC = ("By=spiffe://cluster.local/ns/shop/sa/api;Hash=0123456789abcdef;"
        f"Subject=\"CN=frontend,O=shop\";URI={FRONTEND}")


def filter_config(backend: str, extra: dict = None, requires: dict = None) -> str:
    return json.dumps({
        "providers": {"corp": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "algorithms": ["RS256", "ES256"],
            "local_jwks": jwks(),
            "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}],
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": requires or {"provider": "corp"}}],
        "signature_backend": backend,
        **(extra or {}),
    })


def identity(ctx, wasm, headers: dict) -> list:
    """Issue 14's nodes on top of the repeated RS256 token (wrk runs on loopback)."""
    cidr = filter_config("auto", requires={"all": [
        {"client_ip": {"cidrs": ["127.0.0.0/8", "10.0.0.0/8"]}}, {"provider": "corp"}]})
    peer = filter_config("auto", extra={"forwarded_client_cert": "trust"}, requires={"all": [
        {"peer": {"spiffe_ids": [FRONTEND]}}, {"provider": "corp"}]})
    return [
        ctx.Variant(
            "jwt-rs256-repeated-cidr", "jwt: RS256, one token, and a client_ip allow-list",
            http_filters=[ctx.wasm_filter("jwt", wasm, cidr)], request_headers=headers,
            modules=[wasm], baseline="jwt-rs256-repeated",
            note="over jwt-rs256-repeated: reading source.address and matching the CIDRs"),
        ctx.Variant(
            "jwt-rs256-repeated-xfcc-peer", "jwt: RS256, one token, and a peer from a trusted XFCC",
            http_filters=[ctx.wasm_filter("jwt", wasm, peer)],
            request_headers={**headers, "x-forwarded-client-cert": XFCC},
            # The connection manager would remove a plain-text client's XFCC first.
            hcm_extra={"forward_client_cert_details": "ALWAYS_FORWARD_ONLY"},
            modules=[wasm], baseline="jwt-rs256-repeated",
            note="over jwt-rs256-repeated: parsing XFCC's last element and matching the SPIFFE id"),
    ]


def floor(ctx, headers: dict) -> list:
    """The contract's host calls alone (`make bench-probes`): the cost no JWT
    filter with this config can go below, next to the repeated-token variants."""
    out = []
    for key, label, note in (
        ("jwt", "floor: the JWT contract's host calls, no logic",
         "get the token, set x-jwt-sub, remove the token, set a property (benches/empty-filter)"),
        ("jwt_map", "floor: the JWT contract as one header-map round trip",
         "get all headers, set them all back edited, set a property (benches/empty-filter)"),
    ):
        path = ctx.dist / "bench" / f"floor_{key}.wasm"
        if not path.is_file():
            ctx.notes.append(f"{path.name} missing: run make bench-probes")
            continue
        out.append(ctx.Variant(
            f"{key.replace('_', '-')}-floor", label,
            http_filters=[ctx.wasm_filter(f"floor_{key}", path, "{}")], request_headers=headers,
            modules=[path], filter_cost_of="jwt", note=note,
        ))
    return out


def single(ctx, headers: dict) -> list:
    """The repeated-RS256-token variant with the jwt control alone in
    palisade.wasm (issue 12: no control slower there than in its own module)."""
    http_filters = ctx.single_module("jwt", filter_config("auto"))
    if http_filters is None:
        return []
    return [ctx.Variant(
        "one-jwt-rs256-repeated", "palisade.wasm: jwt alone, RS256, one token (verified-token cache)",
        http_filters=http_filters, request_headers=headers, modules=[ctx.one],
        modules_variant="jwt-rs256-repeated", note="compare with jwt-rs256-repeated",
    )]


def variants(ctx):
    wasm = ctx.dist / "palisade_jwt.wasm"
    if not wasm.is_file():
        ctx.notes.append("jwt variants skipped: dist/palisade_jwt.wasm missing (make build)")
        return []
    rs, es = tokens(ctx, "RS256"), tokens(ctx, "ES256")
    auth = "authorization"
    distinct = {"RS256": (auth, [f"Bearer {t}" for t in rs]),
                "ES256": (auth, [f"Bearer {t}" for t in es])}
    repeated = {"RS256": {auth: f"Bearer {rs[0]}"}, "ES256": {auth: f"Bearer {es[0]}"}}
    ours = lambda backend: [ctx.wasm_filter("jwt", wasm, filter_config(backend))]  # noqa: E731
    V = ctx.Variant
    return [
        V("jwt-native-rs256-distinct", "native jwt_authn, RS256, distinct tokens",
          http_filters=[native_jwt_authn(cache=False)], rotate_header=distinct["RS256"],
          note="the reference for distinct RS256 tokens"),
        V("jwt-native-es256-distinct", "native jwt_authn, ES256, distinct tokens",
          http_filters=[native_jwt_authn(cache=False)], rotate_header=distinct["ES256"],
          note="the reference for distinct ES256 tokens"),
        V("jwt-native-rs256-repeated", "native jwt_authn, RS256, one token, no cache",
          http_filters=[native_jwt_authn(cache=False)], request_headers=repeated["RS256"]),
        V("jwt-native-rs256-cached", "native jwt_authn, RS256, one token, jwt_cache_config",
          http_filters=[native_jwt_authn(cache=True)], request_headers=repeated["RS256"]),
        V("jwt-native-es256-repeated", "native jwt_authn, ES256, one token, no cache",
          http_filters=[native_jwt_authn(cache=False)], request_headers=repeated["ES256"]),
        V("jwt-native-es256-cached", "native jwt_authn, ES256, one token, jwt_cache_config",
          http_filters=[native_jwt_authn(cache=True)], request_headers=repeated["ES256"]),
        V("jwt-rs256-distinct", "jwt: RS256, distinct tokens (host verify_signature)",
          http_filters=ours("auto"), rotate_header=distinct["RS256"], modules=[wasm],
          filter_cost_of="jwt", note="goal: <= 2x jwt-native-rs256-distinct"),
        V("jwt-es256-distinct", "jwt: ES256, distinct tokens (host verify_signature)",
          http_filters=ours("auto"), rotate_header=distinct["ES256"], modules=[wasm],
          filter_cost_of="jwt", note="goal: <= 2x jwt-native-es256-distinct"),
        V("jwt-rs256-repeated", "jwt: RS256, one token (verified-token cache)",
          http_filters=ours("auto"), request_headers=repeated["RS256"], modules=[wasm],
          filter_cost_of="jwt", note="goal: <= 1.5x the empty wasm filter"),
        V("jwt-es256-repeated", "jwt: ES256, one token (verified-token cache)",
          http_filters=ours("auto"), request_headers=repeated["ES256"], modules=[wasm],
          filter_cost_of="jwt", note="goal: <= 1.5x the empty wasm filter"),
        *single(ctx, repeated["RS256"]),
        *identity(ctx, wasm, repeated["RS256"]),
        *floor(ctx, repeated["RS256"]),
        V("jwt-rs256-distinct-pure", "jwt: RS256, distinct tokens, pure-Rust signatures",
          http_filters=ours("pure"), rotate_header=distinct["RS256"], modules=[wasm],
          filter_cost_of="jwt", note="what Kong runs (no verify_signature there)"),
    ]
