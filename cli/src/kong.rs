//! `palisade render kong`: Kong's declarative config (`kong.yml`) for a chain.
//!
//! Each upstream becomes a service, each route a Kong route under it (a
//! `prefix` is a Kong path, which matches by prefix; an exact `path` is the
//! regex path `~<path>$`), named after the chain's route.
//!
//! By default ([`Modules::Single`]) a route with controls gets one filter,
//! `palisade` (`palisade.wasm`), configured with the chain file's JSON form;
//! the module picks the route by Kong's route name and runs its controls in
//! order. `palisade.meta.json` beside the module carries the chain's JSON
//! Schema, every filter's config schema included. With one filter per
//! route, the Kong 3.9 plugins form keeps the chain's order too.
//!
//! With [`Modules::PerFilter`], the route's filters become
//!
//! - a `filter_chains` entry on the route (Kong 3.4 to 3.8, and 3.9): the
//!   filters run in the chain's order;
//! - or, with [`Form::Plugins`] (Kong 3.9), one plugin per filter on the
//!   route. Kong gives every filter plugin the same priority, so their
//!   relative order is not the chain's: use filter chains when order matters.
//!
//! Filter names are the module names (`palisade_headers`: the file name in
//! `wasm_filters_path` without `.wasm`). Configs are written as JSON objects,
//! which Kong accepts because `palisade_<name>.meta.json` beside each module
//! carries the config's JSON Schema.

use crate::chain::{Chain, Route};
use crate::envoy::{Modules, MODULE};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    FilterChains,
    Plugins,
}

fn kong_path(prefix: &Option<String>, path: &Option<String>) -> String {
    match (prefix, path) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => {
            let mut escaped = String::from("~");
            for c in p.chars() {
                if "\\.^$|?*+()[]{}".contains(c) {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            escaped.push('$');
            escaped
        }
        (None, None) => "/".into(),
    }
}

pub fn render(chain: &Chain, form: Form, modules: Modules) -> Value {
    let all: Vec<&Route> = chain.routes.iter().collect();
    let module_config = crate::envoy::module_config(chain, &all);
    let mut services = Vec::new();
    for (name, upstream) in &chain.upstreams {
        let routes: Vec<Value> = chain
            .routes
            .iter()
            .filter(|r| &r.upstream == name)
            .map(|r| {
                let mut route = json!({
                    "name": r.name,
                    "paths": [kong_path(&r.prefix, &r.path)],
                    "strip_path": false,
                });
                let filters: Vec<Value> = match modules {
                    Modules::PerFilter => r
                        .filters
                        .iter()
                        .map(|u| json!({"name": u.filter.module(), "config": u.config}))
                        .collect(),
                    Modules::Single if r.filters.is_empty() => Vec::new(),
                    Modules::Single => vec![json!({"name": MODULE, "config": module_config})],
                };
                if !filters.is_empty() {
                    match form {
                        Form::FilterChains => {
                            route["filter_chains"] = json!([{"name": r.name, "filters": filters}]);
                        }
                        Form::Plugins => {
                            route["plugins"] = Value::Array(filters);
                        }
                    }
                }
                route
            })
            .collect();
        if routes.is_empty() {
            continue;
        }
        services.push(json!({"name": name, "url": upstream.url, "routes": routes}));
    }
    json!({"_format_version": "3.0", "services": services})
}

/// One `kong.conf` line the chain needs, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub value: String,
    pub why: String,
}

/// nginx sizes as Kong writes them: whole KiB.
fn kib(bytes: u64) -> String {
    format!("{}k", bytes.div_ceil(1024).max(1))
}

/// The largest value of `field` in a filter's configs, top level and rules.
fn largest(chain: &Chain, filter: &str, field: &str, default: u64) -> Option<u64> {
    let configs: Vec<&Value> = chain
        .routes
        .iter()
        .flat_map(|r| r.filters.iter())
        .filter(|u| u.filter.name == filter)
        .map(|u| &u.config)
        .collect();
    if configs.is_empty() {
        return None;
    }
    let mut max = 0;
    for c in configs {
        max = max.max(c.get(field).and_then(Value::as_u64).unwrap_or(default));
        for rule in c
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            max = max.max(rule.get(field).and_then(Value::as_u64).unwrap_or(0));
        }
    }
    Some(max)
}

/// Every `kong.conf` setting the chain's controls need on Kong's host,
/// sized from their configs (NOTES, "Seen on the real host").
pub fn settings(chain: &Chain) -> Vec<Setting> {
    let uses = |name: &str| {
        chain
            .routes
            .iter()
            .any(|r| r.filters.iter().any(|u| u.filter.name == name))
    };
    let mut out = vec![
        Setting {
            key: "wasm",
            value: "on".into(),
            why: "Kong 3.4 to 3.10 (3.11 removed Wasm)".into(),
        },
        Setting {
            key: "wasm_filters_path",
            value: "/usr/local/kong/wasm".into(),
            why: "the directory holding palisade.wasm (or palisade_<name>.wasm) and its \
                  .meta.json: change to yours"
                .into(),
        },
    ];
    if uses("ratelimit") || uses("jwt") {
        out.push(Setting {
            key: "nginx_wasm_shm_kv",
            value: "16m".into(),
            why: "shared data (rate-limit buckets, JWKS): without a zone every shared-data call traps".into(),
        });
    }
    if let Some(max) = largest(
        chain,
        "schema",
        "max_body_bytes",
        palisade_schema::config::DEFAULT_MAX_BODY_BYTES,
    ) {
        out.push(Setting {
            key: "nginx_http_client_body_buffer_size",
            value: kib(max),
            why: "schema's max_body_bytes: bodies over nginx's buffer (Kong's default 8k) go to a file the filter cannot read".into(),
        });
    }
    // Kong does not check an https upstream's certificate unless told: one
    // trust store for every service (see `tls_refusal` for what it cannot do).
    if let Some(ca) = routed_tls(chain).first().map(|(_, t)| t.ca.clone()) {
        out.push(Setting {
            key: "nginx_proxy_proxy_ssl_verify",
            value: "on".into(),
            why: "https upstreams: without it Kong accepts any certificate".into(),
        });
        out.push(Setting {
            key: "nginx_proxy_proxy_ssl_trusted_certificate",
            value: ca,
            why: "the https upstreams' CA bundle (their `ca`, else the system bundle)".into(),
        });
    }
    // errors' own default `scan_bytes` (64 KiB) when a config leaves it out.
    if let Some(max) = largest(chain, "errors", "scan_bytes", 64 * 1024) {
        // Four buffers, as nginx's default count, large enough together
        // for the scanned bytes (and a masked body to be replaced whole).
        out.push(Setting {
            key: "nginx_http_wasm_response_body_buffers",
            value: format!("4 {}", kib(max.div_ceil(4).max(4096))),
            why: "errors' scan_bytes: response buffering stops when these are full (default 4 4k)"
                .into(),
        });
    }
    out
}

/// The `https://` upstreams Kong proxies routes to, with their TLS settings.
fn routed_tls(chain: &Chain) -> Vec<(&str, &crate::chain::Tls)> {
    chain
        .upstreams
        .iter()
        .filter(|(name, _)| chain.routes.iter().any(|r| &r.upstream == *name))
        .filter_map(|(name, u)| u.tls.as_ref().map(|t| (name.as_str(), t)))
        .collect()
}

/// What Kong cannot honour of the upstreams' TLS settings: it sends and
/// checks each service's host as the server name, and trusts one CA bundle
/// for all of them.
fn tls_refusal(chain: &Chain) -> Option<String> {
    let tls = routed_tls(chain);
    if let Some((name, t)) = tls
        .iter()
        .find(|(name, t)| chain.upstreams[*name].host != t.sni)
    {
        return Some(format!(
            "upstream {name:?}: Kong sends and checks the service's host as the server name, \
             not sni {:?}: leave sni out for Kong",
            t.sni
        ));
    }
    let first = tls.first()?;
    tls.iter()
        .find(|(_, t)| t.ca != first.1.ca)
        .map(|(name, t)| {
            format!(
                "upstreams {:?} and {name:?} name different CA bundles ({} and {}); Kong trusts \
             one bundle for every service: put both CAs in one file",
                first.0, first.1.ca, t.ca
            )
        })
}

/// The declarative config as YAML, with a header giving the `kong.conf`
/// lines the chain needs.
pub fn render_text(chain: &Chain, form: Form, modules: Modules) -> Result<String, String> {
    if let Some(why) = tls_refusal(chain) {
        return Err(why);
    }
    // Kong 3.9's filter plugins all have one priority: their order is not
    // the chain's. One palisade plugin runs the order itself.
    if form == Form::Plugins && modules == Modules::PerFilter {
        if let Some(r) = chain.routes.iter().find(|r| r.filters.len() > 1) {
            return Err(format!(
                "route {:?} chains {} filters, and Kong's plugins form does not keep their \
                 order (every filter plugin has the same priority): render the single module \
                 (palisade.wasm keeps the order) or --form filter-chains",
                r.name,
                r.filters.len()
            ));
        }
    }
    let mut out = String::from(match modules {
        Modules::Single => {
            "# Kong declarative config rendered by `palisade render kong` from a chain file.\n\
             # One filter, palisade (palisade.wasm), runs each route's controls: its config is\n\
             # the chain file as JSON, and the module picks the route by Kong's route name.\n\
             # palisade.meta.json must sit beside the module (the config is a JSON object,\n\
             # which Kong accepts and validates only with that schema).\n\
             # kong.conf for this chain:\n"
        }
        Modules::PerFilter => {
            "# Kong declarative config rendered by `palisade render kong` from a chain file.\n\
             # palisade_<name>.meta.json must sit beside each module (filter configs are JSON\n\
             # objects, which Kong accepts and validates only with that schema).\n\
             # kong.conf for this chain:\n"
        }
    });
    for s in settings(chain) {
        out.push_str(&format!("#   {} = {}    # {}\n", s.key, s.value, s.why));
    }
    out.push_str(&crate::to_yaml(&render(chain, form, modules))?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain;

    #[test]
    fn routes_carry_their_chain_in_order() {
        let c = chain::load(
            "
version: 1
upstreams: {backend: 'http://127.0.0.1:8080'}
routes:
  - {name: api, match: {prefix: /api/}, upstream: backend, filters: [errors, {headers: {dry_run: true}}]}
  - {name: health, match: {path: /health.json}, upstream: backend}
",
        )
        .unwrap();
        let v = render(&c, Form::FilterChains, Modules::PerFilter);
        let route = &v["services"][0]["routes"][0];
        assert_eq!(route["paths"], json!(["/api/"]));
        assert_eq!(
            route["filter_chains"][0]["filters"],
            json!([
                {"name": "palisade_errors", "config": {}},
                {"name": "palisade_headers", "config": {"dry_run": true}}
            ])
        );
        assert_eq!(
            v["services"][0]["routes"][1]["paths"],
            json!(["~/health\\.json$"])
        );
        assert!(v["services"][0]["routes"][1].get("filter_chains").is_none());
        let conf = settings(&c);
        let keys: Vec<&str> = conf.iter().map(|s| s.key).collect();
        assert!(keys.contains(&"nginx_http_wasm_response_body_buffers"));
        assert!(!keys.contains(&"nginx_wasm_shm_kv"));
        let p = render(&c, Form::Plugins, Modules::PerFilter);
        assert_eq!(
            p["services"][0]["routes"][0]["plugins"][1]["name"],
            "palisade_headers"
        );
        // One module: one filter per route with controls, the whole chain as config.
        let v = render(&c, Form::FilterChains, Modules::Single);
        let route = &v["services"][0]["routes"][0];
        assert_eq!(route["name"], "api");
        let filters = route["filter_chains"][0]["filters"].as_array().unwrap();
        assert_eq!(filters.len(), 1);
        assert_eq!(filters[0]["name"], "palisade");
        let config = &filters[0]["config"];
        assert_eq!(
            config["routes"][0]["filters"][1],
            json!({"headers": {"dry_run": true}})
        );
        assert_eq!(config["routes"][1]["name"], "health");
        crate::chain::load_json(config.to_string().as_bytes()).unwrap();
        assert!(v["services"][0]["routes"][1].get("filter_chains").is_none());
        let p = render(&c, Form::Plugins, Modules::Single);
        assert_eq!(
            p["services"][0]["routes"][0]["plugins"][0]["name"],
            "palisade"
        );
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;
    use crate::chain;

    #[test]
    fn settings_follow_the_controls_and_their_sizes() {
        let c = chain::load(
            "
version: 1
upstreams: {backend: 'http://127.0.0.1:8080'}
routes:
  - name: api
    match: {prefix: /api/}
    upstream: backend
    filters: [{ratelimit: {limits: [{name: a, key: [], requests: 9, per_s: 1}]}}, {schema: {max_body_bytes: 20000, rules: [{match: {prefix: /api/big}, max_body_bytes: 65536}]}}]
",
        )
        .unwrap();
        let conf = settings(&c);
        let get = |k: &str| conf.iter().find(|s| s.key == k).map(|s| s.value.clone());
        assert_eq!(get("wasm"), Some("on".into()));
        assert_eq!(get("nginx_wasm_shm_kv"), Some("16m".into()));
        assert_eq!(
            get("nginx_http_client_body_buffer_size"),
            Some("64k".into())
        );
        assert_eq!(get("nginx_http_wasm_response_body_buffers"), None);
        let text = render_text(&c, Form::FilterChains, Modules::Single).unwrap();
        assert!(text.contains("#   nginx_http_client_body_buffer_size = 64k"));
    }

    #[test]
    fn https_upstreams_are_verified_or_refused() {
        let text = "
version: 1
upstreams:
  shop: https://shop.internal
  idp: {url: 'https://127.0.0.1:9443', sni: idp.test, ca: /etc/idp/ca.pem}
routes:
  - {name: api, match: {prefix: /}, upstream: shop, filters: [headers]}
";
        let c = chain::load(text).unwrap();
        let conf = settings(&c);
        let get = |k: &str| conf.iter().find(|s| s.key == k).map(|s| s.value.clone());
        assert_eq!(get("nginx_proxy_proxy_ssl_verify"), Some("on".into()));
        assert_eq!(
            get("nginx_proxy_proxy_ssl_trusted_certificate"),
            Some(chain::SYSTEM_CA.into()),
            "only the routes' upstreams count: idp is jwt's, which Kong calls by authority"
        );
        assert!(render_text(&c, Form::FilterChains, Modules::Single).is_ok());
        // Plain http: nothing to verify.
        let plain = chain::load(&text.replace("upstream: shop", "upstream: plain").replace(
            "upstreams:\n",
            "upstreams:\n  plain: 'http://127.0.0.1:8080'\n",
        ))
        .unwrap();
        assert!(settings(&plain).iter().all(|s| !s.key.contains("ssl")));
        // What Kong cannot do is refused, not dropped.
        let sni = chain::load(&text.replace("upstream: shop", "upstream: idp")).unwrap();
        let err = render_text(&sni, Form::FilterChains, Modules::Single).unwrap_err();
        assert!(err.contains("not sni \"idp.test\""), "{err}");
        let two = chain::load(
            &format!(
            "{text}  - {{name: b, match: {{prefix: /b/}}, upstream: lab, filters: [headers]}}\n"
        )
            .replace(
                "upstreams:\n",
                "upstreams:\n  lab: {url: 'https://lab.internal', ca: /etc/lab.pem}\n",
            ),
        )
        .unwrap();
        let err = render_text(&two, Form::FilterChains, Modules::Single).unwrap_err();
        assert!(err.contains("different CA bundles"), "{err}");
    }

    #[test]
    fn the_plugins_form_keeps_the_order_or_refuses() {
        let c = chain::load(
            "
version: 1
upstreams: {backend: 'http://127.0.0.1:8080'}
routes:
  - {name: api, match: {prefix: /api/}, upstream: backend, filters: [errors, headers]}
  - {name: one, match: {prefix: /one/}, upstream: backend, filters: [headers]}
",
        )
        .unwrap();
        let err = render_text(&c, Form::Plugins, Modules::PerFilter).unwrap_err();
        assert!(err.contains("route \"api\" chains 2 filters"), "{err}");
        let single = render_text(&c, Form::Plugins, Modules::Single).unwrap();
        assert!(single.contains("name: palisade"), "{single}");
        let c = chain::load(
            "
version: 1
upstreams: {backend: 'http://127.0.0.1:8080'}
routes:
  - {name: one, match: {prefix: /one/}, upstream: backend, filters: [headers]}
",
        )
        .unwrap();
        assert!(render_text(&c, Form::Plugins, Modules::PerFilter).is_ok());
    }
}
