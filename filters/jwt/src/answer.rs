//! Denials as RFC 6750 asks (`WWW-Authenticate: Bearer realm=…, error=…`)
//! inside the core's problem+json. The `detail` is a short constant: never
//! the token, never a claim value.

use crate::config::OnJwksUnavailable;
use crate::requirement::Unmet;
use palisade_core::problem::Problem;
use palisade_core::Denial;

/// Every reason a request can be denied for (metric names `denied.<reason>`).
pub const REASONS: [&str; 17] = [
    "missing",
    "ambiguous",
    "malformed",
    "signature",
    "expired",
    "not_yet_valid",
    "lifetime",
    "issuer",
    "audience",
    "scope",
    "claim",
    "jwks_unavailable",
    "unmatched",
    "repeated_header",
    "peer_missing",
    "peer_mismatch",
    "client_ip_not_allowed",
];

/// `Bearer realm="…"` plus RFC 6750 parameters.
fn challenge(realm: &str, params: &[(&str, &str)]) -> String {
    let mut out = format!("Bearer realm=\"{realm}\"");
    for (k, v) in params {
        out.push_str(&format!(", {k}=\"{v}\""));
    }
    out
}

pub fn missing(realm: &str) -> Denial {
    Denial::new(
        Problem::of_kind(401, "missing-token", "Authentication required")
            .detail("this route requires a bearer token"),
        "missing",
    )
    .header("www-authenticate", challenge(realm, &[]))
}

pub fn invalid(realm: &str, reason: &'static str, detail: &'static str) -> Denial {
    Denial::new(
        Problem::of_kind(401, "invalid-token", "Invalid token").detail(detail),
        reason,
    )
    .header(
        "www-authenticate",
        challenge(
            realm,
            &[("error", "invalid_token"), ("error_description", detail)],
        ),
    )
}

pub fn ambiguous(realm: &str) -> Denial {
    let detail = "the request carries more than one token";
    Denial::new(
        Problem::of_kind(400, "ambiguous-token", "Ambiguous credentials").detail(detail),
        "ambiguous",
    )
    .header(
        "www-authenticate",
        challenge(
            realm,
            &[("error", "invalid_request"), ("error_description", detail)],
        ),
    )
}

pub fn insufficient(realm: &str, scopes: &[String], claim: bool) -> Denial {
    let (reason, detail) = if claim {
        ("claim", "the token lacks a claim this route requires")
    } else {
        ("scope", "the token lacks a scope this route requires")
    };
    let joined = scopes.join(" ");
    let mut params = vec![("error", "insufficient_scope")];
    if !joined.is_empty() {
        params.push(("scope", joined.as_str()));
    }
    Denial::new(
        Problem::of_kind(403, "insufficient-scope", "Insufficient scope").detail(detail),
        reason,
    )
    .header("www-authenticate", challenge(realm, &params))
}

/// No good key set yet: 401 (`deny`) or 503 (`unavailable`).
pub fn jwks_unavailable(realm: &str, policy: OnJwksUnavailable) -> Denial {
    let detail = "the signing keys are not available yet";
    match policy {
        OnJwksUnavailable::Unavailable => Denial::new(
            Problem::of_kind(503, "jwks-unavailable", "Signing keys unavailable").detail(detail),
            "jwks_unavailable",
        )
        .header("retry-after", "5"),
        _ => invalid(realm, "jwks_unavailable", detail),
    }
}

/// A claim header sent more than once, on a host that strips by
/// overwriting (Kong): only the first copy could be replaced, and the
/// others would reach the upstream as a forged identity.
pub fn repeated_header() -> Denial {
    Denial::new(
        Problem::of_kind(400, "repeated-header", "Repeated request header")
            .detail("an identity header this proxy sets was sent more than once"),
        "repeated_header",
    )
}

pub fn unmatched() -> Denial {
    Denial::new(
        Problem::of_kind(403, "no-matching-rule", "Forbidden")
            .detail("no authentication rule covers this route"),
        "unmatched",
    )
}

/// A peer the route does not admit. Missing and wrong certificates are
/// told apart by `reason` (logs, counters) only: the body is the same, so
/// a client learns nothing about which identities would pass.
pub fn peer(reason: &'static str) -> Denial {
    Denial::new(
        Problem::of_kind(403, "peer-not-allowed", "Forbidden")
            .detail("the calling workload is not allowed on this route"),
        reason,
    )
}

pub fn client_ip_not_allowed() -> Denial {
    Denial::new(
        Problem::of_kind(403, "client-ip-not-allowed", "Forbidden")
            .detail("the client address is not allowed on this route"),
        "client_ip_not_allowed",
    )
}

/// The answer for an unmet requirement.
pub fn for_unmet(
    unmet: &Unmet,
    realm: &str,
    on_unavailable: &dyn Fn(usize) -> OnJwksUnavailable,
) -> Denial {
    match unmet {
        Unmet::Missing => missing(realm),
        Unmet::Invalid(f) => invalid(realm, f.reason(), f.detail()),
        Unmet::Insufficient { scopes, claim } => insufficient(realm, scopes, *claim),
        Unmet::Unavailable(p) => jwks_unavailable(realm, on_unavailable(*p)),
        Unmet::PeerMissing => peer("peer_missing"),
        Unmet::PeerMismatch => peer("peer_mismatch"),
        Unmet::ClientIpNotAllowed => client_ip_not_allowed(),
    }
}
