//! gRPC errors: masked in place, never turned into HTTP problems.
//!
//! A gRPC client reads `grpc-status` and `grpc-message` (in the headers of a
//! trailers-only response, else in the trailers); replacing the response
//! would break it. So a gRPC error keeps its status and framing, and only its
//! free-text parts are made generic: `grpc-message` becomes the code's
//! canonical name and `grpc-status-details-bin` (a `google.rpc.Status` whose
//! details may carry a `DebugInfo` stack trace) becomes a bare Status with
//! the same code and message.

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
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                raw.get(i + 1).and_then(|c| hex(*c)),
                raw.get(i + 2).and_then(|c| hex(*c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `google.rpc.Status { code, message }` without details, base64 (unpadded,
/// as gRPC writes `-bin` values).
pub fn bare_status_details(code: u32) -> String {
    let message = canonical_name(code).as_bytes();
    let mut proto = vec![0x08];
    let mut c = code;
    loop {
        let byte = (c & 0x7f) as u8;
        c >>= 7;
        if c == 0 {
            proto.push(byte);
            break;
        }
        proto.push(byte | 0x80);
    }
    proto.push(0x12);
    // Canonical names are shorter than 128 bytes: a one-byte varint length.
    proto.push(message.len() as u8);
    proto.extend_from_slice(message);
    base64_unpadded(&proto)
}

fn base64_unpadded(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 0x3f) as usize;
            out.push(char::from(ALPHABET[idx]));
        }
    }
    out
}
