//! Thousands of mutated and random tokens: never a panic (a panic kills the
//! proxy VM), always an answer, and a mutated token never passes with
//! claims it was not signed with.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::Algorithm;
use palisade_core::{HttpFilter, Plugin};
use palisade_jwt::JwtPlugin;
use serde_json::json;

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, token: &[u8]) -> Vec<u8> {
    let mut t = token.to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(8) {
            0 if !t.is_empty() => {
                let i = rng.below(t.len());
                t[i] ^= 1 << rng.below(8);
            }
            1 => t.truncate(rng.below(t.len() + 1)),
            2 => {
                let i = rng.below(t.len() + 1);
                t.insert(i, b'.');
            }
            3 => {
                let i = rng.below(t.len() + 1);
                t.insert(i, (rng.next() & 0xff) as u8);
            }
            4 => {
                let junk = [
                    &b"{}"[..],
                    b"null",
                    b"[]",
                    b"{\"alg\":\"none\"}",
                    b"\"x\"",
                    b"{\"exp\":1e999}",
                    b"{\"alg\":\"RS256\",\"kid\":{\"a\":1}}",
                    b"{\"exp\":-1,\"iss\":[]}",
                    b"{\"alg\":\"RS256\",\"x5t\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
                    b"{\"alg\":\"RS256\",\"x5t#S256\":\"==\",\"typ\":7}",
                    b"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"cty\":\"JWT\"}",
                ];
                let seg = URL_SAFE_NO_PAD.encode(junk[rng.below(junk.len())]);
                let parts: Vec<&[u8]> = t.split(|b| *b == b'.').collect();
                let k = rng.below(parts.len());
                let rebuilt: Vec<Vec<u8>> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        if i == k {
                            seg.clone().into_bytes()
                        } else {
                            p.to_vec()
                        }
                    })
                    .collect();
                t = rebuilt.join(&b'.');
            }
            5 => t.extend(std::iter::repeat_n(b'A', rng.below(3000))),
            6 => {
                t = (0..rng.below(200))
                    .map(|_| (rng.next() & 0xff) as u8)
                    .collect()
            }
            _ => t.reverse(),
        }
    }
    t
}

#[test]
fn mutated_tokens_never_panic_and_never_pass_with_other_claims() {
    let all = json!(["RS256", "ES256", "ES384", "EdDSA", "PS256"]);
    let vm = vm(&config_with(
        provider(json!({"algorithms": all})),
        default_rules(),
    ));
    let seeds = [
        mint(Algorithm::RS256, "rsa1", &claims()),
        mint(Algorithm::ES256, "ec1", &claims()),
        mint(Algorithm::EdDSA, "ed1", &claims()),
        mint(Algorithm::ES384, "ec384", &claims()),
    ];
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut passed = 0;
    for round in 0..1500 {
        let seed = seeds[round % seeds.len()].as_bytes();
        let token = mutate(&mut rng, seed);
        let mut h = vm.request("GET", "/orders", &[]);
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&token);
        h.request_headers.push(("authorization".into(), value));
        let mut filter = JwtPlugin::new_filter(&vm.plugin);
        let _ = filter.on_request_headers(&mut h, true);
        match status(&h) {
            0 => {
                passed += 1;
                // Only a mutation that kept the signed bytes can pass (e.g.
                // surrounding whitespace, trailing base64 bits).
                assert_eq!(h.req_header("x-jwt-sub").as_deref(), Some("user-1"));
            }
            401 | 400 => {}
            other => panic!("round {round}: status {other}"),
        }
    }
    assert!(passed < 30, "{passed} mutated tokens passed");
}
