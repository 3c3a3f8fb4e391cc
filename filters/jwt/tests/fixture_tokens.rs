//! The committed tokens the Envoy tests, the demo and the benches use
//! (`tests/tests/jwt/tokens.json`, `envoy/demo/jwt_*.token`) still mean
//! what their names say against the fixture keys.

mod common;

use common::*;
use serde_json::{json, Value};

fn read(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn named_tokens_pass_or_fail_as_named() {
    let tokens: Value = serde_json::from_str(&read("tests/tests/jwt/tokens.json")).unwrap();
    let p = provider(json!({"algorithms": ["RS256", "ES256", "PS256", "EdDSA"],
                            "local_jwks": jwks(&["rsa1", "ec1", "ed1"])}));
    let vm = vm(&config_with(p, default_rules()));
    let pass = ["valid", "admin", "other_user", "es256", "ps256", "eddsa"];
    for (name, token) in tokens.as_object().unwrap() {
        let (_, h) = vm.get("/orders", token.as_str());
        let want = if pass.contains(&name.as_str()) {
            0
        } else {
            401
        };
        assert_eq!(status(&h), want, "{name}: {:?}", h.sent);
    }
    let demo = read("envoy/demo/jwt.json");
    let demo: Value = serde_json::from_str(&demo).unwrap();
    let demo_vm = common::vm(&demo);
    for (file, path, want) in [
        ("envoy/demo/jwt_user.token", "/orders/1", 0),
        ("envoy/demo/jwt_user.token", "/admin", 403),
        ("envoy/demo/jwt_admin.token", "/admin", 0),
    ] {
        let token = read(file);
        let (_, h) = demo_vm.get(path, Some(token.trim()));
        assert_eq!(status(&h), want, "{file} on {path}");
    }
    assert_eq!(
        status(&demo_vm.get("/hello", None).1),
        0,
        "the other demos stay open"
    );
}

#[test]
fn example_configs_load_and_behave() {
    for name in ["default", "bench"] {
        let text = read(&format!("filters/jwt/examples/{name}.json"));
        palisade_jwt::check_config(text.as_bytes(), palisade_core::HostKind::Envoy)
            .unwrap_or_else(|e| panic!("{name}.json: {e}"));
    }
    let default: Value = serde_json::from_str(&read("filters/jwt/examples/default.json")).unwrap();
    let vm = common::vm(&default);
    assert_eq!(status(&vm.get("/orders", None).1), 401);
    assert_eq!(status(&vm.get("/health", None).1), 0);
    // run.py's generic row sends no token: the bench config's optional auth lets it through.
    let bench: Value = serde_json::from_str(&read("filters/jwt/examples/bench.json")).unwrap();
    assert_eq!(
        status(&common::vm(&bench).get("/bench/resource", None).1),
        0
    );
}
