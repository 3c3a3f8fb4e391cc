//! Claims addressed by name or dotted path, scopes, and `claims` checks.

use crate::config::ClaimCheck;
use serde_json::{Map, Value};

/// A claim by exact name first (`https://example.com/roles` has dots), then
/// by dotted path through nested objects (`tenant.id`).
pub fn claim<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Scopes granted: `scope` (space-separated string, RFC 8693) or `scp`
/// (array, or a string as some providers send).
pub fn scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_ascii_whitespace()),
            Some(Value::Array(list)) => out.extend(list.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// The required scopes the token lacks.
pub fn missing_scopes<'r>(claims: &Map<String, Value>, required: &'r [String]) -> Vec<&'r str> {
    if required.is_empty() {
        return Vec::new();
    }
    let granted = scopes(claims);
    required
        .iter()
        .filter(|r| !granted.contains(&r.as_str()))
        .map(String::as_str)
        .collect()
}

/// `equals`: JSON equality. `contains`: an array holding the value, or a
/// space-separated string holding it as a word.
pub fn check(claims: &Map<String, Value>, check: &ClaimCheck) -> bool {
    let Some(value) = claim(claims, &check.claim) else {
        return false;
    };
    if let Some(expected) = &check.equals {
        return value == expected;
    }
    if let Some(expected) = &check.contains {
        return match value {
            Value::Array(list) => list.contains(expected),
            Value::String(s) => expected
                .as_str()
                .is_some_and(|e| s.split_ascii_whitespace().any(|w| w == e)),
            _ => false,
        };
    }
    false
}

/// A claim as a header value: strings as they are, other JSON compact;
/// `None` if it could not travel in a header (control characters, too long).
pub fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    let ok = text.len() <= 4096 && text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    ok.then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn paths_scopes_and_checks() {
        let c = claims(json!({
            "sub": "u1", "tenant": {"id": 7}, "https://x.io/role": "r",
            "scope": "read write", "scp": ["admin"], "roles": ["ops"], "email_verified": true
        }));
        assert_eq!(claim(&c, "tenant.id"), Some(&json!(7)));
        assert_eq!(claim(&c, "https://x.io/role"), Some(&json!("r")));
        assert_eq!(claim(&c, "tenant.nope"), None);
        assert!(missing_scopes(&c, &["read".into(), "admin".into()]).is_empty());
        assert_eq!(missing_scopes(&c, &["delete".into()]), vec!["delete"]);
        let eq = ClaimCheck {
            claim: "email_verified".into(),
            equals: Some(json!(true)),
            contains: None,
        };
        assert!(check(&c, &eq));
        let has = ClaimCheck {
            claim: "roles".into(),
            equals: None,
            contains: Some(json!("ops")),
        };
        assert!(check(&c, &has));
        let word = ClaimCheck {
            claim: "scope".into(),
            equals: None,
            contains: Some(json!("writ")),
        };
        assert!(!check(&c, &word));
        assert_eq!(header_value(&json!(7)).as_deref(), Some("7"));
        assert_eq!(header_value(&json!("a\r\nb")), None);
    }
}
