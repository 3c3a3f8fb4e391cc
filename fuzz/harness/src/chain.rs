//! The one-VM chain: errors, headers, jwt, ratelimit and schema on one
//! route (errors and headers alone on `/health`), the jwt keys local or
//! fetched, several requests on shared state with clock steps. Beyond the
//! common invariants: what reaches the upstream on the API route carried
//! a token a configured key signed, and a POST to `/orders` a body the
//! schema accepts.

use crate::check::Known;
use crate::drive::{drive, Answer};
use crate::gen::{self, Vocab};
use crate::jwt::{authorization, guarded, key_server, passed_tokens};
use crate::schema::{examples, schemas, NAMES, STRINGS};
use crate::tokens::{self, NOW, SKEW_S};
use crate::{check_exchange, request_host, root, unstructured, Proxy};
use arbitrary::{Arbitrary, Result, Unstructured};
use palisade::ChainPlugin;
use palisade_core::fake::RecordedCall;
use palisade_core::host::{CallResponse, Phase};
use palisade_core::{HostKind, Plugin};
use serde_json::{json, Value};
use std::rc::Rc;

const PATHS: &[&str] = &[
    "/orders",
    "/orders/7",
    "/health",
    "/health/../orders",
    "/",
    "/Orders",
];

/// The chain file: the five controls on the API route.
fn chain_config(remote: bool, limit: u64) -> Value {
    let mut provider = json!({
        "issuer": tokens::ISSUER, "audiences": [tokens::AUDIENCE], "clock_skew_s": SKEW_S,
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
    });
    if remote {
        provider["remote_jwks"] = json!({"cluster": "idp", "path": "/jwks", "authority": "id.example.com",
                                         "cache_duration_s": 60, "timeout_ms": 500, "min_refetch_interval_s": 1});
    } else {
        provider["local_jwks"] = tokens::jwks(&["rsa1", "ec1", "ed1"]);
    }
    json!({
        "version": 1,
        "upstreams": {"shop": "http://127.0.0.1:8080", "idp": "https://id.example.com"},
        "filters": {
            // One leak pattern: the default set's regexes would cost each
            // run more than all of its requests.
            "errors": {"leak_patterns": {"java_stack": "[A-Za-z]+\\.java:[0-9]+"}},
            "headers": {"request": {"max_headers": 16}},
            "jwt": {"providers": {"corp": provider},
                    "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}]},
            "ratelimit": {"limits": [{"name": "per-subject", "key": [{"claim": "sub"}],
                                      "requests": limit, "per_s": 10}],
                          "local": {"slots": 64}},
            "schema": {"rules": [{"match": {"path": "/orders", "methods": ["POST"]},
                                  "body": {"required": true, "schema": schemas()[0]}}]}
        },
        "routes": [
            {"name": "health", "match": {"prefix": "/health"}, "upstream": "shop", "filters": ["errors", "headers"]},
            {"name": "api", "match": {"prefix": "/"}, "upstream": "shop",
             "filters": ["errors", "headers", "jwt", "ratelimit", "schema"]}
        ]
    })
}

/// Fuzz entry: see the module doc.
pub fn chain(data: &[u8]) {
    let _ = scenario(&mut unstructured(data));
}

fn scenario(u: &mut Unstructured) -> Result<()> {
    let kind = Proxy::arbitrary(u)?.kind();
    let remote = bool::arbitrary(u)?;
    let config = chain_config(remote, u.int_in_range(1u64..=4)?).to_string();
    let mut r = root(kind, NOW);
    let plugin = match ChainPlugin::configure(config.as_bytes(), &mut r) {
        Ok(p) => Rc::new(p),
        Err(e) => panic!("the harness's chain is refused: {e}"),
    };
    if plugin.check_host(kind).is_err() {
        return Ok(());
    }
    r.believed = None;
    let Ok(validator) = jsonschema::options()
        .should_validate_formats(true)
        .build(&schemas()[0])
    else {
        panic!("the harness's schema does not compile");
    };
    let mut trusted: Vec<&str> = if remote {
        Vec::new()
    } else {
        vec!["rsa1", "ec1", "ed1"]
    };
    let mut known = Known::default();
    known.add(config.as_bytes());
    for words in [
        PATHS,
        NAMES,
        STRINGS,
        gen::COMMON_HEADERS,
        gen::COMMON_VALUES,
        gen::REQUEST_IDS,
    ] {
        known.add_all(words);
    }
    known.add(gen::TRACEPARENT.as_bytes());

    let mut now_ns = NOW * 1_000_000_000;
    for _ in 0..u.int_in_range(1u8..=5)? {
        now_ns += u64::from(u16::arbitrary(u)?) * 1_000_000;
        if plugin.tick_period_ms().is_some() && u.ratio(1u8, 3)? {
            r.clock.set(now_ns);
            r.phase = Phase::Tick;
            let before = r.calls.len();
            plugin.on_tick(&mut r);
            if let Some(call) = r.calls.get(before..).and_then(|c| c.last()).cloned() {
                if let Answer::Respond(a) = key_server(u, &call, &mut trusted, &mut known)? {
                    r.phase = Phase::CallResponse;
                    plugin.on_call_response(&mut r, a);
                }
            }
        }
        let mut auth = Vec::new();
        if u.ratio(7u8, 8)? {
            auth.push(("authorization".to_string(), authorization(u)?));
        }
        let vocab = Vocab {
            methods: &["POST", "GET", "PUT", "DELETE"],
            paths: PATHS,
            header_names: &["content-type", "x-jwt-sub", "x-palisade-jwt"],
            header_values: &["application/json", "user-1", "allow"],
        };
        let mut req = gen::request(u, &vocab, auth)?;
        req.headers
            .push(("content-type".into(), b"application/json".to_vec()));
        let body = match u.int_in_range(0u8..=2)? {
            0 => Vec::new(),
            1 => gen::mutate_json(u, &examples()[0], NAMES, STRINGS)?
                .to_string()
                .into_bytes(),
            _ => gen::bytes_like(u, &["{\"sku\":\"AB-1\",\"qty\":1}"], 80)?,
        };
        let ex = gen::exchange(
            u,
            &body,
            &["{}", "stack trace at Foo.java:1"],
            &["content-type"],
        )?;
        known.add(req.path.as_bytes());
        known.add(req.method.as_bytes());
        for (n, _) in &req.headers {
            known.add(n.as_bytes());
        }
        let mut host = request_host(&r, &req, now_ns);
        host.kind = kind;
        let mut filter = ChainPlugin::new_filter(&plugin);
        let out = {
            let mut answer = |call: &RecordedCall| match call {
                RecordedCall::Http { .. } => {
                    key_server(u, call, &mut trusted, &mut known).unwrap_or(Answer::Reset)
                }
                RecordedCall::Grpc { token, .. } => Answer::Respond(CallResponse::Grpc {
                    token: *token,
                    status: 14,
                    message: Vec::new(),
                }),
            };
            drive(&mut filter, &mut host, &ex, &mut answer)
        };
        let staged = (plugin.holds_request_headers() || plugin.holds_response_headers())
            && (kind == HostKind::Kong || !ex.allow_on_headers_stop_iteration);
        check_exchange(&host, &req, &body, &out, &known, staged);

        if let Some((_, upstream_body)) = &out.upstream {
            if guarded(&req.path) {
                let now_s = now_ns / 1_000_000_000;
                let signed = passed_tokens(&req.headers);
                assert!(
                    !signed.is_empty(),
                    "the chain let {:?} through without a token the harness signed",
                    req.path
                );
                assert!(
                    signed.iter().any(|s| trusted.contains(&s.key)
                        && s.claims_ok
                        && now_s <= s.exp + SKEW_S
                        && s.nbf.is_none_or(|nbf| now_s + SKEW_S >= nbf)),
                    "the chain let {:?} through at {now_s} with no good token: {:?}",
                    req.path,
                    signed
                        .iter()
                        .map(|s| (s.key, s.exp, s.nbf))
                        .collect::<Vec<_>>()
                );
            }
            if req.method == "POST" && req.path == "/orders" {
                let ok = serde_json::from_slice::<Value>(upstream_body)
                    .is_ok_and(|doc| validator.is_valid(&doc));
                assert!(
                    ok,
                    "the chain passed a body the schema refuses: {:?}",
                    String::from_utf8_lossy(upstream_body)
                );
            }
        }
    }
    Ok(())
}
