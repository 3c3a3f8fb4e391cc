//! The body parser: JSON bombs stopped while parsing, duplicate keys refused
//! at any depth, and no input (however mangled) that makes it panic.

use palisade_schema::body::{parse, BodyError};
use palisade_schema::config::Limits;
use serde_json::json;

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn well_formed_json_parses_to_the_same_value_as_serde_json() {
    let text =
        r#"{"a": [1, -2, 3.5, 1e3, true, false, null, "x\u00e9\n"], "b": {"c": {}}, "d": []}"#;
    let expected: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(parse(text.as_bytes(), &limits()), Ok(expected));
    assert_eq!(parse(b" 42 ", &limits()), Ok(json!(42)));
    assert_eq!(parse(b"\"s\"", &limits()), Ok(json!("s")));
    assert_eq!(
        parse(b"18446744073709551615", &limits()),
        Ok(json!(u64::MAX))
    );
}

#[test]
fn malformed_json_is_a_syntax_error() {
    for bad in [
        &b""[..],
        b"{",
        b"{\"a\":}",
        b"[1,]",
        b"{\"a\":1}x",
        b"{\"a\":1}{}",
        b"nul",
        b"'a'",
        b"{a:1}",
        b"\"\xff\"",
        b"NaN",
        b"1e999",
        b"\"\\ud800\"",
    ] {
        assert_eq!(
            parse(bad, &limits()),
            Err(BodyError::Syntax),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn duplicate_keys_are_refused_at_any_depth() {
    for doc in [
        r#"{"a": 1, "a": 2}"#,
        r#"{"a": 1, "b": {"c": 1, "c": 1}}"#,
        r#"[{"x": [{"y": {"z": 1, "z": 2}}]}]"#,
        // Same key once escaped: the parser compares decoded keys.
        r#"{"qty": 1, "q\u0074y": 1000}"#,
    ] {
        assert_eq!(
            parse(doc.as_bytes(), &limits()),
            Err(BodyError::DuplicateKey),
            "{doc}"
        );
    }
    assert!(parse(
        br#"{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}"#,
        &limits()
    )
    .is_ok());
}

fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn depth_limit_counts_objects_and_arrays() {
    let l = limits();
    assert!(parse(nested(64, "[", "]").as_bytes(), &l).is_ok());
    assert_eq!(
        parse(nested(65, "[", "]").as_bytes(), &l),
        Err(BodyError::TooDeep)
    );
    assert!(parse(nested(64, "{\"a\":", "}").as_bytes(), &l).is_ok());
    assert_eq!(
        parse(nested(65, "{\"a\":", "}").as_bytes(), &l),
        Err(BodyError::TooDeep)
    );
    // Far past serde_json's own recursion limit: still our error, no stack overflow.
    assert_eq!(
        parse(nested(100_000, "[", "]").as_bytes(), &l),
        Err(BodyError::TooDeep)
    );
    let tight = Limits { max_depth: 2, ..l };
    assert!(parse(b"[[1]]", &tight).is_ok());
    assert_eq!(parse(b"[[[1]]]", &tight), Err(BodyError::TooDeep));
    assert_eq!(
        parse(b"{\"a\":{\"b\":{}}}", &tight),
        Err(BodyError::TooDeep)
    );
}

#[test]
fn member_and_item_limits() {
    let l = Limits {
        max_members: 3,
        max_items: 2,
        ..limits()
    };
    assert!(parse(br#"{"a":1,"b":2,"c":3}"#, &l).is_ok());
    assert_eq!(
        parse(br#"{"a":1,"b":2,"c":3,"d":4}"#, &l),
        Err(BodyError::TooManyMembers)
    );
    assert!(parse(b"[1,2]", &l).is_ok());
    assert_eq!(parse(b"[1,2,3]", &l), Err(BodyError::TooManyItems));
    assert_eq!(
        parse(b"{\"x\":[[1,2,3]]}", &l),
        Err(BodyError::TooManyItems)
    );
    // The defaults: 10,000 each.
    let many: Vec<u32> = (0..10_001).collect();
    let text = serde_json::to_string(&many).unwrap();
    assert_eq!(
        parse(text.as_bytes(), &limits()),
        Err(BodyError::TooManyItems)
    );
    let text = serde_json::to_string(&many[..10_000]).unwrap();
    assert!(parse(text.as_bytes(), &limits()).is_ok());
    let object: serde_json::Map<String, serde_json::Value> =
        (0..10_001).map(|i| (format!("k{i}"), json!(i))).collect();
    let text = serde_json::to_string(&object).unwrap();
    assert_eq!(
        parse(text.as_bytes(), &limits()),
        Err(BodyError::TooManyMembers)
    );
}

#[test]
fn string_limit_covers_values_keys_and_escaped_strings() {
    let l = Limits {
        max_string_bytes: 4,
        ..limits()
    };
    assert!(parse(br#"{"abcd":"wxyz"}"#, &l).is_ok());
    assert_eq!(
        parse(br#"{"a":"wxyz5"}"#, &l),
        Err(BodyError::StringTooLong)
    );
    assert_eq!(parse(br#"{"abcde":1}"#, &l), Err(BodyError::StringTooLong));
    assert_eq!(parse(br#"["ab\ncd"]"#, &l), Err(BodyError::StringTooLong));
    // Counted in bytes once unescaped: two 2-byte characters fit, three do not.
    assert!(parse("[\"éé\"]".as_bytes(), &l).is_ok());
    assert_eq!(
        parse(br#"["\u00e9\u00e9\u00e9"]"#, &l),
        Err(BodyError::StringTooLong)
    );
    // The default is 1 MiB.
    let big = format!("\"{}\"", "a".repeat(1024 * 1024 + 1));
    assert_eq!(
        parse(big.as_bytes(), &limits()),
        Err(BodyError::StringTooLong)
    );
    let ok = format!("\"{}\"", "a".repeat(1024 * 1024));
    assert!(parse(ok.as_bytes(), &limits()).is_ok());
}

#[test]
fn error_details_name_limits_not_content() {
    let l = limits();
    assert_eq!(
        BodyError::TooDeep.detail(&l),
        "the body nests deeper than 64"
    );
    assert!(BodyError::StringTooLong.detail(&l).contains("1048576"));
    assert_eq!(BodyError::DuplicateKey.reason(), "duplicate_key");
}

/// A small deterministic generator (xorshift), so the mutation loop runs the
/// same in CI every time and needs no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn step(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.step() % n.max(1) as u64) as usize
    }
}

const SEEDS: [&str; 6] = [
    r#"{"sku": "A-1", "qty": 2, "items": [{"id": 1, "tags": ["x", "y"]}], "note": null}"#,
    r#"[1, 2.5, -3e2, true, false, null, "\u00e9\n", {"a": [{}]}]"#,
    r#"{"a": {"b": {"c": {"d": [[[[]]]]}}}}"#,
    r#""just a string""#,
    r#"{"dup": 1, "other": {"dup": 2}}"#,
    "12345678901234567890",
];

const TOKENS: [&[u8]; 14] = [
    b"{", b"}", b"[", b"]", b",", b":", b"\"", b"\\", b"\\u", b"null", b"1e308", b"-", b"\xff",
    b"\"a\":",
];

/// Mutates a seed: byte flips, insertions of JSON tokens, deletions, duplication.
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 => {
                let start = rng.below(out.len() + 1);
                let end = (start + rng.below(16)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            _ => out.insert(at.min(out.len()), (rng.step() & 0xff) as u8),
        }
    }
    out
}

#[test]
fn mutated_bodies_never_panic_and_agree_with_serde_json() {
    let tight = Limits {
        max_depth: 5,
        max_members: 4,
        max_items: 4,
        max_string_bytes: 8,
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let seed = SEEDS[round % SEEDS.len()].as_bytes();
        let input = mutate(&mut rng, seed);
        for limits in [limits(), tight] {
            let ours = parse(&input, &limits);
            let reference = serde_json::from_slice::<serde_json::Value>(&input);
            match (&ours, &reference) {
                // Whatever we accept, serde_json accepts with the same value.
                (Ok(v), Ok(r)) => assert_eq!(v, r),
                (Ok(_), Err(_)) => panic!("accepted what serde_json refuses: {input:?}"),
                // A syntax error for us is one for serde_json too.
                (Err(BodyError::Syntax), Ok(_)) => panic!("syntax error on valid JSON: {input:?}"),
                _ => {}
            }
        }
    }
}
