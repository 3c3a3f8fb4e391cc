//! Fixtures shared by the Criterion benches: the traffic every filter is
//! measured on, built over `palisade_core::fake::FakeHost`.
//!
//! Benches of the pure cores track regressions in the Rust logic itself,
//! natively and without a proxy. What a filter costs inside Envoy (V8, host
//! calls, header marshalling) is measured by `run.py` (`make bench`).

use palisade_core::fake::FakeHost;
use palisade_core::{Flow, HttpFilter, Plugin};
use std::rc::Rc;

/// The same stack-trace body `run.py` serves on the errors filter's masking path.
pub const STACK_TRACE_BODY: &str = "Traceback (most recent call last):\n  \
File \"/srv/app/handlers/orders.py\", line 214, in get_order\n    \
row = db.execute(ORDER_SQL, (order_id,)).fetchone()\n  \
File \"/srv/app/db.py\", line 88, in execute\n    \
return self._conn.execute(sql, params)\n\
psycopg2.OperationalError: connection to server at \"10.12.0.7\", port 5432 failed: \
FATAL: password authentication failed for user \"orders_rw\"\n\
java.lang.NullPointerException: Cannot invoke \"Order.getId()\"\n\
\tat com.example.orders.OrderService.load(OrderService.java:77)\n\
\tat com.example.orders.OrderController.get(OrderController.java:41)\n";

/// A typical API request: a handful of ordinary headers, a correlation id and
/// a trace context, as a browser or service client sends them.
pub fn typical_request() -> FakeHost {
    FakeHost::request("GET", "/api/v1/orders/42?expand=items")
        .with_request_header("accept", "application/json")
        .with_request_header("accept-encoding", "gzip, br")
        .with_request_header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) palisade-bench/1",
        )
        .with_request_header("x-request-id", "0b6e2f1c-6d2a-4c1e-9b7a-3f5d8e2a1c4b")
        .with_request_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_request_header("cookie", "session=8c1f2e; theme=dark")
        .with_request_header("x-forwarded-for", "203.0.113.7")
}

/// `typical_request` answered by a small JSON 200, as most traffic is.
pub fn ok_exchange() -> FakeHost {
    typical_request().with_response(
        200,
        &[
            ("content-type", "application/json"),
            ("content-length", "27"),
            ("server", "gunicorn"),
            ("x-powered-by", "Flask"),
            ("date", "Sun, 22 Nov 2026 16:00:00 GMT"),
        ],
        br#"{"id":42,"status":"shipped"}"#,
    )
}

/// `typical_request` answered by a 500 that leaks a stack trace.
pub fn stack_trace_exchange() -> FakeHost {
    let len = STACK_TRACE_BODY.len().to_string();
    typical_request().with_response(
        500,
        &[
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", len.as_str()),
            ("server", "gunicorn"),
        ],
        STACK_TRACE_BODY.as_bytes(),
    )
}

/// Configures a plugin from JSON against a fresh fake host; panics on a bad
/// config, since a bench with an unintended config measures nothing useful.
pub fn configure<P: Plugin>(config: &str) -> Rc<P> {
    let mut host = FakeHost::new();
    match P::configure(config.as_bytes(), &mut host) {
        Ok(plugin) => Rc::new(plugin),
        Err(e) => panic!("{} rejected the bench config {config}: {e}", P::NAME),
    }
}

/// One whole request through a filter, as the host would drive it: request
/// headers, then (unless the filter answered) response headers and the whole
/// response body in one chunk. Returns the last flow, for `black_box`.
pub fn exchange<P: Plugin>(plugin: &Rc<P>, host: &mut FakeHost) -> Flow {
    let mut filter = P::new_filter(plugin);
    let flow = filter.on_request_headers(host, true);
    if flow == Flow::Pause || host.sent.is_some() {
        return flow;
    }
    let flow = filter.on_response_headers(host, false);
    if host.sent.is_some() {
        return flow;
    }
    let len = host.response_body.len();
    filter.on_response_body(host, len, true)
}

/// `typical_request` answered by a 404 whose body leaks a stack trace: the
/// errors filter buffers and scans it (leak detection on 4xx).
pub fn leaky_404_exchange() -> FakeHost {
    typical_request().with_response(
        404,
        &[("content-type", "text/plain"), ("server", "gunicorn")],
        STACK_TRACE_BODY.as_bytes(),
    )
}

/// A 404 with an ordinary JSON body: scanned in full and passed, the most
/// expensive path of leak detection (every pattern runs and none matches).
pub fn clean_404_exchange() -> FakeHost {
    typical_request().with_response(
        404,
        &[("content-type", "application/json"), ("server", "gunicorn")],
        br#"{"error":"not_found","message":"order 42 does not exist","docs":"https://api.example.com/docs/errors#not_found"}"#,
    )
}

/// Runs one exchange on a fresh host and returns it, so a bench can assert
/// once that it measures the path it claims to (masked, passed, denied).
pub fn once<P: Plugin>(plugin: &Rc<P>, make: impl Fn() -> FakeHost) -> FakeHost {
    let mut host = make();
    exchange(plugin, &mut host);
    host
}
