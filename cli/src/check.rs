//! `palisade check`: every filter config of a chain, checked offline by the
//! filter's own code (the same `load` + `validate` its `configure` runs in
//! the proxy), for each host the chain will run on.

use crate::chain::{Chain, Origin, Platform, Problem};
use crate::envoy::Modules;
use palisade_core::HostKind;
use serde_json::Value;

/// Everything `palisade render` would refuse for `platforms`: each
/// filter config on the proxy those platforms run (Kong-only refusals only
/// when Kong is one of them), then each platform's own render checks.
pub fn for_platforms(chain: &Chain, platforms: &[Platform], modules: Modules) -> Vec<Problem> {
    let mut problems = check(chain, &hosts(platforms));
    for &platform in platforms {
        let rendered = match platform {
            Platform::Envoy => crate::envoy::render_text(
                chain,
                &crate::envoy::Options {
                    modules,
                    ..Default::default()
                },
            )
            .map(drop),
            Platform::Istio => crate::istio::render(
                chain,
                &crate::istio::Options {
                    modules,
                    ..Default::default()
                },
            )
            .map(drop),
            Platform::Kong => {
                crate::kong::render_text(chain, crate::kong::Form::FilterChains, modules).map(drop)
            }
        };
        if let Err(message) = rendered {
            let p = Problem {
                at: format!("render {}", platform.name()),
                message,
            };
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
    }
    problems
}

/// The proxies `platforms` run, each once.
pub fn hosts(platforms: &[Platform]) -> Vec<HostKind> {
    let mut hosts: Vec<HostKind> = Vec::new();
    for p in platforms {
        if !hosts.contains(&p.host()) {
            hosts.push(p.host());
        }
    }
    hosts
}

/// Checks each distinct config once (shared ones under `filters.<name>`,
/// route ones under `routes[i] (name).filters.<name>`), on every `hosts`.
pub fn check(chain: &Chain, hosts: &[HostKind]) -> Vec<Problem> {
    let mut seen: Vec<(&str, &Value, String)> = Vec::new();
    let mut problems = Vec::new();
    let shared = chain.shared.iter().map(|(f, c)| (*f, c, Origin::Shared));
    let routed = chain.routes.iter().flat_map(|r| {
        r.filters
            .iter()
            .map(|u| (u.filter, &u.config, u.origin.clone()))
    });
    for (filter, config, origin) in shared.chain(routed) {
        let at = chain.origin_label(filter, &origin);
        if seen
            .iter()
            .any(|(n, c, a)| *n == filter.name && *c == config && *a == at)
        {
            continue;
        }
        seen.push((filter.name, config, at.clone()));
        let check = filter.check;
        let json = config.to_string();
        let results: Vec<(HostKind, Result<(), palisade_core::ConfigError>)> = hosts
            .iter()
            .map(|h| (*h, check(json.as_bytes(), *h)))
            .collect();
        // The same refusal on every host is reported once, without a host.
        let same_everywhere = results.windows(2).all(|w| w[0].1 == w[1].1);
        for (host, result) in &results {
            let Err(e) = result else { continue };
            let on = if same_everywhere {
                String::new()
            } else {
                format!(" (on {})", host.name())
            };
            problems.push(Problem {
                at: if e.path.is_empty() {
                    format!("{at}{on}")
                } else {
                    format!("{at}.{}{on}", e.path)
                },
                message: e.message.clone(),
            });
            if same_everywhere {
                break;
            }
        }
    }
    problems
}

/// The line (1-based) of a chain file where problem `at` was written,
/// found by walking the YAML's block indentation: `routes[1] (admin).filters.
/// headers.request.allowed_methods[1]` is the `allowed_methods` line inside
/// the `headers` entry of the second route. What is written inline (flow
/// style, JSON) gets the line of the nearest enclosing entry; `None` when not
/// even the first key is found.
pub fn line_of(text: &str, at: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |i: usize| lines[i].len() - lines[i].trim_start().len();
    let content = |i: usize| {
        let t = lines[i].trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let dash = |i: usize| lines[i].trim_start().starts_with("- ") || lines[i].trim() == "-";
    // The lines after `line` that belong to it: deeper than it.
    let end_of = |line: usize| {
        (line + 1..lines.len())
            .find(|&i| content(i) && indent(i) <= indent(line))
            .unwrap_or(lines.len())
    };
    // A block: lines [from, to); `item` when line `from` is a list item
    // whose own mapping starts after its dash.
    let (mut from, mut to, mut item) = (0, lines.len(), false);
    let mut found = None;
    for key in path_keys(at) {
        // Where the block's direct children sit.
        let child = |i: usize| {
            if item && i == from {
                indent(i) + 2
            } else {
                indent(i)
            }
        };
        let Some(level) = (from..to).filter(|&i| content(i)).map(child).min() else {
            break;
        };
        let at_level = |i: usize| content(i) && child(i) == level;
        // An index selects a list item (its mapping begins on its line);
        // a name selects a key, whose value is on the lines below it.
        let by_index = matches!(key, Key::Index(_));
        let hit = match key {
            Key::Index(n) => (from..to)
                .filter(|&i| at_level(i) && dash(i) && !(item && i == from))
                .nth(n),
            Key::Name(name) => (from..to).find(|&i| {
                if !at_level(i) {
                    return false;
                }
                let t = lines[i].trim_start();
                let t = if dash(i) { t[1..].trim_start() } else { t };
                t == name
                    || t.strip_prefix(name.as_str())
                        .is_some_and(|r| r.starts_with(':'))
            }),
        };
        let Some(line) = hit else { break };
        found = Some(line + 1);
        item = by_index;
        from = if item { line } else { line + 1 };
        to = end_of(line);
    }
    found
}

enum Key {
    Name(String),
    Index(usize),
}

/// `routes[1] (admin).filters.headers.x[0]` -> routes, 1, filters, headers, x, 0.
fn path_keys(at: &str) -> Vec<Key> {
    let mut keys = Vec::new();
    for part in at.split('.') {
        let part = part.split(" (").next().unwrap_or(part);
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            keys.push(Key::Name(name.to_string()));
        }
        while let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) {
            match rest[open + 1..close].parse() {
                Ok(n) => keys.push(Key::Index(n)),
                Err(_) => return keys,
            }
            rest = &rest[close + 1..];
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain;

    fn chain(text: &str) -> Chain {
        chain::load(text).unwrap()
    }

    /// A global rate limit: a gRPC call, which Kong cannot make.
    const GLOBAL_LIMIT: &str = "
version: 1
upstreams: {b: 'http://127.0.0.1:1', rls: 'http://127.0.0.1:2'}
routes:
  - name: a
    match: {prefix: /}
    upstream: b
    filters:
      - ratelimit:
          mode: global
          global: {cluster: rls, domain: d}
          limits: [{name: a, key: [], requests: 1, per_s: 1}]
";

    #[test]
    fn filter_errors_name_the_route_the_filter_and_the_field() {
        let c = chain(
            "
version: 1
upstreams: {b: 'http://127.0.0.1:1'}
filters:
  errors: {scan_bytes: 0}
routes:
  - name: api
    match: {prefix: /}
    upstream: b
    filters:
      - errors
      - headers: {request: {allowed_methods: [GTE]}}
",
        );
        let problems = check(&c, &[HostKind::Envoy]);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("filters.errors.scan_bytes: must be between 1 and"));
        assert_eq!(
            text[1],
            "routes[0] (api).filters.headers.request.allowed_methods[0]: unknown method \"GTE\""
        );
    }

    #[test]
    fn valid_configs_pass_on_both_hosts() {
        let c = chain(
            "
version: 1
upstreams: {b: 'http://127.0.0.1:1'}
routes:
  - {name: a, match: {prefix: /}, upstream: b, filters: [errors, headers]}
",
        );
        assert_eq!(check(&c, &[HostKind::Envoy, HostKind::Kong]), vec![]);
    }

    #[test]
    fn check_runs_what_render_runs_for_the_chain_s_platforms() {
        let two_orders = "
version: 1
upstreams: {b: 'http://127.0.0.1:1'}
routes:
  - {name: a, match: {prefix: /a/}, upstream: b, filters: [headers, errors]}
  - {name: c, match: {prefix: /c/}, upstream: b, filters: [errors, headers]}
";
        let c = chain(two_orders);
        assert_eq!(c.platforms, vec![Platform::Envoy], "envoy unless told");
        // palisade.wasm orders each route itself; separate filters cannot.
        assert_eq!(for_platforms(&c, &c.platforms, Modules::Single), vec![]);
        let problems = for_platforms(&c, &c.platforms, Modules::PerFilter);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].at, "render envoy");
        assert!(problems[0].message.contains("differently"), "{problems:?}");

        // Istio is a platform only when asked (or a route has an istio section).
        let held = "
version: 1
upstreams: {b: 'http://127.0.0.1:1'}
routes:
  - name: a
    match: {prefix: /}
    upstream: b
    filters: [{schema: {hold_headers: true, rules: [{match: {prefix: /}}]}}]
    istio: {selector: {matchLabels: {app: a}}}
";
        let c = chain(held);
        assert_eq!(c.platforms, vec![Platform::Envoy, Platform::Istio]);
        let problems = for_platforms(&c, &c.platforms, Modules::Single);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].at, "render istio");
        assert!(problems[0].message.contains("hold_headers"));
        assert_eq!(
            for_platforms(&c, &[Platform::Envoy], Modules::Single),
            vec![]
        );
    }

    #[test]
    fn kong_refusals_only_for_chains_deployed_on_kong() {
        let text = GLOBAL_LIMIT.replace("version: 1\n", "version: 1\nplatforms: [envoy]\n");
        let text = text.as_str();
        let c = chain(text);
        assert_eq!(for_platforms(&c, &c.platforms, Modules::Single), vec![]);
        let c = chain(&text.replace("platforms: [envoy]", "platforms: [envoy, kong]"));
        let problems = for_platforms(&c, &c.platforms, Modules::Single);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].at,
            "routes[0] (a).filters.ratelimit.mode (on kong)"
        );
        assert!(chain::load(&text.replace("platforms: [envoy]", "platforms: []")).is_err());
    }

    #[test]
    fn problems_point_at_their_line() {
        let text = "version: 1
upstreams: {b: 'http://127.0.0.1:1'}
routes:
  # The API.
  - name: api
    match: {prefix: /}
    upstream: b
    filters: [errors, headers]
  - name: admin
    match: {prefix: /admin/}
    upstream: b
    filters:
      - errors
      - headers:
          request:
            allowed_methods: [GET, GTE]
filters:
  errors: {scan_bytes: 0}
";
        for (at, line) in [
            (
                "routes[1] (admin).filters.headers.request.allowed_methods[1]",
                Some(16),
            ),
            ("routes[1] (admin).filters.headers", Some(14)),
            ("routes[1].upstream", Some(11)),
            ("routes[0] (api).filters.headers", Some(8)),
            ("routes[0]", Some(5)),
            ("filters.errors.scan_bytes", Some(18)),
            ("upstreams.b", Some(2)),
            ("version", Some(1)),
            ("nowhere.at.all", None),
        ] {
            assert_eq!(line_of(text, at), line, "{at}");
        }
    }

    #[test]
    fn a_refusal_on_one_host_only_names_the_host() {
        let c = chain(GLOBAL_LIMIT);
        assert_eq!(check(&c, &[HostKind::Envoy]), vec![]);
        let problems = check(&c, &[HostKind::Envoy, HostKind::Kong]);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].at,
            "routes[0] (a).filters.ratelimit.mode (on kong)"
        );
    }
}
