//! The JWT fixtures the real-Envoy suites share: the public keys of
//! `filters/jwt/tests/fixtures` and the tokens minted from them by an
//! independent library into `tests/tests/jwt/tokens.json`.

use crate::paths::repo_root;
use serde_json::{json, Value};

/// Every minted token, by name (`valid`, `expired`, `other_user`…).
pub fn tokens() -> Value {
    let path = repo_root().join("tests/tests/jwt/tokens.json");
    serde_json::from_slice(&std::fs::read(&path).expect("tokens.json")).expect("tokens JSON")
}

/// One minted token, raw (no `Bearer `).
pub fn token(name: &str) -> String {
    tokens()[name]
        .as_str()
        .unwrap_or_else(|| panic!("no token {name}"))
        .to_string()
}

/// A JWKS holding the fixture keys `kids`.
pub fn jwks(kids: &[&str]) -> Value {
    let path = repo_root().join("filters/jwt/tests/fixtures/public_keys.json");
    let all: Value = serde_json::from_slice(&std::fs::read(path).expect("public keys")).unwrap();
    json!({"keys": kids.iter().map(|k| all[*k].clone()).collect::<Vec<_>>()})
}
