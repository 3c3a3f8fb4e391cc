//! Envoy's `verify_signature` path: the protobuf arguments, the DER public
//! key and the DER ECDSA signature are checked by an independent verifier
//! (`ring`, BoringSSL's lineage, standing in for the host), whose verdict
//! must equal the pure-Rust path's for valid and tampered tokens.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::Algorithm;
use palisade_core::fake::{FakeHost, ForeignFunctions};
use palisade_jwt::jwks::{Alg, KeySet};
use palisade_jwt::signature::{host_arguments, verify_pure, HostArgs};
use prost::Message;
use ring::signature as rs;
use serde_json::json;

/// Envoy's `VerifySignatureArguments`, declared here independently.
#[derive(Clone, PartialEq, prost::Message)]
struct VerifyArgs {
    #[prost(string, tag = "1")]
    hash_function: String,
    #[prost(bytes = "vec", tag = "2")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    text: Vec<u8>,
}

/// What Envoy's foreign function does, with ring: `08 01` when valid.
fn host_verify(args: &[u8]) -> Option<Vec<u8>> {
    let args = VerifyArgs::decode(args).ok()?;
    let spki = spki::SubjectPublicKeyInfoRef::try_from(args.public_key.as_slice()).ok()?;
    let key_bits = spki.subject_public_key.raw_bytes();
    let oid = spki.algorithm.oid.to_string();
    let curve = spki
        .algorithm
        .parameters_oid()
        .map(|o| o.to_string())
        .unwrap_or_default();
    let alg: &dyn rs::VerificationAlgorithm =
        match (oid.as_str(), curve.as_str(), args.hash_function.as_str()) {
            ("1.2.840.113549.1.1.1", _, "sha256") => &rs::RSA_PKCS1_2048_8192_SHA256,
            ("1.2.840.113549.1.1.1", _, "sha384") => &rs::RSA_PKCS1_2048_8192_SHA384,
            ("1.2.840.113549.1.1.1", _, "sha512") => &rs::RSA_PKCS1_2048_8192_SHA512,
            ("1.2.840.10045.2.1", "1.2.840.10045.3.1.7", "sha256") => &rs::ECDSA_P256_SHA256_ASN1,
            ("1.2.840.10045.2.1", "1.3.132.0.34", "sha384") => &rs::ECDSA_P384_SHA384_ASN1,
            other => panic!("unexpected key/hash {other:?}"),
        };
    let ok = rs::UnparsedPublicKey::new(alg, key_bits)
        .verify(&args.text, &args.signature)
        .is_ok();
    Some(if ok {
        vec![0x08, 0x01]
    } else {
        vec![0x12, 0x03, b'b', b'a', b'd']
    })
}

fn host_vm(cfg: &serde_json::Value) -> Vm {
    let mut host = FakeHost::new().at_secs(NOW);
    host.foreign = ForeignFunctions::new(|name, args| {
        assert_eq!(name, "verify_signature");
        host_verify(args)
    });
    vm_on(cfg, host)
}

fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    (
        signed.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(sig).unwrap(),
    )
}

#[test]
fn host_and_pure_verdicts_agree_on_valid_and_tampered_tokens() {
    let set = KeySet::from_value(&jwks(&["rsa1", "ec1", "ec384"]), &Alg::ALL).unwrap();
    let key = |kid: &str| {
        set.keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .unwrap()
    };
    let cases = [
        (Algorithm::RS256, Alg::RS256, "rsa1"),
        (Algorithm::RS384, Alg::RS384, "rsa1"),
        (Algorithm::RS512, Alg::RS512, "rsa1"),
        (Algorithm::ES256, Alg::ES256, "ec1"),
        (Algorithm::ES384, Alg::ES384, "ec384"),
    ];
    let mut checked = 0;
    for (jalg, alg, kid) in cases {
        let token = mint(jalg, kid, &claims());
        let (signed, sig) = split(&token);
        let mut variants = vec![(signed.clone(), sig.clone(), true)];
        let mut bad_sig = sig.clone();
        bad_sig[5] ^= 0x40;
        variants.push((signed.clone(), bad_sig, false));
        let mut bad_text = signed.clone();
        bad_text[3] ^= 0x01;
        variants.push((bad_text, sig.clone(), false));
        variants.push((signed.clone(), sig[..sig.len() - 1].to_vec(), false));
        for (text, signature, expected) in variants {
            let pure = verify_pure(alg, key(kid), &text, &signature);
            let host = match host_arguments(alg, key(kid), &text, &signature) {
                Some(HostArgs::Call(args)) => host_verify(&args).unwrap() == [0x08, 0x01],
                Some(HostArgs::Invalid) => false,
                None => panic!("{alg} must go to the host"),
            };
            assert_eq!(pure, expected, "{alg} pure");
            assert_eq!(host, expected, "{alg} host");
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
    // Not for the host: RSA-PSS and EdDSA.
    let set = KeySet::from_value(&jwks(&["rsa1", "ed1"]), &Alg::ALL).unwrap();
    assert!(host_arguments(Alg::PS256, &set.keys[0], b"x", b"y").is_none());
    assert!(host_arguments(Alg::EdDSA, &set.keys[1], b"x", b"y").is_none());
}

#[test]
fn on_envoy_signatures_go_to_the_host_and_a_repeated_token_to_the_cache() {
    let all = json!(["RS256", "ES256", "ES384", "PS256", "EdDSA"]);
    let vm = host_vm(&config_with(
        provider(json!({"algorithms": all})),
        default_rules(),
    ));
    assert!(vm
        .plugin
        .uses_host_signatures(palisade_core::HostKind::Envoy));
    for (alg, kid, by_host) in [
        (Algorithm::RS256, "rsa1", true),
        (Algorithm::ES256, "ec1", true),
        (Algorithm::ES384, "ec384", true),
        (Algorithm::PS256, "rsa1", false),
        (Algorithm::EdDSA, "ed1", false),
    ] {
        let token = mint(alg, kid, &claims());
        let (_, h) = vm.get("/orders", Some(&token));
        assert_eq!(status(&h), 0, "{alg:?}: {:?}", h.sent);
        assert_eq!(h.foreign_calls.len(), usize::from(by_host), "{alg:?}");
        assert_eq!(
            h.counter("palisade.jwt.verified_host"),
            i64::from(by_host),
            "{alg:?}"
        );
        let (_, again) = vm.get("/orders", Some(&token));
        assert_eq!(status(&again), 0);
        assert!(again.foreign_calls.is_empty(), "{alg:?}: cached");
        // A tampered signature is refused by the host's verdict.
        let mut bad = token.clone().into_bytes();
        let at = bad.len() - 3;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let (_, h) = vm.get("/orders", Some(std::str::from_utf8(&bad).unwrap()));
        assert_eq!(status(&h), 401, "{alg:?}");
    }
    // signature_backend: pure keeps Envoy off the foreign function.
    let mut cfg = config_with(provider(json!({})), default_rules());
    cfg["signature_backend"] = json!("pure");
    let vm = host_vm(&cfg);
    let (_, h) = vm.get("/orders", Some(&rs256(&claims())));
    assert_eq!(status(&h), 0);
    assert!(h.foreign_calls.is_empty());
}
