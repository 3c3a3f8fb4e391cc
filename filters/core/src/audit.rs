//! The audit trail: one decision record per request.
//!
//! Each control adds its verdict to the request's record as it decides, and
//! the record says who did what: the route, every control's verdict and
//! reason, the subject, client id and scopes of a verified token, and the
//! labels of the rate-limit keys (never their values). It never holds a
//! token, a header value, a body or anything else the client wrote, except
//! the verified token's `sub` and client id, which are the point of an
//! audit trail.
//!
//! Where operators read it:
//! - on Envoy, as filter state `wasm.palisade_audit`, which an access log
//!   prints with `%FILTER_STATE(wasm.palisade_audit:PLAIN)%`;
//! - as one log line `palisade.audit {…}` per denial, and per allowed
//!   request where a control asks for `audit: all` (written when the stream
//!   ends, so the record is complete).
//!
//! Separate modules share the record through the filter state; on Kong,
//! which keeps no such state between filters, each module's record holds
//! its own verdict (the one-VM `palisade.wasm` keeps one record there too).

use crate::host::{Host, Level};
use crate::RequestContext;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The property (Envoy filter state `wasm.palisade_audit`) holding the record.
pub const PROPERTY: &str = "palisade_audit";

/// Where the jwt control leaves the claims it verified (a JSON object):
/// a record takes the caller's identity from there, so recording costs
/// the jwt control nothing on requests it lets through.
pub const CLAIMS_PROPERTY: &str = "palisade_jwt_claims";

/// Prefix of every audit log line.
pub const LOG_PREFIX: &str = "palisade.audit ";

/// Longest identity value kept (`sub`, client id, one scope): a record
/// stays small whatever a token carries.
pub const MAX_VALUE_LEN: usize = 256;

/// Most scopes kept in a record.
pub const MAX_SCOPES: usize = 32;

/// What a control does with the audit trail (its `audit` config field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    /// Neither the record nor its log lines.
    Off,
    /// A record and a log line for each request a control denies (or
    /// would deny, in dry run) or masks: allowed requests cost nothing.
    #[default]
    Denials,
    /// A record for every request, and a log line for each one let
    /// through as well.
    All,
}

/// One control's verdict on the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub control: String,
    /// `allow`, `deny`, `shadow-deny` (dry run), `masked`, `shadow-masked`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The request's record, as the filter state and log lines carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default)]
    pub decisions: Vec<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The calling workload's SPIFFE id, when a `peer` requirement read it
    /// (its verified client certificate, or a trusted hop's XFCC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Each rate limit that counted the request: `<limit>:<key part labels>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<String>,
}

/// Who the verified token says the caller is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

/// What a control adds besides its verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub identity: Option<Identity>,
    /// The workload's SPIFFE id (see [`Record::peer`]).
    pub peer: Option<String>,
    pub rate_limits: Vec<String>,
}

impl Identity {
    /// From verified claims: `sub`; the client id from `azp` (OpenID
    /// Connect), else `client_id` (RFC 9068); scopes from `scope` (a
    /// space-separated string) or `scp` (a list or a string).
    pub fn from_claims(claims: &serde_json::Value) -> Identity {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let scopes = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(serde_json::Value::String(s)) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Identity {
            subject: text("sub"),
            client_id: text("azp").or_else(|| text("client_id")),
            scopes,
        }
    }
}

impl Record {
    /// Whether a control enforced a denial: that request's line is already
    /// written, at the denial.
    pub fn denied(&self) -> bool {
        self.decisions.iter().any(|d| d.verdict == "deny")
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record a proxy holds, if any (a garbled one starts afresh).
    pub fn read(host: &dyn Host) -> Option<Record> {
        host.property(&[PROPERTY])
            .and_then(|raw| serde_json::from_slice(&raw).ok())
    }

    fn add(&mut self, decision: Decision, facts: Facts) {
        self.decisions.push(decision);
        if let Some(id) = facts.identity {
            self.subject = id.subject.map(clip).or(self.subject.take());
            self.client_id = id.client_id.map(clip).or(self.client_id.take());
            if !id.scopes.is_empty() {
                self.scopes = id.scopes.into_iter().take(MAX_SCOPES).map(clip).collect();
            }
        }
        if let Some(peer) = facts.peer {
            self.peer = Some(clip(peer));
        }
        for label in facts.rate_limits {
            if !self.rate_limits.contains(&label) {
                self.rate_limits.push(label);
            }
        }
    }

    /// The log line for this record.
    pub fn log(&self, host: &dyn Host) {
        host.log(
            Level::Info,
            &format!("{LOG_PREFIX}{}", String::from_utf8_lossy(&self.to_json())),
        );
    }
}

/// A value cut to [`MAX_VALUE_LEN`] bytes on a character boundary, with
/// control characters dropped: a record is one log line.
fn clip(value: String) -> String {
    let mut out: String = value.chars().filter(|c| !c.is_control()).collect();
    if out.len() > MAX_VALUE_LEN {
        let mut end = MAX_VALUE_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Adds `ctx`'s control's verdict to the request's record and stores it;
/// returns the record (for the denial's log line). Nothing with
/// [`AuditMode::Off`], and an `allow` only with [`AuditMode::All`].
pub fn record(
    host: &mut dyn Host,
    ctx: &RequestContext,
    verdict: &str,
    reason: Option<&str>,
    facts: Facts,
) -> Option<Record> {
    let wanted = match ctx.audit {
        AuditMode::Off => false,
        AuditMode::Denials => verdict != "allow",
        AuditMode::All => true,
    };
    if !wanted {
        return None;
    }
    let mut rec = Record::read(host).unwrap_or_else(|| Record {
        request_id: ctx.request_id.clone(),
        route: host.route_name(),
        ..Record::default()
    });
    if rec.request_id.is_none() {
        rec.request_id = ctx.request_id.clone();
    }
    let facts = match facts.identity {
        None if rec.subject.is_none() && rec.client_id.is_none() => Facts {
            identity: host
                .property(&[CLAIMS_PROPERTY])
                .and_then(|raw| serde_json::from_slice(&raw).ok())
                .map(|claims| Identity::from_claims(&claims)),
            ..facts
        },
        _ => facts,
    };
    rec.add(
        Decision {
            control: ctx.filter.to_string(),
            verdict: verdict.to_string(),
            reason: reason.map(str::to_string),
        },
        facts,
    );
    host.set_property(&[PROPERTY], &rec.to_json());
    Some(rec)
}

/// At the end of a stream, with `audit: all`: the line of a request that
/// was let through, written by the control that decided last (so separate
/// modules write it once). `controls` are the names this module runs.
pub fn finish(host: &dyn Host, controls: &[&str]) {
    let Some(rec) = Record::read(host) else {
        return;
    };
    let last = rec.decisions.last().map(|d| d.control.as_str());
    if !rec.denied() && last.is_some_and(|c| controls.contains(&c)) {
        rec.log(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_drops_control_characters_and_cuts_on_a_character_boundary() {
        assert_eq!(clip("a\nb\u{7}c".into()), "abc");
        let long = "é".repeat(200);
        let cut = clip(long);
        assert!(cut.len() <= MAX_VALUE_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn identity_facts_fill_the_record_and_labels_are_kept_once() {
        let mut rec = Record::default();
        let facts = || Facts {
            identity: Some(Identity {
                subject: Some("alice".into()),
                client_id: None,
                scopes: vec!["a".into(); MAX_SCOPES + 5],
            }),
            rate_limits: vec!["per-user:claim.sub".into()],
            peer: None,
        };
        let d = |v: &str| Decision {
            control: "x".into(),
            verdict: v.into(),
            reason: None,
        };
        rec.add(d("allow"), facts());
        rec.add(d("allow"), facts());
        assert_eq!(rec.subject.as_deref(), Some("alice"));
        assert_eq!(rec.scopes.len(), MAX_SCOPES);
        assert_eq!(rec.rate_limits, vec!["per-user:claim.sub".to_string()]);
        assert!(!rec.denied());
        rec.add(d("deny"), Facts::default());
        assert!(rec.denied());
        assert_eq!(rec.subject.as_deref(), Some("alice"));
    }
}
