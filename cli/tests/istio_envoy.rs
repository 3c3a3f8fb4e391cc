//! The Istio resources in `istio/` (palisade.wasm) and `istio/per-filter/`,
//! loaded by the real Envoy with the built modules: each `pluginConfig` as
//! the JSON string Istio hands the filter, and each `EnvoyFilter` patch
//! placed into a listener Envoy accepts and serves through. Modules that are
//! not built are skipped with a message.
//!
//! Needs `make build` and Envoy; run by `make integration`
//! (`cargo test -p palisade-cli -- --ignored`).

use palisade_tests::{
    client, repo_root, Envoy, EnvoyConfig, FailurePolicy, HttpFilter, Upstream, WasmFilter,
};
use serde_json::{Number, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// One Envoy with every module at a time: V8 compiles each module on the
/// main thread and on the worker, and the schema module alone takes seconds;
/// two such Envoys side by side on a busy 2-core machine miss the readiness
/// timeout.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Readiness timeout for these module-heavy Envoys.
const STARTUP: Duration = Duration::from_secs(120);

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    text.split("\n---\n")
        .filter_map(|d| serde_norway::from_str::<Value>(d).ok())
        .filter(|d| d.is_object())
        .collect()
}

/// `dist/palisade_<filter>.wasm` (`dist/palisade.wasm` for `palisade`), or
/// `None` (with a message) when not built.
fn module(filter: &str, context: &str) -> Option<PathBuf> {
    let path = repo_root()
        .join("dist")
        .join(palisade_cli::envoy::module_file(filter));
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED {context}: {} is not built (make build)",
            path.display()
        );
        None
    }
}

/// Istio keeps `pluginConfig` as a protobuf Struct, whose numbers are
/// doubles, and hands the filter its JSON form: integral values are written
/// without a fraction. Rebuilding the value that way makes the test see
/// what a filter in a mesh sees.
fn as_istio_hands_it(v: &Value) -> Value {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e15 {
                Value::Number(Number::from(f as i64))
            } else {
                Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(as_istio_hands_it).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), as_istio_hands_it(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The controls a plugin runs: the filter's own, or for palisade.wasm those
/// of its chain config's routes.
fn controls(filter: &str, config: &Value) -> Vec<String> {
    if filter != palisade_cli::envoy::MODULE {
        return vec![filter.to_string()];
    }
    let chain = palisade_cli::chain::load_json(config.to_string().as_bytes())
        .unwrap_or_else(|p| panic!("palisade's chain config: {p:?}"));
    let mut names: Vec<String> = Vec::new();
    for u in chain.routes.iter().flat_map(|r| &r.filters) {
        if !names.iter().any(|n| n == u.filter.name) {
            names.push(u.filter.name.to_string());
        }
    }
    names
}

fn phase_rank(phase: &str) -> u8 {
    match phase {
        "AUTHN" => 0,
        "AUTHZ" => 1,
        "STATS" => 2,
        _ => 3,
    }
}

/// One Envoy with every plugin of `file` that is built, in the order Istio
/// chains them (phase, then descending priority), as Istio configures them:
/// filter `<namespace>.<name>`, `pluginName` as root id, an empty `vm_id`
/// (so every plugin shares one shared-data namespace), failStrategy as
/// failure policy, and no `allow_on_headers_stop_iteration` (WasmPlugin
/// cannot set it).
fn plugins_of(file: &str) -> Vec<(u8, i64, WasmFilter, Vec<String>)> {
    let mut plugins: Vec<(u8, i64, WasmFilter, Vec<String>)> = Vec::new();
    // The plugins; a ServiceEntry or DestinationRule configures the mesh, not Envoy's filters.
    for d in docs(file)
        .into_iter()
        .filter(|d| d["kind"] == "WasmPlugin" || d["kind"] == "TrafficExtension")
    {
        let spec = &d["spec"];
        let wasm = if spec.get("wasm").is_some() {
            &spec["wasm"]
        } else {
            spec
        };
        let plugin_name = wasm["pluginName"].as_str().unwrap();
        let filter = plugin_name.trim_start_matches("palisade.");
        let context = format!("{file} {}", d["metadata"]["name"]);
        let Some(path) = module(filter, &context) else {
            continue;
        };
        let config = as_istio_hands_it(&wasm["pluginConfig"]).to_string();
        let policy = match wasm["failStrategy"].as_str() {
            Some("FAIL_OPEN") => FailurePolicy::FailOpen,
            _ => FailurePolicy::FailClosed,
        };
        let envoy_name = format!(
            "{}.{}",
            d["metadata"]["namespace"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap()
        );
        let w = WasmFilter::new(envoy_name, path)
            .root_id(plugin_name)
            .vm_id("")
            .config(config)
            .failure_policy(policy);
        plugins.push((
            phase_rank(spec["phase"].as_str().unwrap_or("")),
            -spec["priority"].as_i64().unwrap_or(0),
            w,
            controls(filter, &wasm["pluginConfig"]),
        ));
    }
    assert!(!plugins.is_empty(), "{file}: no plugin could be loaded");
    plugins.sort_by_key(|(phase, priority, _, _)| (*phase, *priority));
    plugins
}

/// What the filters see: root id and configuration string, in chain order.
fn seen_by_filters(
    plugins: &[(u8, i64, WasmFilter, Vec<String>)],
) -> Vec<(Option<String>, String)> {
    plugins
        .iter()
        .map(|(_, _, w, _)| (w.root_id.clone(), w.config.clone()))
        .collect()
}

fn run_plugins(file: &str, plugins: Vec<(u8, i64, WasmFilter, Vec<String>)>) {
    let names: Vec<String> = plugins
        .iter()
        .flat_map(|(_, _, _, controls)| controls.iter().map(|c| format!("palisade.{c}")))
        .collect();
    let upstream = Upstream::start();
    let mut config = EnvoyConfig::new().upstream(&upstream);
    config.startup_timeout = Some(STARTUP);
    for (_, _, w, _) in plugins {
        config = config.filter(w);
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Envoy refuses to start when a filter's on_configure refuses its config.
    let envoy = Envoy::start(&config);
    let health = client::get(&envoy.url("/healthz"), &[]);
    assert_eq!(
        health.status,
        200,
        "{file} ({names:?}): /healthz needs no token: {}",
        health.text()
    );
    if names.iter().any(|n| n == "palisade.headers") {
        assert_eq!(health.header("x-content-type-options"), Some("nosniff"));
    }
    if names.iter().any(|n| n == "palisade.jwt") {
        let api = client::get(&envoy.url("/api/orders"), &[]);
        assert_eq!(
            api.status,
            401,
            "{file}: the API needs a token: {}",
            api.text()
        );
        assert_eq!(api.header("content-type"), Some("application/problem+json"));
    }
}

fn wasmplugins_and_trafficextensions(dir: &str) {
    let wasm_plugins = plugins_of(&format!("{dir}/wasmplugins.yaml"));
    let extensions = plugins_of(&format!("{dir}/trafficextensions.yaml"));
    // Istio hands the filters the same thing for both kinds: one Envoy
    // checks both files unless they differ.
    let same = seen_by_filters(&wasm_plugins) == seen_by_filters(&extensions);
    run_plugins(&format!("{dir}/wasmplugins.yaml"), wasm_plugins);
    if !same {
        run_plugins(&format!("{dir}/trafficextensions.yaml"), extensions);
    }
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn wasmplugin_and_trafficextension_configs_load_in_envoy() {
    // palisade.wasm: one plugin, the whole gateway chain.
    assert_eq!(plugins_of("istio/wasmplugins.yaml").len(), 1);
    wasmplugins_and_trafficextensions("istio");
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn per_filter_wasmplugin_and_trafficextension_configs_load_in_envoy() {
    wasmplugins_and_trafficextensions("istio/per-filter");
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn envoyfilter_patches_load_and_serve_in_envoy() {
    envoyfilter_patches("istio/envoyfilter.yaml");
}

#[test]
#[ignore = "needs `make build` and Envoy: run by `make integration`"]
fn per_filter_envoyfilter_patches_load_and_serve_in_envoy() {
    envoyfilter_patches("istio/per-filter/envoyfilter.yaml");
}

fn envoyfilter_patches(file: &str) {
    let dist = repo_root().join("dist");
    let local_dir = format!("{}/", palisade_cli::istio::DEFAULT_WASM_DIR);
    for d in docs(file)
        .into_iter()
        .filter(|d| d["kind"] == "EnvoyFilter")
    {
        let name = d["metadata"]["name"].as_str().unwrap().to_string();
        let upstream = Upstream::start();
        let mut config = EnvoyConfig::new().upstream(&upstream);
        let mut loaded = Vec::new();
        for patch in d["spec"]["configPatches"].as_array().unwrap() {
            assert_eq!(patch["applyTo"], "HTTP_FILTER");
            assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
            assert_eq!(
                patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                "envoy.filters.http.router"
            );
            let mut value = patch["patch"]["value"].clone();
            let plugin = &mut value["typed_config"]["config"];
            let filter = plugin["name"]
                .as_str()
                .unwrap()
                .trim_start_matches("palisade.")
                .to_string();
            if module(&filter, &format!("{name} patch {filter}")).is_none() {
                continue;
            }
            let filename = &mut plugin["vm_config"]["code"]["local"]["filename"];
            let local = filename.as_str().unwrap().to_string();
            assert!(local.starts_with(&local_dir), "{local}");
            *filename = Value::String(
                dist.join(local.trim_start_matches(&local_dir))
                    .display()
                    .to_string(),
            );
            let plugin_config: Value =
                serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap_or("{}"))
                    .unwrap();
            loaded.extend(controls(&filter, &plugin_config));
            // INSERT_BEFORE the router, one after the other: chain order.
            config = config.filter(HttpFilter::native_json(value));
        }
        assert!(!loaded.is_empty(), "{name}: no patch could be loaded");
        config.startup_timeout = Some(STARTUP);
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let envoy = Envoy::start(&config);
        let r = client::get(&envoy.url("/healthz"), &[]);
        assert_eq!(r.status, 200, "{name} ({loaded:?}): {}", r.text());
        assert_eq!(
            upstream.received().len(),
            1,
            "served through to the upstream"
        );
        if loaded.iter().any(|f| f == "headers") {
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        }
    }
}
