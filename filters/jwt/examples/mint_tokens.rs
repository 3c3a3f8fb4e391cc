//! Mints test and benchmark tokens with an independent library
//! (`jsonwebtoken`) and the fixture keys of `tests/fixtures/` (test-only keys).
//!
//! ```sh
//! cargo run -q -p palisade-jwt --example mint_tokens -- fixtures > tests/tests/jwt/tokens.json
//! cargo run -q -p palisade-jwt --example mint_tokens -- bench RS256 2000   # JSON array, distinct tokens
//! cargo run -q -p palisade-jwt --example mint_tokens -- jwks               # the public JWKS (rsa1, ec1)
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// 2100-01-01: the fixtures outlive the repository.
const FAR: u64 = 4_102_444_800;
const ISSUER: &str = "https://id.example.com";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn key(alg: Algorithm, name: &str) -> EncodingKey {
    let pem = fixture(&format!("{name}.pem"));
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISSUER, "aud": "orders-api", "sub": "user-1", "tenant": {"id": "t-9"},
                       "scope": "read", "iat": 1_700_000_000u64, "exp": FAR});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key_name: &str,
    claims: &Value,
    edit: impl FnOnce(&mut Header),
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    edit(&mut header);
    jsonwebtoken::encode(&header, claims, &key(alg, key_name)).unwrap_or_else(|e| panic!("{e}"))
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn fixtures() -> Value {
    let plain = |c: Value| sign(Algorithm::RS256, Some("rsa1"), "rsa1", &claims(c), |_| {});
    let mut out = Map::new();
    let mut put = |name: &str, token: String| {
        out.insert(name.to_string(), Value::String(token));
    };
    put("valid", plain(json!({})));
    put("admin", plain(json!({"scope": "read admin"})));
    put("other_user", plain(json!({"sub": "user-2"})));
    put("expired", plain(json!({"exp": 946_684_800u64})));
    put("not_yet_valid", plain(json!({"nbf": 4_000_000_000u64})));
    put("no_exp", plain(json!({"exp": null})));
    put(
        "wrong_issuer",
        plain(json!({"iss": "https://evil.example.com"})),
    );
    put("wrong_audience", plain(json!({"aud": "billing-api"})));
    put(
        "es256",
        sign(
            Algorithm::ES256,
            Some("ec1"),
            "ec1",
            &claims(json!({})),
            |_| {},
        ),
    );
    put(
        "ps256",
        sign(
            Algorithm::PS256,
            Some("rsa1"),
            "rsa1",
            &claims(json!({})),
            |_| {},
        ),
    );
    put(
        "eddsa",
        sign(
            Algorithm::EdDSA,
            Some("ed1"),
            "ed1",
            &claims(json!({})),
            |_| {},
        ),
    );
    put(
        "rotated",
        sign(
            Algorithm::RS256,
            Some("rsa2"),
            "rsa2",
            &claims(json!({})),
            |_| {},
        ),
    );
    put(
        "unknown_kid",
        sign(
            Algorithm::RS256,
            Some("ghost"),
            "rsa1",
            &claims(json!({})),
            |_| {},
        ),
    );
    put(
        "wrong_key",
        sign(
            Algorithm::RS256,
            Some("rsa1"),
            "rsa2",
            &claims(json!({})),
            |_| {},
        ),
    );
    put(
        "jku",
        sign(
            Algorithm::RS256,
            Some("rsa1"),
            "rsa1",
            &claims(json!({})),
            |h| h.jku = Some("https://evil.example.com/jwks.json".into()),
        ),
    );
    put(
        "x5u",
        sign(
            Algorithm::RS256,
            Some("rsa1"),
            "rsa1",
            &claims(json!({})),
            |h| h.x5u = Some("https://evil.example.com/cert.pem".into()),
        ),
    );
    let body = b64(claims(json!({})).to_string().as_bytes());
    put(
        "none",
        format!("{}.{body}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
    );
    // HS256 keyed with the RSA public key as published: the confusion attack.
    let public = serde_json::to_vec(&public_keys()["rsa1"]).unwrap_or_default();
    let input = format!(
        "{}.{body}",
        b64(br#"{"alg":"HS256","kid":"rsa1","typ":"JWT"}"#)
    );
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public),
        input.as_bytes(),
    );
    put(
        "hs256_with_rsa_key",
        format!("{input}.{}", b64(tag.as_ref())),
    );
    Value::Object(out)
}

fn public_keys() -> Value {
    serde_json::from_slice(&fixture("public_keys.json")).unwrap_or(Value::Null)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("fixtures") => fixtures(),
        Some("jwks") => {
            let keys = public_keys();
            json!({"keys": [keys["rsa1"], keys["ec1"]]})
        }
        Some("bench") => {
            let alg = match args.get(1).map(String::as_str) {
                Some("ES256") => Algorithm::ES256,
                _ => Algorithm::RS256,
            };
            let kid = if alg == Algorithm::ES256 {
                "ec1"
            } else {
                "rsa1"
            };
            let count: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1000);
            let key = key(alg, kid);
            let mut header = Header::new(alg);
            header.kid = Some(kid.to_string());
            Value::Array(
                (0..count)
                    .map(|i| {
                        let c = claims(
                            json!({"sub": format!("user-{i}"), "jti": format!("bench-{i}")}),
                        );
                        Value::String(jsonwebtoken::encode(&header, &c, &key).unwrap_or_default())
                    })
                    .collect(),
            )
        }
        _ => {
            eprintln!("usage: mint_tokens fixtures | jwks | bench RS256|ES256 COUNT");
            std::process::exit(2);
        }
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
