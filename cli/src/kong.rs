//! `palisade render kong`: Kong's declarative config (`kong.yml`) for a chain.
//!
//! Each upstream becomes a service, each route a Kong route under it (a
//! `prefix` is a Kong path, which matches by prefix; an exact `path` is the
//! regex path `~<path>$`), and the route's filters become
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

use crate::chain::Chain;
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

pub fn render(chain: &Chain, form: Form) -> Value {
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
                let filters: Vec<Value> = r
                    .filters
                    .iter()
                    .map(|u| json!({"name": u.filter.module(), "config": u.config}))
                    .collect();
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

/// The declarative config as YAML, with a header saying what Kong needs.
pub fn render_text(chain: &Chain, form: Form) -> Result<String, String> {
    let mut out = String::from(
        "# Kong declarative config rendered by `palisade render kong` from a chain file.\n\
         # kong.conf needs `wasm = on` and `wasm_filters_path` holding palisade_<name>.wasm\n\
         # with palisade_<name>.meta.json beside each (filter configs are JSON objects,\n\
         # which Kong accepts and validates only with that schema). See kong/kong.conf.\n",
    );
    if form == Form::Plugins {
        out.push_str(
            "# Kong 3.9 plugins form: every filter plugin has the same priority, so Kong does\n\
             # not run them in the chain's order; use filter_chains when the order matters.\n",
        );
    }
    out.push_str(&crate::to_yaml(&render(chain, form))?);
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
        let v = render(&c, Form::FilterChains);
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
        let p = render(&c, Form::Plugins);
        assert_eq!(
            p["services"][0]["routes"][0]["plugins"][1]["name"],
            "palisade_headers"
        );
    }
}
