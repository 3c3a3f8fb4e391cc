//! Kong's real host (ngx_wasm_module, see NOTES "Seen on the real host"):
//! a body replacement is cut to the size given, Pause from the response
//! headers drops the filter, and after a Pause in a body callback Kong
//! buffers until the end (or `wasm_response_body_buffers`) and calls once.
mod common;

use common::*;
use palisade_core::fake::{self, Exchange, FakeHost};
use palisade_core::{HostKind, Level};
use palisade_errors::ErrorsFilter;

/// One exchange through the core's driver, which models Kong's callback rules.
fn drive(host: &mut FakeHost, config: &str, ex: &Exchange) -> fake::Outcome {
    let plugin = configure(host, config);
    let mut filter = ErrorsFilter::new(plugin);
    fake::run(&mut filter, host, ex)
}

fn assert_whole_problem(out: &fake::Outcome, status: u16) {
    let client = out.client();
    assert_eq!(client.status, status);
    let v = client.json();
    assert_eq!(
        v["status"],
        status,
        "{:?}",
        String::from_utf8_lossy(&client.body)
    );
    assert_eq!(v["request_id"], "rid-1");
}

#[test]
fn a_5xx_whose_first_chunk_is_short_gets_the_whole_problem_and_no_stale_length() {
    // Old code: set_response_body(0, 4, problem) sent `{"ty` on Kong.
    let mut host = request(HostKind::Kong, "/x");
    let ex = Exchange::new().response(
        500,
        &[("content-type", "text/plain"), ("content-length", "4")],
        &[b"boom"],
    );
    let out = drive(&mut host, "{}", &ex);
    assert_whole_problem(&out, 500);
    assert_eq!(out.client().header("content-length"), None);
    assert_eq!(
        out.client().header("content-type").as_deref(),
        Some("application/problem+json")
    );

    // Many tiny chunks: the first becomes the problem, the rest nothing.
    let mut host = request(HostKind::Kong, "/x");
    let chunks: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d"];
    let ex = Exchange::new().response(502, &[], &chunks);
    let out = drive(&mut host, "{}", &ex);
    assert_whole_problem(&out, 502);
}

#[test]
fn a_leaky_4xx_whose_body_is_short_gets_the_whole_problem_on_kong() {
    let mut host = request(HostKind::Kong, "/x");
    let plugin = configure(&mut host, "{}");
    let body = b"at Foo.bar(Foo.java:1)";
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[("content-type", "text/plain"), ("content-length", "22")],
        &[body],
        None,
    );
    assert_eq!(out.json()["status"], 404, "{}", out.text());
    assert_eq!(out.header("content-length"), None);
    assert_eq!(host.counter("palisade.errors.masked.leak"), 1);
}

#[test]
fn hold_headers_on_kong_masks_a_java_stack_404_instead_of_being_dropped() {
    // Kong drops a filter that pauses its response headers: a 404 with a
    // Java stack trace left unmasked when the filter paused there.
    let mut host = request(HostKind::Kong, "/x");
    let ex = Exchange::new().response(
        404,
        &[("content-type", "text/plain")],
        &[JAVA_STACK.as_bytes()],
    );
    let out = drive(&mut host, r#"{"hold_headers": true}"#, &ex);
    assert!(!out.dropped, "{:?}", host.logs);
    assert!(!host.logged(Level::Error, "local response expected"));
    let client = out.client();
    assert_eq!(client.status, 404);
    assert!(
        !String::from_utf8_lossy(&client.body).contains("java."),
        "{}",
        String::from_utf8_lossy(&client.body)
    );
    assert_eq!(client.json()["status"], 404);
    assert_eq!(host.counter("palisade.errors.masked.leak"), 1);

    // The simulator models the drop too: a filter that paused here leaks.
    let mut host = request(HostKind::Kong, "/x");
    host.believed = Some(HostKind::Envoy);
    let plugin = configure(&mut host, r#"{"hold_headers": true}"#);
    let out = exchange(
        &plugin,
        &mut host,
        404,
        &[("content-type", "text/plain")],
        &[JAVA_STACK.as_bytes()],
        None,
    );
    assert!(out.dropped, "a mis-detected host pauses and is dropped");
    assert!(out.text().contains("java.lang"));
}

#[test]
fn kong_calls_once_after_buffering_and_the_filter_decides_there() {
    // Kong buffers after a Pause until `wasm_response_body_buffers` (16 KiB
    // by default) are full, calls once, and ignores a second Pause: the
    // filter must judge what it got, or those 16 KiB leave unscanned.
    let mut host = request(HostKind::Kong, "/x");
    let plugin = configure(&mut host, "{}");
    let lead = vec![b'.'; 6000];
    let leak = b" ORA-00942: table or view does not exist ";
    let pad = vec![b'.'; 6000];
    let tail = vec![b'.'; 30_000];
    let chunks: Vec<&[u8]> = vec![&lead, leak, &pad, &pad, &tail];
    let out = exchange(
        &plugin,
        &mut host,
        400,
        &[("content-type", "text/plain")],
        &chunks,
        None,
    );
    assert!(
        !host.logged(Level::Error, "buffering already requested"),
        "{:?}",
        host.logs
    );
    assert_eq!(out.json()["status"], 400, "{}", &out.text()[..80]);
    assert!(!out.text().contains("ORA-"));
    assert_eq!(host.counter("palisade.errors.masked.leak"), 1);

    // Clean and longer than Kong's buffers: judged on what Kong buffered,
    // then everything passes unchanged.
    let mut host = request(HostKind::Kong, "/x");
    let plugin = configure(&mut host, "{}");
    let chunks: Vec<&[u8]> = vec![&lead, &pad, &pad, &tail];
    let out = exchange(
        &plugin,
        &mut host,
        400,
        &[("content-type", "text/plain")],
        &chunks,
        None,
    );
    assert!(!host.logged(Level::Error, "buffering already requested"));
    assert_eq!(out.body, chunks.concat());
    assert_eq!(host.counter("palisade.errors.passed"), 1);
}

#[test]
fn kong_replacement_covers_the_problem_whatever_the_buffered_size() {
    // Kong clears the buffer from `start` whatever the size and writes
    // `size` bytes of the data: the size given must cover the problem.
    let mut host = request(HostKind::Kong, "/x");
    let plugin = configure(&mut host, "{}");
    for chunks in [vec![&b"x"[..]], vec![&b""[..]], vec![&[b'y'; 5000][..]]] {
        let out = exchange(&plugin, &mut host, 503, &[], &chunks, None);
        assert_eq!(out.json()["status"], 503, "{}", out.text());
    }
}

#[test]
fn a_bodiless_5xx_on_kong_never_claims_an_empty_problem_document() {
    // Found by fuzzing (fuzz/corpus/errors): Kong calls no body callback
    // for an empty body, so the problem the headers announced never came
    // and the client got `application/problem+json` with no body.
    let mut host = request(HostKind::Kong, "/x");
    let ex = Exchange::new().response(
        503,
        &[
            ("content-type", "application/json"),
            ("content-length", "0"),
        ],
        &[],
    );
    let out = drive(&mut host, "{}", &ex);
    let client = out.client();
    assert_eq!(client.status, 503);
    assert!(client.body.is_empty());
    assert_eq!(client.header("content-type"), None, "{:?}", client.headers);
    assert_eq!(client.header("x-request-id").as_deref(), Some("rid-1"));
}
