//! The exchange driver follows each host's callback rules (NOTES, "Seen on
//! the real host" for Kong), so filters can be tested against them.
#![cfg(not(target_arch = "wasm32"))]

use palisade_core::fake::{run, Exchange, FakeHost};
use palisade_core::{Flow, Host, HttpFilter};

/// Records what it was called with; pauses where told.
#[derive(Default)]
struct Probe {
    pause_request_headers: bool,
    pause_response_headers: bool,
    header_eos: Vec<bool>,
    body_sizes: Vec<(usize, bool, usize)>,
    response_body_calls: usize,
}

impl HttpFilter for Probe {
    fn on_request_headers(&mut self, _host: &mut dyn Host, eos: bool) -> Flow {
        self.header_eos.push(eos);
        if self.pause_request_headers {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }
    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        let readable = host.request_body(0, size).map_or(0, |b| b.len());
        self.body_sizes.push((size, eos, readable));
        Flow::Continue
    }
    fn on_response_headers(&mut self, _host: &mut dyn Host, _eos: bool) -> Flow {
        if self.pause_response_headers {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }
    fn on_response_body(&mut self, _host: &mut dyn Host, _size: usize, _eos: bool) -> Flow {
        self.response_body_calls += 1;
        Flow::Continue
    }
}

#[test]
fn end_of_stream_is_never_true_in_kong_header_callbacks() {
    let mut probe = Probe::default();
    let out = run(&mut probe, &mut FakeHost::kong(), &Exchange::new());
    assert_eq!(probe.header_eos, [false]);
    assert_eq!(out.client().status, 200);
    let mut probe = Probe::default();
    run(&mut probe, &mut FakeHost::new(), &Exchange::new());
    assert_eq!(probe.header_eos, [true]);
}

#[test]
fn kong_hangs_a_request_held_with_no_call_pending() {
    let mut probe = Probe {
        pause_request_headers: true,
        ..Probe::default()
    };
    let out = run(
        &mut probe,
        &mut FakeHost::kong(),
        &Exchange::new().body(b"{}"),
    );
    assert!(out.hung.is_some_and(|w| w.contains("kong")));
    assert!(out.upstream.is_none());
}

#[test]
fn envoy_delivers_no_body_to_held_headers_without_the_flag() {
    let held = || Probe {
        pause_request_headers: true,
        ..Probe::default()
    };
    let mut probe = held();
    let out = run(
        &mut probe,
        &mut FakeHost::new(),
        &Exchange::new().body(b"{}"),
    );
    assert!(out
        .hung
        .is_some_and(|w| w.contains("allow_on_headers_stop_iteration")));
    assert!(probe.body_sizes.is_empty());
    let mut probe = held();
    let ex = Exchange::new().body(b"{}").with_stop_iteration_flag();
    let out = run(&mut probe, &mut FakeHost::new(), &ex);
    assert_eq!(probe.body_sizes, [(2, true, 2)]);
    assert_eq!(out.upstream.map(|(_, b)| b), Some(b"{}".to_vec()));
}

#[test]
fn kong_drops_a_filter_that_pauses_response_headers() {
    let mut probe = Probe {
        pause_response_headers: true,
        ..Probe::default()
    };
    let mut host = FakeHost::kong();
    let ex = Exchange::new().response(404, &[], &[b"at com.acme.Foo(Foo.java:1)"]);
    let out = run(&mut probe, &mut host, &ex);
    assert!(out.dropped);
    assert_eq!(probe.response_body_calls, 0);
    assert_eq!(out.client().body, b"at com.acme.Foo(Foo.java:1)");
    assert!(host.logged(palisade_core::Level::Error, "local response expected"));
}

#[test]
fn kong_reads_a_body_once_and_not_at_all_when_it_spilled_to_a_file() {
    let mut probe = Probe::default();
    let ex = Exchange::new().body_chunks(&[b"ab", b"cd"]);
    run(&mut probe, &mut FakeHost::kong(), &ex);
    assert_eq!(probe.body_sizes, [(4, true, 4)]);
    let big = vec![b'x'; 9 * 1024];
    let mut probe = Probe::default();
    run(
        &mut probe,
        &mut FakeHost::kong(),
        &Exchange::new().body(&big),
    );
    assert_eq!(probe.body_sizes, [(big.len(), true, 0)]);
    // No body: no body callback at all.
    let mut probe = Probe::default();
    run(&mut probe, &mut FakeHost::kong(), &Exchange::new());
    assert!(probe.body_sizes.is_empty());
}

#[test]
fn a_body_shorter_than_its_content_length_leaves_the_client_waiting() {
    let mut probe = Probe::default();
    let ex = Exchange::new().response(500, &[("content-length", "10")], &[b"oops"]);
    let out = run(&mut probe, &mut FakeHost::new(), &ex);
    assert!(out.hung.is_some_and(|w| w.contains("content-length 10")));
}
