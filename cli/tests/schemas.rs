//! The draft 4 schemas Kong's meta.json carries: valid draft 4, accepting
//! every example config in the repository, and refusing what the filters
//! refuse wherever a schema can say it (unknown fields, wrong types,
//! unknown enum values, ranges, patterns).

use palisade_cli::{chain, meta, registry, schema};
use palisade_core::HostKind;
use palisade_tests::repo_root;
use serde_json::{json, Value};
use std::path::Path;

fn draft4(filter: &str) -> Value {
    let f = registry::find(filter).unwrap();
    schema::draft4(&(f.schema)()).unwrap()
}

fn validator(filter: &str) -> jsonschema::Validator {
    jsonschema::draft4::new(&draft4(filter)).unwrap()
}

/// `(filter, config, where it came from, host)`.
type Example = (String, Value, String, HostKind);
/// A chain config and where it came from.
type ChainExample = (Value, String);

/// Where a rendered file names a filter: a control's configs as they are;
/// `palisade` (palisade.wasm), the chain config's controls, each with its
/// config. Every `palisade` config is also kept in `chains`.
fn push_rendered(
    found: &mut Vec<Example>,
    chains: &mut Vec<ChainExample>,
    name: &str,
    config: Value,
    from: &str,
    host: HostKind,
) {
    if name != "palisade" {
        found.push((name.into(), config, from.into(), host));
        return;
    }
    let c = chain::load_json(config.to_string().as_bytes())
        .unwrap_or_else(|p| panic!("{from}: palisade's chain config: {p:?}"));
    for r in &c.routes {
        for u in &r.filters {
            found.push((u.filter.name.into(), u.config.clone(), from.into(), host));
        }
    }
    chains.push((config, from.into()));
}

/// `(filter, config, where it came from, host)` for every example config.
fn examples() -> Vec<Example> {
    examples_and_chains().0
}

/// Every example config, and every chain config (`palisade.wasm`'s, chain
/// files included) with where it came from.
fn examples_and_chains() -> (Vec<Example>, Vec<ChainExample>) {
    let root = repo_root();
    let mut found = Vec::new();
    let mut chains = Vec::new();
    let json_file = |p: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    for f in registry::FILTERS {
        let dir = root.join("filters").join(f.name).join("examples");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    found.push((
                        f.name.to_string(),
                        json_file(&e.path()),
                        e.path().display().to_string(),
                        HostKind::Envoy,
                    ));
                }
            }
        }
        let demo = root.join("envoy/demo").join(format!("{}.json", f.name));
        if demo.is_file() {
            found.push((
                f.name.to_string(),
                json_file(&demo),
                demo.display().to_string(),
                HostKind::Envoy,
            ));
        }
    }
    let yaml_docs = |path: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        text.split("\n---\n")
            .filter_map(|d| serde_norway::from_str::<Value>(d).ok())
            .filter(|d| d.is_object())
            .collect()
    };
    for file in [
        "istio/wasmplugins.yaml",
        "istio/trafficextensions.yaml",
        "istio/per-filter/wasmplugins.yaml",
        "istio/per-filter/trafficextensions.yaml",
    ] {
        // The plugins; ServiceEntries and DestinationRules carry no config.
        for d in yaml_docs(file)
            .into_iter()
            .filter(|d| d["kind"] == "WasmPlugin" || d["kind"] == "TrafficExtension")
        {
            let spec = &d["spec"];
            let wasm = if spec.get("wasm").is_some() {
                &spec["wasm"]
            } else {
                spec
            };
            let name = wasm["pluginName"]
                .as_str()
                .unwrap()
                .trim_start_matches("palisade.");
            push_rendered(
                &mut found,
                &mut chains,
                name,
                wasm["pluginConfig"].clone(),
                file,
                HostKind::Envoy,
            );
        }
    }
    for d in yaml_docs("istio/envoyfilter.yaml")
        .into_iter()
        .chain(yaml_docs("istio/per-filter/envoyfilter.yaml"))
        .filter(|d| d["kind"] == "EnvoyFilter")
    {
        for patch in d["spec"]["configPatches"].as_array().unwrap() {
            let plugin = &patch["patch"]["value"]["typed_config"]["config"];
            let name = plugin["name"]
                .as_str()
                .unwrap()
                .trim_start_matches("palisade.");
            let config: Value =
                serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap()).unwrap();
            push_rendered(
                &mut found,
                &mut chains,
                name,
                config,
                "istio/envoyfilter.yaml",
                HostKind::Envoy,
            );
        }
    }
    for file in [
        "kong/kong.yml",
        "kong/kong-3.9-plugins.yml",
        "kong/per-filter/kong.yml",
    ] {
        let d: Value =
            serde_norway::from_str(&std::fs::read_to_string(root.join(file)).unwrap()).unwrap();
        for service in d["services"].as_array().unwrap() {
            for route in service["routes"].as_array().unwrap() {
                let filters = route["filter_chains"][0]["filters"]
                    .as_array()
                    .or_else(|| route["plugins"].as_array())
                    .cloned()
                    .unwrap_or_default();
                for f in filters {
                    let name = f["name"].as_str().unwrap().trim_start_matches("palisade_");
                    push_rendered(
                        &mut found,
                        &mut chains,
                        name,
                        f["config"].clone(),
                        file,
                        HostKind::Kong,
                    );
                }
            }
        }
    }
    for (file, host) in [
        ("examples/chain.yaml", HostKind::Envoy),
        ("istio/chain.yaml", HostKind::Envoy),
        ("kong/chain.yaml", HostKind::Kong),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let c = chain::load(&text).unwrap();
        chains.push((serde_norway::from_str(&text).unwrap(), file.into()));
        for (f, config) in &c.shared {
            found.push((f.name.into(), config.clone(), file.into(), host));
        }
        for r in &c.routes {
            for u in &r.filters {
                found.push((u.filter.name.into(), u.config.clone(), file.into(), host));
            }
        }
    }
    (found, chains)
}

#[test]
fn every_schema_is_valid_draft4() {
    for f in registry::FILTERS {
        let s = draft4(f.name);
        assert!(
            jsonschema::draft4::meta::is_valid(&s),
            "{}: not a valid draft 4 schema",
            f.name
        );
        assert_eq!(s["type"], "object", "{}: Kong wants an object", f.name);
        let m = meta::meta_json(f).unwrap();
        assert_eq!(m["config_schema"], s);
        assert!(m["metrics"]["label_patterns"].is_array());
    }
}

#[test]
fn every_example_config_is_accepted_by_its_filter_and_its_schema() {
    let all = examples();
    for required in [
        "filters/headers/examples",
        "envoy/demo",
        "istio/wasmplugins.yaml",
        "istio/per-filter/wasmplugins.yaml",
        "kong/kong.yml",
        "kong/per-filter/kong.yml",
    ] {
        assert!(
            all.iter().any(|(_, _, from, _)| from.contains(required)),
            "no example config found in {required}"
        );
    }
    let mut failures = Vec::new();
    for (filter, config, from, host) in &all {
        let f = registry::find(filter).unwrap_or_else(|| panic!("{from}: unknown filter {filter}"));
        if let Err(e) = (f.check)(config.to_string().as_bytes(), *host) {
            failures.push(format!("{from}: {filter} refuses its example: {e}"));
        }
        let v = validator(filter);
        let errors: Vec<String> = v.iter_errors(config).map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            failures.push(format!(
                "{from}: the {filter} schema refuses {config}: {errors:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Configs each filter refuses, that its schema must refuse too.
fn refused() -> Vec<(&'static str, Value)> {
    let mut cases = Vec::new();
    for f in registry::FILTERS {
        cases.push((f.name, json!({"no_such_field": 1})));
        cases.push((f.name, json!({"rules": "not a list"})));
        cases.push((f.name, json!({"rules": [{"match": {"prefx": "/"}}]})));
        cases.push((f.name, json!({"rules": [{"match": {"methods": ["GTE"]}}]})));
        cases.push((f.name, json!({"dry_run": "yes"})));
        cases.push((f.name, json!({"audit": "everything"})));
        cases.push((f.name, json!({"audit": true})));
    }
    cases.extend([
        ("headers", json!({"request": {"allowed_methods": ["GTE"]}})),
        ("headers", json!({"request": {"allowed_methods": []}})),
        ("headers", json!({"request": {"max_headers": 0}})),
        ("headers", json!({"request": {"max_headers": -1}})),
        ("headers", json!({"request": {"remove": ["x-*-y"]}})),
        ("headers", json!({"request": {"remove": "x-a"}})),
        (
            "headers",
            json!({"response": {"add_if_absent": {"x-a": 1}}}),
        ),
        (
            "headers",
            json!({"rules": [{"match": {"prefix": "/a", "path": "/b"}}]}),
        ),
        ("headers", json!({"rules": [{"match": {"methods": []}}]})),
        ("headers", json!({"rules": [{"match": {"prefix": "a"}}]})),
        ("errors", json!({"scan_bytes": 0})),
        ("errors", json!({"scan_bytes": 2_000_000})),
        ("errors", json!({"log_body_bytes": 5000})),
        ("errors", json!({"statuses": [200]})),
        ("errors", json!({"statuses": ["6xx"]})),
        ("errors", json!({"strip_headers": ["*"]})),
        ("errors", json!({"rules": [{"enabled": "no"}]})),
        ("jwt", json!({"unmatched": "maybe"})),
        ("jwt", json!({"signature_backend": "gpu"})),
        (
            "jwt",
            json!({"providers": {"p": {"issuer": 5, "local_jwks": {"keys": []}}}}),
        ),
        ("jwt", json!({"forwarded_client_cert": "always"})),
        ("jwt", json!({"client_ip": {"xff_num_trusted_hops": 300}})),
        ("jwt", json!({"client_ip": {"hops": 1}})),
        (
            "jwt",
            json!({"requires": {"peer": {"spiffe_idz": ["spiffe://td/a"]}}}),
        ),
        (
            "jwt",
            json!({"requires": {"client_ip": {"cidrs": "10.0.0.0/8"}}}),
        ),
        ("ratelimit", json!({"mode": "nope"})),
        ("ratelimit", json!({"on_missing_key": "maybe"})),
        ("schema", json!({"unmatched": "maybe"})),
        ("schema", json!({"limits": {"max_depth": "deep"}})),
        ("schema", json!({"max_body_bytes": -1})),
    ]);
    cases
}

#[test]
fn configs_the_filters_refuse_are_refused_by_their_schemas() {
    let mut failures = Vec::new();
    for (filter, config) in refused() {
        let f = registry::find(filter).unwrap();
        if (f.check)(config.to_string().as_bytes(), HostKind::Envoy).is_ok() {
            failures.push(format!("{filter} accepts {config}: not a refusal case"));
        } else if validator(filter).is_valid(&config) {
            failures.push(format!(
                "the {filter} schema accepts {config}, which the filter refuses"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn chain_validator() -> jsonschema::Validator {
    let m = meta::module_meta_json().unwrap();
    jsonschema::draft4::new(&m["config_schema"]).unwrap()
}

/// `palisade.meta.json`: the chain file's schema, valid draft 4, accepting
/// every chain config of the repository (the chain files, and what
/// `palisade render` hands palisade.wasm).
#[test]
fn the_chain_schema_is_valid_draft4_and_accepts_every_chain() {
    let m = meta::module_meta_json().unwrap();
    let s = &m["config_schema"];
    assert!(jsonschema::draft4::meta::is_valid(s), "not valid draft 4");
    assert_eq!(s["type"], "object");
    assert!(m["metrics"]["label_patterns"].is_array());
    let (_, chains) = examples_and_chains();
    for required in [
        "examples/chain.yaml",
        "istio/wasmplugins.yaml",
        "kong/kong.yml",
    ] {
        assert!(
            chains.iter().any(|(_, from)| from == required),
            "no chain config from {required}"
        );
    }
    let v = chain_validator();
    let mut failures = Vec::new();
    for (config, from) in &chains {
        let errors: Vec<String> = v.iter_errors(config).map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            failures.push(format!("{from}: the chain schema refuses it: {errors:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Chains palisade.wasm refuses, that the chain schema must refuse too:
/// the chain's own shape and each control's config inside it.
#[test]
fn chains_palisade_refuses_are_refused_by_the_chain_schema() {
    let base = json!({"version": 1, "upstreams": {"b": "http://127.0.0.1:1"},
        "routes": [{"name": "a", "match": {"prefix": "/"}, "upstream": "b", "filters": ["errors"]}]});
    assert!(chain::load_json(base.to_string().as_bytes()).is_ok());
    assert!(chain_validator().is_valid(&base));
    let with = |pointer: &str, value: Value| {
        let mut c = base.clone();
        *c.pointer_mut(pointer).unwrap() = value;
        c
    };
    let mut cases = vec![
        with("/version", json!("1")),
        with("/routes/0/filters", json!(["errros"])),
        with("/routes/0/filters", json!([{"headers": {"requets": {}}}])),
        with("/routes/0/filters", json!([{"headers": {}, "errors": {}}])),
        with(
            "/routes/0/filters",
            json!([{"headers": {"request": {"allowed_methods": ["GTE"]}}}]),
        ),
        with("/routes/0/match", json!({"prefx": "/"})),
        with("/routes/0/name", json!(5)),
        with("/upstreams", json!({"b": 5})),
    ];
    let mut shared = base.clone();
    shared["filters"] = json!({"errors": {"scan_bytes": 0}});
    cases.push(shared);
    let mut unknown = base.clone();
    unknown["filters"] = json!({"nope": {}});
    cases.push(unknown);
    let mut extra = base.clone();
    extra["rotues"] = json!([]);
    cases.push(extra);
    let v = chain_validator();
    let mut failures = Vec::new();
    for c in cases {
        let loaded = chain::load_json(c.to_string().as_bytes());
        let refused = match &loaded {
            Err(_) => true,
            Ok(ch) => !palisade_cli::check::check(ch, &[HostKind::Envoy]).is_empty(),
        };
        if !refused {
            failures.push(format!("palisade.wasm accepts {c}: not a refusal case"));
        } else if v.is_valid(&c) {
            failures.push(format!(
                "the chain schema accepts {c}, which palisade.wasm refuses"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_control_knows_the_audit_field_and_names_it_when_refused() {
    for f in registry::FILTERS {
        let schema = (f.schema)();
        assert!(
            schema.to_string().contains("\"audit\""),
            "the {} schema lacks `audit`",
            f.name
        );
        let err = (f.check)(br#"{"audit": "loud"}"#, HostKind::Envoy).unwrap_err();
        assert_eq!(err.path, "audit", "{}: {err}", f.name);
        assert!(err.message.contains("all"), "{}: {err}", f.name);
    }
}
