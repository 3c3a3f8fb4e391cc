//! Response hardening: drop headers that advertise the stack, add browser
//! security headers the upstream did not set, expose the correlation id.
//!
//! Planned from the one header list fetched per response, then applied, so
//! dry-run can count the very same plan without applying it.

use crate::policy::{is_protected_response_header, ResponsePolicy};
use palisade_core::host::Headers;
use palisade_core::request_id;

/// What the filter would do to one response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Names to remove, sorted, each once.
    pub remove: Vec<&'a str>,
    /// Header fields those names account for.
    pub removed_fields: usize,
    pub add: Vec<(&'a str, &'a str)>,
}

/// Removals first, then additions: a name listed in both `remove` and
/// `add_if_absent` therefore always carries the configured value.
pub fn plan<'a>(
    policy: &'a ResponsePolicy,
    headers: &'a Headers,
    request_id: Option<&'a str>,
) -> Plan<'a> {
    let mut plan = Plan::default();
    if !policy.remove.is_empty() {
        for (name, _) in headers {
            if !is_protected_response_header(name) && policy.remove.matches(name) {
                plan.removed_fields += 1;
                plan.remove.push(name.as_str());
            }
        }
        if plan.remove.len() > 1 {
            plan.remove.sort_unstable();
            plan.remove.dedup();
        }
    }
    let present =
        |wanted: &str| headers.iter().any(|(n, _)| n == wanted) && !plan.remove.contains(&wanted);
    let mut add: Vec<(&str, &str)> = Vec::with_capacity(policy.add_if_absent.len() + 1);
    for (name, value) in &policy.add_if_absent {
        if !present(name) {
            add.push((name.as_str(), value.as_str()));
        }
    }
    if policy.expose_request_id {
        if let Some(id) = request_id {
            let listed = add.iter().any(|(n, _)| *n == request_id::HEADER);
            if !listed && !present(request_id::HEADER) {
                add.push((request_id::HEADER, id));
            }
        }
    }
    plan.add = add;
    plan
}
