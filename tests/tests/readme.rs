//! Every config shown in README.md and in the documentation site's pages
//! (`docs/src/**/*.md`) is checked as written.
//!
//! The code blocks are read with a CommonMark parser (mdBook's
//! `{{#include path}}` lines replaced by the file, as the site shows it) and
//! sorted by
//! `palisade_tests::readme::classify` (which documents the rules); one test per
//! class checks them, and every failure names the file and line:
//!
//! - filter JSON: the filter's own `check_config` (what `palisade check` and the
//!   filter's `configure` run), for Envoy, or for Kong under a Kong heading;
//! - chain files: `palisade check` as it runs by default (the file's own
//!   platforms: configs and render checks);
//! - whole Envoy bootstraps: the real Envoy 1.40 in `--mode validate`, which
//!   builds every listener and filter and runs each wasm filter's `on_configure`;
//! - Envoy fragments (filter entries, an HCM, `stats_config`, clusters): placed
//!   into the smallest bootstrap that can hold them (`readme::harness_bootstrap`:
//!   a listener, an HCM with only `stat_prefix` and a direct-response route, the
//!   router appended when the fragment's list does not end with it) and
//!   validated the same way. Nothing else is added: where the README sets no
//!   flag, Envoy's defaults apply;
//! - Istio resources: `apiVersion`/`kind` known, every `pluginConfig` through the
//!   filter's `check_config` (Envoy), every EnvoyFilter `HTTP_FILTER`/`CLUSTER`
//!   patch validated by Envoy as a fragment;
//! - Kong: `kong.conf` keys known and values well-formed; declarative config's
//!   Palisade filters (filter chains and 3.9 plugins) and filter-chain JSON
//!   through `check_config` for Kong.
//!
//! The one substitution: wasm module paths (`/etc/envoy/palisade_jwt.wasm`,
//! `/var/local/lib/wasm/palisade_<name>.wasm`…) become `dist/palisade_<name>.wasm`,
//! the built modules (`make build`), because the README's paths are where an
//! operator installs them. Each substitution is printed.
//!
//! Blocks with a shell or output info string (`sh`, `console`, `text`…) are
//! skipped and listed; a block the classifier cannot place fails
//! `every_block_is_classified`. Put `<!-- not-a-config -->` right before a
//! fence to skip a block that is not a config whatever its info string, and
//! `<!-- filter: NAME[, NAME…] -->` before a JSON block to name the filters it
//! configures (outside a filter's section, or where a shared-core example fits
//! only some filters).
//!
//! Run: `cargo test -p palisade-tests --test readme` (the Envoy classes need
//! `make build` and Envoy, as the other real-Envoy tests).

use palisade_cli::{chain, check, registry};
use palisade_core::HostKind;
use palisade_tests::readme::{self, Block, Class, Fragment, Host};
use serde_json::Value;

fn filter_names() -> Vec<&'static str> {
    registry::FILTERS.iter().map(|f| f.name).collect()
}

fn readme_blocks() -> Vec<(Block, Result<Class, String>)> {
    let names = filter_names();
    readme::doc_blocks(&palisade_tests::repo_root())
        .into_iter()
        .map(|b| {
            let class = readme::classify(&b, &names);
            (b, class)
        })
        .collect()
}

/// The blocks of one class, with the class's data.
fn blocks_where<T>(pick: impl Fn(&Class) -> Option<T>) -> Vec<(Block, T)> {
    readme_blocks()
        .into_iter()
        .filter_map(|(b, c)| c.ok().as_ref().and_then(&pick).map(|t| (b, t)))
        .collect()
}

/// Prints what was checked and fails with every failure, README lines first.
fn finish(class: &str, checked: &[String], failures: Vec<String>) {
    println!("{} {class} block(s):", checked.len());
    for b in checked {
        println!("  {b}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} {class} block(s) fail:\n\n{}",
        failures.len(),
        checked.len(),
        failures.join("\n\n")
    );
}

fn host_kind(h: Host) -> HostKind {
    match h {
        Host::Envoy => HostKind::Envoy,
        Host::Kong => HostKind::Kong,
    }
}

/// The filter's `check_config` on `json`, as `palisade check` runs it.
/// The one-VM module's name where a filter's would be (Istio, Kong).
const MODULE: &str = "palisade";

fn check_filter(name: &str, json: &str, host: HostKind) -> Result<(), String> {
    if name == MODULE {
        // `palisade.wasm`: the chain file's JSON form, checked as it loads.
        return chain::load_json(json.as_bytes())
            .map(|_| ())
            .map_err(|problems| {
                let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
                format!("palisade chain: {}", all.join("; "))
            });
    }
    let filter = registry::find(name).ok_or_else(|| format!("unknown filter {name:?}"))?;
    (filter.check)(json.as_bytes(), host).map_err(|e| {
        let at = if e.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.path)
        };
        format!("{name} on {}: {at}{}", host.name(), e.message)
    })
}

#[test]
fn every_block_is_classified() {
    let blocks = readme_blocks();
    let mut failures = Vec::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    println!("skipped:");
    for (b, class) in &blocks {
        let kind = match class {
            Err(why) => {
                failures.push(format!("{}: {why}", b.label()));
                continue;
            }
            Ok(Class::Skip(why)) => {
                println!("  {}: {why}", b.label());
                "skipped".to_string()
            }
            Ok(Class::FilterJson { .. }) => "filter JSON".into(),
            Ok(Class::EnvoyFragment(_)) => "Envoy fragment".into(),
            Ok(other) => format!("{other:?}"),
        };
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    println!("{} blocks: {counts:?}", blocks.len());
    assert!(
        blocks.len() > 20,
        "the Markdown parser found only {} blocks",
        blocks.len()
    );
    // Every documentation file is read: the README and each site page.
    for page in [
        "README.md",
        "docs/src/controls/jwt.md",
        "docs/src/host-matrix.md",
    ] {
        assert!(
            blocks.iter().any(|(b, _)| b.file == page),
            "no block read from {page}"
        );
    }
    assert!(
        failures.is_empty(),
        "blocks the test cannot classify (label the fence, or add a marker comment: see \
         tests/tests/readme.rs):\n{}",
        failures.join("\n")
    );
}

#[test]
fn filter_json_blocks_load_in_their_filters() {
    let blocks = blocks_where(|c| match c {
        Class::FilterJson { filters, hosts } => Some((filters.clone(), hosts.clone())),
        _ => None,
    });
    let mut failures = Vec::new();
    for (b, (filters, hosts)) in &blocks {
        if let Err(e) = serde_json::from_str::<Value>(&b.text) {
            failures.push(format!("{}: not JSON: {e}", b.label()));
            continue;
        }
        for f in filters {
            for h in hosts {
                if let Err(e) = check_filter(f, &b.text, host_kind(*h)) {
                    failures.push(format!("{}: {e}", b.label()));
                }
            }
        }
    }
    let checked: Vec<String> = blocks
        .iter()
        .map(|(b, (filters, hosts))| format!("{}: {} on {hosts:?}", b.label(), filters.join(", ")))
        .collect();
    finish("filter JSON", &checked, failures);
}

#[test]
fn chain_files_pass_palisade_check() {
    let blocks = blocks_where(|c| (*c == Class::Chain).then_some(()));
    let mut failures = Vec::new();
    for (b, ()) in &blocks {
        // As `palisade check` runs by default: for the file's platforms,
        // configs and render checks alike.
        let problems = match chain::load(&b.text) {
            Err(p) => p,
            Ok(c) => check::for_platforms(&c, &c.platforms, palisade_cli::envoy::Modules::Single),
        };
        for p in problems {
            failures.push(format!("{}: {p}", b.label()));
        }
    }
    let checked: Vec<String> = blocks.iter().map(|(b, _)| b.label()).collect();
    finish("chain file", &checked, failures);
}

/// The README's complete example, rendered as its commands render it
/// (`palisade render envoy chain.yaml --wasm-dir "$PWD/dist"`) and loaded by
/// the real Envoy, which runs `palisade.wasm`'s `on_configure` on it.
#[test]
fn the_readme_example_renders_into_a_config_envoy_loads() {
    let blocks = blocks_where(|c| (*c == Class::Chain).then_some(()));
    let (b, ()) = blocks
        .iter()
        .find(|(b, _)| b.file == "README.md")
        .expect("the README shows a chain file");
    let chain = chain::load(&b.text).unwrap_or_else(|p| panic!("{}: {p:?}", b.label()));
    let options = palisade_cli::envoy::Options {
        listen: "127.0.0.1:10000".into(),
        admin: "127.0.0.1:9901".into(),
        wasm_dir: palisade_tests::repo_root()
            .join("dist")
            .to_string_lossy()
            .into_owned(),
        modules: palisade_cli::envoy::Modules::Single,
    };
    let text = palisade_cli::envoy::render_text(&chain, &options)
        .unwrap_or_else(|e| panic!("{}: render envoy: {e}", b.label()));
    assert!(text.contains("palisade.wasm"), "{text}");
    if let Err(e) = readme::envoy_validate(&text) {
        panic!("{}: Envoy refuses the rendered config: {e}", b.label());
    }
}

/// Validates `config` (text) in Envoy after the wasm path substitution.
fn validate_text(b: &Block, config: &str) -> Result<(), String> {
    let (config, notes) = readme::substitute_wasm_paths(config, &filter_names());
    for n in notes {
        println!("  {}: substituted {n}", b.label());
    }
    readme::envoy_validate(&config)
}

/// Places a fragment into the harness and validates it.
fn validate_fragment(b: &Block, kind: Fragment, fragment: &Value) -> Result<(), String> {
    let boot = readme::embed(kind, fragment)?;
    let text = serde_json::to_string_pretty(&boot).map_err(|e| e.to_string())?;
    validate_text(b, &text)
}

#[test]
fn envoy_bootstraps_validate() {
    let blocks = blocks_where(|c| (*c == Class::EnvoyBootstrap).then_some(()));
    let mut failures = Vec::new();
    for (b, ()) in &blocks {
        if let Err(e) = validate_text(b, &b.text) {
            failures.push(format!("{}: {e}", b.label()));
        }
    }
    let checked: Vec<String> = blocks.iter().map(|(b, _)| b.label()).collect();
    finish("whole Envoy config", &checked, failures);
}

#[test]
fn envoy_fragments_validate_in_a_minimal_bootstrap() {
    let blocks = blocks_where(|c| match c {
        Class::EnvoyFragment(kind) => Some(*kind),
        _ => None,
    });
    let mut failures = Vec::new();
    for (b, kind) in &blocks {
        let result = readme::yaml_documents(&b.text).and_then(|docs| match docs.first() {
            Some(doc) => validate_fragment(b, *kind, doc),
            None => Err("empty".into()),
        });
        if let Err(e) = result {
            failures.push(format!("{} ({kind:?}): {e}", b.label()));
        }
    }
    let checked: Vec<String> = blocks
        .iter()
        .map(|(b, kind)| format!("{}: {kind:?}", b.label()))
        .collect();
    finish("Envoy fragment", &checked, failures);
}

/// The filter a WasmPlugin/TrafficExtension runs: `pluginName: palisade.<f>`, else
/// the module URL (`…/palisade/<f>:tag`, `…/palisade_<f>.wasm`).
fn istio_filter(plugin_name: Option<&str>, url: Option<&str>) -> Option<String> {
    let names = filter_names();
    let module = plugin_name == Some(MODULE)
        || url.is_some_and(|u| {
            u.contains("palisade:") || u.contains("palisade@") || u.ends_with("/palisade.wasm")
        });
    if module {
        return Some(MODULE.to_string());
    }
    if let Some(f) = plugin_name.and_then(|p| p.strip_prefix("palisade.")) {
        let f = f.split('.').next().unwrap_or(f);
        return names.contains(&f).then(|| f.to_string());
    }
    let url = url?;
    names
        .iter()
        .find(|n| {
            url.contains(&format!("palisade/{n}:"))
                || url.contains(&format!("palisade/{n}@"))
                || url.contains(&format!("palisade_{n}.wasm"))
        })
        .map(|n| n.to_string())
}

/// Problems of one Istio document.
fn istio_document(b: &Block, doc: &Value, failures: &mut Vec<String>) {
    let api = doc.get("apiVersion").and_then(Value::as_str);
    let kind = doc.get("kind").and_then(Value::as_str);
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let fail = |failures: &mut Vec<String>, m: String| failures.push(format!("{}: {m}", b.label()));
    match (api, kind) {
        (Some("extensions.istio.io/v1alpha1"), Some(k @ ("WasmPlugin" | "TrafficExtension"))) => {
            // TrafficExtension carries the WasmPlugin fields under `spec.wasm`.
            let w = if k == "TrafficExtension" {
                spec.get("wasm").cloned().unwrap_or(Value::Null)
            } else {
                spec.clone()
            };
            let plugin = w.get("pluginName").and_then(Value::as_str);
            let url = w.get("url").and_then(Value::as_str);
            let Some(filter) = istio_filter(plugin, url) else {
                return fail(
                    failures,
                    format!("{k}: no Palisade filter named by pluginName or url"),
                );
            };
            let config = match w.get("pluginConfig") {
                None | Some(Value::Null) => String::new(),
                Some(v @ Value::Object(_)) => v.to_string(),
                Some(other) => {
                    return fail(
                        failures,
                        format!("{k}: pluginConfig is not a mapping: {other}"),
                    )
                }
            };
            if let Err(e) = check_filter(&filter, &config, HostKind::Envoy) {
                fail(failures, format!("{k} pluginConfig: {e}"));
            }
        }
        (Some("networking.istio.io/v1alpha3"), Some("EnvoyFilter")) => {
            let patches = spec
                .get("configPatches")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if patches.is_empty() {
                return fail(failures, "EnvoyFilter without configPatches".into());
            }
            let mut filters = Vec::new();
            let mut clusters = Vec::new();
            for p in &patches {
                let value = p.pointer("/patch/value").cloned().unwrap_or(Value::Null);
                match p.get("applyTo").and_then(Value::as_str) {
                    Some("HTTP_FILTER") => filters.push(value),
                    Some("CLUSTER") => clusters.push(value),
                    other => println!(
                        "  {}: EnvoyFilter patch applyTo {other:?} not validated in Envoy",
                        b.label()
                    ),
                }
            }
            let mut fragment = serde_json::json!({ "http_filters": filters });
            if !clusters.is_empty() {
                fragment["clusters"] = Value::Array(clusters);
            }
            let result = readme::embed(Fragment::HttpFilters, &fragment).and_then(|mut boot| {
                if let Some(c) = fragment.get("clusters") {
                    boot["static_resources"]["clusters"] = c.clone();
                }
                let text = serde_json::to_string_pretty(&boot).map_err(|e| e.to_string())?;
                validate_text(b, &text)
            });
            if let Err(e) = result {
                fail(failures, format!("EnvoyFilter patches: {e}"));
            }
        }
        // What a sidecar needs to reach a service a control calls.
        (Some("networking.istio.io/v1"), Some("ServiceEntry")) => {
            let hosts = spec.get("hosts").and_then(Value::as_array);
            if hosts.is_none_or(|h| h.is_empty() || h.iter().any(|x| !x.is_string())) {
                fail(
                    failures,
                    "ServiceEntry: hosts must be a non-empty list of names".into(),
                );
            }
            let ports = spec
                .get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let protocols = ["HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS"];
            let port_ok = |p: &Value| {
                p["number"]
                    .as_u64()
                    .is_some_and(|n| (1..=65535).contains(&n))
                    && p["name"].as_str().is_some_and(|n| !n.is_empty())
                    && p["protocol"]
                        .as_str()
                        .is_some_and(|x| protocols.contains(&x))
            };
            if ports.is_empty() || !ports.iter().all(port_ok) {
                fail(failures, format!("ServiceEntry: bad ports {ports:?}"));
            }
            if !matches!(
                spec["location"].as_str(),
                Some("MESH_EXTERNAL" | "MESH_INTERNAL")
            ) {
                fail(failures, "ServiceEntry: location".into());
            }
            if !matches!(
                spec["resolution"].as_str(),
                Some("NONE" | "STATIC" | "DNS" | "DNS_ROUND_ROBIN")
            ) {
                fail(failures, "ServiceEntry: resolution".into());
            }
        }
        (Some("networking.istio.io/v1"), Some("DestinationRule")) => {
            if !spec["host"].is_string() {
                fail(failures, "DestinationRule: host".into());
            }
            let settings = spec
                .pointer("/trafficPolicy/portLevelSettings")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let modes = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];
            if settings.is_empty()
                || settings.iter().any(|p| {
                    !p.pointer("/port/number").is_some_and(Value::is_u64)
                        || !p
                            .pointer("/tls/mode")
                            .and_then(Value::as_str)
                            .is_some_and(|m| modes.contains(&m))
                })
            {
                fail(
                    failures,
                    format!("DestinationRule: bad portLevelSettings {settings:?}"),
                );
            }
        }
        (Some("install.istio.io/v1alpha1"), Some("IstioOperator")) => {}
        // A `kubectl patch` document (a pod template annotation) has neither.
        (None, None) if spec.get("template").is_some() => {}
        _ => fail(
            failures,
            format!("unknown Istio apiVersion/kind {api:?}/{kind:?}"),
        ),
    }
}

#[test]
fn istio_resources_are_valid() {
    let blocks = blocks_where(|c| (*c == Class::Istio).then_some(()));
    let mut failures = Vec::new();
    for (b, ()) in &blocks {
        match readme::yaml_documents(&b.text) {
            Err(e) => failures.push(format!("{}: {e}", b.label())),
            Ok(docs) => {
                for doc in &docs {
                    istio_document(b, doc, &mut failures);
                }
            }
        }
    }
    let checked: Vec<String> = blocks.iter().map(|(b, _)| b.label()).collect();
    finish("Istio", &checked, failures);
}

/// The filter a Kong filter or plugin name runs: `palisade_<f>`, or the
/// letters-only `palisade<f>` the README recommends for Kong 3.9's metrics.
fn kong_filter(name: &str) -> Option<String> {
    if name == MODULE {
        return Some(MODULE.to_string());
    }
    let rest = name.strip_prefix("palisade")?;
    let rest = rest.strip_prefix('_').unwrap_or(rest);
    filter_names().contains(&rest).then(|| rest.to_string())
}

/// Checks one Kong filter or plugin entry (`name`, `config` as a JSON string or
/// an object; no config is an empty one). Returns whether it was a Palisade one.
fn kong_entry(b: &Block, entry: &Value, failures: &mut Vec<String>) -> bool {
    let Some(name) = entry.get("name").and_then(Value::as_str) else {
        failures.push(format!("{}: a filter without a name", b.label()));
        return false;
    };
    let Some(filter) = kong_filter(name) else {
        return false;
    };
    let config = match entry.get("config") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(other) => {
            failures.push(format!(
                "{}: {name}: config is neither a JSON string nor an object: {other}",
                b.label()
            ));
            return true;
        }
    };
    if let Err(e) = check_filter(&filter, &config, HostKind::Kong) {
        failures.push(format!("{}: {name}: {e}", b.label()));
    }
    true
}

/// Walks Kong declarative config: every `filter_chains` and `plugins` list,
/// wherever it sits. Returns how many Palisade filters were checked.
fn kong_declarative(b: &Block, v: &Value, top: bool, failures: &mut Vec<String>) -> usize {
    let mut found = 0;
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("filter_chains", Value::Array(chains)) => {
                        for chain in chains {
                            if top && chain.get("service").is_none() && chain.get("route").is_none()
                            {
                                failures.push(format!(
                                    "{}: a top-level filter chain names neither a service nor a route",
                                    b.label()
                                ));
                            }
                            match chain.get("filters") {
                                Some(Value::Array(fs)) => {
                                    found +=
                                        fs.iter().filter(|f| kong_entry(b, f, failures)).count()
                                }
                                _ => failures.push(format!(
                                    "{}: a filter chain without a `filters` list",
                                    b.label()
                                )),
                            }
                        }
                    }
                    ("plugins", Value::Array(plugins)) => {
                        found += plugins
                            .iter()
                            .filter(|p| kong_entry(b, p, failures))
                            .count()
                    }
                    _ => found += kong_declarative(b, child, false, failures),
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                found += kong_declarative(b, i, false, failures);
            }
        }
        _ => {}
    }
    found
}

#[test]
fn kong_snippets_are_valid() {
    let blocks = blocks_where(|c| match c {
        Class::KongConf | Class::KongDeclarative | Class::KongFilterChainJson => Some(c.clone()),
        _ => None,
    });
    let mut failures = Vec::new();
    for (b, class) in &blocks {
        match class {
            Class::KongConf => {
                for p in readme::kong_conf_problems(&b.text) {
                    failures.push(format!("{}: {p}", b.label()));
                }
            }
            _ => {
                let docs = if *class == Class::KongFilterChainJson {
                    serde_json::from_str::<Value>(&b.text)
                        .map(|v| vec![serde_json::json!({ "filter_chains": [v] })])
                        .map_err(|e| e.to_string())
                } else {
                    readme::yaml_documents(&b.text)
                };
                match docs {
                    Err(e) => failures.push(format!("{}: {e}", b.label())),
                    Ok(docs) => {
                        // Filter-chain JSON is a request body: no service to name.
                        let top = *class == Class::KongDeclarative;
                        let found: usize = docs
                            .iter()
                            .map(|d| kong_declarative(b, d, top, &mut failures))
                            .sum();
                        if found == 0 {
                            failures.push(format!(
                                "{}: no Palisade filter in this Kong config",
                                b.label()
                            ));
                        }
                    }
                }
            }
        }
    }
    let checked: Vec<String> = blocks
        .iter()
        .map(|(b, class)| format!("{}: {class:?}", b.label()))
        .collect();
    finish("Kong", &checked, failures);
}

/// The checkers of the classes the README has no block of yet, run on the
/// repository's own rendered files so they are known to work (and to refuse)
/// before a README block relies on them.
#[test]
fn the_istio_and_kong_checkers_accept_the_rendered_files_and_refuse_a_bad_one() {
    let root = palisade_tests::repo_root();
    let block = |lang: &str, text: String| Block {
        file: "self-test".into(),
        line: 0,
        lang: lang.into(),
        text,
        headings: vec![(2, "self-test".into())],
        marker: None,
    };
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let names = filter_names();
    for file in [
        "istio/wasmplugins.yaml",
        "istio/trafficextensions.yaml",
        "istio/envoyfilter.yaml",
    ] {
        let b = block("yaml", read(file));
        assert_eq!(readme::classify(&b, &names), Ok(Class::Istio), "{file}");
        let mut failures = Vec::new();
        for doc in readme::yaml_documents(&b.text).unwrap_or_default() {
            istio_document(&b, &doc, &mut failures);
        }
        assert!(failures.is_empty(), "{file}: {failures:#?}");
    }
    let bad = block(
        "yaml",
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec:\n  url: oci://r/palisade/headers:1\n  pluginConfig: {requets: {}}\n".into(),
    );
    let mut failures = Vec::new();
    for doc in readme::yaml_documents(&bad.text).unwrap_or_default() {
        istio_document(&bad, &doc, &mut failures);
    }
    assert_eq!(failures.len(), 1, "{failures:?}");

    let b = block("yaml", read("kong/kong.yml"));
    assert_eq!(readme::classify(&b, &names), Ok(Class::KongDeclarative));
    let mut failures = Vec::new();
    let found: usize = readme::yaml_documents(&b.text)
        .unwrap_or_default()
        .iter()
        .map(|d| kong_declarative(&b, d, true, &mut failures))
        .sum();
    // One `palisade` filter per route (the one-module form).
    assert!(found > 0 && failures.is_empty(), "{found} {failures:#?}");
    let b = block("", read("kong/kong.conf"));
    assert_eq!(readme::classify(&b, &names), Ok(Class::KongConf));
    assert_eq!(readme::kong_conf_problems(&b.text), Vec::<String>::new());
}

/// The whole-bootstrap checker on a small complete config (the harness with
/// the headers filter at an operator's path), accepted, and refused once the
/// filter's config is wrong.
#[test]
fn the_bootstrap_checker_validates_a_whole_config() {
    let filters =
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters";
    let entry = |config: &str| {
        serde_json::json!({
            "name": "palisade.headers",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "vm_config": {
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": "/etc/envoy/palisade_headers.wasm"}}
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": config
                    }
                }
            }
        })
    };
    let block = |boot: &Value| Block {
        file: "self-test".into(),
        line: 0,
        lang: "yaml".into(),
        text: serde_json::to_string_pretty(boot).unwrap_or_default(),
        headings: vec![(2, "self-test".into())],
        marker: None,
    };
    for (config, ok) in [("{}", true), (r#"{"requets": {}}"#, false)] {
        let mut boot = readme::harness_bootstrap();
        if let Some(Value::Array(list)) = boot.pointer_mut(filters) {
            list.insert(0, entry(config));
        }
        let b = block(&boot);
        assert_eq!(
            readme::classify(&b, &filter_names()),
            Ok(Class::EnvoyBootstrap)
        );
        let result = validate_text(&b, &b.text);
        assert_eq!(result.is_ok(), ok, "{config}: {result:?}");
        if let Err(e) = result {
            assert!(e.contains("unknown field `requets`"), "{e}");
        }
    }
}
