//! Shared test helpers: fixture keys, tokens minted by an independent
//! library (`jsonwebtoken`), and requests run through the plugin on FakeHost.
#![allow(dead_code)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HttpFilter, Plugin};
use palisade_jwt::JwtPlugin;
use serde_json::{json, Value};
use std::rc::Rc;

pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "https://id.example.com";
pub const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The public JWK of fixture key `kid`.
pub fn jwk(kid: &str) -> Value {
    let all: Value = serde_json::from_slice(&fixture("public_keys.json")).unwrap();
    all[kid].clone()
}

pub fn jwks(kids: &[&str]) -> Value {
    json!({"keys": kids.iter().map(|k| jwk(k)).collect::<Vec<_>>()})
}

pub fn hmac_jwk(kid: &str) -> Value {
    use base64::Engine;
    json!({"kty": "oct", "kid": kid,
           "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(HMAC_SECRET)})
}

/// Mints with fixture key `kid` (or the HMAC secret for HS*).
pub fn mint_with(alg: Algorithm, kid: Option<&str>, key_name: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(HMAC_SECRET)
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            EncodingKey::from_ec_pem(&fixture(&format!("{key_name}.pem"))).unwrap()
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&fixture(&format!("{key_name}.pem"))).unwrap(),
        _ => EncodingKey::from_rsa_pem(&fixture(&format!("{key_name}.pem"))).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub fn mint(alg: Algorithm, kid: &str, claims: &Value) -> String {
    mint_with(alg, Some(kid), kid, claims)
}

/// Claims valid at NOW for the default provider.
pub fn claims() -> Value {
    json!({"iss": ISSUER, "aud": "orders-api", "sub": "user-1", "exp": NOW + 600, "iat": NOW - 10,
           "scope": "read write", "tenant": {"id": "t-9"}})
}

pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

pub fn rs256(claims: &Value) -> String {
    mint(Algorithm::RS256, "rsa1", claims)
}

/// A provider `corp` with the fixture keys inline.
pub fn provider(extra: Value) -> Value {
    with(
        json!({
            "issuer": ISSUER,
            "audiences": ["orders-api"],
            "local_jwks": jwks(&["rsa1", "ec1", "ec384", "ed1"]),
            "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"},
                                 {"claim": "tenant.id", "header": "x-jwt-tenant"}]
        }),
        extra,
    )
}

pub fn config_with(provider: Value, rules: Value) -> Value {
    json!({"providers": {"corp": provider}, "rules": rules})
}

pub fn default_rules() -> Value {
    json!([
        {"match": {"prefix": "/health"}},
        {"match": {"prefix": "/admin"}, "requires": {"provider": "corp", "scopes": ["admin"]}},
        {"match": {"prefix": "/"}, "requires": {"provider": "corp"}}
    ])
}

/// A configured plugin and the host it was configured on (a worker VM).
pub struct Vm {
    pub plugin: Rc<JwtPlugin>,
    pub host: FakeHost,
}

pub fn vm(config: &Value) -> Vm {
    vm_on(config, FakeHost::new().at_secs(NOW))
}

pub fn vm_on(config: &Value, mut host: FakeHost) -> Vm {
    let plugin = JwtPlugin::configure(config.to_string().as_bytes(), &mut host)
        .unwrap_or_else(|e| panic!("config refused: {e}"));
    Vm {
        plugin: Rc::new(plugin),
        host,
    }
}

impl Vm {
    /// A request on this VM: same metrics, shared data, clock, foreign functions.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> FakeHost {
        let mut h = FakeHost::request(method, path);
        h.kind = self.host.kind;
        h.shared = Rc::clone(&self.host.shared);
        h.clock.set(self.host.clock.get());
        h.metric_names = self.host.metric_names.clone();
        h.foreign = self.host.foreign.clone();
        for (n, v) in headers {
            h = h.with_request_header(n, v);
        }
        h
    }

    /// Runs the request headers callback: (flow, host after it).
    pub fn run(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (Flow, FakeHost) {
        let mut h = self.request(method, path, headers);
        let mut filter = JwtPlugin::new_filter(&self.plugin);
        let flow = filter.on_request_headers(&mut h, true);
        (flow, h)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (Flow, FakeHost) {
        match token {
            Some(t) => {
                let auth = format!("Bearer {t}");
                self.run("GET", path, &[("authorization", &auth)])
            }
            None => self.run("GET", path, &[]),
        }
    }
}

/// Status of the local reply, 0 when the request went on.
pub fn status(h: &FakeHost) -> u16 {
    h.sent.as_ref().map(|s| s.status).unwrap_or(0)
}

pub fn challenge(h: &FakeHost) -> String {
    h.sent
        .as_ref()
        .and_then(|s| s.header("www-authenticate"))
        .unwrap_or_default()
        .to_string()
}

pub fn detail(h: &FakeHost) -> String {
    h.sent
        .as_ref()
        .map(|s| s.json()["detail"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}
