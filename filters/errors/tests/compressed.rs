//! Compressed leak candidates: inflated within `scan_bytes`, masked on a
//! leak, and the `undecodable` rule for what cannot be inflated in time.
mod common;

use common::*;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use palisade_core::{HostKind, Level};
use std::io::{Read, Write};

const BOTH: [HostKind; 2] = [HostKind::Envoy, HostKind::Kong];

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("the client can gunzip the body");
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

fn run(kind: HostKind, config: &str, coding: &str, chunks: &[&[u8]]) -> (Outcome, FakeHostT) {
    let mut host = request(kind, "/x");
    let plugin = configure(&mut host, config);
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[
            ("content-type", "text/plain"),
            ("content-encoding", coding),
            ("content-length", "999"),
        ],
        chunks,
        None,
    );
    (out, host)
}

type FakeHostT = palisade_core::fake::FakeHost;

#[test]
fn a_gzipped_java_stack_404_is_masked_with_a_gzipped_problem() {
    for kind in BOTH {
        let body = gzip(JAVA_STACK.as_bytes());
        let (a, b) = body.split_at(10);
        let (out, host) = run(kind, "{}", "gzip", &[a, b]);
        // The headers left saying gzip: the problem is gzipped too.
        assert_eq!(out.header("content-encoding"), Some("gzip"));
        assert_eq!(out.header("content-length"), None);
        let problem = json(&gunzip(&out.body));
        assert_eq!(problem["status"], 404, "{kind:?}");
        assert_eq!(problem["request_id"], "rid-1");
        assert_eq!(host.counter("palisade.errors.masked.leak"), 1);
        assert!(
            host.logged(
                Level::Warn,
                "masked 404 (leak: java_stack); body starts: \"java.lang.NullPointerException"
            ),
            "{:?}",
            host.logs
        );
    }
}

#[test]
fn hold_headers_on_envoy_masks_a_gzipped_leak_with_a_plain_problem() {
    let body = gzip(PYTHON_STACK.as_bytes());
    let (out, _) = run(
        HostKind::Envoy,
        r#"{"hold_headers": true}"#,
        "gzip",
        &[&body],
    );
    assert!(out.held_headers);
    assert_eq!(out.header("content-encoding"), None);
    assert_eq!(out.header("content-type"), Some("application/problem+json"));
    assert_eq!(out.json()["status"], 404);
}

#[test]
fn deflate_is_read_zlib_wrapped_or_raw_and_answered_the_same_way() {
    for kind in BOTH {
        for (framed, is_zlib) in [
            (zlib(JAVA_STACK.as_bytes()), true),
            (raw_deflate(JAVA_STACK.as_bytes()), false),
        ] {
            let (out, host) = run(kind, "{}", "Deflate", &[&framed]);
            assert_eq!(host.counter("palisade.errors.masked.leak"), 1);
            let mut plain = Vec::new();
            if is_zlib {
                flate2::read::ZlibDecoder::new(out.body.as_slice())
                    .read_to_end(&mut plain)
                    .expect("zlib answer");
            } else {
                flate2::read::DeflateDecoder::new(out.body.as_slice())
                    .read_to_end(&mut plain)
                    .expect("raw deflate answer");
            }
            assert_eq!(json(&plain)["status"], 404);
        }
    }
}

#[test]
fn a_clean_gzipped_404_passes_byte_for_byte() {
    for kind in BOTH {
        let body = gzip(br#"{"error":"order 42 not found"}"#);
        let (out, host) = run(kind, "{}", "gzip", &[&body]);
        assert_eq!(out.body, body);
        assert_eq!(out.header("content-encoding"), Some("gzip"));
        assert_eq!(host.counter("palisade.errors.passed"), 1);
        // x-gzip and an identity in the list are read as gzip.
        let (out, host) = run(kind, "{}", "identity, X-Gzip", &[&body]);
        assert_eq!(out.body, body);
        assert_eq!(host.counter("palisade.errors.passed"), 1);
    }
}

#[test]
fn a_leak_in_a_later_gzip_member_is_found() {
    let mut body = gzip(b"nothing to see here\n");
    body.extend(gzip(PYTHON_STACK.as_bytes()));
    let (out, host) = run(HostKind::Envoy, "{}", "gzip", &[&body]);
    assert_eq!(host.counter("palisade.errors.masked.leak"), 1);
    assert_eq!(json(&gunzip(&out.body))["status"], 404);
}

#[test]
fn a_zip_bomb_is_inflated_only_up_to_scan_bytes_and_masked_by_default() {
    // 64 MiB of zeros in about 64 KiB... then a leak nobody will reach.
    let mut plain = vec![0u8; 64 << 20];
    plain.extend_from_slice(JAVA_STACK.as_bytes());
    let bomb = gzip(&plain);
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    for kind in BOTH {
        let started = std::time::Instant::now();
        let (out, host) = run(kind, r#"{"scan_bytes": 262144}"#, "gzip", &[&bomb]);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(json(&gunzip(&out.body))["status"], 404);
        assert_eq!(host.counter("palisade.errors.masked.undecodable"), 1);
        assert!(
            host.logged(
                Level::Warn,
                "masked 404 (undecodable: gzip body inflates past scan_bytes)"
            ),
            "{:?}",
            host.logs
        );
        // `pass` lets it through unchanged (and counts it unscanned).
        let (out, host) = run(
            kind,
            r#"{"scan_bytes": 262144, "undecodable": "pass"}"#,
            "gzip",
            &[&bomb],
        );
        assert_eq!(out.body, bomb);
        assert_eq!(host.counter("palisade.errors.leak_scan_skipped"), 1);
    }
    // A leak before the bound is still a leak, whatever follows.
    let mut plain = JAVA_STACK.as_bytes().to_vec();
    plain.extend(vec![0u8; 8 << 20]);
    let (_, host) = run(
        HostKind::Envoy,
        r#"{"undecodable": "pass"}"#,
        "gzip",
        &[&gzip(&plain)],
    );
    assert_eq!(host.counter("palisade.errors.masked.leak"), 1);
}

#[test]
fn the_inflate_bound_is_scan_bytes_of_output() {
    use palisade_errors::decode::{inflate, Coding};
    let plain = vec![b'a'; 10_000];
    let body = gzip(&plain);
    let whole = inflate(&Coding::Gzip, &body, true, 10_000).expect("gzip");
    assert_eq!((whole.bytes.len(), whole.incomplete), (10_000, None));
    let cut = inflate(&Coding::Gzip, &body, true, 9_999).expect("gzip");
    assert_eq!(cut.bytes.len(), 9_999);
    assert_eq!(cut.incomplete, Some("inflates past scan_bytes"));
    // A prefix of the body: decoded as far as it goes, never complete.
    let prefix = inflate(&Coding::Gzip, &body[..body.len() - 4], true, 20_000).expect("gzip");
    assert_eq!(prefix.incomplete, Some("is corrupt or truncated"));
    let mut trailing = body.clone();
    trailing.extend_from_slice(b"junk");
    let t = inflate(&Coding::Gzip, &trailing, true, 20_000).expect("gzip");
    assert!(t.incomplete.is_some());
    let mut z = zlib(&plain);
    z.extend_from_slice(b"junk");
    let t = inflate(&Coding::Deflate, &z, true, 20_000).expect("deflate");
    assert_eq!(t.incomplete, Some("has bytes after the compressed stream"));
}

#[test]
fn corrupt_and_truncated_gzip_follow_the_undecodable_rule() {
    let good = gzip(PYTHON_STACK.as_bytes().repeat(3).as_slice());
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let truncated = &good[..good.len() / 3];
    for kind in BOTH {
        for body in [
            &b"\x1f\x8bnot gzip at all"[..],
            &corrupt,
            truncated,
            b"plain text",
        ] {
            let (out, host) = run(kind, r#"{"leak_patterns": {}}"#, "gzip", &[body]);
            assert_eq!(json(&gunzip(&out.body))["status"], 404, "{kind:?}");
            assert_eq!(host.counter("palisade.errors.masked.undecodable"), 1);
            let (out, _) = run(
                kind,
                r#"{"undecodable": "pass", "leak_patterns": {}}"#,
                "gzip",
                &[body],
            );
            assert_eq!(out.body, body);
        }
    }
}

#[test]
fn a_compressed_body_bigger_than_scan_bytes_is_undecodable() {
    // Incompressible bytes: the compressed body is longer than the window.
    let body = gzip(&noise(7, 5000));
    let (a, b) = body.split_at(2000);
    let (out, host) = run(HostKind::Envoy, r#"{"scan_bytes": 4096}"#, "gzip", &[a, b]);
    assert_eq!(json(&gunzip(&out.body))["status"], 404);
    assert!(host.logged(Level::Warn, "undecodable: gzip body"));
}

#[test]
fn unknown_and_stacked_codings_are_masked_from_the_headers_or_passed() {
    for kind in BOTH {
        for coding in ["br", "zstd", "compress", "gzip, gzip", "deflate, gzip"] {
            let (out, host) = run(kind, "{}", coding, &[b"\x00\x01binary"]);
            // Decided before the body: a full problem, plain, no coding.
            assert_eq!(out.header("content-encoding"), None, "{coding}");
            assert_eq!(out.header("content-type"), Some("application/problem+json"));
            assert_eq!(out.json()["status"], 404, "{kind:?} {coding}");
            assert_eq!(host.counter("palisade.errors.masked.undecodable"), 1);
            assert!(host.logged(
                Level::Warn,
                &format!("masked 404 (undecodable: content-encoding {coding})")
            ));

            let (out, host) = run(
                kind,
                r#"{"undecodable": "pass"}"#,
                coding,
                &[b"\x00\x01binary"],
            );
            assert_eq!(out.body, b"\x00\x01binary");
            assert_eq!(host.counter("palisade.errors.leak_scan_skipped"), 1);
        }
    }
}

#[test]
fn a_rule_can_let_undecodable_bodies_pass_on_its_routes() {
    let config = r#"{"rules": [{"match": {"prefix": "/downloads/"}, "undecodable": "pass"}]}"#;
    let mut host = request(HostKind::Envoy, "/downloads/x");
    let plugin = configure(&mut host, config);
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[("content-encoding", "zstd")],
        &[b"z"],
        None,
    );
    assert_eq!(out.body, b"z");
    let mut host = request(HostKind::Envoy, "/api/x");
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[("content-encoding", "zstd")],
        &[b"z"],
        None,
    );
    assert_eq!(out.json()["status"], 404);
}

#[test]
fn dry_run_inflates_and_reports_without_changing_anything() {
    let leaky = gzip(JAVA_STACK.as_bytes());
    let (a, b) = leaky.split_at(7);
    let (out, host) = run(HostKind::Envoy, r#"{"dry_run": true}"#, "gzip", &[a, b]);
    assert_eq!(out.body, leaky);
    assert_eq!(out.body_writes, 0);
    assert_eq!(host.counter("palisade.errors.shadow_masked.leak"), 1);
    assert!(host.logged(
        Level::Warn,
        "dry_run: would mask 404 (leak: java_stack); body starts: \"java.lang"
    ));

    let (out, host) = run(
        HostKind::Kong,
        r#"{"dry_run": true}"#,
        "gzip",
        &[b"\x1f\x8bjunk"],
    );
    assert_eq!(out.body, b"\x1f\x8bjunk");
    assert_eq!(host.counter("palisade.errors.shadow_masked.undecodable"), 1);
    let (_, host) = run(HostKind::Envoy, r#"{"dry_run": true}"#, "zstd", &[b"z"]);
    assert_eq!(host.counter("palisade.errors.shadow_masked.undecodable"), 1);
}

#[test]
fn undecodable_accepts_only_mask_or_pass() {
    use palisade_errors::config::Undecodable;
    use palisade_errors::Config;
    let c = Config::load(b"{}").expect("defaults");
    assert_eq!(c.default.undecodable, Undecodable::Mask);
    let c = Config::load(br#"{"undecodable": "pass", "rules": [{"match": {"prefix": "/a"}, "undecodable": "mask"}]}"#)
        .expect("pass");
    assert_eq!(c.default.undecodable, Undecodable::Pass);
    assert_eq!(c.rules[0].1.undecodable, Undecodable::Mask);
    for bad in [r#"{"undecodable": "maybe"}"#, r#"{"undecodable": true}"#] {
        let e = Config::load(bad.as_bytes()).expect_err(bad).to_string();
        assert!(e.starts_with("undecodable: "), "{e}");
    }
}
