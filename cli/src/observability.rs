//! A Grafana dashboard and Prometheus alerting rules, generated from the
//! counters the filters define, so they cannot name a metric that does not
//! exist (`palisade observability`, committed under `deploy/observability/`).
//!
//! Names are as Envoy's `/stats/prometheus` shows them with the documented
//! stats tag: `wasmcustom.palisade.jwt.denied.expired` becomes
//! `palisade_jwt_denied{palisade_reason="expired"}`, every other counter
//! `palisade_<filter>_<event>` with its dots as underscores.

use crate::registry;
use palisade_core::fake::FakeHost;
use palisade_core::HostKind;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// A config per filter under which it defines every counter it has (the
/// rate limiter adds `limited.<name>` per limit, left out here: the
/// dashboard shows limits by reason, not by an operator's limit names).
const SAMPLE_CONFIGS: &[(&str, &str)] = &[
    ("errors", "{}"),
    ("headers", "{}"),
    (
        "jwt",
        r#"{"providers": {"p": {"issuer": "https://id.example.com", "local_jwks": {"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "p1",
             "x": "B-_AXQ6cTwaicYgZ4akcOIBrq0wTu3EXPbxpQbVcl1w",
             "y": "QJkvCQ1hEENYXHNeIR3-vp_FMOAJtxnpvTZes9T2PNA"}]}}},
            "requires": {"provider": "p"}}"#,
    ),
    (
        "ratelimit",
        r#"{"limits": [{"name": "all", "key": [], "requests": 1, "per_s": 1}]}"#,
    ),
    (
        "schema",
        r#"{"rules": [{"match": {"prefix": "/"}, "body": {"schema": {}}}]}"#,
    ),
];

/// One series as Prometheus sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    /// `palisade_jwt_denied`.
    pub name: String,
    /// The `palisade_reason` label's value, for denials.
    pub reason: Option<String>,
}

impl Series {
    /// The Prometheus form of a counter's proxy-wasm name
    /// (`palisade.jwt.denied.expired`).
    pub fn from_counter(counter: &str) -> Option<Series> {
        let rest = counter.strip_prefix("palisade.")?;
        let (filter, event) = rest.split_once('.')?;
        for kind in ["denied", "shadow_denied"] {
            if let Some(reason) = event.strip_prefix(kind).and_then(|r| r.strip_prefix('.')) {
                return Some(Series {
                    name: format!("palisade_{filter}_{kind}"),
                    reason: Some(reason.to_string()),
                });
            }
        }
        Some(Series {
            name: format!("palisade_{filter}_{}", event.replace('.', "_")),
            reason: None,
        })
    }
}

/// Every counter the filters define, in their Prometheus form.
pub fn defined() -> Result<BTreeSet<Series>, String> {
    let mut out = BTreeSet::new();
    for f in registry::FILTERS {
        let config = SAMPLE_CONFIGS
            .iter()
            .find(|(n, _)| *n == f.name)
            .map(|(_, c)| *c)
            .ok_or_else(|| format!("no sample config for {}", f.name))?;
        let mut host = FakeHost::configuring(HostKind::Envoy);
        (f.configure)(config.as_bytes(), &mut host)
            .map_err(|e| format!("{}: sample config refused: {e}", f.name))?;
        for name in &host.metric_names {
            if name.starts_with(&format!("palisade.{}.limited.", f.name))
                || name.starts_with(&format!("palisade.{}.shadow_limited.", f.name))
            {
                continue;
            }
            out.extend(Series::from_counter(name));
        }
    }
    Ok(out)
}

/// What the dashboard and the rules refer to; each must be defined.
struct Catalogue {
    defined: BTreeSet<Series>,
    used: BTreeSet<Series>,
}

impl Catalogue {
    /// `name`, checked to exist; the PromQL selector for it.
    fn metric(&mut self, name: &str) -> Result<String, String> {
        let s = Series {
            name: name.to_string(),
            reason: None,
        };
        if !self.defined.contains(&s) {
            return Err(format!("{name} is not a counter any filter defines"));
        }
        self.used.insert(s);
        Ok(name.to_string())
    }

    /// `name{palisade_reason="reason"}`, checked to exist.
    fn reason(&mut self, name: &str, reason: &str) -> Result<String, String> {
        let s = Series {
            name: name.to_string(),
            reason: Some(reason.to_string()),
        };
        if !self.defined.contains(&s) {
            return Err(format!("{name} has no reason {reason}"));
        }
        self.used.insert(s);
        Ok(format!("{name}{{palisade_reason=\"{reason}\"}}"))
    }

    /// A denial counter by reason: every reason of it is in use.
    fn by_reason(&mut self, name: &str) -> Result<String, String> {
        let reasons: Vec<Series> = self
            .defined
            .iter()
            .filter(|s| s.name == name && s.reason.is_some())
            .cloned()
            .collect();
        if reasons.is_empty() {
            return Err(format!("{name} has no reasons"));
        }
        self.used.extend(reasons);
        Ok(name.to_string())
    }
}

/// The controls that refuse requests, each with reasons.
fn denying(defined: &BTreeSet<Series>) -> Vec<&'static str> {
    registry::FILTERS
        .iter()
        .map(|f| f.name)
        .filter(|n| {
            defined
                .iter()
                .any(|s| s.name == format!("palisade_{n}_denied") && s.reason.is_some())
        })
        .collect()
}

/// The generated files, and every series they use.
pub struct Generated {
    pub dashboard: Value,
    pub rules: Value,
    pub used: BTreeSet<Series>,
    /// The names a denial counter has in `/stats/prometheus` when the
    /// `palisade_reason` stats tag is missing (`palisade_jwt_denied_expired`):
    /// a PromQL regex, anchored as PromQL anchors it.
    pub untagged: String,
}

pub fn generate() -> Result<Generated, String> {
    let defined = defined()?;
    let controls = denying(&defined);
    let untagged = format!("palisade_({})_(shadow_)?denied_.+", controls.join("|"));
    // With the tag in place no series may match, or the alert would fire.
    let anchored = regex::Regex::new(&format!("^(?:{untagged})$")).map_err(|e| e.to_string())?;
    if let Some(s) = defined
        .iter()
        .find(|s| s.reason.is_none() && anchored.is_match(&s.name))
    {
        return Err(format!(
            "{} looks like an untagged denial counter: rename it",
            s.name
        ));
    }
    let mut c = Catalogue {
        defined,
        used: BTreeSet::new(),
    };
    let rate = |sel: &str| format!("rate({sel}[$__rate_interval])");
    let mut panels = Vec::new();
    let mut y = 0;
    let mut panel = |title: &str, description: &str, targets: Vec<(String, String)>| {
        let id = panels.len() + 1;
        panels.push(json!({
            "id": id,
            "type": "timeseries",
            "title": title,
            "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": (id - 1) % 2 * 12, "y": y},
            "fieldConfig": {"defaults": {"unit": "reqps"}, "overrides": []},
            "targets": targets.into_iter().enumerate().map(|(i, (expr, legend))| json!({
                "refId": char::from(b'A' + u8::try_from(i % 26).unwrap_or(0)).to_string(),
                "expr": expr,
                "legendFormat": legend,
            })).collect::<Vec<_>>(),
        }));
        if id % 2 == 0 {
            y += 8;
        }
    };
    for kind in ["denied", "shadow_denied"] {
        let mut targets = Vec::new();
        for f in &controls {
            let name = c.by_reason(&format!("palisade_{f}_{kind}"))?;
            targets.push((
                format!("sum by (palisade_reason) ({})", rate(&name)),
                format!("{f} {{{{palisade_reason}}}}"),
            ));
        }
        let (title, description) = if kind == "denied" {
            (
                "Denials by control and reason",
                "Requests each control refused, per second, by reason.",
            )
        } else {
            (
                "Shadow denials (dry run)",
                "Requests a control in dry run would have refused: what turning it on would \
                 refuse.",
            )
        };
        panel(title, description, targets);
    }
    panel(
        "JWKS health",
        "Key set fetches that succeeded and failed, and requests refused or let through \
         because no keys were available.",
        vec![
            (
                rate(&c.metric("palisade_jwt_jwks_fetched")?),
                "fetched".into(),
            ),
            (
                rate(&c.metric("palisade_jwt_jwks_fetch_failed")?),
                "fetch failed".into(),
            ),
            (
                rate(&c.reason("palisade_jwt_denied", "jwks_unavailable")?),
                "denied: keys unavailable".into(),
            ),
            (
                rate(&c.metric("palisade_jwt_jwks_unavailable_allowed")?),
                "allowed unchecked: keys unavailable".into(),
            ),
        ],
    );
    let mut pressure = vec![(
        rate(&c.metric("palisade_ratelimit_allowed")?),
        "allowed".into(),
    )];
    for reason in ["rate_limited", "in_flight_limited", "limiter_unavailable"] {
        let sel = c.reason("palisade_ratelimit_denied", reason)?;
        pressure.push((rate(&sel), format!("denied: {}", reason.replace('_', " "))));
    }
    for event in [
        "in_flight_refused",
        "evicted",
        "contention",
        "store_unavailable",
        "global_error",
        "global_timeout",
    ] {
        pressure.push((
            rate(&c.metric(&format!("palisade_ratelimit_{event}"))?),
            event.replace('_', " "),
        ));
    }
    panel(
        "Rate-limit pressure",
        "Requests admitted and limited, key-table evictions (the table is full: keys are \
         forgotten early), store contention and the global service's errors.",
        pressure,
    );
    let mut masked = Vec::new();
    for event in [
        "masked_status",
        "masked_leak",
        "masked_grpc",
        "masked_undecodable",
        "shadow_masked_status",
        "shadow_masked_leak",
    ] {
        masked.push((
            rate(&c.metric(&format!("palisade_errors_{event}"))?),
            event.replace('_', " "),
        ));
    }
    panel(
        "Masked errors",
        "Upstream errors replaced by a problem+json: by status, by a leak found in the body, \
         gRPC, and bodies that could not be read; shadow: what dry run would mask.",
        masked,
    );
    let dashboard = json!({
        "title": "Palisade",
        "uid": "palisade",
        "description": "Generated by `palisade observability` from the filters' counters. \
                        Needs the stats tag palisade_reason (docs/src/operations/metrics.md).",
        "tags": ["palisade", "envoy", "wasm"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Prometheus",
        }]},
        "panels": panels,
    });

    let mut alerts = vec![
        json!({
            "alert": "PalisadeJwksUnavailable",
            "expr": format!(
                "increase({}[10m]) > 0 and increase({}[10m]) == 0",
                c.metric("palisade_jwt_jwks_fetch_failed")?,
                c.metric("palisade_jwt_jwks_fetched")?
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Palisade cannot fetch a JWKS",
                "description": "Every key set fetch failed for 10 minutes. Valid tokens keep \
                                passing on the last good keys until they are rotated away; a \
                                cold provider refuses tokens (or lets them through with \
                                on_jwks_unavailable: allow).",
            },
        }),
        json!({
            "alert": "PalisadeJwksUnavailableDenials",
            "expr": format!("rate({}[5m]) > 0", c.reason("palisade_jwt_denied", "jwks_unavailable")?),
            "for": "2m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "Palisade refuses tokens: no signing keys",
                "description": "Requests get 401 \"signing keys are not available\": check the \
                                JWKS endpoint and its cluster.",
            },
        }),
        json!({
            "alert": "PalisadeKeyTableEvictions",
            "expr": format!("rate({}[5m]) > 0", c.metric("palisade_ratelimit_evicted")?),
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The rate limiter's key table is full",
                "description": "Keys are evicted before their window ends, so their clients \
                                start again with a full bucket: raise max_keys, or look for a \
                                flood of new keys.",
            },
        }),
    ];
    alerts.push(json!({
        "alert": "PalisadeStatsTagMissing",
        "expr": format!("count({{__name__=~\"{untagged}\"}}) > 0"),
        "for": "15m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Palisade's denial counters have no palisade_reason label",
            "description": "Envoy exports denials with the reason in the name \
                            (palisade_jwt_denied_expired): the bootstrap lacks the stats tag \
                            palisade_reason, so the dashboard's denial panels and the denial \
                            spike alerts see nothing. Add the tag (docs/src/operations/metrics.md).",
        },
    }));
    for f in &controls {
        let name = c.by_reason(&format!("palisade_{f}_denied"))?;
        alerts.push(json!({
            "alert": format!("PalisadeDenialSpike{}", capitalized(f)),
            "expr": format!(
                "sum by (palisade_reason) (rate({name}[5m])) > 1 and sum by (palisade_reason) \
                 (rate({name}[5m])) > 3 * sum by (palisade_reason) (rate({name}[1h] offset 1h))"
            ),
            "for": "10m",
            "labels": {"severity": "warning", "palisade_control": f},
            "annotations": {
                "summary": format!("{f} denials by {{{{ $labels.palisade_reason }}}} tripled"),
                "description": format!(
                    "{f} refuses more than three times as many requests for this reason as \
                     an hour ago (and over one per second): an attack, or a client or \
                     config change."
                ),
            },
        }));
    }
    let rules = json!({"groups": [{"name": "palisade", "rules": alerts}]});
    Ok(Generated {
        dashboard,
        rules,
        used: c.used,
        untagged,
    })
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The two files' text: `grafana-dashboard.json`, `prometheus-rules.yaml`.
pub fn files() -> Result<Vec<(&'static str, String)>, String> {
    let g = generate()?;
    let dashboard = serde_json::to_string_pretty(&g.dashboard).map_err(|e| e.to_string())? + "\n";
    let rules = format!(
        "# Prometheus alerting rules for Palisade, generated by `palisade observability`\n\
         # from the filters' counters. Needs the stats tag palisade_reason (docs/src/operations/metrics.md).\n{}",
        crate::to_yaml(&g.rules)?
    );
    Ok(vec![
        ("grafana-dashboard.json", dashboard),
        ("prometheus-rules.yaml", rules),
    ])
}
