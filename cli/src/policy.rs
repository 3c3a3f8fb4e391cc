//! `palisade test`: unit tests for security policy.
//!
//! A cases file lists requests and what must happen to them (status,
//! problem type, headers the client and the upstream see). Each case runs
//! through the chain natively: `palisade.wasm`'s own code ([`ChainPlugin`])
//! configured with the JSON `render envoy` gives Envoy, on the fake host,
//! driven as Envoy drives a filter ([`palisade_core::fake::exchange`]). No
//! proxy is needed, so CI can prove a policy before it is deployed. What
//! Envoy does around the module is done here too: the route is picked as
//! its route table picks it (after its path normalization), with the
//! request headers it adds, and an upstream answer is marked
//! `via_upstream`. `cli/tests/policy_envoy.rs` checks the real Envoy
//! agrees, case by case.
//!
//! ```yaml
//! keys:
//!   corp: {alg: ES256, private_key_file: keys/corp-test.pem, provider: corp}
//! cases:
//!   - name: a read-only token cannot delete an order
//!     method: DELETE
//!     path: /orders/7
//!     token: {key: corp, claims: {sub: alice, scope: orders.read}}
//!     expect: {status: 403, type: insufficient-scope}
//! ```
//!
//! Keys: a key with `provider: <name>` replaces that jwt provider's key set
//! (`local_jwks` and `remote_jwks`) with the key's public JWK in every jwt
//! config of the chain, so a chain that fetches its keys from the identity
//! provider is tested as written, with tokens the runner can sign. A key
//! without `provider` must already be in a provider's `local_jwks`.

use crate::chain::{Chain, Origin, Problem};
use crate::envoy;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade::ChainPlugin;
use palisade_core::audit::Record;
use palisade_core::fake::exchange::{run, Exchange, Outcome};
use palisade_core::fake::FakeHost;
use palisade_core::host::CallResponse;
use palisade_core::{Flow, Host, HostKind, HttpFilter, Plugin};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;

/// The cases file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// Signing keys by name, for the cases' tokens.
    #[serde(default)]
    pub keys: BTreeMap<String, KeySpec>,
    pub cases: Vec<Case>,
}

/// A private key the runner signs tokens with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// `ES256` or `RS256`.
    pub alg: KeyAlg,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`; RSA also PKCS#1).
    pub private_key_pem: Option<String>,
    /// The same in a file, relative to the cases file.
    pub private_key_file: Option<String>,
    /// The tokens' `kid`; default the `kid` of the chain's JWK for this
    /// key, or the key's name where it replaces a provider's keys.
    pub kid: Option<String>,
    /// A jwt provider whose key set this key replaces, in every jwt config.
    pub provider: Option<String>,
    /// A key the chain must not trust (forged tokens): it must be in no
    /// key set of the chain.
    #[serde(default)]
    pub untrusted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KeyAlg {
    ES256,
    RS256,
}

/// One request and what must happen to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// `:path`, with any query string.
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A string is sent as is; any other value as JSON (with
    /// `content-type: application/json` unless the case gives one).
    pub body: Option<Value>,
    pub token: Option<TokenSpec>,
    /// Send the request this many times; the last answer is checked (rate limits).
    #[serde(default = "one")]
    pub repeat: u32,
    /// What the upstream answers, when the request reaches it.
    #[serde(default)]
    pub upstream: Answer,
    pub expect: Expect,
}

fn default_method() -> String {
    "GET".into()
}

fn one() -> u32 {
    1
}

/// A token the runner signs and sends as `authorization: Bearer <token>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// A name under `keys`.
    pub key: String,
    /// `exp` defaults to now + 1 h and `iat` to now; `null` leaves a claim
    /// out; `exp`, `iat` and `nbf` may be written `now`, `now+90s`,
    /// `now-2h` (s, m, h, d).
    #[serde(default)]
    pub claims: Map<String, Value>,
}

/// The upstream's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// As a case's `body`; default `{"ok": true}` as JSON.
    pub body: Option<Value>,
}

fn ok() -> u16 {
    200
}

impl Default for Answer {
    fn default() -> Answer {
        Answer {
            status: 200,
            headers: BTreeMap::new(),
            body: None,
        }
    }
}

/// What must happen; every field given is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status the client gets.
    pub status: Option<u16>,
    /// The problem+json `type`: `urn:palisade:problem:<kind>`, the kind
    /// alone (`missing-token`), or `about:blank`.
    #[serde(rename = "type")]
    pub problem_type: Option<String>,
    /// Response headers the client gets (name: value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// Request headers the upstream receives (name: value); the request
    /// must reach it.
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub upstream_headers_absent: Vec<String>,
    /// Whether the request reaches the upstream.
    pub reaches_upstream: Option<bool>,
    /// Text the client's body must (not) hold.
    #[serde(default)]
    pub body_contains: Vec<String>,
    #[serde(default)]
    pub body_excludes: Vec<String>,
    /// The control that refused or masked it (from the audit record).
    pub decided_by: Option<String>,
}

impl Expect {
    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.problem_type.is_none()
            && self.headers.is_empty()
            && self.headers_absent.is_empty()
            && self.upstream_headers.is_empty()
            && self.upstream_headers_absent.is_empty()
            && self.reaches_upstream.is_none()
            && self.body_contains.is_empty()
            && self.body_excludes.is_empty()
            && self.decided_by.is_none()
    }
}

/// A loaded signing key.
#[derive(Clone)]
pub struct Key {
    pub alg: KeyAlg,
    encoding: EncodingKey,
    /// The public key as a JWK (`kty` and its numbers only).
    pub public: Value,
    pub kid: Option<String>,
    pub provider: Option<String>,
    pub untrusted: bool,
}

/// A cases file, checked.
#[derive(Clone)]
pub struct Suite {
    pub keys: BTreeMap<String, Key>,
    pub cases: Vec<Case>,
}

fn problem(at: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        at: at.into(),
        message: message.into(),
    }
}

/// Parses a cases file (YAML, or JSON); `base` is its directory, where
/// `private_key_file`s are read from. Every problem is returned.
pub fn load(text: &str, base: &Path) -> Result<Suite, Vec<Problem>> {
    let de = serde_norway::Deserializer::from_str(text);
    let file: CasesFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { at };
        let message = e.into_inner().to_string();
        // serde_norway starts with the enclosing field's path: said once, in `at`.
        let message = match message.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') && at.starts_with(head) => rest.to_string(),
            _ => message,
        };
        vec![problem(at, palisade_core::config::operator_words(&message))]
    })?;
    let mut problems = Vec::new();
    let mut keys = BTreeMap::new();
    for (name, spec) in &file.keys {
        match load_key(spec, base) {
            Ok(k) => {
                keys.insert(name.clone(), k);
            }
            Err((field, m)) => problems.push(problem(format!("keys.{name}{field}"), m)),
        }
    }
    if file.cases.is_empty() {
        problems.push(problem("cases", "list at least one case"));
    }
    for (i, case) in file.cases.iter().enumerate() {
        let at = format!("cases[{i}]");
        check_case(case, &at, &file, &mut problems);
        if file.cases[..i].iter().any(|c| c.name == case.name) {
            problems.push(problem(
                format!("{at}.name"),
                format!("{:?}: another case has this name", case.name),
            ));
        }
    }
    if problems.is_empty() {
        Ok(Suite {
            keys,
            cases: file.cases,
        })
    } else {
        Err(problems)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_case(case: &Case, at: &str, file: &CasesFile, problems: &mut Vec<Problem>) {
    let mut bad = |field: &str, m: String| problems.push(problem(format!("{at}.{field}"), m));
    if case.name.trim().is_empty() {
        bad("name", "give the case a name".into());
    }
    if !is_token(&case.method) {
        bad("method", format!("{:?} is not an HTTP method", case.method));
    }
    if !case.path.starts_with('/') || case.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        bad(
            "path",
            format!("{:?}: a path starting with '/', without blanks", case.path),
        );
    }
    for (name, value) in &case.headers {
        if !is_token(name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
            bad(
                &format!("headers.{name}"),
                "header names are lowercase tokens".into(),
            );
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            bad(
                &format!("headers.{name}"),
                "no line breaks in a header value".into(),
            );
        }
    }
    if let Some(t) = &case.token {
        if !file.keys.contains_key(&t.key) {
            bad("token.key", format!("{:?} is not under keys", t.key));
        }
        for claim in ["exp", "iat", "nbf"] {
            if let Some(v) = t.claims.get(claim) {
                if let Err(m) = time_claim(v, 0) {
                    bad(&format!("token.claims.{claim}"), m);
                }
            }
        }
    }
    if !(1..=10_000).contains(&case.repeat) {
        bad("repeat", "from 1 to 10000".into());
    }
    if !(100..=599).contains(&case.upstream.status) {
        bad("upstream.status", "an HTTP status, 100 to 599".into());
    }
    if case.expect.is_empty() {
        bad("expect", "give at least one expectation".into());
    }
    if let Some(s) = case.expect.status {
        if !(100..=599).contains(&s) {
            bad("expect.status", "an HTTP status, 100 to 599".into());
        }
    }
}

/// A time claim: a number as written, or `now[+-]N[smhd]` from `now`.
fn time_claim(v: &Value, now: u64) -> Result<Value, String> {
    let Some(text) = v.as_str() else {
        return Ok(v.clone());
    };
    let err = || format!("{text:?}: a number, or now, now+90s, now-2h (s, m, h, d)");
    let Some(rest) = text.trim().strip_prefix("now") else {
        return Err(err());
    };
    if rest.is_empty() {
        return Ok(json!(now));
    }
    let (sign, amount) = match (rest.strip_prefix('+'), rest.strip_prefix('-')) {
        (Some(a), _) => (1, a),
        (_, Some(a)) => (-1, a),
        _ => return Err(err()),
    };
    let unit = match amount.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86400,
        _ => return Err(err()),
    };
    let n: i64 = amount[..amount.len() - 1].parse().map_err(|_| err())?;
    let delta = n.checked_mul(unit).ok_or_else(err)?;
    let now = i64::try_from(now).map_err(|_| err())?;
    Ok(json!(
        now.saturating_add(delta.checked_mul(sign).ok_or_else(err)?)
    ))
}

fn load_key(spec: &KeySpec, base: &Path) -> Result<Key, (&'static str, String)> {
    let pem = match (&spec.private_key_pem, &spec.private_key_file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => {
            let path = base.join(f);
            std::fs::read_to_string(&path)
                .map_err(|e| (".private_key_file", format!("{}: {e}", path.display())))?
        }
        _ => {
            return Err((
                "",
                "give exactly one of private_key_pem and private_key_file".into(),
            ))
        }
    };
    let field = if spec.private_key_pem.is_some() {
        ".private_key_pem"
    } else {
        ".private_key_file"
    };
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let (encoding, public) = match spec.alg {
        KeyAlg::ES256 => {
            use p256::pkcs8::DecodePrivateKey;
            let secret = p256::SecretKey::from_pkcs8_pem(&pem)
                .map_err(|e| (field, format!("not a PKCS#8 P-256 private key: {e}")))?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &secret.public_key(),
                false,
            );
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err((field, "a P-256 key without coordinates".into()));
            };
            let encoding = EncodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|e| (field, format!("jsonwebtoken refused the key: {e}")))?;
            (
                encoding,
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}),
            )
        }
        KeyAlg::RS256 => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::pkcs8::DecodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(&pem))
                .map_err(|e| (field, format!("not an RSA private key in PEM: {e}")))?;
            let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| (field, format!("jsonwebtoken refused the key: {e}")))?;
            (
                encoding,
                json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}),
            )
        }
    };
    Ok(Key {
        alg: spec.alg,
        encoding,
        public,
        kid: spec.kid.clone(),
        provider: spec.provider.clone(),
        untrusted: spec.untrusted,
    })
}

/// Whether a JWK of the chain is this public key.
fn same_key(jwk: &Value, public: &Value) -> bool {
    let fields: &[&str] = match public["kty"].as_str() {
        Some("EC") => &["kty", "crv", "x", "y"],
        _ => &["kty", "n", "e"],
    };
    fields.iter().all(|f| jwk.get(*f) == public.get(*f))
}

/// The chain as the cases run it: each provider a key names gets that
/// key's public JWK as its only key set. Keys without `provider` must be
/// in a provider's `local_jwks`; their `kid` is taken from there. Returns
/// the chain to run (and to render, for a real proxy).
pub fn prepare(chain: &Chain, suite: &mut Suite) -> Result<Chain, Vec<Problem>> {
    let mut chain = chain.clone();
    let mut problems = Vec::new();
    let mut configs: Vec<&mut Value> = Vec::new();
    for (f, c) in chain.shared.iter_mut() {
        if f.name == "jwt" {
            configs.push(c);
        }
    }
    for r in chain.routes.iter_mut() {
        for u in r.filters.iter_mut() {
            if u.filter.name == "jwt" && u.origin != Origin::Shared {
                configs.push(&mut u.config);
            }
        }
    }
    // The new key set of each provider a key names, and those keys' names.
    let mut sets: BTreeMap<String, (Vec<String>, Vec<Value>)> = BTreeMap::new();
    for (name, key) in suite.keys.iter_mut() {
        let Some(provider) = &key.provider else {
            continue;
        };
        if key.untrusted {
            problems.push(problem(
                format!("keys.{name}"),
                "an untrusted key replaces no provider's keys: give provider or untrusted",
            ));
            continue;
        }
        let kid = key.kid.get_or_insert_with(|| name.clone()).clone();
        let mut jwk = key.public.clone();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg_name(key.alg));
        jwk["use"] = json!("sig");
        let set = sets.entry(provider.clone()).or_default();
        set.0.push(name.clone());
        set.1.push(jwk);
    }
    for (provider, (names, jwks)) in &sets {
        let mut found = false;
        for c in configs.iter_mut() {
            if let Some(p) = c
                .get_mut("providers")
                .and_then(|p| p.get_mut(provider.as_str()))
                .and_then(Value::as_object_mut)
            {
                found = true;
                p.remove("remote_jwks");
                p.insert("local_jwks".into(), json!({ "keys": jwks }));
            }
        }
        if !found {
            for name in names {
                problems.push(problem(
                    format!("keys.{name}.provider"),
                    format!("no jwt config of the chain has a provider {provider:?}"),
                ));
            }
        }
    }
    for (name, key) in suite.keys.iter_mut() {
        if key.provider.is_some() {
            continue;
        }
        let jwk = configs.iter().find_map(|c| {
            c.get("providers")?
                .as_object()?
                .values()
                .filter_map(|p| p.get("local_jwks")?.get("keys")?.as_array())
                .flatten()
                .find(|jwk| same_key(jwk, &key.public))
                .cloned()
        });
        match jwk {
            Some(_) if key.untrusted => problems.push(problem(
                format!("keys.{name}.untrusted"),
                "the chain trusts this key: a jwt provider's local_jwks holds it",
            )),
            None if key.untrusted => {}
            Some(jwk) => {
                if key.kid.is_none() {
                    key.kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
                }
            }
            None => problems.push(problem(
                format!("keys.{name}"),
                "its public key is in no jwt provider's local_jwks: add it there, \
                 or name the provider whose keys it replaces (provider: <name>)",
            )),
        }
    }
    // Routes that use the shared config carry a copy of it.
    let shared_jwt = chain
        .shared
        .iter()
        .find(|(f, _)| f.name == "jwt")
        .map(|(_, c)| c.clone());
    if let Some(shared) = shared_jwt {
        for r in chain.routes.iter_mut() {
            for u in r.filters.iter_mut() {
                if u.filter.name == "jwt" && u.origin == Origin::Shared {
                    u.config = shared.clone();
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(chain)
    } else {
        Err(problems)
    }
}

fn alg_name(alg: KeyAlg) -> &'static str {
    match alg {
        KeyAlg::ES256 => "ES256",
        KeyAlg::RS256 => "RS256",
    }
}

/// A request as a client sends it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A body as written: a string as is, anything else as JSON.
fn body_bytes(v: &Value) -> (Vec<u8>, bool) {
    match v {
        Value::String(s) => (s.clone().into_bytes(), false),
        other => (other.to_string().into_bytes(), true),
    }
}

impl Suite {
    /// The request of `case`, its token signed now (seconds since the epoch).
    pub fn request(&self, case: &Case, now: u64) -> Result<Request, String> {
        let mut headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        if let Some(t) = &case.token {
            let key = self
                .keys
                .get(&t.key)
                .ok_or_else(|| format!("no key {:?}", t.key))?;
            headers.push((
                "authorization".into(),
                format!("Bearer {}", sign(key, &t.claims, now)?),
            ));
        }
        let mut body = Vec::new();
        if let Some(b) = &case.body {
            let (bytes, json) = body_bytes(b);
            if json && !case.headers.contains_key("content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            body = bytes;
        }
        Ok(Request {
            method: case.method.clone(),
            path: case.path.clone(),
            headers,
            body,
        })
    }
}

impl Answer {
    /// Status, headers (a JSON body gets its content-type) and body.
    pub fn parts(&self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        let (body, json) = match &self.body {
            Some(b) => body_bytes(b),
            None => (br#"{"ok":true}"#.to_vec(), true),
        };
        if !headers.iter().any(|(n, _)| n == "content-type") {
            let ct = if json {
                "application/json"
            } else {
                "text/plain"
            };
            headers.push(("content-type".into(), ct.into()));
        }
        (self.status, headers, body)
    }
}

/// Signs a token with `jsonwebtoken`: never the filters' own crate, so a
/// bug there cannot both mint and accept a token.
fn sign(key: &Key, claims: &Map<String, Value>, now: u64) -> Result<String, String> {
    let mut all = Map::new();
    all.insert("iat".into(), json!(now));
    all.insert("exp".into(), json!(now + 3600));
    for (name, v) in claims {
        if v.is_null() {
            all.remove(name);
            continue;
        }
        let v = if ["exp", "iat", "nbf"].contains(&name.as_str()) {
            time_claim(v, now)?
        } else {
            v.clone()
        };
        all.insert(name.clone(), v);
    }
    let mut header = Header::new(match key.alg {
        KeyAlg::ES256 => Algorithm::ES256,
        KeyAlg::RS256 => Algorithm::RS256,
    });
    header.kid = key.kid.clone();
    jsonwebtoken::encode(&header, &Value::Object(all), &key.encoding).map_err(|e| e.to_string())
}

/// What came back, from the fake host or a real proxy.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The headers the upstream received, when the request got there.
    pub upstream: Option<Vec<(String, String)>>,
    /// The chain route that ran (None: none matched, the proxy's 404).
    pub route: Option<String>,
    /// Refusals and masks of the audit record: `(control, verdict, reason)`.
    pub decisions: Vec<(String, String, Option<String>)>,
    /// Why no answer reached the client (the exchange hung, or waited on a call).
    pub no_answer: Option<String>,
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The full problem `type` URI of what a case wrote.
pub fn problem_type_uri(written: &str) -> String {
    if written.contains(':') {
        written.to_string()
    } else {
        format!("urn:palisade:problem:{written}")
    }
}

impl Observed {
    /// The problem+json `type`, when the body is a problem document.
    pub fn problem_type(&self) -> Option<String> {
        let ct = values(&self.headers, "content-type").first()?.to_string();
        if !ct.starts_with(palisade_core::problem::CONTENT_TYPE) {
            return None;
        }
        let doc: Value = serde_json::from_slice(&self.body).ok()?;
        doc.get("type")?.as_str().map(str::to_string)
    }

    /// The control that refused or masked the request, as the audit record says.
    pub fn decided_by(&self) -> Option<&str> {
        self.decisions
            .iter()
            .find(|(_, v, _)| v != "allow")
            .map(|(c, _, _)| c.as_str())
    }

    /// One line saying who decided: for failure reports.
    pub fn decision_line(&self) -> String {
        let Some(route) = &self.route else {
            return "no route of the chain matches: the proxy's 404, no control ran".into();
        };
        let denials: Vec<String> = self
            .decisions
            .iter()
            .filter(|(_, v, _)| v != "allow")
            .map(|(c, v, r)| match r {
                Some(r) => format!("{c} ({v}: {r})"),
                None => format!("{c} ({v})"),
            })
            .collect();
        if denials.is_empty() {
            format!("route {route}: no control refused or masked it")
        } else {
            format!("route {route}: decided by {}", denials.join(", "))
        }
    }
}

/// What differs from the case's expectations, one line each; empty: it passed.
pub fn mismatches(expect: &Expect, got: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(why) = &got.no_answer {
        out.push(format!("no response reached the client: {why}"));
        return out;
    }
    if let Some(s) = expect.status {
        if s != got.status {
            out.push(format!("status: expected {s}, got {}", got.status));
        }
    }
    if let Some(t) = &expect.problem_type {
        let want = problem_type_uri(t);
        match got.problem_type() {
            Some(have) if have == want => {}
            Some(have) => out.push(format!("type: expected {want}, got {have}")),
            None => out.push(format!("type: expected {want}, got no problem+json body")),
        }
    }
    let shown = |v: Vec<&str>| match v.as_slice() {
        [] => "nothing".to_string(),
        vs => vs
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    for (name, want) in &expect.headers {
        let have = values(&got.headers, name);
        if !have.contains(&want.as_str()) {
            out.push(format!(
                "header {name}: expected {want:?}, got {}",
                shown(have)
            ));
        }
    }
    for name in &expect.headers_absent {
        let have = values(&got.headers, name);
        if !have.is_empty() {
            out.push(format!(
                "header {name}: expected absent, got {}",
                shown(have)
            ));
        }
    }
    if let Some(want) = expect.reaches_upstream {
        if want != got.upstream.is_some() {
            out.push(if want {
                "upstream: expected the request to reach it, it did not".into()
            } else {
                "upstream: expected the request not to reach it, it did".into()
            });
        }
    }
    match &got.upstream {
        None if !expect.upstream_headers.is_empty()
            || !expect.upstream_headers_absent.is_empty() =>
        {
            out.push("upstream_headers: the request never reached the upstream".into())
        }
        None => {}
        Some(up) => {
            for (name, want) in &expect.upstream_headers {
                let have = values(up, name);
                if !have.contains(&want.as_str()) {
                    out.push(format!(
                        "upstream header {name}: expected {want:?}, got {}",
                        shown(have)
                    ));
                }
            }
            for name in &expect.upstream_headers_absent {
                let have = values(up, name);
                if !have.is_empty() {
                    out.push(format!(
                        "upstream header {name}: expected absent, got {}",
                        shown(have)
                    ));
                }
            }
        }
    }
    let body = String::from_utf8_lossy(&got.body);
    for text in &expect.body_contains {
        if !body.contains(text.as_str()) {
            out.push(format!("body: expected to contain {text:?}"));
        }
    }
    for text in &expect.body_excludes {
        if body.contains(text.as_str()) {
            out.push(format!("body: expected not to contain {text:?}"));
        }
    }
    if let Some(want) = &expect.decided_by {
        let have = got.decided_by();
        if have != Some(want.as_str()) {
            out.push(format!(
                "decided_by: expected {want}, got {}",
                have.unwrap_or("no control (nothing refused or masked it)")
            ));
        }
    }
    out
}

/// A chain route as Envoy's route table matches it.
struct RouteRule {
    name: String,
    prefix: Option<String>,
    path: Option<String>,
}

impl RouteRule {
    /// Envoy's `prefix` and `path` matches, on the path without its query.
    fn matches(&self, path: &str) -> bool {
        match (&self.prefix, &self.path) {
            (Some(p), _) => path.starts_with(p.as_str()),
            (None, Some(p)) => path == p,
            (None, None) => true,
        }
    }
}

/// The path as the rendered Envoy routes on it and hands it to the filters
/// and the upstream: escaped slashes unescaped (`%2F` and `%5C`,
/// `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`), then
/// `normalize_path` (escapes of unreserved characters decoded, `%61` is
/// `a`, other escapes kept; `\` read as `/`; dot segments removed), then
/// `merge_slashes`. Returns the path and the path with its query.
fn envoy_path(raw: &str) -> (String, String) {
    let (path, query) = raw.split_at(raw.find('?').unwrap_or(raw.len()));
    let bytes = path.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| char::from(*b).to_digit(16));
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(hi), Some(lo)) = (bytes[i], hex(i + 1), hex(i + 2)) {
            let b = u8::try_from(hi * 16 + lo).unwrap_or(b'%');
            if b.is_ascii_alphanumeric() || b"-._~/\\".contains(&b) {
                decoded.push(b);
            } else {
                decoded.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let parts: Vec<&str> = decoded.split('/').skip(1).collect();
    let mut segments: Vec<&str> = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        let last = k + 1 == parts.len();
        match *part {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => {
                segments.push(s);
                continue;
            }
        }
        if last {
            segments.push("");
        }
    }
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    while out.contains("//") {
        out = out.replace("//", "/");
    }
    let with_query = format!("{out}{query}");
    (out, with_query)
}

/// The chain configured once, as one proxy runs it: state (rate-limit
/// counters, cached tokens) carries from case to case.
pub struct Runner {
    plugin: Rc<ChainPlugin>,
    root: FakeHost,
    routes: Vec<RouteRule>,
    /// Envoy's `allow_on_headers_stop_iteration`, set as `render envoy` sets it.
    stop_iteration: bool,
    /// The fake host's clock, and the tokens' `iat`, in seconds.
    pub now: u64,
}

impl Runner {
    /// Configures `palisade.wasm`'s chain with what `render envoy` would give it.
    pub fn new(chain: &Chain, now: u64) -> Result<Runner, String> {
        let all: Vec<&crate::chain::Route> = chain.routes.iter().collect();
        let config = envoy::module_config(chain, &all);
        let mut root = FakeHost::configuring(HostKind::Envoy).at_secs(now);
        let plugin = ChainPlugin::configure(config.to_string().as_bytes(), &mut root)
            .map_err(|e| format!("the chain refused its config: {e}"))?;
        let routes = chain
            .routes
            .iter()
            .map(|r| RouteRule {
                name: r.name.clone(),
                prefix: r.prefix.clone(),
                path: r.path.clone(),
            })
            .collect();
        Ok(Runner {
            plugin: Rc::new(plugin),
            root,
            routes,
            stop_iteration: chain
                .routes
                .iter()
                .flat_map(|r| r.filters.iter())
                .any(envoy::holds_headers),
            now,
        })
    }

    /// Sends one request through the chain and the upstream's `answer`.
    pub fn send(&self, request: &Request, answer: &Answer) -> Observed {
        let (path, forwarded) = envoy_path(&request.path);
        let Some(route) = self.routes.iter().find(|r| r.matches(&path)) else {
            // `render envoy` ends the table with a 404 that runs no control.
            return Observed {
                status: 404,
                ..Observed::default()
            };
        };
        let mut host = FakeHost::request(&request.method, &forwarded);
        host.shared = Rc::clone(&self.root.shared);
        host.clock.set(self.root.clock.get());
        host.metric_names = self.root.metric_names.clone();
        host.properties
            .insert("xds.route_name".into(), route.name.as_bytes().to_vec());
        host.properties
            .insert("source.address".into(), b"127.0.0.1:40000".to_vec());
        for (n, v) in &request.headers {
            host.request_headers
                .push((n.to_ascii_lowercase(), v.as_bytes().to_vec()));
        }
        // What Envoy adds before the filters: the request id, the scheme,
        // and the body's length.
        let has = |h: &FakeHost, name: &str| h.request_headers.iter().any(|(n, _)| n == name);
        if !has(&host, "x-request-id") {
            host.request_headers.push((
                "x-request-id".into(),
                format!("palisade-test-{:016x}", self.now).into_bytes(),
            ));
        }
        host.request_headers
            .push(("x-forwarded-proto".into(), b"http".to_vec()));
        if !request.body.is_empty() && !has(&host, "content-length") {
            host.request_headers.push((
                "content-length".into(),
                request.body.len().to_string().into_bytes(),
            ));
        }
        let (status, mut headers, body) = answer.parts();
        headers.push(("content-length".into(), body.len().to_string()));
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut ex = Exchange::new().response(status, &pairs, &[&body]);
        if !request.body.is_empty() {
            ex = ex.body(&request.body);
        }
        if self.stop_iteration {
            ex = ex.with_stop_iteration_flag();
        }
        let mut filter = CodeDetails {
            inner: ChainPlugin::new_filter(&self.plugin),
            local: false,
        };
        let out = run(&mut filter, &mut host, &ex);
        observe(&out, &host, &route.name)
    }
}

fn observe(out: &Outcome, host: &FakeHost, route: &str) -> Observed {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let decisions = host
        .properties
        .get(palisade_core::audit::PROPERTY)
        .and_then(|r| serde_json::from_slice::<Record>(r).ok())
        .map(|r| {
            r.decisions
                .into_iter()
                .map(|d| (d.control, d.verdict, d.reason))
                .collect()
        })
        .unwrap_or_default();
    let mut o = Observed {
        route: Some(route.to_string()),
        decisions,
        upstream: out
            .upstream
            .as_ref()
            .map(|(h, _)| h.iter().map(|(n, v)| (n.clone(), text(v))).collect()),
        ..Observed::default()
    };
    match &out.client {
        Some(c) => {
            o.status = c.status;
            o.headers = c
                .headers
                .iter()
                .filter(|(n, _)| !n.starts_with(':'))
                .map(|(n, v)| (n.clone(), text(v)))
                .collect();
            o.body = c.body.clone();
        }
        None if out.awaiting_call => {
            o.no_answer = Some(
                "the chain called a service (a remote JWKS?), which the fake host does not \
                 answer: give the key `provider: <name>` to replace that provider's keys"
                    .into(),
            )
        }
        None => o.no_answer = Some(out.hung.clone().unwrap_or_else(|| "it hung".into())),
    }
    o
}

/// The chain as one filter, with what Envoy's router tells the response
/// callbacks: an answer from the upstream has `response.code_details`
/// `via_upstream` (a control's local reply has not), which is how the
/// errors control tells a Palisade problem from an upstream's forgery.
struct CodeDetails<F> {
    inner: F,
    local: bool,
}

impl<F: HttpFilter> CodeDetails<F> {
    fn request(&mut self, host: &mut dyn Host, flow: Flow) -> Flow {
        self.local |= host.local_reply_sent();
        flow
    }
}

impl<F: HttpFilter> HttpFilter for CodeDetails<F> {
    fn on_request_headers(&mut self, host: &mut dyn Host, eos: bool) -> Flow {
        let flow = self.inner.on_request_headers(host, eos);
        self.request(host, flow)
    }
    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        let flow = self.inner.on_request_body(host, size, eos);
        self.request(host, flow)
    }
    fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        let flow = self.inner.on_request_trailers(host);
        self.request(host, flow)
    }
    fn on_response_headers(&mut self, host: &mut dyn Host, eos: bool) -> Flow {
        if !self.local {
            host.set_property(&["response", "code_details"], b"via_upstream");
        }
        self.inner.on_response_headers(host, eos)
    }
    fn on_response_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        self.inner.on_response_body(host, size, eos)
    }
    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.inner.on_response_trailers(host)
    }
    fn on_call_response(&mut self, host: &mut dyn Host, response: CallResponse) -> Flow {
        let flow = self.inner.on_call_response(host, response);
        self.request(host, flow)
    }
    fn on_stream_done(&mut self, host: &mut dyn Host) {
        self.inner.on_stream_done(host)
    }
    fn holder(&self) -> Option<&'static str> {
        self.inner.holder()
    }
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    /// What differs from the expectations; empty when the case passed.
    pub failures: Vec<String>,
    pub observed: Observed,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every case, in order, on one configured chain.
pub fn run_all(runner: &Runner, suite: &Suite) -> Vec<CaseResult> {
    suite
        .cases
        .iter()
        .map(|case| {
            let mut observed = Observed::default();
            let request = suite.request(case, runner.now);
            for _ in 0..case.repeat {
                observed = match &request {
                    Ok(r) => runner.send(r, &case.upstream),
                    Err(e) => Observed {
                        no_answer: Some(format!("cannot sign the token: {e}")),
                        ..Observed::default()
                    },
                };
            }
            CaseResult {
                name: case.name.clone(),
                failures: mismatches(&case.expect, &observed),
                observed,
            }
        })
        .collect()
}

/// The results as text: every case, the failing ones with what was
/// expected, what came back and who decided it.
pub fn report_text(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for r in results {
        if r.passed() {
            let _ = writeln!(out, "ok    {}", r.name);
            continue;
        }
        let _ = writeln!(out, "FAIL  {}", r.name);
        for f in &r.failures {
            let _ = writeln!(out, "        {f}");
        }
        let _ = writeln!(out, "        {}", r.observed.decision_line());
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    let _ = writeln!(
        out,
        "{} cases: {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to write the other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The results as a JUnit XML report (one testsuite named `suite`), which
/// CI systems show per case.
pub fn report_junit(suite: &str, results: &[CaseResult]) -> String {
    let failed = results.iter().filter(|r| !r.passed()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites tests=\"{n}\" failures=\"{failed}\">\n  <testsuite name=\"{s}\" tests=\"{n}\" failures=\"{failed}\">",
        n = results.len(),
        s = xml_escape(suite)
    );
    for r in results {
        let name = xml_escape(&r.name);
        if r.passed() {
            let _ = writeln!(
                out,
                "    <testcase name=\"{name}\" classname=\"palisade.test\"/>"
            );
            continue;
        }
        let _ = writeln!(
            out,
            "    <testcase name=\"{name}\" classname=\"palisade.test\">"
        );
        let mut text = r.failures.join("\n");
        text.push('\n');
        text.push_str(&r.observed.decision_line());
        let _ = writeln!(
            out,
            "      <failure message=\"{}\">{}</failure>\n    </testcase>",
            xml_escape(&r.failures[0]),
            xml_escape(&text)
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain;

    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn examples() -> std::path::PathBuf {
        repo().join("examples")
    }

    fn at(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.at.as_str()).collect()
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn an_unknown_field_is_refused_with_its_path_and_line() {
        let text = "cases:\n  - name: a\n    path: /\n    expect:\n      stauts: 200\n";
        let problems = load(text, &examples()).err().unwrap_or_default();
        assert_eq!(at(&problems), ["cases[0].expect.stauts"], "{problems:?}");
        assert!(
            problems[0].message.starts_with("unknown field `stauts`"),
            "{problems:?}"
        );
        assert!(problems[0].message.contains("line 5"), "{problems:?}");
        let problems = load(
            "cases: [{name: a, path: /, expect: {status: two}}]",
            &examples(),
        )
        .err()
        .unwrap_or_default();
        assert_eq!(at(&problems), ["cases[0].expect.status"], "{problems:?}");
    }

    #[test]
    fn every_problem_of_the_cases_is_reported_with_its_place() {
        let text = r#"
keys:
  both: {alg: ES256, private_key_pem: x, private_key_file: y}
  gone: {alg: ES256, private_key_file: no-such.pem}
  junk: {alg: RS256, private_key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}
cases:
  - name: a
    method: "GE T"
    path: orders
    headers: {X-Up: "1"}
    token: {key: nope, claims: {exp: tomorrow}}
    repeat: 0
    upstream: {status: 99}
    expect: {}
  - name: a
    path: /
    expect: {status: 200}
"#;
        let problems = load(text, &examples()).err().unwrap_or_default();
        assert_eq!(
            at(&problems),
            [
                "keys.both",
                "keys.gone.private_key_file",
                "keys.junk.private_key_pem",
                "cases[0].method",
                "cases[0].path",
                "cases[0].headers.X-Up",
                "cases[0].token.key",
                "cases[0].token.claims.exp",
                "cases[0].repeat",
                "cases[0].upstream.status",
                "cases[0].expect",
                "cases[1].name",
            ],
            "{problems:#?}"
        );
        assert!(load("cases: []", &examples()).is_err());
    }

    #[test]
    fn paths_are_routed_as_the_rendered_envoy_routes_them() {
        let path = |raw: &str| envoy_path(raw).0;
        assert_eq!(path("//admin//users"), "/admin/users");
        assert_eq!(path("/%61dmin/%7Eme"), "/admin/~me");
        assert_eq!(path("/admin%2fusers"), "/admin/users");
        assert_eq!(path("/api/..%2Fadmin%5cusers"), "/admin/users");
        assert_eq!(path("/a%3Fb"), "/a%3Fb");
        assert_eq!(path("/a/./b/../c/"), "/a/c/");
        assert_eq!(path("/a/b/.."), "/a/");
        assert_eq!(path("/../.."), "/");
        assert_eq!(path("/%2e%2e/admin"), "/admin");
        assert_eq!(path("/caf\u{e9}%"), "/caf\u{e9}%");
        assert_eq!(envoy_path("//x?a=//b").1, "/x?a=//b");
    }

    #[test]
    fn time_claims_are_numbers_or_relative_to_now() {
        assert_eq!(time_claim(&json!(5), NOW), Ok(json!(5)));
        assert_eq!(time_claim(&json!("now"), NOW), Ok(json!(NOW)));
        assert_eq!(time_claim(&json!("now+90s"), NOW), Ok(json!(NOW + 90)));
        assert_eq!(time_claim(&json!("now-2h"), NOW), Ok(json!(NOW - 7200)));
        assert_eq!(time_claim(&json!("now+1d"), NOW), Ok(json!(NOW + 86400)));
        for bad in ["tomorrow", "now+", "now*2h", "now+2y", "now+xh", "nowé1h"] {
            assert!(time_claim(&json!(bad), NOW).is_err(), "{bad}");
        }
    }

    fn chain_with(jwt: &str) -> Chain {
        let text = format!(
            "version: 1
upstreams: {{shop: 'http://127.0.0.1:8080', idp: https://id.example.com}}
filters:
  jwt: {jwt}
routes:
  - {{name: api, match: {{prefix: /}}, upstream: shop, filters: [jwt]}}
  - {{name: own, match: {{prefix: /own}}, upstream: shop,
     filters: [{{jwt: {{providers: {{corp: {{remote_jwks: {{cluster: idp, path: /k, authority: id.example.com}}}}}}, requires: {{provider: corp}}}}}}]}}
"
        );
        chain::load(&text).unwrap_or_else(|p| panic!("{p:?}"))
    }

    const REMOTE: &str = "{providers: {corp: {remote_jwks: {cluster: idp, path: /k, authority: id.example.com}}}, requires: {provider: corp}}";

    fn suite(keys: &str, cases: &str) -> Suite {
        let text = format!("keys: {keys}\ncases: {cases}\n");
        load(&text, &examples()).unwrap_or_else(|p| panic!("{p:?}"))
    }

    const CORP: &str =
        "{corp: {alg: ES256, private_key_file: keys/policy-test-es256.pem, provider: corp}}";

    #[test]
    fn a_key_naming_a_provider_replaces_its_key_sets_everywhere() {
        let mut s = suite(
            CORP,
            "[{name: in, path: /, token: {key: corp}, expect: {status: 200}}]",
        );
        let chain = prepare(&chain_with(REMOTE), &mut s).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(s.keys["corp"].kid.as_deref(), Some("corp"));
        for r in &chain.routes {
            let p = &r.filters[0].config["providers"]["corp"];
            assert!(p.get("remote_jwks").is_none(), "{}: {p}", r.name);
            let keys = &p["local_jwks"]["keys"];
            assert_eq!(keys.as_array().map(Vec::len), Some(1), "{p}");
            assert_eq!(keys[0]["kid"], "corp");
            assert_eq!(keys[0]["x"], s.keys["corp"].public["x"]);
        }
        // And the chain then trusts the runner's tokens on both routes.
        let runner = Runner::new(&chain, NOW).unwrap_or_else(|e| panic!("{e}"));
        let results = run_all(&runner, &s);
        assert!(results[0].passed(), "{}", report_text(&results));
        let own = s.request(&s.cases[0], NOW).unwrap();
        let own = Request {
            path: "/own/x".into(),
            ..own
        };
        assert_eq!(runner.send(&own, &Answer::default()).status, 200);
        let bad = suite(
            "{corp: {alg: ES256, private_key_file: keys/policy-test-es256.pem, provider: crop}}",
            "[{name: a, path: /, expect: {status: 200}}]",
        );
        let problems = prepare(&chain_with(REMOTE), &mut bad.clone())
            .err()
            .unwrap_or_default();
        assert_eq!(at(&problems), ["keys.corp.provider"]);
    }

    #[test]
    fn a_key_without_provider_must_be_one_the_chain_trusts() {
        let mut s = suite(
            "{corp: {alg: ES256, private_key_file: keys/policy-test-es256.pem}}",
            "[{name: a, path: /, expect: {status: 200}}]",
        );
        let problems = prepare(&chain_with(REMOTE), &mut s)
            .err()
            .unwrap_or_default();
        assert_eq!(at(&problems), ["keys.corp"]);
        assert!(
            problems[0].message.contains("provider: <name>"),
            "{problems:?}"
        );
        // In the chain's local_jwks: the chain's kid is used.
        let jwk = s.keys["corp"].public.clone();
        let mut listed = jwk.clone();
        listed["kid"] = json!("k-7");
        let jwt = json!({"providers": {"corp": {"local_jwks": {"keys": [listed]}}},
                         "requires": {"provider": "corp"}});
        let chain = chain_with(&jwt.to_string());
        prepare(&chain, &mut s).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(s.keys["corp"].kid.as_deref(), Some("k-7"));
        // An untrusted key must be absent from every key set.
        let mut u = suite(
            "{evil: {alg: ES256, private_key_file: keys/policy-test-es256.pem, untrusted: true}}",
            "[{name: a, path: /, expect: {status: 200}}]",
        );
        let problems = prepare(&chain, &mut u).err().unwrap_or_default();
        assert_eq!(at(&problems), ["keys.evil.untrusted"]);
        assert!(prepare(&chain_with(REMOTE), &mut u).is_ok());
    }

    #[test]
    fn rsa_keys_sign_tokens_the_chain_verifies() {
        let pem = std::fs::read_to_string(repo().join("filters/jwt/tests/fixtures/rsa1.pem"))
            .unwrap_or_default();
        let keys = json!({"corp": {"alg": "RS256", "private_key_pem": pem, "provider": "corp"}});
        let mut s = suite(
            &keys.to_string(),
            "[{name: in, path: /, token: {key: corp, claims: {sub: a}}, expect: {status: 200}},
              {name: late, path: /, token: {key: corp, claims: {exp: now-1h}}, expect: {status: 401, type: invalid-token}},
              {name: no exp, path: /, token: {key: corp, claims: {exp: null}}, expect: {status: 401, type: invalid-token}}]",
        );
        assert_eq!(s.keys["corp"].public["kty"], "RSA");
        let chain = prepare(&chain_with(REMOTE), &mut s).unwrap_or_else(|p| panic!("{p:?}"));
        let results = run_all(&Runner::new(&chain, NOW).unwrap(), &s);
        assert!(
            results.iter().all(CaseResult::passed),
            "{}",
            report_text(&results)
        );
    }

    #[test]
    fn a_failing_case_says_what_differs_and_who_decided() {
        let chain = chain::load(
            "version: 1
upstreams: {shop: 'http://127.0.0.1:8080'}
routes:
  - {name: admin, match: {prefix: /admin/}, upstream: shop,
     filters: [errors, {headers: {request: {allowed_methods: [GET]}}}]}
",
        )
        .unwrap();
        let s = suite(
            "{}",
            "[{name: 'delete <all>', method: DELETE, path: /admin/x,
               expect: {status: 200, type: other, upstream_headers: {a: b}, decided_by: jwt}},
              {name: unrouted, path: /x, expect: {status: 404, reaches_upstream: false}}]",
        );
        let results = run_all(&Runner::new(&chain, NOW).unwrap(), &s);
        let text = report_text(&results);
        assert_eq!(
            results[0].failures,
            [
                "status: expected 200, got 405",
                "type: expected urn:palisade:problem:other, got urn:palisade:problem:method-not-allowed",
                "upstream_headers: the request never reached the upstream",
                "decided_by: expected jwt, got headers",
            ],
            "{text}"
        );
        assert!(
            text.contains("route admin: decided by headers (deny: method_not_allowed)"),
            "{text}"
        );
        assert!(results[1].passed(), "{text}");
        assert!(text.ends_with("2 cases: 1 passed, 1 failed\n"), "{text}");
        let xml = report_junit("t.yaml", &results);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(
            xml.contains("<testcase name=\"delete &lt;all&gt;\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"unrouted\" classname=\"palisade.test\"/>"),
            "{xml}"
        );
    }
}
