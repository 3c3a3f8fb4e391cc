//! gRPC errors: masked in place, never turned into HTTP problems.
//!
//! A gRPC client reads `grpc-status` and `grpc-message` (in the headers of a
//! trailers-only response, else in the trailers); replacing the response
//! would break it. So a gRPC error keeps its status and framing, and only its
//! free-text parts are made generic: `grpc-message` becomes the code's
//! canonical name and `grpc-status-details-bin` (a `google.rpc.Status` whose
//! details may carry a `DebugInfo` stack trace) is dropped: clients then rely
//! on `grpc-status` and `grpc-message`, as for any error without details.

/// Canonical names, indexed by code.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub const STATUS: &str = "grpc-status";
pub const MESSAGE: &str = "grpc-message";
pub const DETAILS: &str = "grpc-status-details-bin";

/// `application/grpc`, `application/grpc+proto`, `application/grpc-web`…
pub fn is_grpc_content_type(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| {
        v.len() >= 16
            && v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
    })
}

/// Parses a `grpc-status` value; `None` when malformed.
pub fn parse_status(raw: &[u8]) -> Option<u32> {
    std::str::from_utf8(raw).ok()?.trim().parse().ok()
}

/// Envoy's `Grpc::Utility::grpcToHttpStatus`, so the same statuses are masked
/// for gRPC as for the HTTP responses an operator configured.
pub fn http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        2 => 500,
        3 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 400,
        10 => 409,
        11 => 400,
        12 => 501,
        13 => 500,
        14 => 503,
        15 => 500,
        16 => 401,
        _ => 500,
    }
}

/// The code's canonical name; unknown codes read as `UNKNOWN`.
pub fn canonical_name(code: u32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Decodes a percent-encoded `grpc-message` for leak scanning.
pub fn decode_message(raw: &[u8]) -> Vec<u8> {
    palisade_core::path::percent_decode_bytes(raw)
}
