//! Hostile input never panics (a panic kills the proxy's VM) and never leaks.

mod common;

use common::{Setup, KINDS};
use palisade_core::{Flow, HostKind};

/// xorshift64: deterministic, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
    /// Names as a host could hand them over: mostly plausible, sometimes
    /// anything a `String` can hold (the SDK decodes names as UTF-8).
    fn name(&mut self) -> String {
        const PLAUSIBLE: [&str; 12] = [
            "x-palisade-",
            "x-jwt-",
            "x-api-",
            "content-length",
            "host",
            "server",
            ":path",
            "x-request-id",
            "traceparent",
            "cookie",
            "",
            "content-",
        ];
        match self.below(4) {
            0 => String::from_utf8_lossy(&self.bytes(40)).into_owned(),
            1 => {
                let chars = [
                    'a', 'Z', '-', '*', ':', '\u{0}', '\u{7f}', 'é', '\u{fffd}', ' ', '\t', '\n',
                ];
                (0..self.below(30))
                    .map(|_| chars[self.below(chars.len())])
                    .collect()
            }
            _ => {
                let base = PLAUSIBLE[self.below(PLAUSIBLE.len())];
                format!("{base}{}", self.below(1000))
            }
        }
    }
    fn value(&mut self) -> Vec<u8> {
        match self.below(20) {
            0 => vec![self.next() as u8; 70_000],
            1..=9 => self.bytes(64),
            _ => b"ordinary value".to_vec(),
        }
    }
}

const CONFIGS: [&str; 5] = [
    "{}",
    r#"{"dry_run":true,"request":{"allowed_methods":["GET"],"allow_only":["x-api-*"]}}"#,
    r#"{"request":{"allow_only":["x-api-*","accept"],"allowed_methods":["GET","POST"],"max_headers":100000,"max_header_bytes":100000000},
        "response":{"remove":["x-*","content-*","server"]},
        "rules":[{"match":{"prefix":"/a","methods":["POST"]},"request":{"allowed_methods":null}},
                 {"match":{"path_template":"/u/{id}"},"dry_run":true},
                 {"match":{"route_name":"r"},"response":{"add_if_absent":{"x-frame-options":null}}}]}"#,
    r#"{"request":{"reject_control_characters":false,"max_headers":100000,"max_header_bytes":4000000000,"remove":["x-palisade-*","x-jwt-*","a*"]}}"#,
    r#"{"dry_run":true,"request":{"max_headers":1,"max_header_bytes":1}}"#,
];

#[test]
fn thousands_of_random_requests_and_responses_never_panic() {
    let setups: Vec<Setup> = CONFIGS.iter().map(|c| Setup::new(c)).collect();
    let methods = ["GET", "POST", "get", "", "PROPFIND", "G\u{0}T", "\u{fffd}"];
    for seed in 0..1500u64 {
        let mut rng = Rng::new(seed);
        let setup = &setups[rng.below(setups.len())];
        let kind = KINDS[rng.below(2)];
        let method = methods[rng.below(methods.len())];
        let path = String::from_utf8_lossy(&rng.bytes(80)).into_owned();
        let mut host = setup.host(kind, method, &format!("/{path}"));
        if rng.below(3) == 0 {
            host.properties
                .insert("xds.route_name".into(), rng.bytes(8));
            host.properties
                .insert("kong.route_name".into(), b"r\0".to_vec());
        }
        let count = match rng.below(10) {
            0 => 2000 + rng.below(2000),
            1..=3 => rng.below(200),
            _ => rng.below(20),
        };
        for _ in 0..count {
            let (name, value) = (rng.name(), rng.value());
            host = host.with_bytes(&name, &value);
        }
        host = host
            .with("x-canary-name-leak", "canary-value-leak")
            .with_bytes("x-request-id", &rng.bytes(12));
        let mut filter = setup.filter();
        let flow = host.run(&mut filter);
        assert_eq!(flow == Flow::Pause, host.sent.is_some(), "seed {seed}");
        if let Some(sent) = &host.sent {
            assert!(
                matches!(sent.status, 400 | 405 | 431),
                "seed {seed}: {}",
                sent.status
            );
            let body = String::from_utf8_lossy(&sent.body);
            assert!(!body.contains("canary"), "seed {seed}: {body}");
            assert!(sent.json().is_object(), "seed {seed}");
        }
        assert!(!host.all_logs().contains("canary"), "seed {seed}");

        let mut response: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..rng.below(300) {
            response.push((rng.name(), rng.value()));
        }
        let status = rng.below(600) as u16;
        host.0 = std::mem::take(&mut host.0).with_response(status, &[], b"");
        host.0.kind = kind;
        host.response_headers.extend(response);
        let _ = host.on_response(&mut filter);
    }
}

#[test]
fn spoofed_palisade_headers_never_survive_enforcement() {
    let setup = Setup::new("{}");
    for seed in 0..500u64 {
        let mut rng = Rng::new(seed);
        let kind = KINDS[rng.below(2)];
        let mut host = setup.host(kind, "GET", "/");
        for _ in 0..rng.below(60) {
            let suffix = String::from_utf8_lossy(&rng.bytes(6)).to_ascii_lowercase();
            let prefix = ["X-Palisade-", "x-jwt-", "X-JWT-", "x-palisade-"][rng.below(4)];
            host = host.with(&format!("{prefix}{suffix}"), "forged");
        }
        if host.run(&mut setup.filter()) == Flow::Pause {
            continue; // a control character in a forged name: refused outright
        }
        // What the upstream receives (on Kong a removal would still reach it).
        for (name, value) in &host.upstream_request_headers() {
            let lower = name.to_ascii_lowercase();
            if lower == "x-palisade-headers" {
                assert_eq!(value, b"allow");
            } else if lower.starts_with("x-palisade-") || lower.starts_with("x-jwt-") {
                assert!(
                    kind == HostKind::Kong && value.is_empty(),
                    "seed {seed}: {name:?} kept"
                );
            }
        }
    }
}

#[test]
fn huge_header_counts_are_handled_in_linear_time() {
    let setup = Setup::new(r#"{"dry_run":true}"#);
    let started = std::time::Instant::now();
    let mut host = setup.host(HostKind::Envoy, "GET", "/");
    for i in 0..50_000 {
        host.request_headers
            .push((format!("x-jwt-{}", i % 7), vec![b'v'; 8]));
    }
    let mut filter = setup.filter();
    assert_eq!(host.run(&mut filter), Flow::Continue);
    assert_eq!(
        host.counter("palisade.headers.shadow_denied.too_many_headers"),
        1
    );
    assert_eq!(
        host.counter("palisade.headers.shadow_request_headers_removed"),
        50_000
    );
    host.respond(&mut filter, 200, &[]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
