//! The jwt control: local or remote key sets, pre-signed tokens picked and
//! mutated, clock steps, ticks and key-server answers (garbage too), on
//! one or two workers. A token passes a token-requiring route only if the
//! harness signed it with a key the control was given, its claims hold at
//! that moment, and `/admin` only with the `admin` scope.

use crate::check::Known;
use crate::drive::{drive, Answer};
use crate::gen::{self, Vocab};
use crate::tokens::{self, Signed, NOW, SKEW_S};
use crate::{check_exchange, request_host, root, unstructured, Proxy};
use arbitrary::{Arbitrary, Result, Unstructured};
use palisade_core::fake::{FakeHost, RecordedCall};
use palisade_core::host::{CallResponse, Phase};
use palisade_core::path::normalize;
use palisade_core::Plugin;
use palisade_jwt::JwtPlugin;
use serde_json::json;
use std::rc::Rc;

const KEYS: &[&str] = &["rsa1", "rsa2", "ec1", "ed1", "ec384", "hs1"];
const PATHS: &[&str] = &[
    "/orders",
    "/orders/7",
    "/admin/users",
    "/admin",
    "/health",
    "/healthz",
    "/",
    "/Admin",
    "//admin",
    "/orders?access_token=x",
    "/health/../admin",
];
const SCHEMES: &[&str] = &[
    "Bearer ", "bearer ", "BEARER  ", "Basic ", "Bearer", " Bearer ",
];
const HEADER_NAMES: &[&str] = &["authorization", "x-jwt-sub", "x-jwt-tenant", "cookie"];

/// One step of a jwt scenario.
#[derive(Debug, Arbitrary)]
enum Step {
    Request { worker: bool },
    Advance(Clock),
    Tick { worker: bool },
}

#[derive(Debug, Arbitrary)]
enum Clock {
    Second,
    Six,
    HalfMinute,
    TenMinutes,
    Ms(u16),
}

impl Clock {
    fn ms(&self) -> u64 {
        match self {
            Clock::Second => 1_000,
            Clock::Six => 6_000,
            Clock::HalfMinute => 31_000,
            Clock::TenMinutes => 600_000,
            Clock::Ms(ms) => u64::from(*ms),
        }
    }
}

struct Worker {
    plugin: Rc<JwtPlugin>,
    root: FakeHost,
}

/// Fuzz entry: see the module doc.
pub fn jwt(data: &[u8]) {
    let _ = scenario(&mut unstructured(data));
}

fn scenario(u: &mut Unstructured) -> Result<()> {
    let kind = Proxy::arbitrary(u)?.kind();
    let remote = bool::arbitrary(u)?;
    let mut local: Vec<&str> = KEYS.iter().copied().filter(|k| *k != "rsa2").collect();
    if !remote {
        local.retain(|_| u.ratio(3u8, 4).unwrap_or(true));
        // HS256 only when listed: an HMAC key alone serves nothing.
        if local.iter().all(|k| *k == "hs1") {
            local.push("rsa1");
        }
    }
    let mut provider = json!({
        "issuer": tokens::ISSUER,
        "audiences": [tokens::AUDIENCE],
        "clock_skew_s": SKEW_S,
        "forward": bool::arbitrary(u)?,
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
    });
    if remote {
        provider["remote_jwks"] = json!({
            "cluster": "idp", "path": "/jwks", "authority": "id.example.com",
            "cache_duration_s": *u.choose(&[5u64, 60, 600])?,
            "timeout_ms": 500,
            "min_refetch_interval_s": *u.choose(&[1u64, 30])?,
        });
        provider["on_jwks_unavailable"] = json!(*u.choose(&["deny", "unavailable"])?);
    } else {
        provider["local_jwks"] = tokens::jwks(&local);
    }
    if !remote && u.ratio(1u8, 4)? {
        let mut algs = vec!["RS256", "ES256", "ES384", "EdDSA"];
        if local.contains(&"hs1") {
            algs.push("HS256");
        }
        provider["algorithms"] = json!(algs);
    }
    let config = json!({
        "providers": {"corp": provider},
        "rules": [
            {"match": {"prefix": "/health"}},
            {"match": {"prefix": "/admin"}, "requires": {"provider": "corp", "scopes": ["admin"]}},
            {"match": {"prefix": "/"}, "requires": {"provider": "corp"}}
        ]
    })
    .to_string();

    let mut known = Known::default();
    known.add(config.as_bytes());
    known.add_all(PATHS);
    known.add_all(SCHEMES);
    known.add_all(HEADER_NAMES);
    known.add_all(gen::COMMON_HEADERS);
    known.add_all(gen::COMMON_VALUES);
    known.add_all(gen::REQUEST_IDS);
    known.add(gen::TRACEPARENT.as_bytes());

    let first = root(kind, NOW);
    let mut workers = Vec::new();
    for r in [first.sibling(), first] {
        let mut r = r;
        r.phase = Phase::Configure;
        let plugin = match JwtPlugin::configure(config.as_bytes(), &mut r) {
            Ok(p) => Rc::new(p),
            Err(e) => panic!("the harness's jwt config is refused: {e}"),
        };
        if plugin.check_host(kind).is_err() {
            return Ok(());
        }
        r.believed = None;
        workers.push(Worker { plugin, root: r });
    }
    // Keys whose material the control was given: configured, or served.
    let mut trusted: Vec<&str> = if remote { Vec::new() } else { local.clone() };
    let mut now_ns = NOW * 1_000_000_000;

    for _ in 0..u.int_in_range(1u8..=6)? {
        match Step::arbitrary(u)? {
            Step::Advance(c) => now_ns += c.ms() * 1_000_000,
            Step::Tick { worker } => {
                let w = &mut workers[usize::from(worker)];
                w.root.clock.set(now_ns);
                w.root.phase = Phase::Tick;
                let before = w.root.calls.len();
                w.plugin.on_tick(&mut w.root);
                if let Some(call) = w.root.calls.get(before..).and_then(|c| c.last()).cloned() {
                    if let Answer::Respond(r) = key_server(u, &call, &mut trusted, &mut known)? {
                        w.root.phase = Phase::CallResponse;
                        w.plugin.on_call_response(&mut w.root, r);
                    }
                }
            }
            Step::Request { worker } => {
                let w = &workers[usize::from(worker)];
                request(u, w, kind, now_ns, &mut trusted, &mut known)?;
            }
        }
    }
    Ok(())
}

/// The key server's answer: a JWKS of some fixture keys, mutated,
/// an error status, no answer, or garbage. Served key material is trusted.
pub(crate) fn key_server(
    u: &mut Unstructured,
    call: &RecordedCall,
    trusted: &mut Vec<&'static str>,
    known: &mut Known,
) -> Result<Answer> {
    let token = call.token();
    let (status, body) = match u.int_in_range(0u8..=9)? {
        0 => return Ok(Answer::Reset),
        1 => (None, Vec::new()),
        2 => (Some(*u.choose(&[500u16, 404, 304, 429])?), b"oops".to_vec()),
        3 => (Some(200), gen::bytes_like(u, &[], 200)?),
        n => {
            let kids: Vec<&str> = KEYS
                .iter()
                .copied()
                .filter(|_| u.ratio(1u8, 2).unwrap_or(false))
                .collect();
            let mut body = tokens::jwks(&kids).to_string().into_bytes();
            if n == 4 {
                body = gen::mutate(u, body)?;
            }
            (Some(200), body)
        }
    };
    known.add(&body);
    if status == Some(200) {
        let text = String::from_utf8_lossy(&body);
        for key in KEYS {
            if tokens::material(key).is_some_and(|m| text.contains(&m)) && !trusted.contains(key) {
                trusted.push(key);
            }
        }
    }
    Ok(Answer::Respond(CallResponse::Http {
        token,
        status,
        headers: vec![],
        body,
    }))
}

/// An `authorization` value: a pre-signed token (maybe mutated) behind a scheme.
fn credential(u: &mut Unstructured) -> Result<Vec<u8>> {
    let signed = u.choose(tokens::all())?;
    let mut token = signed.text.as_bytes().to_vec();
    if u.ratio(1u8, 3)? {
        token = gen::mutate(u, token)?;
    }
    let scheme = if u.ratio(7u8, 8)? {
        "Bearer "
    } else {
        *u.choose(SCHEMES)?
    };
    let mut value = scheme.as_bytes().to_vec();
    value.extend_from_slice(&token);
    Ok(value)
}

fn request(
    u: &mut Unstructured,
    w: &Worker,
    kind: palisade_core::HostKind,
    now_ns: u64,
    trusted: &mut Vec<&'static str>,
    known: &mut Known,
) -> Result<()> {
    let mut auth = Vec::new();
    for _ in 0..*u.choose(&[1u8, 1, 1, 0, 2])? {
        auth.push(("authorization".to_string(), credential(u)?));
    }
    let vocab = Vocab {
        methods: gen::METHODS,
        paths: PATHS,
        header_names: HEADER_NAMES,
        header_values: &["Bearer x", "user-1"],
    };
    let req = gen::request(u, &vocab, auth)?;
    let ex = gen::exchange(u, b"", &["{}", "ok"], &["content-type"])?;
    known.add(req.path.as_bytes());
    known.add(req.method.as_bytes());
    for (n, _) in &req.headers {
        known.add(n.as_bytes());
    }
    let mut host = request_host(&w.root, &req, now_ns);
    host.kind = kind;
    let mut filter = JwtPlugin::new_filter(&w.plugin);
    let out = {
        let mut answer =
            |call: &RecordedCall| key_server(u, call, trusted, known).unwrap_or(Answer::Reset);
        drive(&mut filter, &mut host, &ex, &mut answer)
    };
    check_exchange(&host, &req, b"", &out, known, false);

    if out.upstream.is_some() && guarded(&req.path) {
        let now_s = now_ns / 1_000_000_000;
        let presented: Vec<&[u8]> = req
            .headers
            .iter()
            .filter(|(n, _)| n == "authorization")
            .map(|(_, v)| strip_scheme(v))
            .collect();
        let signed: Vec<&Signed> = presented.iter().filter_map(|t| tokens::find(t)).collect();
        assert!(
            !signed.is_empty(),
            "a request passed {:?} with no token the harness signed: {:?}",
            req.path,
            presented
                .iter()
                .map(|t| String::from_utf8_lossy(t))
                .collect::<Vec<_>>()
        );
        // With several tokens (one a control ignores, say) one must be good.
        let good = |s: &&Signed| {
            trusted.contains(&s.key)
                && s.claims_ok
                && now_s <= s.exp + SKEW_S
                && s.nbf.is_none_or(|nbf| now_s + SKEW_S >= nbf)
                && (!normalize(&req.path).starts_with("/admin") || s.scopes.contains("admin"))
        };
        assert!(
            signed.iter().any(good),
            "{:?} passed at {now_s} with none of these good (trusted {trusted:?}): {:?}",
            req.path,
            signed
                .iter()
                .map(|s| (s.key, s.claims_ok, s.exp, s.nbf, s.scopes))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// Whether `path` falls under a token-requiring rule: origin-form (proxies
/// refuse a `:path` without its leading `/` before any filter runs) and,
/// once normalized as every rule matches it (`//health/./x` is under
/// `/health`), not under `/health`.
pub(crate) fn guarded(path: &str) -> bool {
    path.starts_with('/') && !normalize(path).starts_with("/health")
}

/// The token of an `authorization` value, after its scheme.
fn strip_scheme(value: &[u8]) -> &[u8] {
    let v = value.trim_ascii();
    let cut = v.iter().position(|b| *b == b' ').map_or(0, |i| i + 1);
    v[cut..].trim_ascii()
}

/// The pre-signed tokens a request presented.
pub(crate) fn passed_tokens(headers: &[(String, Vec<u8>)]) -> Vec<&'static Signed> {
    headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .filter_map(|(_, v)| tokens::find(strip_scheme(v)))
        .collect()
}

/// [`credential`] for the chain target.
pub(crate) fn authorization(u: &mut Unstructured) -> Result<Vec<u8>> {
    credential(u)
}
