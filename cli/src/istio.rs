//! `palisade render istio`: one `WasmPlugin` (or Istio 1.30 `TrafficExtension`)
//! per route and filter.
//!
//! Istio attaches Wasm filters to workloads or gateways (`selector`,
//! `targetRefs`), not to routes, so a route's `istio:` section says where its
//! chain goes. The chain's order becomes `phase` + `priority` (from the
//! filter table: errors and headers, then jwt in AUTHN; ratelimit, then
//! schema in AUTHZ). Within a phase the higher priority runs first on
//! requests; Envoy runs response callbacks in the reverse order, so the
//! first filter on the way in is the last on the way out. `errors` is first
//! in, hence last out: it sees every other filter's local reply.
//!
//! `sha256` pins the module: for `oci://` URLs Istio compares it with the
//! image's manifest digest (what `palisade oci` prints), for `file://` and
//! `https://` URLs with the module file's own digest.
//!
//! WasmPlugin and TrafficExtension cannot set Envoy's
//! `allow_on_headers_stop_iteration`, which `hold_headers` needs (errors,
//! schema): such configs are refused here. [`Kind::EnvoyFilter`] renders the
//! same chain as `EnvoyFilter` patches loading the modules from a local
//! directory in the proxy, with the same Envoy filter entries as
//! `palisade render envoy` (flag included), inserted in chain order right
//! before the router.

use crate::chain::{Chain, Route, Use};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WasmPlugin,
    TrafficExtension,
    EnvoyFilter,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    /// Module URL; `{filter}` is replaced by the filter name (`headers`).
    pub url: String,
    /// Where to read digests from (`dist/`: `oci/<filter>/index.json` for
    /// `oci://` URLs, `palisade_<filter>.wasm` otherwise); no `sha256` without.
    pub pin_from: Option<PathBuf>,
    /// `EnvoyFilter`: directory of `palisade_<filter>.wasm` inside the proxy.
    pub wasm_dir: String,
}

/// Where `EnvoyFilter` expects the modules (mounted into the proxy, e.g.
/// with the `sidecar.istio.io/userVolume` and `userVolumeMount` annotations).
pub const DEFAULT_WASM_DIR: &str = "/var/local/lib/wasm";

pub const DEFAULT_URL: &str = "oci://registry.example.com/palisade/{filter}:0.1.0";

impl Default for Options {
    fn default() -> Options {
        Options {
            kind: Kind::WasmPlugin,
            url: DEFAULT_URL.into(),
            pin_from: None,
            wasm_dir: DEFAULT_WASM_DIR.into(),
        }
    }
}

/// The digest Istio checks `sha256` against, for `url`.
pub fn digest_for(url: &str, filter: &str, dist: &Path) -> Result<String, String> {
    if url.starts_with("oci://") {
        let index_path = dist.join("oci").join(filter).join("index.json");
        let text = std::fs::read_to_string(&index_path)
            .map_err(|e| format!("{}: {e} (run `make oci`)", index_path.display()))?;
        let index: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index_path.display()))?;
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .ok_or_else(|| format!("{}: no sha256 manifest", index_path.display()))?;
        Ok(digest.to_string())
    } else {
        let wasm = dist.join(format!("palisade_{filter}.wasm"));
        let bytes = std::fs::read(&wasm)
            .map_err(|e| format!("{}: {e} (run `make build`)", wasm.display()))?;
        Ok(crate::oci::sha256_hex(&bytes))
    }
}

struct Doc {
    comment: Vec<String>,
    body: Value,
}

fn resource(route: &Route, u: &Use, options: &Options) -> Result<Doc, String> {
    let f = u.filter;
    let istio = route.istio.as_ref().ok_or_else(|| {
        format!(
            "route {:?} has no istio section: WasmPlugins attach to workloads \
             (istio.selector) or gateways (istio.targetRefs), not to routes",
            route.name
        )
    })?;
    if istio.selector.is_none() && istio.target_refs.is_none() {
        return Err(format!(
            "route {:?}: istio needs a selector or targetRefs (without, the filters would \
             apply to every workload of the namespace)",
            route.name
        ));
    }
    if let Some(default) = f.hold_headers_default {
        let holds = u
            .config
            .get("hold_headers")
            .and_then(Value::as_bool)
            .unwrap_or(default);
        if holds {
            return Err(format!(
                "route {:?}, {}: hold_headers needs Envoy's allow_on_headers_stop_iteration, \
                 which WasmPlugin and TrafficExtension cannot set: set \"hold_headers\": false \
                 for Istio, or render --kind envoy-filter",
                route.name, f.name
            ));
        }
    }
    let url = options.url.replace("{filter}", f.name);
    let sha256 = match &options.pin_from {
        Some(dist) => Some(digest_for(&url, f.name, dist)?),
        None => None,
    };
    let mut wasm = serde_json::Map::new();
    wasm.insert("url".into(), json!(url));
    if let Some(d) = &sha256 {
        wasm.insert("sha256".into(), json!(d));
    }
    wasm.insert("imagePullPolicy".into(), json!("IfNotPresent"));
    wasm.insert("pluginName".into(), json!(format!("palisade.{}", f.name)));
    wasm.insert("failStrategy".into(), json!(f.istio.fail_strategy));
    wasm.insert("pluginConfig".into(), u.config.clone());

    let mut spec = serde_json::Map::new();
    if let Some(s) = &istio.selector {
        spec.insert("selector".into(), s.clone());
    }
    if let Some(t) = &istio.target_refs {
        spec.insert("targetRefs".into(), t.clone());
    }
    spec.insert("phase".into(), json!(f.istio.phase));
    spec.insert("priority".into(), json!(f.istio.priority));
    if let Some(m) = &istio.traffic {
        spec.insert("match".into(), m.clone());
    }
    let kind = match options.kind {
        Kind::WasmPlugin => {
            spec.extend(wasm);
            "WasmPlugin"
        }
        Kind::TrafficExtension => {
            spec.insert("wasm".into(), Value::Object(wasm));
            "TrafficExtension"
        }
        Kind::EnvoyFilter => unreachable!("EnvoyFilters are rendered by envoy_filter()"),
    };
    let body = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": format!("palisade-{}-{}", route.name, f.name),
            "namespace": istio.namespace.clone().unwrap_or_else(|| "istio-system".into()),
            "labels": {"app.kubernetes.io/part-of": "palisade", "palisade.dev/route": route.name},
        },
        "spec": spec,
    });
    let mut comment = vec![
        format!("{} on route {}: {}", f.name, route.name, f.summary),
        format!(
            "phase {} / priority {}: {}",
            f.istio.phase, f.istio.priority, f.istio.why_placed
        ),
        format!("failStrategy {}", f.istio.why_fail),
    ];
    if sha256.is_none() {
        comment.push(
            "sha256: render with --pin-from dist (after `make oci`) to pin the module".into(),
        );
    }
    Ok(Doc { comment, body })
}

/// One `EnvoyFilter` per route: its chain as HTTP filter patches, each
/// inserted right before the router (so they end up in chain order).
fn envoy_filter(route: &Route, options: &Options) -> Result<Doc, String> {
    let istio = route.istio.as_ref().ok_or_else(|| {
        format!(
            "route {:?} has no istio section (EnvoyFilter needs istio.selector)",
            route.name
        )
    })?;
    let labels = istio
        .selector
        .as_ref()
        .and_then(|s| s.get("matchLabels"))
        .ok_or_else(|| {
            format!(
                "route {:?}: EnvoyFilter needs istio.selector.matchLabels (workloadSelector)",
                route.name
            )
        })?;
    let context = istio
        .context
        .clone()
        .unwrap_or_else(|| "SIDECAR_INBOUND".into());
    let patches: Vec<Value> = route
        .filters
        .iter()
        .map(|u| {
            let instance = crate::envoy::Instance {
                name: format!("palisade.{}", u.filter.name),
                filter: u.filter,
                config: u.config.clone(),
            };
            json!({
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": context,
                    "listener": {"filterChain": {"filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": "envoy.filters.http.router"},
                    }}},
                },
                "patch": {
                    "operation": "INSERT_BEFORE",
                    "value": crate::envoy::instance_json(&instance, &options.wasm_dir),
                },
            })
        })
        .collect();
    let names: Vec<&str> = route.filters.iter().map(|u| u.filter.name).collect();
    Ok(Doc {
        comment: vec![
            format!(
                "route {}: {} from {} (local files in the proxy), in this order before the router",
                route.name,
                names.join(", "),
                options.wasm_dir
            ),
            "each failure_policy follows the filter's failStrategy choice".into(),
        ],
        body: json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {
                "name": format!("palisade-{}", route.name),
                "namespace": istio.namespace.clone().unwrap_or_else(|| "istio-system".into()),
                "labels": {"app.kubernetes.io/part-of": "palisade", "palisade.dev/route": route.name},
            },
            "spec": {"workloadSelector": {"labels": labels}, "configPatches": patches},
        }),
    })
}

/// Multi-document YAML with a comment above each resource.
pub fn render(chain: &Chain, options: &Options) -> Result<String, String> {
    let mut docs = Vec::new();
    for route in &chain.routes {
        if options.kind == Kind::EnvoyFilter {
            if !route.filters.is_empty() {
                docs.push(envoy_filter(route, options)?);
            }
            continue;
        }
        for u in &route.filters {
            docs.push(resource(route, u, options)?);
        }
    }
    let mut out = String::from(
        "# Palisade for Istio, rendered by `palisade render istio` from a chain file.\n\
         # Let the filters' counters through the proxy's stats matcher (mesh-wide in\n\
         # meshConfig.defaultConfig, or per workload in the proxy.istio.io/config\n\
         # annotation): proxyStatsMatcher: {inclusionPrefixes: [wasmcustom.palisade]}\n",
    );
    for doc in docs {
        out.push_str("---\n");
        for line in &doc.comment {
            out.push_str(&wrap_comment(line));
        }
        let yaml = serde_norway::to_string(&doc.body).map_err(|e| e.to_string())?;
        out.push_str(&yaml);
    }
    Ok(out)
}

/// `# line`, wrapped at 100 columns.
fn wrap_comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + word.len() + 1 > 100 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#  ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain;

    const CHAIN: &str = "
version: 1
upstreams: {b: 'http://127.0.0.1:9'}
routes:
  - name: api
    match: {prefix: /}
    upstream: b
    filters: [errors, {headers: {dry_run: true}}]
    istio: {selector: {matchLabels: {istio: ingressgateway}}}
";

    fn docs(text: &str) -> Vec<Value> {
        text.split("\n---\n")
            .skip(1)
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn one_wasmplugin_per_route_and_filter_in_chain_order() {
        let c = chain::load(CHAIN).unwrap();
        let text = render(&c, &Options::default()).unwrap();
        let d = docs(&text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0]["kind"], "WasmPlugin");
        assert_eq!(d[0]["metadata"]["name"], "palisade-api-errors");
        assert_eq!(
            d[0]["spec"]["url"],
            "oci://registry.example.com/palisade/errors:0.1.0"
        );
        assert_eq!(d[1]["spec"]["pluginConfig"], json!({"dry_run": true}));
        // Same phase: errors must run first in, so its priority is higher.
        assert_eq!(d[0]["spec"]["phase"], d[1]["spec"]["phase"]);
        assert!(d[0]["spec"]["priority"].as_i64() > d[1]["spec"]["priority"].as_i64());
        assert!(text.contains("# failStrategy FAIL_OPEN"));
    }

    #[test]
    fn traffic_extensions_nest_the_module_under_wasm() {
        let c = chain::load(CHAIN).unwrap();
        let options = Options {
            kind: Kind::TrafficExtension,
            ..Options::default()
        };
        let d = docs(&render(&c, &options).unwrap());
        assert_eq!(d[0]["kind"], "TrafficExtension");
        assert_eq!(d[0]["spec"]["wasm"]["failStrategy"], "FAIL_OPEN");
        assert_eq!(d[0]["spec"]["phase"], "AUTHN");
        assert!(d[0]["spec"].get("url").is_none());
    }

    #[test]
    fn a_route_without_a_target_is_refused() {
        let c = chain::load(&CHAIN.replace(
            "    istio: {selector: {matchLabels: {istio: ingressgateway}}}\n",
            "",
        ))
        .unwrap();
        assert!(render(&c, &Options::default())
            .unwrap_err()
            .contains("has no istio section"));
    }
}
