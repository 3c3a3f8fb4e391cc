//! The fenced blocks of the README and of every documentation page
//! (`docs/src/**/*.md`), read by a CommonMark parser and sorted into what they
//! show, so `tests/tests/readme.rs` can check every config as written.
//! mdBook's `{{#include path}}` lines inside a block are replaced by the
//! file they name (`expand_includes`), as the site shows them.
//!
//! Classification (`classify`) goes by the fence's info string, then by content,
//! then by the heading the block sits under:
//!
//! - `sh`, `bash`, `console`, `text`… (`SKIPPED_LANGS`): commands and output, skipped.
//! - `json`: a problem document (`type`, `title`, `status`) is output, skipped; an
//!   object with a `filters` list of `palisade_*` entries is a Kong filter chain;
//!   anything else is a filter config, for the filter the nearest heading
//!   naming one is about (`` ## `jwt`: … `` in the README, a control page's
//!   `` # `jwt`: … `` title), or every filter under the shared-core section.
//! - `yaml`: Istio resources (`apiVersion` + `kind`), a whole Envoy bootstrap
//!   (`static_resources`), a chain file (`version` + `routes`), Kong declarative
//!   config (`_format_version`, `services`, `filter_chains`, `plugins`), or an Envoy
//!   fragment (an HCM, its `http_filters`, filter entries, bootstrap fields, clusters).
//! - no info string: `kong.conf` lines when every line is `key = value`.
//!
//! Anything else is an error, so a config added to the README later cannot go
//! untested. Two HTML comments written right before a fence steer this:
//! `<!-- not-a-config -->` skips a block that is not a config whatever its
//! info string, and `<!-- filter: NAME[, NAME…] -->` names the filters a JSON
//! block configures (where its section does not say, or to check a shared-core
//! example in only the filters it fits).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Parser, Tag, TagEnd};
use regex::Regex;
use serde_json::{json, Map, Value};

use crate::paths::{envoy_bin, repo_root};

/// Info strings of blocks that show commands or output, never a config.
pub const SKIPPED_LANGS: &[&str] = &[
    "sh",
    "bash",
    "shell",
    "zsh",
    "console",
    "shell-session",
    "text",
    "txt",
    "plaintext",
    "log",
    "output",
];

/// Marker comment that skips the next block.
pub const NOT_A_CONFIG: &str = "<!-- not-a-config -->";

/// One fenced (or indented) code block of the README or a documentation page.
#[derive(Debug, Clone)]
pub struct Block {
    /// The file it is in, relative to the repository (`docs/src/controls/jwt.md`).
    pub file: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The info string's first word, lowercased (`""` when absent).
    pub lang: String,
    /// The block's content.
    pub text: String,
    /// The headings above the block, outermost first: `(level, text)`, inline
    /// code kept in backticks.
    pub headings: Vec<(u8, String)>,
    /// The marker comment right before the fence, if any.
    pub marker: Option<Marker>,
}

/// What a marker comment right before a fence says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// `<!-- not-a-config -->`.
    NotAConfig,
    /// `<!-- filter: NAME[, NAME…] -->`: the filters a JSON block configures.
    Filter(Vec<String>),
}

impl Block {
    /// `<file>:<line> (<nearest heading>)`, for failure messages.
    pub fn label(&self) -> String {
        format!("{}:{} ({})", self.file, self.line, self.heading())
    }

    /// The nearest heading's text.
    pub fn heading(&self) -> &str {
        self.headings.last().map(|(_, h)| h.as_str()).unwrap_or("")
    }

    /// The enclosing level-2 heading (the README's per-filter sections).
    pub fn section(&self) -> &str {
        self.headings
            .iter()
            .rev()
            .find(|(level, _)| *level <= 2)
            .map(|(_, h)| h.as_str())
            .unwrap_or("")
    }

    /// Whether a heading above the block is `text`'s (a substring).
    pub fn under(&self, text: &str) -> bool {
        self.headings.iter().any(|(_, h)| h.contains(text))
    }
}

/// The documentation: `README.md`, then every page under `docs/src/`, sorted,
/// as `(path relative to root, text)`.
pub fn doc_files(root: &Path) -> Vec<(String, String)> {
    let mut pages = Vec::new();
    collect_markdown(&root.join("docs/src"), &mut pages);
    pages.sort();
    std::iter::once(root.join("README.md"))
        .chain(pages)
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            let rel = p.strip_prefix(root).unwrap_or(&p);
            (rel.to_string_lossy().into_owned(), text)
        })
        .collect()
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_markdown(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// Every code block of every documentation file (`doc_files`), includes expanded.
pub fn doc_blocks(root: &Path) -> Vec<Block> {
    doc_files(root)
        .into_iter()
        .flat_map(|(file, text)| {
            let dir = root.join(&file);
            let dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
            blocks_in(&file, &text).into_iter().map(move |mut b| {
                b.text = expand_includes(&b.text, &dir);
                b
            })
        })
        .collect()
}

/// mdBook's `{{#include path}}` lines (whole files only), replaced by the file
/// they name relative to `dir`. A line naming a file that cannot be read is
/// left as it is, so the block fails its check (and `tests/tests/docs.rs`
/// names the include).
pub fn expand_includes(text: &str, dir: &Path) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let included = include_target(line).and_then(|t| std::fs::read_to_string(dir.join(t)).ok());
        match included {
            Some(body) => {
                out.push_str(&body);
                if !body.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The path of an mdBook `{{#include path}}` line.
pub fn include_target(line: &str) -> Option<&str> {
    line.trim()
        .strip_prefix("{{#include ")?
        .strip_suffix("}}")
        .map(str::trim)
}

/// Every code block of `markdown` (the README), with its line, info string,
/// headings and marker.
pub fn blocks(markdown: &str) -> Vec<Block> {
    blocks_in("README.md", markdown)
}

/// Every code block of the file `file` whose text is `markdown`.
pub fn blocks_in(file: &str, markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut headings: Vec<(u8, String)> = Vec::new();
    let mut heading: Option<(u8, String)> = None;
    let mut code: Option<Block> = None;
    for (event, range) in Parser::new(markdown).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level_number(level), String::new()))
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    headings.retain(|(l, _)| *l < level);
                    headings.push((level, text.trim().to_string()));
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase(),
                    CodeBlockKind::Indented => String::new(),
                };
                code = Some(Block {
                    file: file.to_string(),
                    line: markdown[..range.start].matches('\n').count() + 1,
                    lang,
                    text: String::new(),
                    headings: headings.clone(),
                    marker: marker_before(&markdown[..range.start]),
                });
            }
            Event::End(TagEnd::CodeBlock) => out.extend(code.take()),
            Event::Text(t) => {
                if let Some(b) = code.as_mut() {
                    b.text.push_str(&t);
                } else if let Some((_, h)) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Code(t) => {
                if let Some((_, h)) = heading.as_mut() {
                    h.push('`');
                    h.push_str(&t);
                    h.push('`');
                }
            }
            _ => {}
        }
    }
    out
}

fn level_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// The marker comment that ends the text before a fence (blank lines and the
/// fence's indentation aside).
fn marker_before(before: &str) -> Option<Marker> {
    let before = before.trim_end();
    let last = before.lines().last()?.trim();
    if last == NOT_A_CONFIG {
        return Some(Marker::NotAConfig);
    }
    let names = last.strip_prefix("<!-- filter:")?.strip_suffix("-->")?;
    Some(Marker::Filter(
        names.split(',').map(|n| n.trim().to_string()).collect(),
    ))
}

/// Hosts a filter config is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Envoy (and Istio, whose proxies are Envoy).
    Envoy,
    /// Kong's ngx_wasm_module.
    Kong,
}

/// What an Envoy fragment is, and so where the harness bootstrap takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// `http_connection_manager: {...}`, or HCM fields alone
    /// (`use_remote_address: true`): merged into the harness's HCM.
    Hcm,
    /// Listener fields (`per_connection_buffer_limit_bytes`): merged into the
    /// harness's listener.
    Listener,
    /// `http_filters: [...]`, a list of filter entries, or one entry.
    HttpFilters,
    /// Top-level bootstrap fields (`stats_config`, `admin`, …).
    Bootstrap,
    /// `clusters: [...]`: added to `static_resources.clusters`.
    Clusters,
}

/// What a block shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Not a config; the reason says which kind.
    Skip(String),
    /// A filter's JSON config, for these filters and hosts.
    FilterJson {
        /// Filter names (`headers`).
        filters: Vec<String>,
        /// Hosts it must load on.
        hosts: Vec<Host>,
    },
    /// A `palisade` chain file.
    Chain,
    /// A complete Envoy bootstrap.
    EnvoyBootstrap,
    /// Part of an Envoy bootstrap.
    EnvoyFragment(Fragment),
    /// Istio resources.
    Istio,
    /// `kong.conf` lines.
    KongConf,
    /// Kong declarative config (`kong.yml`) or a part of it.
    KongDeclarative,
    /// A Kong filter chain as JSON (`{"filters": [{"name": "palisade_…", …}]}`).
    KongFilterChainJson,
}

/// Bootstrap fields a fragment may consist of.
const BOOTSTRAP_FIELDS: &[&str] = &[
    "node",
    "admin",
    "stats_config",
    "stats_sinks",
    "stats_flush_interval",
    "layered_runtime",
    "overload_manager",
    "cluster_manager",
    "dynamic_resources",
    "tracing",
    "watchdogs",
    "bootstrap_extensions",
];

/// HTTP connection manager fields a fragment may consist of.
const HCM_FIELDS: &[&str] = &[
    "codec_type",
    "stat_prefix",
    "route_config",
    "http_filters",
    "server_header_transformation",
    "server_name",
    "use_remote_address",
    "xff_num_trusted_hops",
    "skip_xff_append",
    "internal_address_config",
    "original_ip_detection_extensions",
    "normalize_path",
    "merge_slashes",
    "path_with_escaped_slashes_action",
    "path_normalization_options",
    "preserve_external_request_id",
    "generate_request_id",
    "always_set_request_id_in_response",
    "stream_idle_timeout",
    "request_timeout",
    "request_headers_timeout",
    "drain_timeout",
    "max_request_headers_kb",
    "common_http_protocol_options",
    "http_protocol_options",
    "http2_protocol_options",
    "access_log",
    "local_reply_config",
    "strip_matching_host_port",
    "strip_any_host_port",
    "forward_client_cert_details",
    "set_current_client_cert_details",
];

/// Listener fields a fragment may consist of.
const LISTENER_FIELDS: &[&str] = &[
    "per_connection_buffer_limit_bytes",
    "listener_filters",
    "listener_filters_timeout",
    "socket_options",
    "connection_balance_config",
    "enable_reuse_port",
];

/// Sorts `block` into a `Class`, or says why it cannot (`filters`: known filter
/// names, `headers`…).
pub fn classify(block: &Block, filters: &[&str]) -> Result<Class, String> {
    if block.marker == Some(Marker::NotAConfig) {
        return Ok(Class::Skip(format!("marked {NOT_A_CONFIG}")));
    }
    let lang = block.lang.as_str();
    if SKIPPED_LANGS.contains(&lang) {
        return Ok(Class::Skip(format!("```{lang}")));
    }
    match lang {
        "json" => classify_json(block, filters),
        "yaml" | "yml" => classify_yaml(block),
        "" | "ini" | "conf" | "properties" => {
            if looks_like_kong_conf(&block.text) {
                Ok(Class::KongConf)
            } else {
                Err(format!(
                    "a block with info string {lang:?} that is not kong.conf lines: label its fence \
                     (text, console, json, yaml…) or put {NOT_A_CONFIG} before it"
                ))
            }
        }
        other => Err(format!(
            "info string {other:?} is neither a config language this test checks nor one it skips \
             ({SKIPPED_LANGS:?}): put {NOT_A_CONFIG} before it if it is not a config"
        )),
    }
}

fn classify_json(block: &Block, filters: &[&str]) -> Result<Class, String> {
    // A JSON block that does not parse is still a filter config: its check says why.
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&block.text) {
        if ["type", "title", "status"]
            .iter()
            .all(|k| m.contains_key(*k))
        {
            return Ok(Class::Skip("a problem+json response".into()));
        }
        if is_kong_filter_list(m.get("filters")) {
            return Ok(Class::KongFilterChainJson);
        }
    }
    let named = match &block.marker {
        Some(Marker::Filter(names)) => Some(names.clone()),
        _ => block
            .headings
            .iter()
            .rev()
            .find_map(|(_, h)| section_filter(h, filters))
            .map(|n| vec![n]),
    };
    let filters: Vec<String> = match named {
        Some(names) => names,
        None if block.under("What every filter shares") => {
            filters.iter().map(|f| f.to_string()).collect()
        }
        None => {
            return Err(format!(
                "a JSON block outside a filter's section: put <!-- filter: NAME --> (or \
                 {NOT_A_CONFIG}) before it"
            ))
        }
    };
    Ok(Class::FilterJson {
        filters,
        hosts: hosts_of(block),
    })
}

/// `` `jwt`: bearer tokens… `` → `jwt`.
fn section_filter(section: &str, filters: &[&str]) -> Option<String> {
    let name = section.strip_prefix('`')?.split('`').next()?;
    filters.contains(&name).then(|| name.to_string())
}

/// Kong when the nearest heading is about Kong, both when it names Envoy too,
/// Envoy otherwise.
fn hosts_of(block: &Block) -> Vec<Host> {
    let h = block.heading();
    match (h.contains("Envoy"), h.contains("Kong")) {
        (true, true) => vec![Host::Envoy, Host::Kong],
        (false, true) => vec![Host::Kong],
        _ => vec![Host::Envoy],
    }
}

fn is_kong_filter_list(v: Option<&Value>) -> bool {
    let Some(Value::Array(items)) = v else {
        return false;
    };
    !items.is_empty()
        && items.iter().all(|f| {
            f.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("palisade"))
        })
}

fn classify_yaml(block: &Block) -> Result<Class, String> {
    let docs = yaml_documents(&block.text)?;
    let first = docs
        .first()
        .ok_or_else(|| "an empty YAML block".to_string())?;
    if docs
        .iter()
        .any(|d| d.get("apiVersion").is_some() && d.get("kind").is_some())
    {
        return Ok(Class::Istio);
    }
    if docs.len() > 1 {
        return Err("several YAML documents that are not Istio resources".into());
    }
    let has = |k: &str| first.get(k).is_some();
    if has("static_resources") {
        return Ok(Class::EnvoyBootstrap);
    }
    if has("version") && has("routes") {
        return Ok(Class::Chain);
    }
    if ["_format_version", "services", "filter_chains", "plugins"]
        .iter()
        .any(|k| has(k))
    {
        return Ok(Class::KongDeclarative);
    }
    if has("http_connection_manager") {
        return Ok(Class::EnvoyFragment(Fragment::Hcm));
    }
    if let Value::Object(m) = first {
        let only = |fields: &[&str]| m.keys().all(|k| fields.contains(&k.as_str()));
        if only(&["http_filters"]) {
            return Ok(Class::EnvoyFragment(Fragment::HttpFilters));
        }
        if only(HCM_FIELDS) {
            return Ok(Class::EnvoyFragment(Fragment::Hcm));
        }
        if only(LISTENER_FIELDS) {
            return Ok(Class::EnvoyFragment(Fragment::Listener));
        }
    }
    if is_filter_entry(first) {
        return Ok(Class::EnvoyFragment(Fragment::HttpFilters));
    }
    if let Value::Array(items) = first {
        if !items.is_empty() && items.iter().all(is_filter_entry) {
            return Ok(Class::EnvoyFragment(Fragment::HttpFilters));
        }
    }
    if has("clusters") {
        return Ok(Class::EnvoyFragment(Fragment::Clusters));
    }
    if let Value::Object(m) = first {
        if !m.is_empty() && m.keys().all(|k| BOOTSTRAP_FIELDS.contains(&k.as_str())) {
            return Ok(Class::EnvoyFragment(Fragment::Bootstrap));
        }
    }
    Err(
        "a YAML block that is none of: Istio resource, Envoy bootstrap or fragment, chain file, \
         Kong declarative config"
            .into(),
    )
}

fn is_filter_entry(v: &Value) -> bool {
    v.get("name").is_some()
        && (v.get("typed_config").is_some() || v.get("config_discovery").is_some())
}

/// Every non-null document of a YAML text, as JSON values.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| format!("YAML does not parse: {e}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

// ---------------------------------------------------------------- kong.conf

/// A `kong.conf` line: `key = value`, with an optional `# comment`.
fn kong_conf_line() -> Regex {
    Regex::new(r"^([a-z][a-z0-9_]*)\s*=\s*(.*?)\s*(?:#.*)?$").expect("a valid regex")
}

fn looks_like_kong_conf(text: &str) -> bool {
    let re = kong_conf_line();
    let mut lines = conf_lines(text).peekable();
    lines.peek().is_some() && lines.all(|l| re.is_match(l))
}

fn conf_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `kong.conf` properties Palisade's docs may set.
const KONG_KEYS: &[&str] = &[
    "wasm",
    "wasm_filters_path",
    "wasm_filters",
    "database",
    "declarative_config",
    "proxy_listen",
    "admin_listen",
    "status_listen",
    "headers",
    "log_level",
    "proxy_access_log",
    "proxy_error_log",
    "plugins",
    "nginx_worker_processes",
    "mem_cache_size",
];

/// Prefixes Kong turns into nginx directives (`nginx_http_client_body_buffer_size`
/// → `client_body_buffer_size` in the `http {}` block) or wasm module settings.
const KONG_PREFIXES: &[&str] = &[
    "nginx_wasm_",
    "nginx_http_",
    "nginx_proxy_",
    "nginx_main_",
    "nginx_events_",
    "nginx_upstream_",
    "nginx_admin_",
    "nginx_status_",
    "nginx_stream_",
];

/// Why `kong.conf` lines are wrong: unknown keys, empty values, a `wasm` that is
/// not on/off, sizes that are not nginx sizes.
pub fn kong_conf_problems(text: &str) -> Vec<String> {
    let re = kong_conf_line();
    let size = Regex::new(r"^[0-9]+[kKmMgG]?$").expect("a valid regex");
    let mut problems = Vec::new();
    for line in conf_lines(text) {
        let Some(c) = re.captures(line) else {
            problems.push(format!("{line:?}: not `key = value`"));
            continue;
        };
        let (key, value) = (&c[1], &c[2]);
        if !KONG_KEYS.contains(&key) && !KONG_PREFIXES.iter().any(|p| key.starts_with(p)) {
            problems.push(format!("{key}: not a kong.conf property"));
        }
        if value.is_empty() {
            problems.push(format!("{key}: no value"));
        }
        if key == "wasm" && !matches!(value, "on" | "off") {
            problems.push(format!("wasm: {value:?} is not on/off"));
        }
        let sized = key.starts_with("nginx_wasm_shm_") || key.ends_with("_buffer_size");
        if sized && !size.is_match(value) {
            problems.push(format!("{key}: {value:?} is not an nginx size (16m, 8k…)"));
        }
    }
    problems
}

// ---------------------------------------------------------------- Envoy

/// Paths like `/etc/envoy/palisade_jwt.wasm` (or the one-VM module
/// `/etc/envoy/palisade.wasm`) in a README config, replaced by the
/// built module in `dist/` (the only substitution a config gets before Envoy
/// loads it: the README's paths are where an operator installs the modules).
/// Returns the text and each replacement made.
pub fn substitute_wasm_paths(text: &str, filters: &[&str]) -> (String, Vec<String>) {
    let re =
        Regex::new(r"(?:[A-Za-z0-9_.{}-]*/)+palisade(?:_([a-z]+))?\.wasm").expect("a valid regex");
    let mut notes = Vec::new();
    let out = re.replace_all(text, |c: &regex::Captures| {
        let built = match c.get(1) {
            // The one-VM module, `palisade.wasm`.
            None => repo_root().join("dist").join("palisade.wasm"),
            Some(name) if filters.contains(&name.as_str()) => dist_path(name.as_str()),
            Some(_) => return c[0].to_string(),
        };
        notes.push(format!("{} -> {}", &c[0], built.display()));
        built.to_string_lossy().into_owned()
    });
    (out.into_owned(), notes)
}

fn dist_path(name: &str) -> PathBuf {
    repo_root()
        .join("dist")
        .join(format!("palisade_{name}.wasm"))
}

/// The smallest bootstrap a fragment can sit in: one listener on 127.0.0.1:0 with
/// an HTTP connection manager (only its required fields: `stat_prefix`, a route
/// answering 200 directly, the router) and no clusters. Every other setting is
/// Envoy's default.
pub fn harness_bootstrap() -> Value {
    json!({
        "static_resources": {
            "listeners": [{
                "name": "readme",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "readme",
                        "route_config": {"virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]
                        }]},
                        "http_filters": [router()]
                    }
                }]}]
            }],
            "clusters": []
        }
    })
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    })
}

fn is_router(f: &Value) -> bool {
    f.pointer("/typed_config/@type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with(".router.v3.Router"))
}

/// The harness bootstrap with `fragment` placed where its kind goes. A filter list
/// that does not end with the router gets one (Envoy refuses an HCM whose last
/// filter is not terminal; the README's fragments show where their filters go,
/// and the router is always last).
pub fn embed(kind: Fragment, fragment: &Value) -> Result<Value, String> {
    let mut boot = harness_bootstrap();
    let hcm = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";
    match kind {
        Fragment::Bootstrap => merge(&mut boot, fragment)?,
        Fragment::Listener => {
            let slot = boot
                .pointer_mut("/static_resources/listeners/0")
                .ok_or("harness without a listener")?;
            merge(slot, fragment)?;
        }
        Fragment::Clusters => {
            let list = fragment
                .get("clusters")
                .and_then(Value::as_array)
                .ok_or("`clusters` is not a list")?;
            boot["static_resources"]["clusters"] = Value::Array(list.clone());
        }
        Fragment::Hcm => {
            let fields = fragment.get("http_connection_manager").unwrap_or(fragment);
            let slot = boot.pointer_mut(hcm).ok_or("harness without an HCM")?;
            merge(slot, fields)?;
        }
        Fragment::HttpFilters => {
            let list = match fragment {
                Value::Array(items) => items.clone(),
                Value::Object(m) => match m.get("http_filters") {
                    Some(Value::Array(items)) => items.clone(),
                    Some(_) => return Err("`http_filters` is not a list".into()),
                    None => vec![fragment.clone()],
                },
                _ => return Err("not a filter list".into()),
            };
            let slot = boot.pointer_mut(hcm).ok_or("harness without an HCM")?;
            slot["http_filters"] = Value::Array(list);
        }
    }
    if let Some(Value::Array(filters)) = boot.pointer_mut(&format!("{hcm}/http_filters")) {
        if !filters.last().is_some_and(is_router) {
            filters.push(router());
        }
    }
    Ok(boot)
}

/// Sets every field of `from` on `into` (objects only; a field `from` has replaces
/// the harness's).
fn merge(into: &mut Value, from: &Value) -> Result<(), String> {
    let (Value::Object(into), Value::Object(from)) = (into, from) else {
        return Err("not a mapping".into());
    };
    let from: &Map<String, Value> = from;
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// Runs the real Envoy in `--mode validate` on `config` (YAML or JSON text):
/// every listener, filter and cluster is built, the wasm filters' VMs started and
/// their `on_configure` run, nothing is bound. `Err` holds Envoy's error lines.
///
/// With `PALISADE_ENVOY_IMAGE` set, Envoy runs in that image (the temp dir and
/// `dist/` mounted at the same paths), as the other tests do.
pub fn envoy_validate(config: &str) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("palisade-readme-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let path = tmp.path().join("envoy.yaml");
    std::fs::write(&path, config).map_err(|e| format!("writing the config: {e}"))?;
    let args = validate_args(&path);
    let image = std::env::var("PALISADE_ENVOY_IMAGE")
        .ok()
        .filter(|i| !i.is_empty());
    let mut command = match image {
        Some(image) => {
            let dist = repo_root().join("dist");
            let mut c = Command::new("docker");
            c.args([
                "run",
                "--rm",
                "--network",
                "host",
                "-e",
                "ENVOY_UID=0",
                "-v",
            ])
            .arg(format!("{0}:{0}", tmp.path().display()))
            .arg("-v")
            .arg(format!("{0}:{0}:ro", dist.display()))
            .arg(image)
            .arg("envoy");
            c
        }
        None => Command::new(envoy_bin()),
    };
    let out = command
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run Envoy: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[critical]"))
        .collect();
    Err(format!(
        "Envoy refused it ({}):\n{}",
        out.status,
        if errors.is_empty() {
            log.clone()
        } else {
            errors.join("\n")
        }
    ))
}

fn validate_args(path: &Path) -> Vec<String> {
    vec![
        "--mode".into(),
        "validate".into(),
        "-c".into(),
        path.to_string_lossy().into_owned(),
        "--disable-hot-restart".into(),
        "--use-dynamic-base-id".into(),
        "--log-level".into(),
        "warn".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTERS: &[&str] = &["headers", "errors", "jwt", "ratelimit", "schema"];

    #[test]
    fn blocks_carry_line_info_headings_and_markers() {
        let md = "# T\n\n## `jwt`: tokens\n\n### Quick\n\n```json\n{}\n```\n\n<!-- not-a-config -->\n\n```yaml\na: 1\n```\n\n- item\n\n  ```\n  wasm = on\n  ```\n";
        let b = blocks(md);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].line, b[0].lang.as_str()), (7, "json"));
        assert_eq!(b[0].section(), "`jwt`: tokens");
        assert_eq!(b[0].label(), "README.md:7 (Quick)");
        assert_eq!(b[0].heading(), "Quick");
        assert_eq!(b[1].marker, Some(Marker::NotAConfig));
        assert_eq!(b[2].text, "wasm = on\n");
        assert_eq!(
            classify(&b[0], FILTERS),
            Ok(Class::FilterJson {
                filters: vec!["jwt".into()],
                hosts: vec![Host::Envoy]
            })
        );
        assert!(matches!(classify(&b[1], FILTERS), Ok(Class::Skip(_))));
        assert_eq!(classify(&b[2], FILTERS), Ok(Class::KongConf));
    }

    #[test]
    fn a_control_page_title_names_the_filter_of_its_json_blocks() {
        let md = "# `ratelimit`: limits\n\n## Config\n\n### Keys\n\n```json\n{}\n```\n";
        let b = blocks_in("docs/src/controls/ratelimit.md", md);
        assert_eq!(b[0].label(), "docs/src/controls/ratelimit.md:7 (Keys)");
        assert_eq!(
            classify(&b[0], FILTERS),
            Ok(Class::FilterJson {
                filters: vec!["ratelimit".into()],
                hosts: vec![Host::Envoy]
            })
        );
        let shared = blocks_in(
            "c.md",
            "# What every filter shares\n\n## Rules\n\n```json\n{}\n```\n",
        );
        assert!(matches!(
            classify(&shared[0], FILTERS),
            Ok(Class::FilterJson { filters, .. }) if filters.len() == FILTERS.len()
        ));
    }

    #[test]
    fn includes_are_replaced_by_the_file_and_a_missing_one_is_kept() {
        let dir = std::env::temp_dir().join(format!("palisade-include-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.json"), "{\"dry_run\": true}").unwrap();
        let text = "before\n{{#include a.json}}\n{{#include missing.json}}\n";
        assert_eq!(
            expand_includes(text, &dir),
            "before\n{\"dry_run\": true}\n{{#include missing.json}}\n"
        );
        assert_eq!(
            include_target("  {{#include ../x/y.json}}"),
            Some("../x/y.json")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unlabelled_block_that_is_not_kong_conf_is_an_error() {
        let b = blocks("## x\n\n```\nsome output\n```\n");
        assert!(classify(&b[0], FILTERS).is_err());
        let b = blocks("## x\n\n```toml\na = 1\n```\n");
        assert!(classify(&b[0], FILTERS).is_err());
    }

    #[test]
    fn yaml_blocks_are_told_apart() {
        let class = |y: &str| classify(&blocks(&format!("```yaml\n{y}```\n"))[0], FILTERS);
        assert_eq!(class("static_resources: {}\n"), Ok(Class::EnvoyBootstrap));
        assert_eq!(class("version: 1\nroutes: []\n"), Ok(Class::Chain));
        assert_eq!(
            class("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n"),
            Ok(Class::Istio)
        );
        assert_eq!(class("filter_chains: []\n"), Ok(Class::KongDeclarative));
        assert_eq!(
            class("stats_config: {}\n"),
            Ok(Class::EnvoyFragment(Fragment::Bootstrap))
        );
        assert_eq!(
            class("- name: a\n  typed_config: {}\n"),
            Ok(Class::EnvoyFragment(Fragment::HttpFilters))
        );
        assert_eq!(
            class("use_remote_address: true\nxff_num_trusted_hops: 0\n"),
            Ok(Class::EnvoyFragment(Fragment::Hcm))
        );
        assert_eq!(
            class("server_header_transformation: PASS_THROUGH\nhttp_filters: []\n"),
            Ok(Class::EnvoyFragment(Fragment::Hcm))
        );
        assert_eq!(
            class("per_connection_buffer_limit_bytes: 1048576\n"),
            Ok(Class::EnvoyFragment(Fragment::Listener))
        );
        assert!(class("something: else\n").is_err());
    }

    #[test]
    fn kong_conf_keys_are_checked() {
        assert_eq!(
            kong_conf_problems("wasm = on\nnginx_wasm_shm_kv = 16m   # zone\n"),
            Vec::<String>::new()
        );
        assert_eq!(kong_conf_problems("wams = on\n").len(), 1);
        assert_eq!(kong_conf_problems("wasm = yes\n").len(), 1);
        assert_eq!(
            kong_conf_problems("nginx_http_client_body_buffer_size = lots\n").len(),
            1
        );
    }

    #[test]
    fn only_known_filters_wasm_paths_are_substituted() {
        let (out, notes) = substitute_wasm_paths(
            "filename: /etc/envoy/palisade_jwt.wasm\nother: /x/palisade_nope.wasm\n",
            FILTERS,
        );
        assert_eq!(notes.len(), 1);
        assert!(out.contains("dist/palisade_jwt.wasm"));
        assert!(out.contains("/x/palisade_nope.wasm"));
    }

    #[test]
    fn fragments_get_a_router_last() {
        let f = json!([{"name": "a", "typed_config": {}}]);
        let boot = embed(Fragment::HttpFilters, &f).unwrap();
        let filters = boot
            .pointer(
                "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
            )
            .unwrap();
        assert_eq!(filters.as_array().unwrap().len(), 2);
        assert!(is_router(&filters[1]));
    }
}
