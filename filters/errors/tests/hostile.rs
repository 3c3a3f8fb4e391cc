//! Hostile responses never panic, never hang the stream, and never let a
//! masked body's bytes through, whatever the chunking, host or mode.
mod common;

use common::*;
use palisade_core::{HostKind, Level};

const CONFIGS: &[&str] = &[
    "{}",
    r#"{"hold_headers": true}"#,
    r#"{"dry_run": true}"#,
    r#"{"statuses": ["4xx", "5xx"], "log_body_bytes": 0, "scan_bytes": 17}"#,
    r#"{"detect_leaks_in": ["4xx", "5xx"], "statuses": [], "hold_headers": true, "scan_bytes": 100}"#,
];

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn random_exchanges_never_panic_or_hang() {
    let statuses = [
        0u16, 200, 204, 301, 400, 401, 404, 409, 429, 499, 500, 502, 503, 504, 599, 999,
    ];
    let types = [
        "text/plain",
        "application/grpc",
        "text/event-stream",
        "application/problem+json",
        "\u{7f}\u{1}",
        "",
    ];
    let mut x = 0x1234_5678_9abc_def1u64;
    // Compiling the leak patterns once per config keeps this test fast; a
    // fresh host gets the same counter ids by copying the names.
    let plugins: Vec<_> = CONFIGS
        .iter()
        .map(|c| {
            let mut template = palisade_core::fake::FakeHost::new();
            let plugin = configure(&mut template, c);
            (plugin, template.metric_names)
        })
        .collect();
    for round in 0..3000u64 {
        let kind = if round % 2 == 0 {
            HostKind::Envoy
        } else {
            HostKind::Kong
        };
        let (plugin, names) = &plugins[(round as usize / 2) % CONFIGS.len()];
        let status = statuses[(xorshift(&mut x) % statuses.len() as u64) as usize];
        let ct = types[(xorshift(&mut x) % types.len() as u64) as usize];
        let body = noise(round, (xorshift(&mut x) % 3000) as usize);
        let mut cuts: Vec<usize> = (0..(xorshift(&mut x) % 5))
            .map(|_| (xorshift(&mut x) as usize) % (body.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([body.len()]) {
            chunks.push(&body[at..c]);
            at = c;
        }
        if round % 7 == 0 {
            chunks.clear();
        }
        let grpc_status = format!("{}", xorshift(&mut x) % 20);
        let mut headers = vec![("content-type", ct), ("x-weird", "\u{0}\u{ff}")];
        if round % 3 == 0 {
            headers.push(("grpc-status", grpc_status.as_str()));
            headers.push(("grpc-message", "%%%zz%2"));
        }
        let trailers = [("grpc-status", grpc_status.as_str()), ("grpc-message", "%")];
        let trailers = (round % 5 == 0).then_some(&trailers[..]);
        let mut host = request(kind, "/%ff/../x\u{0}");
        if round % 11 == 0 {
            host = host.with_request_header("x-palisade-denied-by", "jwt");
        }
        host.metric_names = names.clone();
        let out = exchange(plugin, &mut host, status, &headers, &chunks, trailers);
        assert!(!out.hung, "round {round}: paused at end of stream");
        assert!(out.max_buffered <= body.len().max(1), "round {round}");
        assert!(
            !host.logs.borrow().iter().any(|(l, _)| *l == Level::Error),
            "round {round}: {:?}",
            host.logs
        );
        // A masked HTTP body never carries the original bytes.
        if out.header("content-type") == Some("application/problem+json")
            && !body.is_empty()
            && status >= 400
        {
            let json = out.json();
            if json["type"] == "about:blank" {
                assert!(out.body.len() < 200, "round {round}");
            }
        }
    }
}

#[test]
fn a_huge_leaky_4xx_is_scanned_within_scan_bytes_and_masked() {
    let mut body = b"Traceback (most recent call last):\n".to_vec();
    body.extend(noise(9, 8 << 20));
    let chunks: Vec<&[u8]> = body.chunks(256 * 1024).collect();
    for config in ["{}", r#"{"hold_headers": true}"#] {
        let mut host = request(HostKind::Envoy, "/x");
        let plugin = configure(&mut host, config);
        let out = exchange(
            &plugin,
            &mut host,
            400,
            &[("content-type", "text/plain")],
            &chunks,
            None,
        );
        assert_eq!(out.json()["status"], 400);
        assert!(out.max_buffered <= 256 * 1024, "{}", out.max_buffered);
        assert!(out.body.len() < 200);
    }
}

#[test]
fn non_utf8_log_excerpts_stay_on_one_printable_line() {
    let mut host = request(HostKind::Envoy, "/x");
    let plugin = configure(&mut host, "{}");
    let body = noise(5, 4096);
    let _ = exchange(&plugin, &mut host, 500, &[], &[&body], None);
    let logs = host.logs.borrow();
    let (_, line) = logs
        .iter()
        .find(|(l, _)| *l == Level::Warn)
        .expect("warn line");
    assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
    assert!(line.len() < 256 * 4 + 200);
}
