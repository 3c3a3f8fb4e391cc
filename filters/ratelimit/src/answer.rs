//! What clients are told: the 429 (or gRPC `RESOURCE_EXHAUSTED`) and the
//! rate-limit fields on every answer of a limited route.
//!
//! `draft` follows draft-ietf-httpapi-ratelimit-headers-10: `RateLimit-Policy`
//! lists each limit as a structured-field string item with its quota `q` and
//! window `w` (seconds), `RateLimit` the same items with what is left (`r`)
//! and the seconds until more quota comes back (`t`):
//!
//! ```text
//! RateLimit-Policy: "login-per-ip";q=5;w=60
//! RateLimit: "login-per-ip";r=4;t=12
//! ```
//!
//! `x-ratelimit` gives Envoy's native triple for the most constrained limit.

use crate::bucket::ceil_secs;
use crate::config::ResponseHeaders;
use palisade_core::problem::Problem;
use palisade_core::Denial;

/// Denial reasons (`denied.<reason>` metrics).
pub const LIMITED: &str = "rate_limited";
pub const MISSING_KEY: &str = "missing_key";
pub const UNAVAILABLE: &str = "limiter_unavailable";
pub const IN_FLIGHT: &str = "in_flight_limited";
pub const REASONS: [&str; 4] = [LIMITED, MISSING_KEY, UNAVAILABLE, IN_FLIGHT];

/// gRPC's status for "out of quota".
pub const GRPC_RESOURCE_EXHAUSTED: &str = "8";

/// One limit's state after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    pub name: String,
    pub requests: u64,
    pub per_s: u64,
    pub remaining: u64,
    /// Seconds until more quota is available.
    pub reset_s: u64,
}

impl LimitState {
    pub fn new(name: &str, requests: u64, per_s: u64, remaining: u64, reset_ns: u64) -> Self {
        LimitState {
            name: name.to_string(),
            requests,
            per_s,
            remaining,
            reset_s: ceil_secs(reset_ns),
        }
    }
}

/// The rate-limit fields for these limits, in the configured style.
pub fn fields(style: ResponseHeaders, limits: &[LimitState]) -> Vec<(&'static str, String)> {
    if limits.is_empty() {
        return Vec::new();
    }
    match style {
        ResponseHeaders::None => Vec::new(),
        ResponseHeaders::Draft => {
            let policy = limits
                .iter()
                .map(|l| format!("\"{}\";q={};w={}", l.name, l.requests, l.per_s))
                .collect::<Vec<_>>()
                .join(", ");
            let current = limits
                .iter()
                .map(|l| format!("\"{}\";r={};t={}", l.name, l.remaining, l.reset_s))
                .collect::<Vec<_>>()
                .join(", ");
            vec![("ratelimit-policy", policy), ("ratelimit", current)]
        }
        ResponseHeaders::XRateLimit => {
            let tightest = limits
                .iter()
                .min_by_key(|l| (l.remaining, std::cmp::Reverse(l.reset_s)));
            match tightest {
                Some(l) => vec![
                    ("x-ratelimit-limit", l.requests.to_string()),
                    ("x-ratelimit-remaining", l.remaining.to_string()),
                    ("x-ratelimit-reset", l.reset_s.to_string()),
                ],
                None => Vec::new(),
            }
        }
    }
}

/// 429 problem+json with `Retry-After` (whole seconds, at least 1).
pub fn limited(
    limit: &LimitState,
    retry_after_s: u64,
    style: ResponseHeaders,
    all: &[LimitState],
) -> Denial {
    let problem = Problem::of_kind(429, "rate-limited", "Too Many Requests").detail(format!(
        "limit \"{}\" allows {} requests per {} s; retry in {} s",
        limit.name,
        limit.requests,
        limit.per_s,
        retry_after_s.max(1)
    ));
    let mut denial =
        Denial::new(problem, LIMITED).header("retry-after", retry_after_s.max(1).to_string());
    for (n, v) in fields(style, all) {
        denial = denial.header(n, v);
    }
    denial
}

/// Too many requests in flight: 429 when the limit is keyed (this client
/// sends too much at once), 503 when it is route-wide (`key: []`: the
/// backend's capacity is used up, whoever the client). `Retry-After: 1`:
/// a place frees as soon as any request ends.
pub fn in_flight(limit: &str, max: u64, route_wide: bool) -> Denial {
    let problem = if route_wide {
        Problem::of_kind(503, "concurrency-limited", "Service Unavailable").detail(format!(
            "limit \"{limit}\" allows {max} requests in flight on this route; retry in 1 s"
        ))
    } else {
        Problem::of_kind(429, "concurrency-limited", "Too Many Requests").detail(format!(
            "limit \"{limit}\" allows {max} requests in flight per client; retry in 1 s"
        ))
    };
    Denial::new(problem, IN_FLIGHT).header("retry-after", "1")
}

/// 400: the request lacks what the limit counts by (`on_missing_key: deny`).
pub fn missing_key(limit: &str) -> Denial {
    Denial::new(
        Problem::of_kind(400, "rate-limit-key-missing", "Bad Request").detail(format!(
            "limit \"{limit}\" cannot identify this request's client"
        )),
        MISSING_KEY,
    )
}

/// 503: the rate-limit service failed and `on_error` is `deny`.
pub fn unavailable() -> Denial {
    Denial::new(
        Problem::of_kind(503, "rate-limit-unavailable", "Service Unavailable")
            .detail("the rate limiter could not decide; retry later"),
        UNAVAILABLE,
    )
    .header("retry-after", "1")
}

/// gRPC clients cannot read a problem document: a trailers-only answer
/// (`:status 200`, `grpc-status`) tells them in their own protocol.
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type
        .is_some_and(|ct| ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/grpc"))
}

/// The trailers-only gRPC form of a denial: status, then headers.
pub fn grpc_reply(denial: &Denial) -> (u16, Vec<(&'static str, String)>) {
    let (code, message) = match denial.problem.status {
        429 if denial.reason == IN_FLIGHT => (GRPC_RESOURCE_EXHAUSTED, "too many in flight"),
        503 if denial.reason == IN_FLIGHT => ("14", "too many in flight"),
        429 => (GRPC_RESOURCE_EXHAUSTED, "rate limited"),
        503 => ("14", "rate limiter unavailable"),
        _ => ("3", "rate limit key missing"),
    };
    let mut headers = vec![
        ("content-type", "application/grpc".to_string()),
        ("grpc-status", code.to_string()),
        ("grpc-message", message.replace(' ', "%20")),
    ];
    headers.extend(denial.headers.iter().cloned());
    (200, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, remaining: u64, reset_s: u64) -> LimitState {
        LimitState {
            name: name.into(),
            requests: 5,
            per_s: 60,
            remaining,
            reset_s,
        }
    }

    #[test]
    fn draft_fields_list_every_limit_as_structured_items() {
        let f = fields(
            ResponseHeaders::Draft,
            &[state("a", 4, 12), state("b", 0, 30)],
        );
        assert_eq!(
            f,
            vec![
                (
                    "ratelimit-policy",
                    "\"a\";q=5;w=60, \"b\";q=5;w=60".to_string()
                ),
                ("ratelimit", "\"a\";r=4;t=12, \"b\";r=0;t=30".to_string()),
            ]
        );
    }

    #[test]
    fn x_ratelimit_reports_the_tightest_limit() {
        let f = fields(
            ResponseHeaders::XRateLimit,
            &[state("a", 4, 12), state("b", 1, 30)],
        );
        assert_eq!(f[1], ("x-ratelimit-remaining", "1".to_string()));
        assert_eq!(f[2], ("x-ratelimit-reset", "30".to_string()));
        assert!(fields(ResponseHeaders::None, &[state("a", 1, 1)]).is_empty());
    }

    #[test]
    fn a_429_carries_retry_after_of_at_least_one_second() {
        let d = limited(&state("a", 0, 0), 0, ResponseHeaders::None, &[]);
        assert_eq!(d.problem.status, 429);
        assert_eq!(d.headers, vec![("retry-after", "1".to_string())]);
    }

    #[test]
    fn in_flight_refusals_are_429_per_client_and_503_route_wide_in_both_protocols() {
        let keyed = in_flight("per-key", 2, false);
        let wide = in_flight("backend", 20, true);
        assert_eq!((keyed.problem.status, wide.problem.status), (429, 503));
        for d in [&keyed, &wide] {
            assert_eq!(d.reason, IN_FLIGHT);
            assert_eq!(d.headers, vec![("retry-after", "1".to_string())]);
        }
        let grpc_status = |d: &Denial| {
            grpc_reply(d)
                .1
                .into_iter()
                .find(|(n, _)| *n == "grpc-status")
                .map(|(_, v)| v)
        };
        assert_eq!(grpc_status(&keyed).as_deref(), Some("8"));
        assert_eq!(grpc_status(&wide).as_deref(), Some("14"));
    }

    #[test]
    fn grpc_requests_get_resource_exhausted_trailers_only() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(!is_grpc(Some(b"application/json")));
        assert!(!is_grpc(None));
        let d = limited(&state("a", 0, 3), 3, ResponseHeaders::None, &[]);
        let (status, headers) = grpc_reply(&d);
        assert_eq!(status, 200);
        assert!(headers.contains(&("grpc-status", "8".to_string())));
        assert!(headers.contains(&("retry-after", "3".to_string())));
    }
}
