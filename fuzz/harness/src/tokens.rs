//! Tokens pre-signed once with `jsonwebtoken` and the jwt tests' fixture
//! keys: the ones a configured key signed, and forgeries (another key, the
//! `none` algorithm, HMAC keyed with a public key). Fuzz inputs pick and
//! mutate them; the jwt invariant compares what passed against this list.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::OnceLock;

pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "https://id.example.com";
pub const AUDIENCE: &str = "orders-api";
pub const SKEW_S: u64 = 30;
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-fuzz-only";

const PUBLIC_KEYS: &str = include_str!("../../../filters/jwt/tests/fixtures/public_keys.json");

/// The fixture keys' public JWKs, by kid.
pub fn jwk(kid: &str) -> Value {
    static ALL: OnceLock<Value> = OnceLock::new();
    let all = ALL.get_or_init(|| serde_json::from_str(PUBLIC_KEYS).unwrap_or(Value::Null));
    if kid == "hs1" {
        return json!({"kty": "oct", "kid": "hs1", "k": b64(HMAC_SECRET)});
    }
    all[kid].clone()
}

/// A JWKS of the fixture keys named.
pub fn jwks(kids: &[&str]) -> Value {
    json!({"keys": kids.iter().map(|k| jwk(k)).collect::<Vec<_>>()})
}

/// The public material of a key as it appears in a JWKS (`n`, `x` or `k`):
/// a key is trusted when this text was served or configured.
pub fn material(key: &str) -> Option<String> {
    let k = jwk(key);
    ["n", "x", "k"]
        .iter()
        .find_map(|m| k[*m].as_str().map(str::to_string))
}

/// One pre-signed token.
#[derive(Debug)]
pub struct Signed {
    pub text: String,
    /// Fixture key that signed it (`none` for the unsigned one).
    pub key: &'static str,
    /// `iss` and `aud` are the provider's.
    pub claims_ok: bool,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub scopes: &'static str,
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// base64url as leniently as any decoder would take it: padding dropped,
/// stray bits ignored. `None` on a byte outside the alphabet.
pub fn unb64(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text.iter().filter(|c| **c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A compact token's three segments decoded, for comparing by content.
pub fn decoded(token: &[u8]) -> Option<[Vec<u8>; 3]> {
    let mut parts = token.split(|b| *b == b'.');
    let h = unb64(parts.next()?)?;
    let p = unb64(parts.next()?)?;
    let s = unb64(parts.next()?)?;
    parts.next().is_none().then_some([h, p, s])
}

fn pem(key: &str) -> &'static [u8] {
    match key {
        "rsa1" => include_bytes!("../../../filters/jwt/tests/fixtures/rsa1.pem"),
        "rsa2" => include_bytes!("../../../filters/jwt/tests/fixtures/rsa2.pem"),
        "ec1" => include_bytes!("../../../filters/jwt/tests/fixtures/ec1.pem"),
        "ec384" => include_bytes!("../../../filters/jwt/tests/fixtures/ec384.pem"),
        _ => include_bytes!("../../../filters/jwt/tests/fixtures/ed1.pem"),
    }
}

fn sign(alg: Algorithm, kid: &str, key: &'static str, claims: &Value) -> String {
    let encoding = match alg {
        Algorithm::HS256 if key == "hs1" => EncodingKey::from_secret(HMAC_SECRET),
        Algorithm::HS256 => {
            EncodingKey::from_secret(material("rsa1").unwrap_or_default().as_bytes())
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            EncodingKey::from_ec_pem(pem(key)).expect("fixture EC key")
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem(key)).expect("fixture Ed25519 key"),
        _ => EncodingKey::from_rsa_pem(pem(key)).expect("fixture RSA key"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &encoding).expect("signing with a fixture key")
}

/// Every pre-signed token, made once per process.
pub fn all() -> &'static [Signed] {
    static ALL: OnceLock<Vec<Signed>> = OnceLock::new();
    ALL.get_or_init(|| {
        let claim_sets: [(bool, u64, Option<u64>, &str, Value); 6] = [
            (true, NOW + 600, None, "read write", json!({})),
            (true, NOW + 600, None, "read admin", json!({})),
            (true, NOW + 5, None, "read", json!({})),
            (true, NOW - 100, None, "read", json!({})),
            (true, NOW + 900, Some(NOW + 300), "read", json!({})),
            (
                false,
                NOW + 600,
                None,
                "read admin",
                json!({"aud": "other-api"}),
            ),
        ];
        let keys: [(Algorithm, &str, &'static str); 7] = [
            (Algorithm::RS256, "rsa1", "rsa1"),
            (Algorithm::ES256, "ec1", "ec1"),
            (Algorithm::EdDSA, "ed1", "ed1"),
            (Algorithm::ES384, "ec384", "ec384"),
            (Algorithm::HS256, "hs1", "hs1"),
            // Forgeries: another key under a trusted kid, and HMAC keyed
            // with rsa1's public modulus (algorithm confusion).
            (Algorithm::RS256, "rsa1", "rsa2"),
            (Algorithm::HS256, "rsa1", "confusion"),
        ];
        let mut all = Vec::new();
        for (alg, kid, key) in keys {
            for (ok, exp, nbf, scopes, extra) in &claim_sets {
                let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1",
                                        "exp": exp, "iat": NOW - 10, "scope": scopes});
                if let Some(nbf) = nbf {
                    claims["nbf"] = json!(nbf);
                }
                for (k, v) in extra.as_object().into_iter().flatten() {
                    claims[k] = v.clone();
                }
                all.push(Signed {
                    text: sign(alg, kid, key, &claims),
                    key,
                    claims_ok: *ok,
                    exp: *exp,
                    nbf: *nbf,
                    scopes,
                });
            }
        }
        // rsa2 under its own kid (trusted once a key server serves it).
        let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-2",
                            "exp": NOW + 600, "iat": NOW - 10, "scope": "read"});
        all.push(Signed {
            text: sign(Algorithm::RS256, "rsa2", "rsa2", &claims),
            key: "rsa2",
            claims_ok: true,
            exp: NOW + 600,
            nbf: None,
            scopes: "read",
        });
        let header = b64(br#"{"alg":"none","typ":"JWT","kid":"rsa1"}"#);
        let payload = b64(claims.to_string().as_bytes());
        all.push(Signed {
            text: format!("{header}.{payload}."),
            key: "none",
            claims_ok: true,
            exp: NOW + 600,
            nbf: None,
            scopes: "read",
        });
        all
    })
}

/// The token `text` is, by content, or `None` when the harness never signed it.
pub fn find(text: &[u8]) -> Option<&'static Signed> {
    static DECODED: OnceLock<Vec<Option<[Vec<u8>; 3]>>> = OnceLock::new();
    let table = DECODED.get_or_init(|| all().iter().map(|s| decoded(s.text.as_bytes())).collect());
    let parts = decoded(text)?;
    table
        .iter()
        .position(|d| d.as_ref() == Some(&parts))
        .and_then(|i| all().get(i))
}
