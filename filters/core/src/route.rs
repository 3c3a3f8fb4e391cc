//! Route rules: defaults plus `rules: [{ "match": {...}, ...overrides }]`,
//! first match wins, as in Envoy's route table.
//!
//! Each filter declares its own rule struct (so `deny_unknown_fields` names
//! its own override fields) holding a [`Match`], and implements [`Rule`].

use crate::config::ConfigError;
use crate::method::Method;
use crate::path::PathTemplate;
use serde::Deserialize;

/// Which requests a rule applies to. An empty match applies to all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Plain string prefix of the normalised path, as Envoy's route `prefix`.
    pub prefix: Option<String>,
    /// Exact normalised path.
    pub path: Option<String>,
    /// `/users/{id}`: whole segments only.
    pub path_template: Option<PathTemplate>,
    pub methods: Option<Vec<Method>>,
    /// Envoy's route name (`xds.route_name`; `kong.route_name` on Kong).
    pub route_name: Option<String>,
}

/// What a rule is matched against, read once per request.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub method: &'a str,
    /// Already passed through [`crate::path::normalize`].
    pub path: &'a str,
    pub route_name: Option<&'a str>,
}

impl Match {
    pub fn matches(&self, req: &RouteInput<'_>) -> bool {
        if let Some(prefix) = &self.prefix {
            if !req.path.starts_with(prefix.as_str()) {
                return false;
            }
        }
        // `/admin/` (also reached as `/admin//`, `/admin%2f`) is the same
        // resource as `/admin` to most upstreams: exact matches ignore one
        // trailing slash, on both sides.
        let exact = trim_trailing_slash(req.path);
        if let Some(path) = &self.path {
            if exact != trim_trailing_slash(path) {
                return false;
            }
        }
        if let Some(template) = &self.path_template {
            if !template.matches(exact) {
                return false;
            }
        }
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.as_str() == req.method) {
                return false;
            }
        }
        if let Some(name) = &self.route_name {
            if req.route_name != Some(name.as_str()) {
                return false;
            }
        }
        true
    }

    /// Checks what serde cannot: paths that could never match a normalised
    /// path, and more than one kind of path match.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let kinds = [
            self.prefix.is_some(),
            self.path.is_some(),
            self.path_template.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ConfigError::new(
                "",
                "use only one of prefix, path and path_template",
            ));
        }
        for (field, value) in [("prefix", &self.prefix), ("path", &self.path)] {
            if let Some(v) = value {
                if !v.starts_with('/') {
                    return Err(ConfigError::new(field, "must start with '/'"));
                }
                if crate::path::normalize(v) != *v {
                    return Err(ConfigError::new(
                        field,
                        format!(
                            "{v:?} is not a normalised path (matching runs on {:?})",
                            crate::path::normalize(v)
                        ),
                    ));
                }
            }
        }
        if let Some(methods) = &self.methods {
            if methods.is_empty() {
                return Err(ConfigError::new("methods", "must not be empty"));
            }
        }
        Ok(())
    }
}

fn trim_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    }
}

/// A filter's rule type: anything that carries a [`Match`].
pub trait Rule {
    fn matcher(&self) -> &Match;
}

/// First rule whose match applies, as Envoy picks routes.
pub fn first_match<'r, R: Rule>(rules: &'r [R], req: &RouteInput<'_>) -> Option<&'r R> {
    rules.iter().find(|r| r.matcher().matches(req))
}

/// Whether any rule needs the route name, so the host is asked only then.
pub fn needs_route_name<R: Rule>(rules: &[R]) -> bool {
    rules.iter().any(|r| r.matcher().route_name.is_some())
}

/// Validates every rule's match, reporting `rules[i].match...` paths.
pub fn validate_rules<R: Rule>(rules: &[R]) -> Result<(), ConfigError> {
    for (i, rule) in rules.iter().enumerate() {
        rule.matcher()
            .validate()
            .map_err(|e| e.within(&format!("rules[{i}].match")))?;
    }
    Ok(())
}

/// A route `match`: at most one of `prefix`, `path`, `path_template`; no
/// other fields (the config loader refuses them too).
impl schemars::JsonSchema for Match {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Match".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let method = generator.subschema_for::<Method>();
        schemars::json_schema!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "prefix": {"type": "string", "pattern": "^/"},
                "path": {"type": "string", "pattern": "^/"},
                "path_template": {"type": "string", "pattern": "^/"},
                "methods": {"type": "array", "items": method, "minItems": 1},
                "route_name": {"type": "string"}
            },
            "not": {"anyOf": [
                {"required": ["prefix", "path"]},
                {"required": ["prefix", "path_template"]},
                {"required": ["path", "path_template"]}
            ]}
        })
    }
}
