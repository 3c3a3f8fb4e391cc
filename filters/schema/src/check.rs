//! The decisions, phase by phase, as plain functions over what the request
//! showed: which operation, then path parameters and query (request
//! headers), then the body (once it is complete).

use crate::body::{self, BodyError};
use crate::compile::{Contract, Operation};
use crate::config::{Limits, Unmatched};
use crate::media::MediaType;
use crate::params;
use crate::query::{params_object, query_object};
use crate::report::{Place, Violation};
use palisade_core::method::Method;
use palisade_core::problem::Problem;
use palisade_core::route::RouteInput;
use palisade_core::Denial;
use serde_json::Value;

/// Every reason a request can be refused for (metrics `denied.<reason>`).
pub const REASONS: [&str; 15] = [
    "unknown_path",
    "method_not_allowed",
    "body_too_large",
    "body_unreadable",
    "unsupported_media_type",
    "body_required",
    "invalid_json",
    "duplicate_key",
    "too_deep",
    "too_many_members",
    "too_many_items",
    "string_too_long",
    "invalid_path_params",
    "invalid_query",
    "invalid_body",
];

/// What the request headers tell about the body.
#[derive(Debug, Clone, Default)]
pub struct BodyFacts {
    /// Whether a body follows the headers.
    pub present: bool,
    pub content_length: Option<u64>,
    /// The raw `content-type`.
    pub content_type: Option<String>,
}

/// The outcome of the request-headers phase.
#[derive(Debug)]
pub enum HeadersOutcome<'c> {
    /// Nothing more to check: let the request (and its body) through.
    Pass(Option<&'c Operation>),
    /// Boxed: a denial (a whole problem document) dwarfs the other variants.
    Deny(Box<Denial>, bool),
    /// Buffer the body and validate it once complete.
    Buffer(&'c Operation),
}

/// Chooses the operation and checks everything the headers carry.
pub fn on_headers<'c>(
    contract: &'c Contract,
    input: &RouteInput<'_>,
    raw_path: &str,
    body: &BodyFacts,
) -> HeadersOutcome<'c> {
    let Some(op) = contract.select(input) else {
        return match contract.unmatched {
            Unmatched::Allow => HeadersOutcome::Pass(None),
            Unmatched::Deny => {
                HeadersOutcome::Deny(Box::new(unmatched(contract, input)), contract.dry_run)
            }
        };
    };
    let mut violations = Vec::new();
    if let (Some(check), Some(template)) = (&op.path, &op.matcher.path_template) {
        let captured =
            params::captured(template, input.path, op.param_names.as_deref()).unwrap_or_default();
        let object = params_object(
            captured.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            &check.coercions,
        );
        check.schema.check(Place::Path, &object, &mut violations);
    }
    if let Some(check) = &op.query {
        let object = query_object(raw_path, &check.coercions);
        check.schema.check(Place::Query, &object, &mut violations);
    }
    if !violations.is_empty() {
        let reason = if violations.iter().any(|v| v.place == Place::Path) {
            "invalid_path_params"
        } else {
            "invalid_query"
        };
        return HeadersOutcome::Deny(Box::new(schema_violation(reason, &violations)), op.dry_run);
    }
    if !body.present {
        return match &op.body {
            Some(b) if b.required => HeadersOutcome::Deny(Box::new(body_required()), op.dry_run),
            _ => HeadersOutcome::Pass(Some(op)),
        };
    }
    let media = body.content_type.as_deref().and_then(MediaType::parse);
    if let Some(accepted) = &op.content_types {
        let ok = media
            .as_ref()
            .is_some_and(|m| accepted.iter().any(|r| r.accepts(m)));
        if !ok {
            let names: Vec<String> = accepted.iter().map(|r| r.as_string()).collect();
            return HeadersOutcome::Deny(
                Box::new(unsupported_media_type(&names, input.method)),
                op.dry_run,
            );
        }
    }
    let validates = op.body.is_some() && media.as_ref().is_some_and(MediaType::is_json);
    if !validates {
        return HeadersOutcome::Pass(Some(op));
    }
    if body.content_length.is_some_and(|n| n > op.max_body_bytes) {
        return HeadersOutcome::Deny(Box::new(body_too_large(op.max_body_bytes)), op.dry_run);
    }
    HeadersOutcome::Buffer(op)
}

/// Validates a complete body; `None` means it passes.
pub fn on_body(op: &Operation, bytes: &[u8], limits: &Limits) -> Option<Denial> {
    let check = op.body.as_ref()?;
    if bytes.is_empty() {
        return check.required.then(body_required);
    }
    let value: Value = match body::parse(bytes, limits) {
        Ok(v) => v,
        Err(e) => return Some(malformed(e, limits)),
    };
    let schema = check.schema.as_ref()?;
    let mut violations = Vec::new();
    schema.check(Place::Body, &value, &mut violations);
    (!violations.is_empty()).then(|| schema_violation("invalid_body", &violations))
}

fn unmatched(contract: &Contract, input: &RouteInput<'_>) -> Denial {
    let allowed = contract.allowed_methods(input);
    if allowed.is_empty() {
        return Denial::new(
            Problem::of_kind(404, "unknown-path", "Not Found")
                .detail("no operation of this API matches the path"),
            "unknown_path",
        );
    }
    let names: Vec<&str> = allowed.iter().map(|m| Method::as_str(*m)).collect();
    Denial::new(
        Problem::of_kind(405, "method-not-allowed", "Method Not Allowed")
            .detail(format!("this path accepts {}", names.join(", ")))
            .extension("allowed_methods", Value::from(names.clone())),
        "method_not_allowed",
    )
    .header("allow", names.join(", "))
}

pub fn body_too_large(limit: u64) -> Denial {
    Denial::new(
        Problem::of_kind(413, "body-too-large", "Content Too Large")
            .detail(format!("the body must not exceed {limit} bytes"))
            .extension("limit", Value::from(limit)),
        "body_too_large",
    )
}

/// The host delivered less of the body than it announced (Kong with a body
/// nginx buffered to a file): too large for this proxy to inspect.
pub fn body_unreadable() -> Denial {
    Denial::new(
        Problem::of_kind(413, "body-too-large", "Content Too Large")
            .detail("the body is larger than this proxy can inspect"),
        "body_unreadable",
    )
}

/// With the media types accepted, and for POST and PATCH the header their
/// specs define for saying so (`Accept-Post`, RFC 5789's `Accept-Patch`).
fn unsupported_media_type(accepted: &[String], method: &str) -> Denial {
    let denial = Denial::new(
        Problem::of_kind(415, "unsupported-media-type", "Unsupported Media Type")
            .detail(format!("the body must be {}", accepted.join(" or ")))
            .extension("accepted", Value::from(accepted.to_vec())),
        "unsupported_media_type",
    );
    match method {
        "POST" => denial.header("accept-post", accepted.join(", ")),
        "PATCH" => denial.header("accept-patch", accepted.join(", ")),
        _ => denial,
    }
}

fn body_required() -> Denial {
    Denial::new(
        Problem::of_kind(400, "body-required", "Bad Request")
            .detail("this operation requires a request body"),
        "body_required",
    )
}

fn malformed(error: BodyError, limits: &Limits) -> Denial {
    let (kind, title) = match error {
        BodyError::Syntax | BodyError::DuplicateKey => ("malformed-json", "Malformed JSON"),
        _ => ("json-limit-exceeded", "JSON Limit Exceeded"),
    };
    Denial::new(
        Problem::of_kind(400, kind, title).detail(error.detail(limits)),
        error.reason(),
    )
}

fn schema_violation(reason: &'static str, violations: &[Violation]) -> Denial {
    let errors: Vec<Value> = violations.iter().map(Violation::to_json).collect();
    Denial::new(
        Problem::of_kind(400, "schema-violation", "Request Does Not Match The Schema")
            .detail(format!("{} violation(s) of the API contract", errors.len()))
            .extension("errors", Value::Array(errors)),
        reason,
    )
}
