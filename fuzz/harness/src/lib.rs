//! Coverage-guided fuzzing of every Palisade control (issue 16 §1).
//!
//! Each `pub fn <target>(data)` builds a whole scenario from the fuzzer's
//! bytes with `arbitrary` (requests, bodies, upstream answers, key-server
//! and rate-limit-service replies, clock steps, Envoy or Kong), runs it on
//! the fake host and asserts the invariants in [`check`]; a panic is a
//! finding. The library runs on stable, so `tests/corpus.rs` replays the
//! committed corpora in `cargo test`; `fuzz/` wraps the same functions
//! for cargo-fuzz.

pub mod check;
pub mod drive;
pub mod gen;
pub mod tokens;

mod chain;
mod config;
mod errors;
mod headers;
mod jwt;
mod ratelimit;
mod schema;

pub use chain::chain;
pub use config::{
    config_chain, config_errors, config_headers, config_jwt, config_ratelimit, config_schema,
};
pub use errors::errors;
pub use headers::headers;
pub use jwt::jwt;
pub use ratelimit::ratelimit;
pub use schema::{schema, schema_body, schema_request};

use arbitrary::{Arbitrary, Unstructured};
use gen::Request;
use palisade_core::fake::{FakeHost, Outcome};
use palisade_core::{HostKind, Plugin};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A fuzz entry function: the fuzzer's bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay (fuzz/fuzz_targets/ has
/// one binary per entry).
pub const TARGETS: &[(&str, Target)] = &[
    ("jwt", jwt),
    ("ratelimit", ratelimit),
    ("schema", schema),
    ("schema_body", schema_body),
    ("schema_request", schema_request),
    ("headers", headers),
    ("errors", errors),
    ("chain", chain),
    ("config_jwt", config_jwt),
    ("config_ratelimit", config_ratelimit),
    ("config_schema", config_schema),
    ("config_headers", config_headers),
    ("config_errors", config_errors),
    ("config_chain", config_chain),
];

/// Envoy or Kong, as the input says.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Proxy {
    Envoy,
    Kong,
}

impl Proxy {
    fn kind(self) -> HostKind {
        match self {
            Proxy::Envoy => HostKind::Envoy,
            Proxy::Kong => HostKind::Kong,
        }
    }
}

/// A root context in `on_configure` on `kind`, at `now_s`.
fn root(kind: HostKind, now_s: u64) -> FakeHost {
    FakeHost::configuring(kind).at_secs(now_s)
}

/// A plugin configured from `config` on `kind`, and a root host holding
/// its metric ids; `Err` when the config or the host is refused.
///
/// Kept for the process per (control, config, host): configuring compiles
/// regexes and schemas, which costs far more than a request. Only for
/// controls that keep nothing between requests but their config (errors,
/// headers, schema); jwt, ratelimit and the chain start fresh every run.
fn configured<P: Plugin>(
    config: &str,
    kind: HostKind,
    now_s: u64,
) -> Result<(Rc<P>, FakeHost), String> {
    type Cached = Result<(Rc<dyn Any>, Vec<String>), String>;
    thread_local! {
        static PLUGINS: RefCell<HashMap<(TypeId, String, bool), Cached>> = RefCell::new(HashMap::new());
    }
    let key = (
        TypeId::of::<P>(),
        config.to_string(),
        kind == HostKind::Kong,
    );
    let cached = PLUGINS.with(|p| p.borrow().get(&key).cloned());
    let entry = match cached {
        Some(entry) => entry,
        None => {
            let mut r = root(kind, now_s);
            let entry: Cached = P::configure(config.as_bytes(), &mut r)
                .map_err(|e| e.to_string())
                .and_then(|p| p.check_host(kind).map(|()| p).map_err(|e| e.to_string()))
                .map(|p| (Rc::new(p) as Rc<dyn Any>, r.metric_names.clone()));
            PLUGINS.with(|p| p.borrow_mut().insert(key, entry.clone()));
            entry
        }
    };
    let (plugin, names) = entry?;
    let plugin = plugin
        .downcast::<P>()
        .map_err(|_| "a cached plugin of another type".to_string())?;
    let mut r = root(kind, now_s);
    r.metric_names = names;
    r.believed = None;
    Ok((plugin, r))
}

/// A request's host on the worker `root` (shared store, metric ids), with
/// the clock at `now_ns` and a TCP peer.
fn request_host(root: &FakeHost, req: &Request, now_ns: u64) -> FakeHost {
    let mut h = root.sibling();
    h.believed = None;
    h.metric_names = root.metric_names.clone();
    h.request_headers = gen::request_headers(req);
    h.clock.set(now_ns);
    h.properties
        .insert("source.address".into(), b"192.0.2.10:40000".to_vec());
    h
}

/// The invariants every exchange keeps: a denial is a problem with the
/// request's id, no request value is reflected, no hang unless `staged`.
fn check_exchange(
    host: &FakeHost,
    req: &Request,
    body: &[u8],
    out: &Outcome,
    known: &check::Known,
    staged_hang: bool,
) {
    let id = check::request_id(&gen::request_headers(req));
    if let Some(client) = &out.client {
        check::client(client, id.as_deref());
    }
    let logs: Vec<String> = host.logs.borrow().iter().map(|(_, m)| m.clone()).collect();
    let values = check::request_values(req, body);
    // The id is echoed by design, whichever other header shares its bytes.
    let mut known = known.clone();
    known.add(id.as_deref().unwrap_or_default().as_bytes());
    check::no_leak(&values, &known, &check::outputs(&logs, out));
    check::no_hang(out, staged_hang);
}

/// The bytes left, as `arbitrary` reads them: targets ignore running out.
fn unstructured(data: &[u8]) -> Unstructured<'_> {
    Unstructured::new(data)
}
