//! Route matching and path normalisation, natively and inside a wasm VM.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use palisade_core::path::{normalize, PathTemplate};
use palisade_core::route::{first_match, Match, RouteInput, Rule};

#[test]
fn normalisation_defeats_the_usual_bypasses() {
    let cases = [
        ("/admin", "/admin"),
        ("/public/../admin", "/admin"),
        ("//admin", "/admin"),
        ("/./admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/%2e%2e/admin", "/admin"),
        ("/public/..%2fadmin", "/admin"),
        ("/public/..%2Fadmin", "/admin"),
        ("/public\\..\\admin", "/admin"),
        ("/public/%2e%2e%5cadmin", "/admin"),
        ("/admin?x=/public", "/admin"),
        ("/admin#frag", "/admin"),
        ("/../../../admin", "/admin"),
        ("/admin/", "/admin/"),
        ("", "/"),
        ("?", "/"),
        ("/%zz/a", "/%zz/a"),
        ("/%", "/%"),
        ("/a%2", "/a%2"),
        ("/%252e%252e/admin", "/%2e%2e/admin"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize(raw), want, "normalize({raw:?})");
    }
}

#[test]
fn non_utf8_escapes_do_not_panic() {
    assert_eq!(normalize("/%ff%fe/x"), "/\u{fffd}\u{fffd}/x");
}

#[test]
fn path_templates_match_whole_segments() {
    let t = PathTemplate::try_from("/users/{id}/orders/{order_id}".to_string()).unwrap();
    assert_eq!(
        t.captures("/users/42/orders/7"),
        Some(vec![("id", "42"), ("order_id", "7")])
    );
    assert!(!t.matches("/users/42/orders"));
    assert!(!t.matches("/users//orders/7"));
    assert!(!t.matches("/users/42/orders/7/x"));
    assert!(!t.matches("/users/42/order/7"));
    assert!(!t.matches("users/42/orders/7"));
}

#[test]
fn bad_path_templates_are_refused() {
    for bad in [
        "users/{id}",
        "/users/{}",
        "/users/{id",
        "/u/x{id}",
        "/a/{id}/{id}",
        "/a/../b",
        "/a/{i-d}",
    ] {
        assert!(PathTemplate::try_from(bad.to_string()).is_err(), "{bad}");
    }
}

struct R {
    m: Match,
    n: u8,
}
impl Rule for R {
    fn matcher(&self) -> &Match {
        &self.m
    }
}

fn m(json: &str) -> Match {
    serde_json::from_str(json).unwrap()
}

#[test]
fn first_matching_rule_wins() {
    let rules = vec![
        R {
            m: m(r#"{"prefix":"/admin","methods":["POST"]}"#),
            n: 1,
        },
        R {
            m: m(r#"{"path_template":"/users/{id}"}"#),
            n: 2,
        },
        R {
            m: m(r#"{"route_name":"internal"}"#),
            n: 3,
        },
        R {
            m: m(r#"{"path":"/exact"}"#),
            n: 4,
        },
        R {
            m: m(r#"{}"#),
            n: 5,
        },
    ];
    let pick = |method: &str, raw: &str, route: Option<&str>| {
        let path = normalize(raw);
        let input = RouteInput {
            method,
            path: &path,
            route_name: route,
        };
        first_match(&rules, &input).map(|r| r.n)
    };
    assert_eq!(pick("POST", "/admin/x", None), Some(1));
    assert_eq!(pick("POST", "/public/..%2fadmin/x", None), Some(1));
    assert_eq!(pick("GET", "/admin/x", None), Some(5));
    assert_eq!(pick("GET", "/users/9", None), Some(2));
    assert_eq!(pick("GET", "/users/9?a=b", None), Some(2));
    assert_eq!(pick("GET", "/other", Some("internal")), Some(3));
    assert_eq!(pick("GET", "/exact", None), Some(4));
    for dodge in ["/exact/", "/exact//", "/exact%2f", "/exact\\", "/exact/?q"] {
        assert_eq!(pick("GET", dodge, None), Some(4), "{dodge}");
    }
    assert_eq!(pick("GET", "/exact/x", None), Some(5));
    assert_eq!(pick("GET", "/users/9/", None), Some(2));
    assert_eq!(pick("GET", "/users//9", None), Some(2));
}

#[test]
fn an_empty_rule_list_matches_nothing() {
    let rules: Vec<R> = Vec::new();
    let input = RouteInput {
        method: "GET",
        path: "/",
        route_name: None,
    };
    assert!(first_match(&rules, &input).is_none());
}

#[test]
fn match_validation_names_the_field() {
    let e = m(r#"{"prefix":"admin"}"#).validate().unwrap_err();
    assert_eq!(e.to_string(), "prefix: must start with '/'");
    let e = m(r#"{"path":"/a/../b"}"#).validate().unwrap_err();
    assert!(e.to_string().starts_with("path: "), "{e}");
    let e = m(r#"{"prefix":"/a","path":"/a"}"#).validate().unwrap_err();
    assert!(e.to_string().contains("only one of"));
    assert!(m(r#"{"prefix":"/api/"}"#).validate().is_ok());
    assert!(m(r#"{"prefix":"/"}"#).validate().is_ok());
    assert!(m(r#"{"prefix":"/a/./b/"}"#).validate().is_err());
    assert!(m(r#"{"prefix":"/a//"}"#).validate().is_err());
    assert!(m(r#"{"methods":[]}"#).validate().is_err());
}

/// A cheap deterministic generator: hostile byte soup for the no-panic checks.
fn soup(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let alphabet = b"/.%2eEfF5cC\\?#{}ab\x00\xff";
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn hostile_paths_never_panic_and_normalise_idempotently() {
    let t = PathTemplate::try_from("/a/{b}/c".to_string()).unwrap();
    for seed in 0..3000u64 {
        let raw = soup(seed, (seed % 64) as usize);
        let once = normalize(&raw);
        assert!(once.starts_with('/'));
        assert!(!once.contains("//"), "{raw:?} -> {once:?}");
        let _ = t.captures(&once);
        let _ = PathTemplate::try_from(raw.clone());
    }
}

#[test]
fn the_effective_method_follows_every_override_the_frameworks_honour() {
    use palisade_core::method::{effective, override_param};
    let h = |pairs: &[(&str, &str)]| -> palisade_core::host::Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(effective("POST", &h(&[]), "/orders/7"), "POST");
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert_eq!(
            effective("POST", &h(&[(name, "delete")]), "/orders/7"),
            "DELETE",
            "{name}"
        );
    }
    assert_eq!(
        effective("POST", &h(&[]), "/orders/7?_method=DELETE"),
        "DELETE"
    );
    assert_eq!(effective("POST", &h(&[]), "/o?a=1&%5Fmethod=put#x"), "PUT");
    assert_eq!(override_param("/o?method=PUT"), None);
    // Empty is no override: on Kong a stripped header stays, empty.
    assert_eq!(
        effective("POST", &h(&[("x-http-method-override", "")]), "/o?_method="),
        "POST"
    );
    // A header wins over the query, as in Express.
    assert_eq!(
        effective(
            "POST",
            &h(&[("x-http-method-override", "PATCH")]),
            "/o?_method=DELETE"
        ),
        "PATCH"
    );
}

#[test]
fn route_facts_use_the_overridden_method() {
    use palisade_core::context::RouteFacts;
    use palisade_core::fake::FakeHost;
    let host = FakeHost::request("POST", "/orders/7")
        .with_request_header("X-HTTP-Method-Override", "DELETE");
    assert_eq!(RouteFacts::read(&host, false).method, "DELETE");
}
