//! Kong's `<filter>.meta.json`, written beside each module in `dist/`:
//! `palisade.meta.json` for `palisade.wasm` (whose config is a chain file,
//! so its schema is the chain's, [`schema::chain_schema`]), and
//! `palisade_<name>.meta.json` for each control's own module.
//!
//! `config_schema` lets Kong take the config as JSON (not a string) and
//! validate it when it is written, instead of answering 500 at request time
//! when `on_configure` refuses it. `metrics.label_patterns` lets Kong's
//! Prometheus plugin (3.9, `wasm_metrics: true`) turn the reason encoded in a
//! counter's name into labels.

use crate::registry::Filter;
use crate::schema;
use serde_json::{json, Value};

/// Kong's Prometheus plugin reads counters as
/// `pw.<filter>.palisade.<name>.<event>[.<reason>]` and, for each pattern
/// (a Lua pattern), takes the second capture as the label's value and cuts
/// the metric name where the match starts. Both patterns start at the dot
/// before the decision, so `...palisade.headers.denied.too_many_headers`
/// becomes `pw_<filter>_palisade_headers{decision="denied",reason="too_many_headers"}`
/// and shadow (dry-run) denials get `decision="shadow_denied"`. Counters
/// without a reason keep their whole name.
///
/// Kong 3.9 finds a filter's metadata from the counter name with the Lua
/// pattern `pw.(%a+)%.`: letters only. Labels apply when the module is
/// installed under a letters-only name (`palisadeheaders.wasm` with
/// `palisadeheaders.meta.json`); under `palisade_headers` the counters are
/// exported with the reason still in the name.
pub fn label_patterns() -> Value {
    json!([
        {"label": "decision", "pattern": "(%.([%a_]*denied)%.[%w_]+)$"},
        {"label": "reason", "pattern": "(%.[%a_]*denied%.([%w_]+))$"},
    ])
}

/// The whole `meta.json`.
pub fn meta_json(filter: &Filter) -> Result<Value, String> {
    let config_schema =
        schema::draft4(&(filter.schema)()).map_err(|e| format!("{}: {e}", filter.name))?;
    Ok(json!({
        "config_schema": config_schema,
        "metrics": {"label_patterns": label_patterns()},
    }))
}

/// `palisade.meta.json`: the chain file's schema, every control's config
/// schema inside, as draft 4. Kong's metric lookup (`pw.(%a+)%.`) finds
/// `palisade`, a letters-only name, so the label patterns apply as installed.
pub fn module_meta_json() -> Result<Value, String> {
    let config_schema =
        schema::draft4(&schema::chain_schema()).map_err(|e| format!("palisade: {e}"))?;
    Ok(json!({
        "config_schema": config_schema,
        "metrics": {"label_patterns": label_patterns()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns' effect, checked with the equivalent regexes (Lua's `%a`,
    /// `%w` and `%.` are `[A-Za-z]`, `[A-Za-z0-9]` and `\.`).
    #[test]
    fn label_patterns_split_decision_and_reason() {
        let decision = regex::Regex::new(r"(\.([A-Za-z_]*denied)\.[A-Za-z0-9_]+)$").unwrap();
        let reason = regex::Regex::new(r"(\.[A-Za-z_]*denied\.([A-Za-z0-9_]+))$").unwrap();
        let key = "pw.palisadeheaders.palisade.headers.shadow_denied.too_many_headers";
        let d = decision.captures(key).unwrap();
        let r = reason.captures(key).unwrap();
        assert_eq!(&d[2], "shadow_denied");
        assert_eq!(&r[2], "too_many_headers");
        let cut = d.get(0).unwrap().start();
        assert_eq!(cut, r.get(0).unwrap().start());
        assert_eq!(&key[..cut], "pw.palisadeheaders.palisade.headers");
        assert!(decision
            .captures("pw.palisadeheaders.palisade.headers.request_headers_removed")
            .is_none());
        // The patterns in meta.json are these, in Lua syntax.
        let lua = label_patterns().to_string();
        assert!(lua.contains(r"(%.([%a_]*denied)%.[%w_]+)$"));
        assert!(lua.contains(r"(%.[%a_]*denied%.([%w_]+))$"));
    }
}
