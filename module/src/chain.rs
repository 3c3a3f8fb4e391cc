//! The chain file: routes, and for each the filters in order with their
//! configs; configs shared by every route live under `filters`.
//!
//! ```yaml
//! version: 1
//! upstreams:
//!   backend: http://127.0.0.1:8080
//! filters:                 # shared configs: what a route gets when it names the filter
//!   errors: {hold_headers: true}
//! routes:
//!   - name: api
//!     match: {prefix: /api/}
//!     upstream: backend
//!     filters: [errors, headers]          # outermost first; headers gets `{}`
//!   - name: admin
//!     match: {path: /admin}
//!     upstream: backend
//!     filters:
//!       - errors
//!       - headers: {request: {allowed_methods: [GET]}}   # replaces the shared config
//! ```
//!
//! Loading checks the file's shape (unknown keys are errors); [`resolve`]
//! checks the references between its parts. Filter configs themselves are
//! checked by `palisade check` with each filter's own code.

use crate::registry::{self, Filter};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainFile {
    /// Format version; only 1 exists.
    pub version: u32,
    /// Services by name: the routes' upstreams and what controls call (a
    /// JWKS server, the rate-limit service), each an Envoy cluster and a
    /// Kong service. `http://host:port`, `https://host[:port]`, or
    /// `{url, ca, sni, http2}`.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    /// Shared filter configs, by filter name.
    #[serde(default)]
    pub filters: BTreeMap<String, Value>,
    pub routes: Vec<RouteSpec>,
    /// `palisade.wasm` only: also publish each control's decision as an
    /// `x-palisade-<control>` request header, and the verified claims as
    /// Envoy filter state, for the upstream, later filters and access logs.
    /// Off by default: inside the module the controls pass them in memory,
    /// and every published header costs a host call and clears Envoy's route
    /// cache. The per-filter modules always publish.
    #[serde(default)]
    pub publish_decisions: bool,
    /// Where this chain is deployed (`envoy`, `istio`, `kong`): what
    /// `palisade check` validates for when not told. Default: `envoy`, plus
    /// `istio` when a route has an `istio:` section.
    pub platforms: Option<Vec<Platform>>,
}

/// A platform a chain is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Envoy,
    Istio,
    Kong,
}

impl Platform {
    pub fn name(self) -> &'static str {
        match self {
            Platform::Envoy => "envoy",
            Platform::Istio => "istio",
            Platform::Kong => "kong",
        }
    }

    /// The proxy the controls run in there (Istio runs Envoy).
    pub fn host(self) -> palisade_core::HostKind {
        match self {
            Platform::Envoy | Platform::Istio => palisade_core::HostKind::Envoy,
            Platform::Kong => palisade_core::HostKind::Kong,
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Envoy route name (`xds.route_name`), Kong route name, Istio resource names.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// A key of `upstreams`.
    pub upstream: String,
    /// The chain, outermost first.
    #[serde(default)]
    pub filters: Vec<FilterRef>,
    /// Where Istio attaches this route's filters: WasmPlugins attach to
    /// workloads or gateways, not to routes.
    #[serde(default)]
    pub istio: Option<IstioTarget>,
}

/// An upstream: its URL, or the URL with its TLS and protocol settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum UpstreamSpec {
    Url(String),
    Full(UpstreamDetails),
}

/// `https://` settings, and HTTP/2 for gRPC services.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDetails {
    /// `http://host:port` or `https://host[:port]` (443 by default).
    pub url: String,
    /// CA bundle (PEM file on the proxy) the server's certificate must
    /// chain to; default the system bundle (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca: Option<String>,
    /// Server name sent (SNI) and required in the certificate's SANs;
    /// default the URL's host.
    pub sni: Option<String>,
    /// Speak HTTP/2 to it (gRPC: the rate-limit service). Default false,
    /// true for a service `ratelimit`'s `global.cluster` names.
    #[serde(default)]
    pub http2: bool,
}

/// A path prefix or an exact path, as Envoy and Kong route on them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path prefix (`/api/`); give this or `path`.
    pub prefix: Option<String>,
    /// Exact path (`/healthz`); give this or `prefix`.
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IstioTarget {
    /// Namespace of the rendered resources (default `istio-system`).
    pub namespace: Option<String>,
    /// `selector: {matchLabels: {...}}`.
    pub selector: Option<Value>,
    /// `targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: ...}]`.
    #[serde(rename = "targetRefs")]
    pub target_refs: Option<Value>,
    /// WasmPlugin `match` (traffic mode and ports).
    #[serde(rename = "match")]
    pub traffic: Option<Value>,
    /// EnvoyFilter patch context: `SIDECAR_INBOUND` (default) or `GATEWAY`.
    pub context: Option<String>,
}

/// EnvoyFilter patch contexts.
pub const ISTIO_CONTEXTS: [&str; 4] = ["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "ANY"];

/// `headers` (shared config or `{}`) or `{headers: {...}}` (this route's own).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FilterRef {
    Name(String),
    WithConfig(BTreeMap<String, Value>),
}

/// Something wrong in the file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

fn problem(at: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        at: at.into(),
        message: message.into(),
    }
}

/// Where a config was written: shared, or in one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Shared,
    Route(usize),
}

/// One filter of one route, with the config it gets.
#[derive(Debug, Clone)]
pub struct Use {
    pub filter: &'static Filter,
    pub config: Value,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub upstream: String,
    pub filters: Vec<Use>,
    pub istio: Option<IstioTarget>,
}

/// A chain whose references all resolve.
#[derive(Debug, Clone)]
pub struct Chain {
    /// See [`ChainFile::publish_decisions`].
    pub publish_decisions: bool,
    /// See [`ChainFile::platforms`]; the default already applied.
    pub platforms: Vec<Platform>,
    pub upstreams: BTreeMap<String, Upstream>,
    /// Shared configs (every one, used or not: all are checked).
    pub shared: Vec<(&'static Filter, Value)>,
    pub routes: Vec<Route>,
}

/// An upstream, split and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Set for `https://`.
    pub tls: Option<Tls>,
    /// Asked for, or needed by a control calling it over gRPC.
    pub http2: bool,
}

/// How the proxy checks an `https://` upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub sni: String,
    /// PEM file on the proxy.
    pub ca: String,
}

/// The CA bundle of Debian, Ubuntu and the Envoy images.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The upstreams a control calls, from its config: `(field path, name,
/// whether it is a gRPC call)`.
/// `palisade check` refuses a name `upstreams` lacks; `render` makes each a
/// cluster (HTTP/2 for gRPC).
pub fn service_refs(filter: &str, config: &Value) -> Vec<(String, String, bool)> {
    let mut refs = Vec::new();
    match filter {
        "jwt" => {
            for (name, p) in config["providers"].as_object().into_iter().flatten() {
                if let Some(c) = p["remote_jwks"]["cluster"].as_str() {
                    refs.push((
                        format!("providers.{name}.remote_jwks.cluster"),
                        c.to_string(),
                        false,
                    ));
                }
            }
        }
        "ratelimit" => {
            if let Some(c) = config["global"]["cluster"].as_str() {
                refs.push(("global.cluster".to_string(), c.to_string(), true));
            }
        }
        _ => {}
    }
    refs
}

/// Parses a chain file's text (YAML, of which JSON is a subset).
#[cfg(feature = "yaml")]
pub fn parse(text: &str) -> Result<ChainFile, Problem> {
    serde_norway::from_str(text)
        .map_err(|e| problem("", palisade_core::config::operator_words(&e.to_string())))
}

/// Loads and resolves; every problem found is returned, not only the first.
#[cfg(feature = "yaml")]
pub fn load(text: &str) -> Result<Chain, Vec<Problem>> {
    let file = parse(text).map_err(|p| vec![p])?;
    resolve(&file)
}

/// Walks a JSON document and fails on the first object holding a key twice,
/// naming where: each control's own loader refuses repeated fields, and a
/// chain would otherwise keep only the last value silently.
struct UniqueKeys<'p>(&'p str);

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(UniqueKeys(&format!("{}[{i}]", self.0)))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = if self.0.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.0)
            };
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format!("{at}: duplicate key")));
            }
            map.next_value_seed(UniqueKeys(&at))?;
            seen.push(key);
        }
        Ok(())
    }
}

/// The chain file's JSON form, as `palisade.wasm` receives it: parsed and
/// resolved with the same checks as `palisade check`.
pub fn load_json(json: &[u8]) -> Result<Chain, Vec<Problem>> {
    use serde::de::DeserializeSeed;
    UniqueKeys("")
        .deserialize(&mut serde_json::Deserializer::from_slice(json))
        .map_err(|e| vec![problem("", e.to_string())])?;
    let file: ChainFile = serde_path_to_error::deserialize(
        &mut serde_json::Deserializer::from_slice(json),
    )
    .map_err(|e| {
        let at = e.path().to_string();
        vec![problem(
            if at == "." { String::new() } else { at },
            palisade_core::config::operator_words(&e.into_inner().to_string()),
        )]
    })?;
    resolve(&file)
}

fn known_filter(name: &str, at: &str) -> Result<&'static Filter, Problem> {
    registry::find(name).ok_or_else(|| {
        problem(
            at,
            format!("unknown filter {name:?} (known: {})", registry::names()),
        )
    })
}

/// Route names become Envoy route names, Kong route names and parts of
/// Kubernetes resource names.
fn check_route_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1-50 lowercase letters, digits and '-' (it names Kubernetes resources)"
        ))
    }
}

fn parse_upstream(spec: &UpstreamSpec) -> Result<Upstream, String> {
    let details = match spec {
        UpstreamSpec::Url(url) => UpstreamDetails {
            url: url.clone(),
            ca: None,
            sni: None,
            http2: false,
        },
        UpstreamSpec::Full(d) => d.clone(),
    };
    let url = details.url.as_str();
    let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => {
            return Err(format!(
                "{url:?}: expected http://host:port or https://host[:port]"
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: invalid port {port:?}"))?;
            (host, port)
        }
        None if https => (authority, 443),
        None => return Err(format!("{url:?}: the port is missing (http://host:port)")),
    };
    if host.is_empty() || authority.contains('/') || host.contains(['@', '?', '#']) {
        return Err(format!(
            "{url:?}: expected a scheme, a host and a port, without a path"
        ));
    }
    if !https && (details.ca.is_some() || details.sni.is_some()) {
        return Err(format!("{url:?}: ca and sni are for https:// upstreams"));
    }
    if details.ca.as_deref().is_some_and(|c| !c.starts_with('/')) {
        return Err("ca: the absolute path of a PEM bundle on the proxy".into());
    }
    if details
        .sni
        .as_deref()
        .is_some_and(|n| n.is_empty() || n.contains(['/', ':', ' ']))
    {
        return Err("sni: a host name".into());
    }
    Ok(Upstream {
        url: url.to_string(),
        host: host.to_string(),
        port,
        tls: https.then(|| Tls {
            sni: details.sni.clone().unwrap_or_else(|| host.to_string()),
            ca: details.ca.clone().unwrap_or_else(|| SYSTEM_CA.to_string()),
        }),
        http2: details.http2,
    })
}

fn check_path(value: &str) -> Result<(), String> {
    if !value.starts_with('/') {
        return Err(format!("{value:?} must start with '/'"));
    }
    if value
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!("{value:?} must not contain blanks"));
    }
    Ok(())
}

/// Checks every reference and builds the routes' filter lists.
pub fn resolve(file: &ChainFile) -> Result<Chain, Vec<Problem>> {
    let (chain, problems) = resolve_all(file);
    if problems.is_empty() {
        Ok(chain)
    } else {
        Err(problems)
    }
}

/// Everything that resolves, with every problem found: `palisade check`
/// then also checks the filter configs of a chain that has other problems,
/// so one run reports them all.
pub fn resolve_all(file: &ChainFile) -> (Chain, Vec<Problem>) {
    let mut problems = Vec::new();
    if file.version != 1 {
        problems.push(problem(
            "version",
            format!(
                "unsupported version {} (this palisade reads 1)",
                file.version
            ),
        ));
    }
    if file.platforms.as_ref().is_some_and(Vec::is_empty) {
        problems.push(problem(
            "platforms",
            "must list at least one of envoy, istio, kong (or leave it out)",
        ));
    }

    let mut upstreams = BTreeMap::new();
    for (name, spec) in &file.upstreams {
        match parse_upstream(spec) {
            Ok(u) => {
                upstreams.insert(name.clone(), u);
            }
            Err(m) => problems.push(problem(format!("upstreams.{name}"), m)),
        }
    }

    let mut shared = Vec::new();
    for (name, config) in &file.filters {
        let at = format!("filters.{name}");
        match known_filter(name, &at) {
            Ok(f) => shared.push((f, config.clone())),
            Err(p) => problems.push(p),
        }
    }

    if file.routes.is_empty() {
        problems.push(problem("routes", "a chain needs at least one route"));
    }
    let mut routes = Vec::new();
    for (i, spec) in file.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if let Err(m) = check_route_name(&spec.name) {
            problems.push(problem(format!("{at}.name"), m));
        }
        if file.routes[..i].iter().any(|r| r.name == spec.name) {
            problems.push(problem(
                format!("{at}.name"),
                format!("route {:?} is defined twice", spec.name),
            ));
        }
        match (&spec.matcher.prefix, &spec.matcher.path) {
            (Some(v), None) | (None, Some(v)) => {
                if let Err(m) = check_path(v) {
                    problems.push(problem(format!("{at}.match"), m));
                }
            }
            _ => problems.push(problem(
                format!("{at}.match"),
                "give exactly one of prefix and path",
            )),
        }
        if !file.upstreams.contains_key(&spec.upstream) {
            problems.push(problem(
                format!("{at}.upstream"),
                format!("{:?} is not in upstreams", spec.upstream),
            ));
        }
        if let Some(istio) = &spec.istio {
            if istio.selector.is_some() && istio.target_refs.is_some() {
                problems.push(problem(
                    format!("{at}.istio"),
                    "selector and targetRefs are mutually exclusive",
                ));
            }
            if let Some(context) = &istio.context {
                if !ISTIO_CONTEXTS.contains(&context.as_str()) {
                    problems.push(problem(
                        format!("{at}.istio.context"),
                        format!("{context:?}: expected one of {}", ISTIO_CONTEXTS.join(", ")),
                    ));
                }
            }
        }
        let mut uses: Vec<Use> = Vec::new();
        for (j, r) in spec.filters.iter().enumerate() {
            let fat = format!("{at}.filters[{j}]");
            let (name, own) = match r {
                FilterRef::Name(n) => (n.clone(), None),
                FilterRef::WithConfig(m) => match m.iter().next() {
                    Some((n, c)) if m.len() == 1 => (n.clone(), Some(c.clone())),
                    _ => {
                        problems.push(problem(
                            fat,
                            "write a filter as `name` or as `name: {config}` (one key)",
                        ));
                        continue;
                    }
                },
            };
            let filter = match known_filter(&name, &fat) {
                Ok(f) => f,
                // Already reported where it is configured, under `filters`.
                Err(_) if file.filters.contains_key(&name) => continue,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            if uses.iter().any(|u| u.filter.name == filter.name) {
                problems.push(problem(
                    fat,
                    format!("{name:?} is listed twice in this route"),
                ));
                continue;
            }
            let (config, origin) = match own {
                Some(c) => (c, Origin::Route(i)),
                None => (
                    file.filters
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    Origin::Shared,
                ),
            };
            uses.push(Use {
                filter,
                config,
                origin,
            });
        }
        routes.push(Route {
            name: spec.name.clone(),
            prefix: spec.matcher.prefix.clone(),
            path: spec.matcher.path.clone(),
            upstream: spec.upstream.clone(),
            filters: uses,
            istio: spec.istio.clone(),
        });
    }

    // What the controls call must be declared, once, as an upstream.
    let shared_uses = shared.iter().map(|(f, c)| ("filters".to_string(), *f, c));
    let route_uses = routes.iter().enumerate().flat_map(|(i, r)| {
        r.filters
            .iter()
            .filter(|u| u.origin != Origin::Shared)
            .map(move |u| {
                (
                    format!("routes[{i}] ({}).filters", r.name),
                    u.filter,
                    &u.config,
                )
            })
    });
    for (place, filter, config) in shared_uses.chain(route_uses) {
        for (field, name, grpc) in service_refs(filter.name, config) {
            match upstreams.get_mut(&name) {
                Some(u) => u.http2 |= grpc,
                None => problems.push(problem(
                    format!("{place}.{}.{field}", filter.name),
                    format!(
                        "{name:?} is not in upstreams: declare the service there \
                         (https://host for TLS), so every platform can reach it"
                    ),
                )),
            }
        }
    }
    let platforms = match &file.platforms {
        Some(listed) => {
            let mut p = listed.clone();
            p.sort();
            p.dedup();
            p
        }
        None => {
            let mut p = vec![Platform::Envoy];
            if routes.iter().any(|r| r.istio.is_some()) {
                p.push(Platform::Istio);
            }
            p
        }
    };
    let chain = Chain {
        publish_decisions: file.publish_decisions,
        platforms,
        upstreams,
        shared,
        routes,
    };
    (chain, problems)
}

impl Chain {
    /// Where a use's config was written, for messages: `filters.headers` or
    /// `routes[1] (admin).filters.headers`.
    pub fn origin_label(&self, filter: &Filter, origin: &Origin) -> String {
        match origin {
            Origin::Shared => format!("filters.{}", filter.name),
            Origin::Route(i) => {
                let name = self.routes.get(*i).map(|r| r.name.as_str()).unwrap_or("?");
                format!("routes[{i}] ({name}).filters.{}", filter.name)
            }
        }
    }
}

#[cfg(all(test, feature = "yaml"))]
mod tests {
    use super::*;

    const TWO_ROUTES: &str = "
version: 1
upstreams: {backend: 'http://127.0.0.1:8080'}
filters:
  errors: {hold_headers: true}
routes:
  - name: api
    match: {prefix: /api/}
    upstream: backend
    filters: [errors, headers]
  - name: admin
    match: {path: /admin}
    upstream: backend
    filters:
      - errors
      - headers: {request: {allowed_methods: [GET]}}
";

    #[test]
    fn shared_configs_apply_and_route_configs_replace_them() {
        let chain = load(TWO_ROUTES).unwrap();
        let api = &chain.routes[0];
        assert_eq!(
            api.filters[0].config,
            serde_json::json!({"hold_headers": true})
        );
        assert_eq!(api.filters[1].config, serde_json::json!({}));
        assert_eq!(api.filters[1].origin, Origin::Shared);
        let admin = &chain.routes[1];
        assert_eq!(
            admin.filters[1].config,
            serde_json::json!({"request": {"allowed_methods": ["GET"]}})
        );
        assert_eq!(admin.filters[1].origin, Origin::Route(1));
        assert_eq!(chain.upstreams["backend"].port, 8080);
    }

    #[test]
    fn every_reference_problem_is_reported_with_its_place() {
        let text = "
version: 2
upstreams: {b: 'http://h'}
filters: {nope: {}}
routes:
  - name: Api
    match: {prefix: api, path: /x}
    upstream: missing
    filters: [errors, errors, {headers: {}, errors: {}}, jwtt]
";
        let problems = load(text).unwrap_err();
        let at: Vec<&str> = problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "version",
                "upstreams.b",
                "filters.nope",
                "routes[0].name",
                "routes[0].match",
                "routes[0].upstream",
                "routes[0].filters[1]",
                "routes[0].filters[2]",
                "routes[0].filters[3]",
            ]
        );
        assert!(problems[8].message.contains("unknown filter \"jwtt\""));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err = parse("version: 1\nroutes: []\nroutse: []\n").unwrap_err();
        assert!(err.message.contains("unknown field `routse`"), "{err}");
        assert!(err.message.contains("line 3"), "{err}");
    }

    fn url(u: &str) -> Result<Upstream, String> {
        parse_upstream(&UpstreamSpec::Url(u.into()))
    }

    #[test]
    fn upstream_urls_are_a_scheme_a_host_and_a_port() {
        let plain = url("http://api.internal:8080").unwrap();
        assert_eq!((plain.port, plain.tls), (8080, None));
        let tls = url("https://id.example.com").unwrap();
        assert_eq!(tls.port, 443);
        assert_eq!(
            tls.tls,
            Some(Tls {
                sni: "id.example.com".into(),
                ca: SYSTEM_CA.into()
            })
        );
        assert_eq!(url("https://x:8443").unwrap().port, 8443);
        for bad in [
            "http://x",
            "http://x:1/path",
            "ftp://x:1",
            "https://x:0",
            "https://user@x",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
        let full = |v: serde_json::Value| {
            parse_upstream(&serde_json::from_value::<UpstreamSpec>(v).unwrap())
        };
        let own = full(
            serde_json::json!({"url": "https://127.0.0.1:9443", "sni": "idp.test",
                                           "ca": "/etc/idp/ca.pem"}),
        )
        .unwrap();
        assert_eq!(
            own.tls,
            Some(Tls {
                sni: "idp.test".into(),
                ca: "/etc/idp/ca.pem".into()
            })
        );
        assert!(full(serde_json::json!({"url": "http://x:1", "sni": "y"})).is_err());
        assert!(full(serde_json::json!({"url": "https://x", "ca": "relative.pem"})).is_err());
    }

    #[test]
    fn what_controls_call_must_be_an_upstream_and_grpc_services_get_http2() {
        let text = "
version: 1
upstreams:
  b: 'http://127.0.0.1:1'
  idp: https://id.example.com
  rls: 'http://127.0.0.1:8081'
filters:
  ratelimit: {mode: global, global: {cluster: rls, domain: d}, limits: [{name: a, key: [], requests: 1, per_s: 1}]}
routes:
  - name: api
    match: {prefix: /}
    upstream: b
    filters:
      - ratelimit
      - jwt: {providers: {corp: {remote_jwks: {cluster: idp, path: /jwks, authority: id.example.com}}}}
";
        let chain = load(text).unwrap();
        assert!(chain.upstreams["rls"].http2, "gRPC");
        assert!(!chain.upstreams["idp"].http2);
        let problems = load(&text.replace("cluster: idp", "cluster: idp-typo")).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].at,
            "routes[0] (api).filters.jwt.providers.corp.remote_jwks.cluster"
        );
        assert!(problems[0]
            .message
            .contains("\"idp-typo\" is not in upstreams"));
        let problems = load(&text.replace("cluster: rls", "cluster: nope")).unwrap_err();
        assert_eq!(problems[0].at, "filters.ratelimit.global.cluster");
    }
}
