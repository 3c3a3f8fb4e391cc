//! Every algorithm accepted with the right key, and every attack on the
//! verifier refused: tokens minted by `jsonwebtoken`, checked by the filter.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::Algorithm;
use palisade_core::Flow;
use serde_json::json;

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

/// A token with any header and claims and a signature of garbage.
fn forged(header: serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

#[test]
fn every_asymmetric_algorithm_verifies_with_its_pinned_key() {
    let all =
        json!(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]);
    let vm = vm(&config_with(
        provider(json!({"algorithms": all})),
        default_rules(),
    ));
    for (alg, kid) in [
        (Algorithm::RS256, "rsa1"),
        (Algorithm::RS384, "rsa1"),
        (Algorithm::RS512, "rsa1"),
        (Algorithm::PS256, "rsa1"),
        (Algorithm::PS384, "rsa1"),
        (Algorithm::PS512, "rsa1"),
        (Algorithm::ES256, "ec1"),
        (Algorithm::ES384, "ec384"),
        (Algorithm::EdDSA, "ed1"),
    ] {
        let token = mint(alg, kid, &claims());
        let (flow, h) = vm.get("/orders", Some(&token));
        assert_eq!(
            (flow, status(&h)),
            (Flow::Continue, 0),
            "{alg:?}: {:?}",
            h.sent
        );
        assert_eq!(
            h.req_header("x-jwt-sub").as_deref(),
            Some("user-1"),
            "{alg:?}"
        );
        // Without a kid, every key allowing the algorithm is tried.
        let token = mint_with(alg, None, kid, &claims());
        assert_eq!(
            status(&vm.get("/orders", Some(&token)).1),
            0,
            "{alg:?} without kid"
        );
    }
}

#[test]
fn hs256_only_with_an_explicit_symmetric_key() {
    let p = provider(json!({"algorithms": ["HS256", "RS256"],
                            "local_jwks": {"keys": [hmac_jwk("h1"), jwk("rsa1")]}}));
    let with_hs = vm(&config_with(p, default_rules()));
    let token = mint_with(Algorithm::HS256, Some("h1"), "", &claims());
    assert_eq!(status(&with_hs.get("/orders", Some(&token)).1), 0);

    // Default allow-list: HS* is off even though the token is well signed.
    let p = provider(json!({"local_jwks": {"keys": [hmac_jwk("h1"), jwk("rsa1")]}}));
    let without_hs = vm(&config_with(p, default_rules()));
    let (_, h) = without_hs.get("/orders", Some(&token));
    assert_eq!(status(&h), 401);
    assert!(challenge(&h).contains("error=\"invalid_token\""));
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: HMAC keyed with the RSA public key's bytes.
    let vm = vm(&config_with(
        provider(json!({"algorithms": ["RS256", "HS256"],
        "local_jwks": {"keys": [jwk("rsa1"), hmac_jwk("h1")]}})),
        default_rules(),
    ));
    let public = serde_json::to_vec(&jwk("rsa1")).unwrap();
    let header = json!({"alg": "HS256", "kid": "rsa1", "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public);
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", b64(tag.as_ref()));
    let (_, h) = vm.get("/orders", Some(&token));
    assert_eq!(status(&h), 401);
    assert_eq!(detail(&h), "no key accepts the token's algorithm");
}

#[test]
fn none_unknown_kid_and_self_referenced_keys_are_refused() {
    let vm = vm(&config_with(provider(json!({})), default_rules()));
    let cases = [
        (
            json!({"alg": "none"}),
            "the token's algorithm is not accepted",
        ),
        (
            json!({"alg": "None"}),
            "the token's algorithm is not accepted",
        ),
        (
            json!({"alg": "RS256", "kid": "nope"}),
            "the token's key id is unknown",
        ),
        (
            json!({"alg": "RS256", "kid": "rsa1", "jku": "https://evil/jwks"}),
            "keys referenced by the token itself are not accepted",
        ),
        (
            json!({"alg": "RS256", "kid": "rsa1", "x5u": "https://evil/cert"}),
            "keys referenced by the token itself are not accepted",
        ),
        (
            json!({"alg": "RS256", "jwk": jwk("rsa2")}),
            "keys referenced by the token itself are not accepted",
        ),
        (
            json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"]}),
            "critical header extensions are not supported",
        ),
        (
            json!({"alg": "RS256", "kid": "rsa1"}),
            "the token's signature does not verify",
        ),
        (
            json!({"alg": "ES256", "kid": "rsa1"}),
            "no key accepts the token's algorithm",
        ),
    ];
    for (header, why) in cases {
        let token = forged(header.clone(), &claims(), &[1u8; 256]);
        let (flow, h) = vm.get("/orders", Some(&token));
        assert_eq!((flow, status(&h)), (Flow::Pause, 401), "{header}");
        assert_eq!(detail(&h), why, "{header}");
        assert!(
            !h.sent
                .as_ref()
                .unwrap()
                .body
                .windows(20)
                .any(|w| token.as_bytes().windows(20).any(|t| t == w)),
            "the token is never echoed"
        );
    }
    // "alg: none" with an empty signature, as attackers send it.
    let token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(status(&vm.get("/orders", Some(&token)).1), 401);
    // A token signed by a key that is not in the set, with a known kid.
    let token = mint_with(Algorithm::RS256, Some("rsa1"), "rsa2", &claims());
    let (_, h) = vm.get("/orders", Some(&token));
    assert_eq!(detail(&h), "the token's signature does not verify");
}

#[test]
fn time_issuer_audience_and_lifetime() {
    let vm = vm(&config_with(
        provider(json!({"max_lifetime_s": 3600, "clock_skew_s": 60})),
        default_rules(),
    ));
    let cases = [
        (json!({"exp": null}), 401, "the token has no expiry (exp)"),
        (json!({"exp": NOW - 61}), 401, "the token has expired"),
        (json!({"exp": NOW - 59}), 0, ""),
        (
            json!({"exp": "tomorrow"}),
            401,
            "a time claim is not a number",
        ),
        (json!({"nbf": NOW + 61}), 401, "the token is not valid yet"),
        (json!({"nbf": NOW + 59}), 0, ""),
        (json!({"iat": NOW + 120}), 401, "the token is not valid yet"),
        (
            json!({"iat": NOW - 4000}),
            401,
            "the token's lifetime is longer than allowed",
        ),
        (
            json!({"iat": null}),
            401,
            "the token's lifetime is longer than allowed",
        ),
        (json!({"exp": (NOW + 100) as f64 + 0.5}), 0, ""),
        (
            json!({"iss": "https://evil.example.com"}),
            401,
            "the token's issuer is not accepted",
        ),
        (
            json!({"iss": null}),
            401,
            "the token's issuer is not accepted",
        ),
        (
            json!({"aud": "other-api"}),
            401,
            "the token's audience is not accepted",
        ),
        (json!({"aud": ["other-api", "orders-api"]}), 0, ""),
        (
            json!({"aud": ["other-api"]}),
            401,
            "the token's audience is not accepted",
        ),
        (
            json!({"aud": null}),
            401,
            "the token's audience is not accepted",
        ),
    ];
    for (extra, want, why) in cases {
        let token = rs256(&with(claims(), extra.clone()));
        let (_, h) = vm.get("/orders", Some(&token));
        assert_eq!(status(&h), want, "{extra}: {:?}", h.sent);
        assert_eq!(detail(&h), why, "{extra}");
    }
}

#[test]
fn malformed_tokens_of_every_kind_are_401() {
    let vm = vm(&config_with(
        provider(json!({"max_token_bytes": 4096})),
        default_rules(),
    ));
    let good = rs256(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<String> = vec![
        "".into(),
        "abc".into(),
        "a.b".into(),
        "a..b.c".into(),
        format!("{good}.extra"),
        format!("{}..{}", parts[0], parts[2]),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.!!!.{}", parts[0], parts[2]),
        format!("{}.{}.!!!", parts[0], parts[1]),
        format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"{\"exp\":"), parts[2]),
        "x".repeat(5000),
        format!("{}.{}.{}", parts[0], "A".repeat(4000), parts[2]),
    ];
    for token in &cases {
        let (flow, h) = vm.get("/orders", Some(token));
        assert_eq!((flow, status(&h)), (Flow::Pause, 401), "{token:.60}");
        assert!(
            challenge(&h).contains("invalid_token") || token.is_empty(),
            "{token:.60}: {}",
            challenge(&h)
        );
    }
    // Non-UTF-8 bytes, as a raw header value.
    let mut filter_host = vm.request("GET", "/orders", &[]);
    filter_host.request_headers.push((
        "authorization".into(),
        b"Bearer \xff\xfe.\x80.\x81".to_vec(),
    ));
    let mut filter = <palisade_jwt::JwtPlugin as palisade_core::Plugin>::new_filter(&vm.plugin);
    let flow = palisade_core::HttpFilter::on_request_headers(&mut filter, &mut filter_host, true);
    assert_eq!((flow, status(&filter_host)), (Flow::Pause, 401));
}
