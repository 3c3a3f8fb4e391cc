//! Global mode: asking a rate-limit service speaking Envoy's RLS v3 protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), the API
//! of envoyproxy/ratelimit and Limitador, which keep counts in Redis.
//!
//! One descriptor per limit of the matching rule, in order: the entry
//! `("limit", <name>)` first (so the service's config can match on it), then
//! one entry per key part (`client_ip`, `header.<name>` with the hashed
//! value, `route`, `method`, `path`, `claim.<name>`). When `per_s` is one of
//! RLS's units (1, 60, 3600, 86400) the descriptor also carries the limit as
//! a `limit` override, which envoyproxy/ratelimit honours.
//!
//! The messages are `prost` structs with the proto's field numbers: the
//! crate with the generated types, `envoy-types`, brings tonic's transport and
//! tokio's networking, which do not build for wasm32-wasip1. The unit tests
//! check these structs against `envoy-types`' own, both ways.

use crate::key::Key;
use prost::Message;

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// gRPC's DEADLINE_EXCEEDED, counted apart from other failures.
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// gRPC's UNAVAILABLE: what Envoy reports for a call that hit its
/// deadline (its async client answers the timeout with HTTP 504, which
/// gRPC maps to UNAVAILABLE), as well as for a connection that failed.
pub const GRPC_UNAVAILABLE: u32 = 14;

/// Whether a failed call hit its deadline: DEADLINE_EXCEEDED, or
/// UNAVAILABLE once (90 % of) `timeout_ms` had passed; an UNAVAILABLE
/// sooner is a connection that failed.
pub fn is_deadline(status: u32, elapsed_ms: u64, timeout_ms: u64) -> bool {
    status == GRPC_DEADLINE_EXCEEDED
        || (status == GRPC_UNAVAILABLE
            && elapsed_ms.saturating_mul(10) >= timeout_ms.saturating_mul(9))
}

/// The log reason for a call that hit its deadline.
pub fn deadline_failure(status: u32, elapsed_ms: u64) -> String {
    format!(
        "gRPC status {status} after {elapsed_ms} ms (deadline exceeded: no answer within \
         global.timeout_ms)"
    )
}

/// A failed call's gRPC status in an operator's words (Envoy maps a
/// connection that could not be made, TLS included, to UNAVAILABLE).
pub fn grpc_failure(status: u32) -> String {
    let what = match status {
        GRPC_DEADLINE_EXCEEDED => "deadline exceeded: no answer within global.timeout_ms",
        14 => "unavailable: the connection failed (refused, reset, or TLS) or no healthy host",
        12 => "unimplemented: is it an envoy.service.ratelimit.v3 service?",
        16 | 7 => "refused the call's credentials",
        _ => "failed",
    };
    format!("gRPC status {status} ({what})")
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "2")]
    pub limit: Option<RateLimitOverride>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitOverride {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `envoy.type.v3.RateLimitUnit`: 1 s, 2 min, 3 h, 4 day.
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    /// 0 unknown, 1 OK, 2 OVER_LIMIT.
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const CODE_OK: i32 = 1;
pub const CODE_OVER_LIMIT: i32 = 2;

/// What the filter sends for one limit.
#[derive(Debug, Clone)]
pub struct LimitAsk<'a> {
    pub name: &'a str,
    pub key: &'a Key,
    pub requests: u64,
    pub per_s: u64,
}

/// RLS's unit for a window, when the window is exactly one.
pub fn unit_of(per_s: u64) -> Option<i32> {
    match per_s {
        1 => Some(1),
        60 => Some(2),
        3600 => Some(3),
        86_400 => Some(4),
        _ => None,
    }
}

/// The encoded `RateLimitRequest`.
pub fn request(domain: &str, asks: &[LimitAsk<'_>]) -> Vec<u8> {
    let descriptors = asks
        .iter()
        .map(|a| RateLimitDescriptor {
            entries: std::iter::once(Entry {
                key: "limit".into(),
                value: a.name.to_string(),
            })
            .chain(a.key.parts.iter().map(|(k, v)| Entry {
                key: k.clone(),
                value: v.clone(),
            }))
            .collect(),
            limit: unit_of(a.per_s).map(|unit| RateLimitOverride {
                requests_per_unit: u32::try_from(a.requests).unwrap_or(u32::MAX),
                unit,
            }),
        })
        .collect();
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors,
        hits_addend: 1,
    }
    .encode_to_vec()
}

/// The service's answer, reduced to what the filter acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Per descriptor `(remaining, reset_ns)` when the service said.
    Ok(Vec<Option<(u64, u64)>>),
    /// Descriptor `index` is over its limit; retry after `reset_ns`.
    OverLimit { index: usize, reset_ns: u64 },
}

/// Decodes a response; `None` when it is not one (then `on_error` applies).
pub fn decode(message: &[u8], descriptors: usize) -> Option<Answer> {
    let r = RateLimitResponse::decode(message).ok()?;
    let reset = |s: &DescriptorStatus| {
        s.duration_until_reset.as_ref().map(|d| {
            let secs = u64::try_from(d.seconds).unwrap_or(0);
            let nanos = u64::try_from(d.nanos).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        })
    };
    match r.overall_code {
        CODE_OK => Some(Answer::Ok(
            (0..descriptors)
                .map(|i| {
                    r.statuses
                        .get(i)
                        .filter(|s| s.code == CODE_OK)
                        .map(|s| (u64::from(s.limit_remaining), reset(s).unwrap_or(0)))
                })
                .collect(),
        )),
        CODE_OVER_LIMIT => {
            let index = r
                .statuses
                .iter()
                .position(|s| s.code == CODE_OVER_LIMIT)
                .unwrap_or(0)
                .min(descriptors.saturating_sub(1));
            let reset_ns = r
                .statuses
                .get(index)
                .and_then(reset)
                .unwrap_or(1_000_000_000);
            Some(Answer::OverLimit { index, reset_ns })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3 as common;
    use envoy_types::pb::envoy::service::ratelimit::v3 as rls;

    fn key() -> Key {
        Key::new(
            "per-key",
            vec![
                ("client_ip".into(), "10.0.0.1".into()),
                ("header.x-api-key".into(), "abcd".into()),
            ],
        )
    }

    #[test]
    fn requests_decode_with_envoy_types() {
        let k = key();
        let bytes = request(
            "palisade",
            &[
                LimitAsk {
                    name: "per-key",
                    key: &k,
                    requests: 5,
                    per_s: 60,
                },
                LimitAsk {
                    name: "odd",
                    key: &k,
                    requests: 5,
                    per_s: 7,
                },
            ],
        );
        let decoded = rls::RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.domain, "palisade");
        assert_eq!(decoded.hits_addend, 1);
        let d = &decoded.descriptors[0];
        let entries: Vec<(&str, &str)> = d
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            entries,
            vec![
                ("limit", "per-key"),
                ("client_ip", "10.0.0.1"),
                ("header.x-api-key", "abcd")
            ]
        );
        let limit = d.limit.as_ref().unwrap();
        assert_eq!(limit.requests_per_unit, 5);
        assert_eq!(
            limit.unit,
            envoy_types::pb::envoy::r#type::v3::RateLimitUnit::Minute as i32
        );
        assert!(decoded.descriptors[1].limit.is_none());
    }

    #[test]
    fn responses_encoded_by_envoy_types_decode_here() {
        let ok = rls::RateLimitResponse {
            overall_code: rls::rate_limit_response::Code::Ok as i32,
            statuses: vec![rls::rate_limit_response::DescriptorStatus {
                code: rls::rate_limit_response::Code::Ok as i32,
                limit_remaining: 3,
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 12,
                    nanos: 5,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            decode(&ok.encode_to_vec(), 1),
            Some(Answer::Ok(vec![Some((3, 12_000_000_005))]))
        );
        let over = rls::RateLimitResponse {
            overall_code: rls::rate_limit_response::Code::OverLimit as i32,
            statuses: vec![
                rls::rate_limit_response::DescriptorStatus {
                    code: rls::rate_limit_response::Code::Ok as i32,
                    ..Default::default()
                },
                rls::rate_limit_response::DescriptorStatus {
                    code: rls::rate_limit_response::Code::OverLimit as i32,
                    duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: 30,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ],
            raw_body: b"ignored".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            decode(&over.encode_to_vec(), 2),
            Some(Answer::OverLimit {
                index: 1,
                reset_ns: 30_000_000_000
            })
        );
        let unknown = rls::RateLimitResponse::default();
        assert_eq!(decode(&unknown.encode_to_vec(), 1), None);
        assert_eq!(decode(b"\xff\xff\xff", 1), None);
        // The descriptor type is the one envoy-types names.
        let _: Option<common::RateLimitDescriptor> = None;
    }
}
