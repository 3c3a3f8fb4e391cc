//! `deploy/observability/`: generated from the filters' counters, committed
//! as generated, every PromQL expression parsed by a PromQL parser, the
//! rules file in Prometheus' rule-file shape. That every series they use
//! shows in the real Envoy's `/stats/prometheus` is in `envoy_chain.rs`.

use palisade_cli::observability;
use serde_json::Value;
use std::path::Path;

fn dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/observability"
    ))
}

#[test]
fn the_committed_files_are_what_the_generator_writes() {
    for (name, text) in observability::files().unwrap() {
        let committed = std::fs::read_to_string(dir().join(name)).unwrap_or_default();
        assert!(
            committed == text,
            "deploy/observability/{name} is not what `palisade observability` writes: run \
             `make observability`"
        );
    }
}

fn parses(expr: &str) {
    // Grafana's $__rate_interval is substituted before Prometheus sees it.
    let expr = expr.replace("$__rate_interval", "5m");
    if let Err(e) = promql_parser::parser::parse(&expr) {
        panic!("{expr}: {e}");
    }
}

#[test]
fn every_dashboard_query_is_promql() {
    let g = observability::generate().unwrap();
    let panels = g.dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Denials by control and reason",
            "Shadow denials (dry run)",
            "JWKS health",
            "Rate-limit pressure",
            "Masked errors"
        ]
    );
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            parses(t["expr"].as_str().unwrap());
        }
    }
}

#[test]
fn the_rules_file_has_prometheus_rule_shape_and_promql() {
    let text = std::fs::read_to_string(dir().join("prometheus-rules.yaml")).unwrap();
    let rules: Value = serde_norway::from_str(&text).unwrap();
    let groups = rules["groups"].as_array().unwrap();
    let mut alerts = Vec::new();
    for g in groups {
        assert!(g["name"].is_string());
        for r in g["rules"].as_array().unwrap() {
            let obj = r.as_object().unwrap();
            for key in obj.keys() {
                assert!(
                    ["alert", "expr", "for", "labels", "annotations"].contains(&key.as_str()),
                    "unknown rule field {key}"
                );
            }
            let name = r["alert"].as_str().unwrap();
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            parses(r["expr"].as_str().unwrap());
            let d = r["for"].as_str().unwrap();
            assert!(
                d.ends_with('m') && d[..d.len() - 1].parse::<u32>().is_ok(),
                "{d}"
            );
            assert!(["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap()));
            assert!(r["annotations"]["summary"].is_string());
            alerts.push(name.to_string());
        }
    }
    for want in [
        "PalisadeJwksUnavailable",
        "PalisadeKeyTableEvictions",
        "PalisadeDenialSpikeJwt",
        "PalisadeDenialSpikeSchema",
    ] {
        assert!(
            alerts.iter().any(|a| a == want),
            "{want} missing: {alerts:?}"
        );
    }
}

#[test]
fn every_series_used_is_one_a_filter_defines_and_every_denial_reason_is_shown() {
    let g = observability::generate().unwrap();
    let defined = observability::defined().unwrap();
    assert!(g.used.is_subset(&defined));
    // Every reason of every control's denials is on the dashboard.
    for s in defined.iter().filter(|s| s.reason.is_some()) {
        assert!(g.used.contains(s), "{s:?} is not on the dashboard");
    }
}

#[test]
fn counter_names_become_prometheus_series_as_the_stats_tag_makes_them() {
    let s = observability::Series::from_counter("palisade.jwt.denied.expired").unwrap();
    assert_eq!(s.name, "palisade_jwt_denied");
    assert_eq!(s.reason.as_deref(), Some("expired"));
    let s = observability::Series::from_counter("palisade.schema.shadow_denied.too_deep").unwrap();
    assert_eq!(s.name, "palisade_schema_shadow_denied");
    let s = observability::Series::from_counter("palisade.errors.masked.status").unwrap();
    assert_eq!(s.name, "palisade_errors_masked_status");
    assert_eq!(s.reason, None);
    assert!(observability::Series::from_counter("envoy.http.rq").is_none());
}
