//! `palisade render envoy-gateway`: `EnvoyExtensionPolicy` resources
//! (`gateway.envoyproxy.io/v1alpha1`) for Envoy Gateway.
//!
//! One policy per chain route that has controls, attached (`targetRefs`) to
//! the `HTTPRoute` of the same name. Envoy Gateway turns each `wasm` entry
//! into a wasm filter of its own VM, disabled on the listener and enabled on
//! that HTTPRoute's routes only. It hands `config` to the module as a JSON
//! string, which is what every Palisade module reads, and `failOpen` becomes
//! the filter's `fail_open`: Envoy Gateway has no `FAIL_RELOAD`, so a
//! control that fails closed gets `failOpen: false` (Envoy's `FAIL_CLOSED`).
//!
//! Envoy Gateway names its Envoy routes itself
//! (`httproute/<namespace>/<name>/rule/<i>/match/<j>/<host>`), so
//! `palisade.wasm` gets a one-route chain matching every path: the policy's
//! attachment already scopes it to the route. Services the controls call
//! (JWKS, a rate-limit service) become Envoy clusters through one
//! `EnvoyPatchPolicy` on the Gateway, which Envoy Gateway applies only with
//! `extensionApis.enableEnvoyPatchPolicy: true`.

use crate::chain::{service_refs, Chain, Route, Upstream};
use crate::envoy::{self, Modules, MODULE};
use crate::istio::digest_for;
use serde_json::{json, Value};
use std::path::PathBuf;

/// What `render envoy-gateway` needs besides the chain.
#[derive(Debug, Clone)]
pub struct Options {
    /// Module URL: `oci://registry/image:tag` (an `Image` source) or
    /// `https://...` (an `HTTP` source); `{filter}` becomes the filter name.
    pub url: String,
    /// Where to read digests from (`make oci`'s `dist/`); no `sha256` without.
    pub pin_from: Option<PathBuf>,
    /// The namespace of the HTTPRoutes (a policy attaches in its own namespace).
    pub namespace: String,
    /// The Gateway the `EnvoyPatchPolicy` for called services targets.
    pub gateway: String,
    pub modules: Modules,
}

/// The API version the resources are written for and tested against
/// (`cli/tests/fixtures/envoy-gateway/`).
pub const API_VERSION: &str = "gateway.envoyproxy.io/v1alpha1";

struct Doc {
    comment: Vec<String>,
    body: Value,
}

/// The rendered resources as one YAML stream.
pub fn render_text(chain: &Chain, options: &Options) -> Result<String, String> {
    let docs = render(chain, options)?;
    let mut out = String::from(
        "# Palisade for Envoy Gateway, rendered by `palisade render envoy-gateway` from a\n\
         # chain file: one EnvoyExtensionPolicy per route, attached to the HTTPRoute of\n\
         # the same name.\n",
    );
    for doc in docs {
        out.push_str("---\n");
        for line in &doc.comment {
            out.push_str(&crate::istio::wrap_comment(line));
        }
        out.push_str(&crate::to_yaml(&doc.body)?);
    }
    Ok(out)
}

/// The resources, as JSON values (what the tests validate).
pub fn resources(chain: &Chain, options: &Options) -> Result<Vec<Value>, String> {
    Ok(render(chain, options)?
        .into_iter()
        .map(|d| d.body)
        .collect())
}

fn render(chain: &Chain, options: &Options) -> Result<Vec<Doc>, String> {
    if options.modules == Modules::PerFilter && !options.url.contains("{filter}") {
        return Err(format!(
            "--url {:?} has no {{filter}}: every control would load the same image; \
             write where each one is, for example oci://<registry>/palisade/{{filter}}:<tag>",
            options.url
        ));
    }
    let mut docs = Vec::new();
    for route in chain.routes.iter().filter(|r| !r.filters.is_empty()) {
        docs.push(policy(chain, route, options)?);
    }
    if docs.is_empty() {
        return Err("no route has a control: there is nothing to attach".into());
    }
    if let Some(patch) = services(chain, options) {
        docs.push(patch);
    }
    Ok(docs)
}

/// Where Envoy Gateway fetches a module from, pinned when `pin_from` is set.
fn code(filter: &str, options: &Options) -> Result<Value, String> {
    let url = options.url.replace("{filter}", filter);
    let sha256 = match &options.pin_from {
        Some(dist) => Some(digest_for(&url, filter, dist)?),
        None => None,
    };
    let (kind, field, location) = match url.strip_prefix("oci://") {
        Some(image) => ("Image", "image", image.to_string()),
        None if url.starts_with("http://") || url.starts_with("https://") => {
            ("HTTP", "http", url.clone())
        }
        None => {
            return Err(format!(
                "--url {url:?}: Envoy Gateway fetches modules from an OCI image \
                 (oci://registry/image:tag) or over HTTP(S)"
            ))
        }
    };
    let mut source = json!({ "url": location });
    if let Some(d) = sha256 {
        source["sha256"] = json!(d);
    }
    Ok(json!({"type": kind, field: source}))
}

/// The chain of one route for `palisade.wasm`, matching every path.
fn route_config(chain: &Chain, route: &Route) -> Value {
    let mut config = envoy::module_config(chain, &[route]);
    if let Some(r) = config["routes"].get_mut(0) {
        r["match"] = json!({"prefix": "/"});
    }
    config
}

fn policy(chain: &Chain, route: &Route, options: &Options) -> Result<Doc, String> {
    // Envoy Gateway's Wasm has no `allow_on_headers_stop_iteration`.
    if let Some(u) = route.filters.iter().find(|u| envoy::holds_headers(u)) {
        return Err(format!(
            "route {:?}, {}: hold_headers needs Envoy's allow_on_headers_stop_iteration, \
             which an EnvoyExtensionPolicy cannot set: set \"hold_headers\": false for \
             Envoy Gateway",
            route.name, u.filter.name
        ));
    }
    let mut comment = Vec::new();
    let wasm: Vec<Value> = match options.modules {
        Modules::Single => {
            let fail_closed = route
                .filters
                .iter()
                .find(|u| u.filter.istio.fail_strategy == "FAIL_CLOSE");
            comment.push(format!(
                "palisade.wasm on HTTPRoute {}: {}",
                route.name,
                route
                    .filters
                    .iter()
                    .map(|u| u.filter.name)
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ));
            comment.push(match fail_closed {
                Some(u) => format!(
                    "failOpen false (from {}): a dead VM refuses the route's requests; Envoy \
                     Gateway has no FAIL_RELOAD, so they stay refused until the Envoy pod \
                     restarts",
                    u.filter.name
                ),
                None => "failOpen true: no control of this route must gate traffic".into(),
            });
            vec![json!({
                "name": format!("palisade-{}", route.name),
                "code": code(MODULE, options)?,
                "config": route_config(chain, route),
                "failOpen": fail_closed.is_none(),
            })]
        }
        Modules::PerFilter => {
            let mut list = Vec::new();
            for u in &route.filters {
                let open = u.filter.istio.fail_strategy != "FAIL_CLOSE";
                comment.push(format!(
                    "{} (failOpen {open}): {}",
                    u.filter.name, u.filter.summary
                ));
                list.push(json!({
                    "name": format!("palisade-{}-{}", route.name, u.filter.name),
                    "code": code(u.filter.name, options)?,
                    "config": u.config,
                    "failOpen": open,
                }));
            }
            list
        }
    };
    if options.pin_from.is_none() {
        comment.push("sha256: render with --pin-from dist (after `make oci`) to pin".into());
    }
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": "EnvoyExtensionPolicy",
        "metadata": {
            "name": format!("palisade-{}", route.name),
            "namespace": options.namespace,
            "labels": {"app.kubernetes.io/part-of": "palisade", "palisade.dev/route": route.name},
        },
        "spec": {
            "targetRefs": [{
                "group": "gateway.networking.k8s.io",
                "kind": "HTTPRoute",
                "name": route.name,
            }],
            "wasm": wasm,
        },
    });
    Ok(Doc { comment, body })
}

/// The upstreams the controls call, each once, in the chain's order.
fn called(chain: &Chain) -> Vec<(String, &Upstream)> {
    let configs = chain.shared.iter().map(|(f, c)| (f.name, c)).chain(
        chain
            .routes
            .iter()
            .flat_map(|r| r.filters.iter().map(|u| (u.filter.name, &u.config))),
    );
    let mut out: Vec<(String, &Upstream)> = Vec::new();
    for (filter, config) in configs {
        for (_, name, _) in service_refs(filter, config) {
            if let Some(u) = chain.upstreams.get(&name) {
                if !out.iter().any(|(n, _)| *n == name) {
                    out.push((name, u));
                }
            }
        }
    }
    out
}

/// An `EnvoyPatchPolicy` adding a cluster per called service, named as the
/// controls' configs name it.
fn services(chain: &Chain, options: &Options) -> Option<Doc> {
    let called = called(chain);
    if called.is_empty() {
        return None;
    }
    let patches: Vec<Value> = called
        .iter()
        .map(|(name, u)| {
            json!({
                "type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": name,
                "operation": {"op": "add", "path": "", "value": envoy::cluster(name, u)},
            })
        })
        .collect();
    let names: Vec<&str> = called.iter().map(|(n, _)| n.as_str()).collect();
    Some(Doc {
        comment: vec![format!(
            "The services the controls call ({}), as Envoy clusters of Gateway {}. \
                 Envoy Gateway applies an EnvoyPatchPolicy only with \
                 extensionApis.enableEnvoyPatchPolicy: true in its own config.",
            names.join(", "),
            options.gateway
        )],
        body: json!({
            "apiVersion": API_VERSION,
            "kind": "EnvoyPatchPolicy",
            "metadata": {
                "name": "palisade-services",
                "namespace": options.namespace,
                "labels": {"app.kubernetes.io/part-of": "palisade"},
            },
            "spec": {
                "targetRef": {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": options.gateway,
                },
                "type": "JSONPatch",
                "jsonPatches": patches,
            },
        }),
    })
}
