//! `palisade render envoy-gateway`: every example chain, both module forms
//! and both code sources, rendered and validated against Envoy Gateway's
//! API (`tests/fixtures/envoy-gateway/`, written down from its API
//! reference, version noted there); each policy's `config` loads in the
//! loader its module runs. That the config runs in the real Envoy as Envoy
//! Gateway hands it over is in `envoy_chain.rs`.

use palisade_cli::envoy::Modules;
use palisade_cli::{chain, envoy_gateway, registry};
use palisade_core::HostKind;
use serde_json::{json, Value};
use std::path::Path;

const EXAMPLES: &[&str] = &[
    "examples/chain.yaml",
    "examples/edge-jwt-ratelimit.yaml",
    "examples/openapi-masking.yaml",
];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn load(file: &str) -> chain::Chain {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    chain::load(&text).unwrap_or_else(|p| panic!("{file}: {p:?}"))
}

fn validator(kind: &str) -> jsonschema::Validator {
    let file = match kind {
        "EnvoyExtensionPolicy" => "envoyextensionpolicy.schema.json",
        "EnvoyPatchPolicy" => "envoypatchpolicy.schema.json",
        other => panic!("unexpected kind {other}"),
    };
    let path = root().join("cli/tests/fixtures/envoy-gateway").join(file);
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

fn options(url: &str, modules: Modules) -> envoy_gateway::Options {
    envoy_gateway::Options {
        url: url.into(),
        pin_from: None,
        namespace: "shop".into(),
        gateway: "eg".into(),
        modules,
    }
}

fn invalid(kind: &str, doc: &Value) -> Vec<String> {
    validator(kind)
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_example_renders_policies_envoy_gateway_accepts_in_both_forms() {
    for file in EXAMPLES {
        let chain = load(file);
        for modules in [Modules::Single, Modules::PerFilter] {
            for url in [
                "oci://ghcr.io/acme/palisade/{filter}:0.1.0",
                "https://modules.example.com/{filter}.wasm",
            ] {
                let docs = envoy_gateway::resources(&chain, &options(url, modules)).unwrap();
                let policies: Vec<&Value> = docs
                    .iter()
                    .filter(|d| d["kind"] == "EnvoyExtensionPolicy")
                    .collect();
                let routes: Vec<&chain::Route> = chain
                    .routes
                    .iter()
                    .filter(|r| !r.filters.is_empty())
                    .collect();
                assert_eq!(policies.len(), routes.len(), "{file}");
                for doc in &docs {
                    let kind = doc["kind"].as_str().unwrap();
                    assert_eq!(invalid(kind, doc), Vec::<String>::new(), "{file}: {doc:#}");
                }
                for (doc, route) in policies.iter().zip(&routes) {
                    let spec = &doc["spec"];
                    assert_eq!(
                        spec["targetRefs"],
                        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                "name": route.name}])
                    );
                    loads(&spec["wasm"], route, modules, url);
                }
            }
        }
    }
}

/// Each entry's config loads where its module loads it, and its failOpen
/// is the control's failure choice.
fn loads(wasm: &Value, route: &chain::Route, modules: Modules, url: &str) {
    let entries = wasm.as_array().unwrap();
    let image = url.starts_with("oci://");
    let source = |e: &Value, filter: &str| {
        let field = if image { "image" } else { "http" };
        assert_eq!(e["code"]["type"], if image { "Image" } else { "HTTP" });
        let got = e["code"][field]["url"].as_str().unwrap().to_string();
        let want = url.replace("{filter}", filter).replace("oci://", "");
        assert_eq!(got, want);
    };
    let closes = |name: &str| {
        registry::FILTERS
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .istio
            .fail_strategy
            == "FAIL_CLOSE"
    };
    match modules {
        Modules::Single => {
            assert_eq!(entries.len(), 1);
            let e = &entries[0];
            source(e, "palisade");
            let bytes = serde_json::to_vec(&e["config"]).unwrap();
            let chain = chain::load_json(&bytes).unwrap_or_else(|p| panic!("{p:?}"));
            assert_eq!(chain.routes.len(), 1);
            let names: Vec<&str> = chain.routes[0]
                .filters
                .iter()
                .map(|u| u.filter.name)
                .collect();
            let want: Vec<&str> = route.filters.iter().map(|u| u.filter.name).collect();
            assert_eq!(names, want);
            // Envoy Gateway scopes the filter to the HTTPRoute: every path.
            assert_eq!(e["config"]["routes"][0]["match"], json!({"prefix": "/"}));
            let any_closes = want.iter().any(|n| closes(n));
            assert_eq!(e["failOpen"], json!(!any_closes));
        }
        Modules::PerFilter => {
            assert_eq!(entries.len(), route.filters.len());
            for (e, u) in entries.iter().zip(&route.filters) {
                source(e, u.filter.name);
                let bytes = serde_json::to_vec(&e["config"]).unwrap();
                (u.filter.check)(&bytes, HostKind::Envoy)
                    .unwrap_or_else(|err| panic!("{}: {err}", u.filter.name));
                assert_eq!(e["failOpen"], json!(!closes(u.filter.name)));
            }
        }
    }
}

#[test]
fn the_schema_refuses_what_envoy_gateway_refuses() {
    let chain = load("examples/chain.yaml");
    let docs = envoy_gateway::resources(
        &chain,
        &options(
            "oci://ghcr.io/acme/palisade/{filter}:0.1.0",
            Modules::Single,
        ),
    )
    .unwrap();
    let good = &docs[0];
    assert!(invalid("EnvoyExtensionPolicy", good).is_empty());
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut d = good.clone();
        edit(&mut d);
        invalid("EnvoyExtensionPolicy", &d)
    };
    // An Image source with an http field; a source of another type.
    assert!(
        !broken(&|d| d["spec"]["wasm"][0]["code"]["http"] = json!({"url": "https://x"})).is_empty()
    );
    assert!(!broken(&|d| d["spec"]["wasm"][0]["code"]["type"] = json!("File")).is_empty());
    // A short digest; a target outside the Gateway API group; both targetRef forms.
    assert!(
        !broken(&|d| d["spec"]["wasm"][0]["code"]["image"]["sha256"] = json!("abc")).is_empty()
    );
    assert!(!broken(&|d| d["spec"]["targetRefs"][0]["group"] = json!("apps")).is_empty());
    assert!(!broken(&|d| d["spec"]["targetRef"] = d["spec"]["targetRefs"][0].clone()).is_empty());
    // Istio's field names are not Envoy Gateway's.
    assert!(!broken(&|d| d["spec"]["wasm"][0]["pluginConfig"] = json!({})).is_empty());
}

#[test]
fn called_services_become_clusters_through_one_patch_policy() {
    let chain = load("examples/edge-jwt-ratelimit.yaml");
    let docs = envoy_gateway::resources(
        &chain,
        &options(
            "oci://ghcr.io/acme/palisade/{filter}:0.1.0",
            Modules::Single,
        ),
    )
    .unwrap();
    let patches: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "EnvoyPatchPolicy")
        .collect();
    assert_eq!(patches.len(), 1);
    let spec = &patches[0]["spec"];
    assert_eq!(spec["targetRef"]["kind"], "Gateway");
    assert_eq!(spec["targetRef"]["name"], "eg");
    // Each cluster named as the jwt config names it.
    let jwt = docs[0]["spec"]["wasm"][0]["config"].to_string();
    for p in spec["jsonPatches"].as_array().unwrap() {
        assert_eq!(p["operation"]["op"], "add");
        assert_eq!(p["operation"]["path"], "");
        let name = p["name"].as_str().unwrap();
        assert_eq!(p["operation"]["value"]["name"], name);
        assert!(
            jwt.contains(&format!("\"cluster\":\"{name}\"")),
            "{name} not in {jwt}"
        );
    }
    // A chain calling nothing gets no patch policy.
    let plain = envoy_gateway::resources(
        &load("examples/chain.yaml"),
        &options(
            "oci://ghcr.io/acme/palisade/{filter}:0.1.0",
            Modules::Single,
        ),
    )
    .unwrap();
    assert!(plain.iter().all(|d| d["kind"] == "EnvoyExtensionPolicy"));
}

#[test]
fn what_envoy_gateway_cannot_run_is_refused_with_the_reason() {
    let chain = load("examples/chain.yaml");
    let no_filter = envoy_gateway::resources(
        &chain,
        &options("oci://ghcr.io/acme/palisade:0.1.0", Modules::PerFilter),
    )
    .unwrap_err();
    assert!(no_filter.contains("{filter}"), "{no_filter}");
    let file_url = envoy_gateway::resources(
        &chain,
        &options("file:///etc/{filter}.wasm", Modules::Single),
    )
    .unwrap_err();
    assert!(file_url.contains("OCI image"), "{file_url}");
    let held = chain::load(
        "version: 1\nupstreams: {b: 'http://127.0.0.1:9'}\nroutes:\n  - name: api\n    \
         match: {prefix: /}\n    upstream: b\n    filters: [{errors: {hold_headers: true}}]\n",
    )
    .unwrap();
    let err = envoy_gateway::resources(
        &held,
        &options(
            "oci://ghcr.io/acme/palisade/{filter}:0.1.0",
            Modules::Single,
        ),
    )
    .unwrap_err();
    assert!(err.contains("hold_headers"), "{err}");
}

/// The documented command (docs/src/deploy/envoy-gateway.md), through the
/// `palisade` binary (pinning left out: the images are not built here).
#[test]
fn the_documented_command_writes_valid_policies() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .current_dir(root())
        .args([
            "render",
            "envoy-gateway",
            "examples/chain.yaml",
            "--namespace",
            "shop",
            "--url",
            "oci://ghcr.io/acme/palisade/{filter}:0.1.0",
            "--no-pin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 3, "{text}");
    for doc in &docs {
        assert_eq!(doc["metadata"]["namespace"], "shop");
        assert_eq!(invalid("EnvoyExtensionPolicy", doc), Vec::<String>::new());
    }
}
