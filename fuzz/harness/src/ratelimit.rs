//! The ratelimit control across worker VMs: several fake hosts sharing one
//! store, requests started, finished and reset in the order the input
//! gives, clock steps between them. However they interleave, a limit never
//! admits more than its bucket allows within a window (GCRA: `n` requests
//! in `dt` need `n ≤ burst + dt·requests/per_s`), nor more than
//! `max_in_flight` of one key at once.

use crate::check::{self, Known};
use crate::gen::{self, Request, Vocab};
use crate::{request_host, root, unstructured, Proxy};
use arbitrary::{Arbitrary, Result, Unstructured};
use palisade_core::fake::{end_stream, FakeHost};
use palisade_core::host::{CallResponse, Phase};
use palisade_core::{Flow, HttpFilter, Plugin};
use palisade_ratelimit::global::{DescriptorStatus, Duration, RateLimitResponse};
use palisade_ratelimit::{RateLimitFilter, RateLimitPlugin};
use prost::Message;
use serde_json::json;
use std::rc::Rc;

const T0: u64 = 1_700_000_000;
const PATHS: &[&str] = &["/api/orders", "/login", "/", "/api/orders?x=1"];
const KEY_VALUES: &[&str] = &["k1", "k2", "k1 ", "K1"];

#[derive(Debug, Arbitrary)]
enum Op {
    Start { worker: u8 },
    Finish { which: u8, status: u8 },
    Reset { which: u8 },
    Advance { ms: AdvanceMs },
}

#[derive(Debug, Arbitrary)]
enum AdvanceMs {
    Tiny(u8),
    Some(u16),
    Second,
    Window,
}

/// A request the control let through, still in flight.
struct Flight {
    filter: RateLimitFilter,
    host: FakeHost,
    group: Option<Vec<Vec<u8>>>,
}

struct Limit {
    requests: u64,
    per_s: u64,
    burst: u64,
    max_in_flight: Option<u64>,
    counted: bool,
}

/// Fuzz entry: see the module doc.
pub fn ratelimit(data: &[u8]) {
    let _ = scenario(&mut unstructured(data));
}

fn scenario(u: &mut Unstructured) -> Result<()> {
    let kind = Proxy::arbitrary(u)?.kind();
    let requests = u.int_in_range(1u64..=5)?;
    let per_s = *u.choose(&[1u64, 2, 10, 60])?;
    let burst = requests + u.int_in_range(0u64..=3)?;
    let global = kind == palisade_core::HostKind::Envoy && u.ratio(1u8, 5)?;
    // A rate-limit service counts requests only: no token given back, no
    // concurrency limit.
    let max_in_flight = if !global && u.ratio(1u8, 3)? {
        Some(u.int_in_range(1u64..=3)?)
    } else {
        None
    };
    let counted = !global && u.ratio(1u8, 6)?;
    let keyed = bool::arbitrary(u)?;
    let on_missing = *u.choose(&["skip", "shared", "deny"])?;
    let dry_run = u.ratio(1u8, 10)?;
    let mut limit = json!({
        "name": "per-key",
        "key": if keyed { json!([{"header": "x-api-key"}]) } else { json!([]) },
        "requests": requests, "per_s": per_s, "burst": burst,
    });
    if let Some(m) = max_in_flight {
        limit["max_in_flight"] = json!(m);
    }
    if counted {
        limit["count"] = json!({"response_status": [401, 403]});
    }
    let mut config = json!({
        "dry_run": dry_run,
        "limits": [limit],
        "on_missing_key": on_missing,
        "response_headers": *u.choose(&["draft", "x-ratelimit", "none"])?,
        // A small table (each slot is a shared-data entry written at
        // configure time) that still holds every key a run makes.
        "local": {"slots": 256, "entries_per_slot": 16},
    });
    if global {
        config["mode"] = json!("global");
        config["global"] = json!({"cluster": "ratelimit", "domain": "palisade", "timeout_ms": 100,
                                  "on_error": *u.choose(&["allow", "deny", "local"])?});
    }
    let config = config.to_string();
    let limit = Limit {
        requests,
        per_s,
        burst,
        max_in_flight,
        counted,
    };

    let mut known = Known::default();
    known.add(config.as_bytes());
    known.add_all(PATHS);
    known.add_all(KEY_VALUES);
    known.add_all(gen::COMMON_HEADERS);
    known.add_all(gen::COMMON_VALUES);
    known.add_all(gen::REQUEST_IDS);
    known.add(gen::TRACEPARENT.as_bytes());

    let first = root(kind, T0);
    let mut workers: Vec<(Rc<RateLimitPlugin>, FakeHost)> = Vec::new();
    for _ in 0..u.int_in_range(1u8..=3)? {
        let mut r = first.sibling();
        r.phase = Phase::Configure;
        r.believed = first.believed;
        let plugin = match RateLimitPlugin::configure(config.as_bytes(), &mut r) {
            Ok(p) => Rc::new(p),
            Err(e) => panic!("the harness's ratelimit config is refused: {e}: {config}"),
        };
        if plugin.check_host(kind).is_err() {
            return Ok(());
        }
        workers.push((plugin, r));
    }
    // A host without a usable shared zone: the control may fail open.
    let unavailable = u.ratio(1u8, 16)?;
    first.shared.borrow_mut().unavailable = unavailable;
    let checked = !dry_run && !global && !unavailable;

    let mut now_ns = T0 * 1_000_000_000;
    let mut flights: Vec<Flight> = Vec::new();
    let mut admitted: Vec<(Option<Vec<Vec<u8>>>, u64)> = Vec::new();
    for _ in 0..u.int_in_range(1u8..=40)? {
        match Op::arbitrary(u)? {
            Op::Advance { ms } => {
                now_ns += 1_000_000
                    * match ms {
                        AdvanceMs::Tiny(n) => u64::from(n),
                        AdvanceMs::Some(n) => u64::from(n),
                        AdvanceMs::Second => 1_000,
                        AdvanceMs::Window => per_s * 1_000,
                    }
            }
            Op::Finish { which, status } if !flights.is_empty() => {
                let mut f = flights.remove(usize::from(which) % flights.len());
                let status = [200u16, 401, 403, 500][usize::from(status % 4)];
                f.host.clock.set(now_ns);
                f.host.phase = Phase::ResponseHeaders;
                f.host.response_headers = vec![(":status".into(), status.to_string().into_bytes())];
                f.filter.on_response_headers(&mut f.host, true);
                end_stream(&mut f.filter, &mut f.host);
            }
            Op::Reset { which } if !flights.is_empty() => {
                let mut f = flights.remove(usize::from(which) % flights.len());
                f.host.clock.set(now_ns);
                end_stream(&mut f.filter, &mut f.host);
            }
            Op::Start { worker } => {
                let (plugin, wroot) = &workers[usize::from(worker) % workers.len()];
                let Some(flight) =
                    start(u, plugin, wroot, kind, now_ns, keyed, on_missing, &known)?
                else {
                    continue;
                };
                if checked {
                    if let Some(group) = &flight.group {
                        let times: Vec<u64> = admitted
                            .iter()
                            .filter(|(g, _)| g.as_ref() == Some(group))
                            .map(|(_, t)| *t)
                            .chain([now_ns])
                            .collect();
                        let busy = flights
                            .iter()
                            .filter(|f| f.group.as_ref() == Some(group))
                            .count() as u64
                            + 1;
                        bounds(&limit, &times, busy);
                    }
                }
                admitted.push((flight.group.clone(), now_ns));
                flights.push(flight);
            }
            _ => {}
        }
    }
    for mut f in flights {
        end_stream(&mut f.filter, &mut f.host);
    }
    Ok(())
}

/// The GCRA and concurrency bounds over one key's admissions so far.
fn bounds(limit: &Limit, times: &[u64], in_flight: u64) {
    if let Some(max) = limit.max_in_flight {
        assert!(
            in_flight <= max,
            "{in_flight} requests of one key in flight, max_in_flight {max}"
        );
    }
    if limit.counted {
        return;
    }
    let Some(&last) = times.last() else { return };
    let n = times.len() as u128;
    for (i, &t) in times.iter().enumerate() {
        let count = n - i as u128;
        let dt = u128::from(last - t);
        let refill = dt * u128::from(limit.requests) / (u128::from(limit.per_s) * 1_000_000_000);
        assert!(
            count <= u128::from(limit.burst) + refill,
            "{count} admitted in {dt} ns: burst {} + {refill} refilled ({} per {} s)",
            limit.burst,
            limit.requests,
            limit.per_s
        );
    }
}

/// Starts one request; the flight when the control let it through.
#[allow(clippy::too_many_arguments)]
fn start(
    u: &mut Unstructured,
    plugin: &Rc<RateLimitPlugin>,
    wroot: &FakeHost,
    kind: palisade_core::HostKind,
    now_ns: u64,
    keyed: bool,
    on_missing: &str,
    known: &Known,
) -> Result<Option<Flight>> {
    let mut keys = Vec::new();
    for _ in 0..*u.choose(&[1u8, 1, 1, 0, 2])? {
        keys.push(("x-api-key".to_string(), gen::bytes_like(u, KEY_VALUES, 40)?));
    }
    let vocab = Vocab {
        methods: gen::METHODS,
        paths: PATHS,
        header_names: &["x-api-key", "x-forwarded-for"],
        header_values: KEY_VALUES,
    };
    let req: Request = gen::request(u, &vocab, keys)?;
    let mut host = request_host(wroot, &req, now_ns);
    host.kind = kind;
    let mut filter = RateLimitPlugin::new_filter(plugin);
    let mut flow = filter.on_request_headers(&mut host, true);
    if flow == Flow::Pause && host.sent.is_none() {
        if let Some(call) = host.calls.last().cloned() {
            host.phase = Phase::RequestHeaders;
            flow = filter.on_call_response(&mut host, rls(u, call.token())?);
        }
    }
    let id = check::request_id(&gen::request_headers(&req));
    let mut k = known.clone();
    k.add(&known_text(&req));
    k.add(id.as_deref().unwrap_or_default().as_bytes());
    let logs: Vec<String> = host.logs.borrow().iter().map(|(_, m)| m.clone()).collect();
    let mut outputs: Vec<&[u8]> = logs.iter().map(|l| l.as_bytes()).collect();
    if let Some(sent) = &host.sent {
        check::sent(sent, id.as_deref());
        outputs.push(&sent.body);
    }
    check::no_leak(&check::request_values(&req, b""), &k, &outputs);
    if host.sent.is_some() || flow == Flow::Pause {
        end_stream(&mut filter, &mut host);
        return Ok(None);
    }
    let values: Vec<Vec<u8>> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "x-api-key")
        .map(|(_, v)| v.clone())
        .collect();
    // Whether a blank value is a key or a missing one is the control's
    // call: such requests are left out of the model, which can then only
    // count less than the control does.
    let blank = values.iter().any(|v| v.trim_ascii().is_empty());
    let group = match (keyed, values.is_empty(), on_missing) {
        (false, _, _) => Some(Vec::new()),
        (true, false, _) if blank => None,
        (true, false, _) => Some(values),
        (true, true, "shared") => Some(Vec::new()),
        _ => None,
    };
    Ok(Some(Flight {
        filter,
        host,
        group,
    }))
}

/// This request's names and path: text a log may name.
fn known_text(req: &Request) -> Vec<u8> {
    let mut t = req.path.as_bytes().to_vec();
    t.push(0);
    t.extend_from_slice(req.method.as_bytes());
    for (n, _) in &req.headers {
        t.push(0);
        t.extend_from_slice(n.as_bytes());
    }
    t
}

/// The rate-limit service's answer: OK, over limit, a failure, or garbage.
fn rls(u: &mut Unstructured, token: u32) -> Result<CallResponse> {
    let (status, message) = match u.int_in_range(0u8..=4)? {
        0 => (*u.choose(&[4u32, 14, 12, 2])?, Vec::new()),
        1 => (0, gen::bytes_like(u, &[], 64)?),
        n => {
            let code = if n == 2 { 1 } else { 2 };
            let reply = RateLimitResponse {
                overall_code: code,
                statuses: vec![DescriptorStatus {
                    code,
                    limit_remaining: u32::from(u8::arbitrary(u)?),
                    duration_until_reset: Some(Duration {
                        seconds: i64::from(i8::arbitrary(u)?),
                        nanos: i32::arbitrary(u)?,
                    }),
                }],
            };
            (0, reply.encode_to_vec())
        }
    };
    Ok(CallResponse::Grpc {
        token,
        status,
        message,
    })
}
