//! The errors control: upstream answers (5xx, leaky bodies, gRPC, problem
//! documents, odd statuses) in chunks, on Envoy and Kong, under the
//! example configs. A masked answer is a problem with the request's id,
//! the client always gets as many bytes as its `content-length` promises,
//! and no request value is reflected.

use crate::check::{self, Known};
use crate::gen::{self, Vocab};
use crate::{check_exchange, configured, request_host, unstructured, Proxy};
use arbitrary::{Arbitrary, Result, Unstructured};
use palisade_core::fake::{run, Exchange};
use palisade_core::headers::find;
use palisade_core::problem::CONTENT_TYPE;
use palisade_core::{HostKind, Plugin};
use palisade_errors::ErrorsPlugin;

pub const CONFIGS: &[&str] = &[
    "{}",
    include_str!("../../../filters/errors/examples/custom-leak-patterns.json"),
    include_str!("../../../filters/errors/examples/dry-run.json"),
    include_str!("../../../filters/errors/examples/envoy-full-masking.json"),
    include_str!("../../../filters/errors/examples/per-route.json"),
];
const BODIES: &[&str] = &[
    "{\"error\":\"boom\"}",
    "Traceback (most recent call last):\n  File \"/srv/app/main.py\", line 3, in <module>",
    "java.lang.NullPointerException\n\tat com.example.Orders.get(Orders.java:42)",
    "ERROR: duplicate key value violates unique constraint \"orders_pkey\"",
    "upstream connect error or disconnect/reset before headers",
    "db01.corp.example.com refused",
    "{\"type\":\"about:blank\",\"title\":\"Bad\",\"status\":400}",
    "<html><body>502 Bad Gateway</body></html>",
];
const RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "server",
    "x-powered-by",
    "grpc-status",
    "grpc-message",
    "www-authenticate",
    "retry-after",
    "x-request-id",
];
const PATHS: &[&str] = &["/", "/api/orders", "/admin", "/grpc.Service/Method"];

/// Fuzz entry: see the module doc.
pub fn errors(data: &[u8]) {
    let _ = scenario(&mut unstructured(data));
}

fn scenario(u: &mut Unstructured) -> Result<()> {
    let kind = Proxy::arbitrary(u)?.kind();
    let config = *u.choose(CONFIGS)?;
    let (plugin, r) = match configured::<ErrorsPlugin>(config, kind, 1_800_000_000) {
        Ok(p) => p,
        Err(e) => panic!("an example errors config is refused: {e}"),
    };
    let vocab = Vocab {
        methods: gen::METHODS,
        paths: PATHS,
        header_names: &["accept", "te", "content-type"],
        header_values: &["application/grpc", "application/json", "trailers"],
    };
    let req = gen::request(u, &vocab, Vec::new())?;
    let body = gen::bytes_like(u, &["{\"q\":1}"], 64)?;
    let mut ex = gen::exchange(u, &body, BODIES, RESPONSE_HEADERS)?;
    if u.ratio(1u8, 3)? {
        ex.response_headers.push((
            "content-type".into(),
            gen::bytes_like(
                u,
                &[
                    "application/json",
                    "text/html",
                    "application/grpc",
                    CONTENT_TYPE,
                    "text/plain",
                ],
                30,
            )?,
        ));
    }
    let mut known = Known::default();
    known.add(config.as_bytes());
    known.add_all(PATHS);
    known.add_all(BODIES);
    known.add_all(RESPONSE_HEADERS);
    known.add_all(gen::COMMON_HEADERS);
    known.add_all(gen::COMMON_VALUES);
    known.add_all(gen::REQUEST_IDS);
    known.add(gen::TRACEPARENT.as_bytes());
    known.add(req.path.as_bytes());
    known.add(req.method.as_bytes());
    for (n, _) in &req.headers {
        known.add(n.as_bytes());
    }
    for c in &ex.response_body {
        known.add(c);
    }
    for (n, v) in &ex.response_headers {
        known.add(n.as_bytes());
        known.add(v);
    }
    let mut host = request_host(&r, &req, 1_800_000_000 * 1_000_000_000);
    host.kind = kind;
    let mut filter = ErrorsPlugin::new_filter(&plugin);
    let out = run(&mut filter, &mut host, &ex);
    let staged = (plugin.holds_request_headers() || plugin.holds_response_headers())
        && (kind == HostKind::Kong || !ex.allow_on_headers_stop_iteration);
    check_exchange(&host, &req, &body, &out, &known, staged);
    masked(&out, &ex, &req);
    Ok(())
}

/// An answer the control turned into a problem document is a whole one.
fn masked(out: &palisade_core::fake::Outcome, ex: &Exchange, req: &gen::Request) {
    let Some(client) = &out.client else { return };
    let upstream_problem = ex
        .response_headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.as_slice() == CONTENT_TYPE.as_bytes());
    let now_problem = find(&client.headers, "content-type") == Some(CONTENT_TYPE.as_bytes());
    if !client.local && now_problem && !upstream_problem && client.status >= 400 {
        let id = check::request_id(&gen::request_headers(req));
        check::problem(client.status, &client.headers, &client.body, id.as_deref());
    }
}
