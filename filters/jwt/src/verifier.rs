//! One token against one provider: structure, header, key, signature, then
//! the registered claims. The token's `alg` never chooses the verifier: it
//! must be on the provider's allow-list *and* allowed by the key found.
//!
//! `jwt-compact` parses the compact form and checks signatures; the claims
//! are read as a plain JSON object so any claim (nested, custom) can be
//! matched or forwarded, and the time claims are checked against the host
//! clock, never `std::time`.

use crate::jwks::{Alg, AlgSet, KeySet, Lookup};
use crate::signature::{self, CheckedBy};
use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_compact::UntrustedToken;
use palisade_core::Host;
use serde_json::{Map, Value};

/// What a provider checks besides the signature.
#[derive(Debug, Clone)]
pub struct Policy {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub allowed: AlgSet,
    pub clock_skew_s: u64,
    pub max_token_bytes: usize,
    pub max_lifetime_s: Option<u64>,
}

/// A token whose signature and claims were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Map<String, Value>,
    /// The claims as signed (the decoded payload), published as is: a cache
    /// hit never serializes them again.
    pub claims_json: Vec<u8>,
    pub exp: u64,
}

/// Why a token was refused. `detail` is short and never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Malformed(&'static str),
    Signature(&'static str),
    /// The set has no key with this `kid` (a rotation may be under way).
    UnknownKid(String),
    Expired,
    NotYetValid,
    Lifetime,
    Issuer,
    Audience,
}

impl Failure {
    /// Metric and log reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Malformed(_) => "malformed",
            Failure::Signature(_) | Failure::UnknownKid(_) => "signature",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::Lifetime => "lifetime",
            Failure::Issuer => "issuer",
            Failure::Audience => "audience",
        }
    }

    /// The problem's `detail` and the challenge's `error_description`.
    pub fn detail(&self) -> &'static str {
        match self {
            Failure::Malformed(d) | Failure::Signature(d) => d,
            Failure::UnknownKid(_) => "the token's key id is unknown",
            Failure::Expired => "the token has expired",
            Failure::NotYetValid => "the token is not valid yet",
            Failure::Lifetime => "the token's lifetime is longer than allowed",
            Failure::Issuer => "the token's issuer is not accepted",
            Failure::Audience => "the token's audience is not accepted",
        }
    }
}

/// A token split and decoded, not yet trusted.
pub struct Parsed<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    claims_json: Vec<u8>,
    signed: &'t [u8],
    signature: Vec<u8>,
}

/// Header members that point at keys the token chooses itself.
const KEY_REFERENCES: [&str; 4] = ["jwk", "x5c", "jku", "x5u"];

/// Structure and header checks, before any key is looked at.
pub fn parse<'t>(token: &'t [u8], policy: &Policy) -> Result<Parsed<'t>, Failure> {
    if token.is_empty() {
        return Err(Failure::Malformed("the token is empty"));
    }
    if token.len() > policy.max_token_bytes {
        return Err(Failure::Malformed("the token is too large"));
    }
    let text = std::str::from_utf8(token)
        .map_err(|_| Failure::Malformed("the token is not a compact JWS"))?;
    if text.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(Failure::Malformed("the token is not a compact JWS"));
    }
    let untrusted: UntrustedToken<'_, Map<String, Value>> = UntrustedToken::try_from(text)
        .map_err(|_| Failure::Malformed("the token's header or encoding is invalid"))?;
    let header = untrusted.header();
    if header.key_set_url.is_some()
        || header.certificate_url.is_some()
        || KEY_REFERENCES
            .iter()
            .any(|k| header.other_fields.contains_key(*k))
    {
        return Err(Failure::Signature(
            "keys referenced by the token itself are not accepted",
        ));
    }
    if header.other_fields.contains_key("crit") {
        return Err(Failure::Malformed(
            "critical header extensions are not supported",
        ));
    }
    let alg: Alg = untrusted
        .algorithm()
        .parse()
        .map_err(|_| Failure::Signature("the token's algorithm is not accepted"))?;
    if !policy.allowed.contains(alg) {
        return Err(Failure::Signature("the token's algorithm is not accepted"));
    }
    let (signed, _) = text
        .rsplit_once('.')
        .ok_or(Failure::Malformed("the token is not a compact JWS"))?;
    let payload = signed
        .split_once('.')
        .map(|(_, p)| p)
        .ok_or(Failure::Malformed("the token is not a compact JWS"))?;
    let claims_json = Base64UrlUnpadded::decode_vec(payload)
        .map_err(|_| Failure::Malformed("the token's claims are not base64url"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&claims_json)
        .map_err(|_| Failure::Malformed("the token's claims are not a JSON object"))?;
    Ok(Parsed {
        alg,
        kid: header.key_id.clone(),
        claims,
        claims_json,
        signed: signed.as_bytes(),
        signature: untrusted.signature_bytes().to_vec(),
    })
}

/// Claims, then key and signature. `checked` learns who checked the signature.
pub fn verify(
    parsed: Parsed<'_>,
    keys: &KeySet,
    policy: &Policy,
    now_s: u64,
    host: &mut dyn Host,
    use_host: bool,
    checked: &mut Option<CheckedBy>,
) -> Result<Verified, Failure> {
    // Claims first: they are cheap, and a token that would be refused
    // anyway (expired, another issuer or audience) never costs a signature
    // check. Nothing is trusted until the signature below verifies.
    let verified = check_claims(parsed.claims, parsed.claims_json, policy, now_s)?;
    let candidates = match keys.lookup(parsed.alg, parsed.kid.as_deref()) {
        Lookup::Found(k) => k,
        Lookup::UnknownKid => {
            return Err(Failure::UnknownKid(parsed.kid.clone().unwrap_or_default()))
        }
        Lookup::NoKeyForAlg => {
            return Err(Failure::Signature("no key accepts the token's algorithm"))
        }
    };
    let mut valid = false;
    for key in candidates {
        let (ok, by) = signature::verify(
            host,
            use_host,
            parsed.alg,
            key,
            parsed.signed,
            &parsed.signature,
        );
        *checked = Some(by);
        if ok {
            valid = true;
            break;
        }
    }
    if !valid {
        return Err(Failure::Signature("the token's signature does not verify"));
    }
    Ok(verified)
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional; negative reads as 0.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(match n.as_u64() {
            Some(v) => v,
            None => n.as_f64().map(|f| f.max(0.0) as u64).unwrap_or(0),
        })),
        Some(_) => Err(Failure::Malformed("a time claim is not a number")),
    }
}

/// `exp` (required), `nbf`, `iat`, `iss`, `aud`, lifetime.
pub fn check_claims(
    claims: Map<String, Value>,
    claims_json: Vec<u8>,
    policy: &Policy,
    now_s: u64,
) -> Result<Verified, Failure> {
    let skew = policy.clock_skew_s;
    let exp =
        numeric_date(&claims, "exp")?.ok_or(Failure::Malformed("the token has no expiry (exp)"))?;
    if now_s > exp.saturating_add(skew) {
        return Err(Failure::Expired);
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if now_s.saturating_add(skew) < nbf {
            return Err(Failure::NotYetValid);
        }
    }
    let iat = numeric_date(&claims, "iat")?;
    if let Some(iat) = iat {
        if now_s.saturating_add(skew) < iat {
            return Err(Failure::NotYetValid);
        }
    }
    if let Some(max) = policy.max_lifetime_s {
        match iat {
            Some(iat) if exp.saturating_sub(iat) <= max => {}
            _ => return Err(Failure::Lifetime),
        }
    }
    if let Some(issuer) = &policy.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(Failure::Issuer);
        }
    }
    if !policy.audiences.is_empty() {
        let accepted = |a: &Value| {
            a.as_str()
                .is_some_and(|a| policy.audiences.iter().any(|w| w == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(accepted),
            Some(single) => accepted(single),
            None => false,
        };
        if !ok {
            return Err(Failure::Audience);
        }
    }
    Ok(Verified {
        claims,
        claims_json,
        exp,
    })
}
