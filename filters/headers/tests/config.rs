//! Config loading: the preset, the examples, layering and errors that name the field.

mod common;

use common::Setup;
use palisade_core::fake::FakeHost;
use palisade_core::header_pattern::HeaderPattern;
use palisade_core::{Level, Plugin};
use palisade_headers::config::Config;
use palisade_headers::policy::Settings;
use palisade_headers::HeadersPlugin;

fn err(json: &str) -> String {
    match HeadersPlugin::configure(json.as_bytes(), &mut FakeHost::new()) {
        Ok(_) => panic!("{json} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_config_is_the_safe_api_preset() {
    for empty in ["", "  ", "{}"] {
        let mut host = FakeHost::new();
        let plugin = HeadersPlugin::configure(empty.as_bytes(), &mut host).unwrap();
        let p = plugin.default_policy();
        assert!(!p.dry_run);
        assert_eq!(p.request.max_headers, 64);
        assert_eq!(p.request.max_header_bytes, 16384);
        assert!(p.request.reject_control_characters);
        assert!(p.request.allowed_methods.is_none() && p.request.allow_only.is_none());
        assert!(p.request.remove.matches("x-palisade-jwt"));
        assert!(p.request.remove.matches("x-jwt-sub"));
        assert!(!p.request.remove.matches("authorization"));
        for n in [
            "server",
            "x-powered-by",
            "x-aspnet-version",
            "x-aspnetmvc-version",
            "x-runtime",
        ] {
            assert!(p.response.remove.matches(n), "{n}");
        }
        let names: Vec<&str> = p
            .response
            .add_if_absent
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "x-content-type-options",
                "strict-transport-security",
                "referrer-policy",
                "x-frame-options",
                "content-security-policy"
            ]
        );
        assert!(p.response.expose_request_id);
        assert!(host.logs.borrow().is_empty(), "no warning for the preset");
    }
}

#[test]
fn every_example_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).unwrap();
            let mut host = FakeHost::new();
            HeadersPlugin::configure(&bytes, &mut host)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let logs = host.logs.borrow();
            let dry_run = path.to_string_lossy().contains("dry-run");
            assert!(
                logs.iter()
                    .all(|(_, m)| dry_run && m.contains("in dry run")),
                "{}: {logs:?}",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 3, "examples missing");
}

#[test]
fn errors_name_the_field_path() {
    assert_eq!(
        err(r#"{"rules":[{},{"request":{"allowed_methods":["GTE"]}}]}"#),
        r#"rules[1].request.allowed_methods[0]: unknown method "GTE""#
    );
    assert!(
        err(r#"{"request":{"remvoe":[]}}"#).starts_with("request.remvoe: unknown field `remvoe`")
    );
    assert!(err(r#"{"dryrun":true}"#).starts_with("dryrun: unknown field"));
    assert!(err(r#"{"rules":[{"response":{"add_if_absent":{"a":1}}}]}"#)
        .starts_with("rules[0].response.add_if_absent.a: invalid type"));
    assert_eq!(
        err(r#"{"request":{"max_headers":0}}"#),
        "request.max_headers: must be at least 1"
    );
    assert_eq!(
        err(r#"{"rules":[{"request":{"max_header_bytes":0}}]}"#),
        "rules[0].request.max_header_bytes: must be at least 1"
    );
    assert!(
        err(r#"{"request":{"max_headers":-1}}"#).starts_with("request.max_headers: invalid value")
    );
    assert!(
        err(r#"{"request":{"max_headers":"64"}}"#).starts_with("request.max_headers: invalid type")
    );
    assert!(err(r#"{"response":{"remove":["server","x-*-y"]}}"#)
        .starts_with(r#"response.remove[1]: invalid header pattern "x-*-y": only a trailing '*'"#));
    assert!(err(r#"{"request":{"remove":["*"]}}"#).starts_with("request.remove[0]: a lone '*'"));
    assert!(err(r#"{"request":{"allow_only":["x y"]}}"#)
        .starts_with(r#"request.allow_only[0]: invalid header name "x y""#));
    assert!(err(r#"{"request":{"allow_only":["é-*"]}}"#)
        .starts_with("request.allow_only[0]: invalid header pattern"));
    assert!(err(r#"{"request":{"remove":[""]}}"#)
        .starts_with("request.remove[0]: a header name must not be empty"));
    assert!(err(r#"{"request":{"remove":[":path"]}}"#).contains("pseudo-header"));
    assert!(err(r#"{"request":{"remove":["Content-Length"]}}"#)
        .starts_with("request.remove[0]: \"content-length\" routes or frames the request"));
    assert!(err(r#"{"request":{"remove":["x-forwarded-proto"]}}"#).contains("never removed"));
    assert!(HeadersPlugin::configure(
        br#"{"response":{"remove":["x-forwarded-proto"]}}"#,
        &mut FakeHost::new()
    )
    .is_ok());
    assert!(
        err(r#"{"rules":[{"response":{"remove":["transfer-encoding"]}}]}"#)
            .starts_with("rules[0].response.remove[0]:")
    );
    assert_eq!(
        err(r#"{"request":{"allowed_methods":[]}}"#),
        "request.allowed_methods: must not be empty (use null to allow every method)"
    );
    assert_eq!(
        err(r#"{"rules":[{"match":{"prefix":"api"}}]}"#),
        "rules[0].match.prefix: must start with '/'"
    );
    assert!(err(r#"{"rules":[{"match":{"methods":["GTE"]}}]}"#)
        .starts_with("rules[0].match.methods[0]: unknown method"));
    assert!(err(r#"{"rules":[{"request":{"allow_only":"x"}}]}"#)
        .starts_with("rules[0].request.allow_only: invalid type"));
    assert!(err("[]").contains("JSON object"));
    assert!(err(r#"{"request":null}"#).starts_with("request: invalid type: null"));
}

#[test]
fn add_if_absent_entries_are_checked() {
    assert!(err(r#"{"response":{"add_if_absent":{"bad name":"v"}}}"#)
        .starts_with(r#"response.add_if_absent["bad name"]: invalid header name"#));
    assert!(err(r#"{"response":{"add_if_absent":{"x-a":""}}}"#).contains("must not be empty"));
    assert!(err(r#"{"response":{"add_if_absent":{"x-a":" v"}}}"#).contains("whitespace"));
    assert!(
        err(r#"{"response":{"add_if_absent":{"x-a":"a\u0001b"}}}"#).contains("control characters")
    );
    assert!(
        err(r#"{"response":{"add_if_absent":{"x-a":"a\r\nset-cookie: x"}}}"#)
            .contains("control characters")
    );
    assert!(
        err(r#"{"response":{"add_if_absent":{"X-A":"1","x-a":"2"}}}"#).contains("listed twice")
    );
    assert!(
        err(r#"{"rules":[{"response":{"add_if_absent":{"content-length":"1"}}}]}"#)
            .starts_with(r#"rules[0].response.add_if_absent["content-length"]: framing"#)
    );
    assert!(err(r#"{"response":{"add_if_absent":{"x-*":"1"}}}"#).contains("invalid header name"));
}

#[test]
fn layers_apply_preset_then_top_level_then_rule() {
    let config: Config = palisade_core::config::load(
        br#"{"dry_run":true,
             "request":{"max_headers":10,"allow_only":["a"]},
             "response":{"add_if_absent":{"x-frame-options":null,"x-extra":"1"}},
             "rules":[{"dry_run":false,"request":{"allow_only":null},
                       "response":{"add_if_absent":{"X-Extra":"2","referrer-policy":null}}}]}"#,
    )
    .unwrap();
    let top = Settings::preset().with(Some(config.dry_run), &config.request, &config.response);
    assert!(top.dry_run);
    assert_eq!(top.max_headers, 10);
    assert_eq!(top.allow_only, Some(vec![HeaderPattern::Exact("a".into())]));
    let names: Vec<&str> = top.add_if_absent.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "x-content-type-options",
            "strict-transport-security",
            "referrer-policy",
            "content-security-policy",
            "x-extra"
        ]
    );
    let rule = &config.rules[0];
    let r = top.with(rule.dry_run, &rule.request, &rule.response);
    assert!(!r.dry_run);
    assert_eq!(r.max_headers, 10, "inherited from the top level");
    assert_eq!(r.allow_only, None, "null turns allow-list mode off");
    assert_eq!(
        r.add_if_absent,
        vec![
            ("x-content-type-options".to_string(), "nosniff".to_string()),
            (
                "strict-transport-security".to_string(),
                "max-age=31536000; includeSubDomains".to_string()
            ),
            (
                "content-security-policy".to_string(),
                "default-src 'none'; frame-ancestors 'none'".to_string()
            ),
            ("x-extra".to_string(), "2".to_string()),
        ]
    );
}

#[test]
fn wildcards_and_names_are_case_insensitive() {
    let p = HeaderPattern::parse("X-Internal-*").unwrap();
    assert_eq!(p, HeaderPattern::Prefix("x-internal-".into()));
    assert!(p.matches("x-internal-user"));
    assert!(!p.matches("x-internal"));
    assert_eq!(p.to_string(), "x-internal-*");
    assert_eq!(
        HeaderPattern::parse("X-Api-Key").unwrap(),
        HeaderPattern::Exact("x-api-key".into())
    );
    for bad in ["x-*-y", "*x", "**", "x**", "x y*", "x:y", "x\u{7f}", "é"] {
        assert!(HeaderPattern::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn configs_that_let_clients_spoof_palisade_headers_warn() {
    let mut host = FakeHost::new();
    HeadersPlugin::configure(
        br#"{"request":{"remove":["x-internal"]},"rules":[{"match":{"prefix":"/a"},"request":{"remove":["x-palisade-*","x-jwt-*"]}},{"match":{"prefix":"/b"},"request":{"allow_only":[]}}]}"#,
        &mut host,
    )
    .unwrap();
    assert!(host.logged(
        Level::Warn,
        "the defaults let clients send x-palisade-denied-by and x-jwt-sub"
    ));
    assert!(!host.logged(Level::Warn, "rules[0]"));
    assert!(
        !host.logged(Level::Warn, "rules[1]"),
        "allow-list mode drops them"
    );
}

#[test]
fn dry_run_layers_warn_at_load() {
    let mut host = FakeHost::new();
    HeadersPlugin::configure(
        br#"{"dry_run":true,"rules":[{"match":{"prefix":"/a"},"dry_run":false}]}"#,
        &mut host,
    )
    .unwrap();
    assert!(host.logged(Level::Warn, "the defaults in dry run"));
    assert!(!host.logged(Level::Warn, "rules[0]"));
}

#[test]
fn metrics_are_defined_at_configure_time() {
    let setup = Setup::new("{}");
    let names = &setup.root.metric_names;
    for n in [
        "palisade.headers.request_headers_removed",
        "palisade.headers.response_headers_removed",
        "palisade.headers.shadow_response_headers_removed",
        "palisade.headers.shadow_request_headers_removed",
        "palisade.headers.denied.method_not_allowed",
        "palisade.headers.denied.too_many_headers",
        "palisade.headers.denied.headers_too_large",
        "palisade.headers.denied.control_character",
        "palisade.headers.shadow_denied.control_character",
    ] {
        assert!(names.iter().any(|m| m == n), "{n} not defined: {names:?}");
    }
}

#[test]
fn method_override_is_strip_or_keep_at_the_top_level_only() {
    use palisade_headers::config::MethodOverride;
    let load = |json: &str| palisade_core::config::load::<Config>(json.as_bytes());
    assert_eq!(load("{}").unwrap().method_override, MethodOverride::Strip);
    assert_eq!(
        load(r#"{"method_override":"strip"}"#)
            .unwrap()
            .method_override,
        MethodOverride::Strip
    );
    assert_eq!(
        load(r#"{"method_override":"keep"}"#)
            .unwrap()
            .method_override,
        MethodOverride::Keep
    );
    assert!(err(r#"{"method_override":"allow"}"#).starts_with("method_override: unknown variant"));
    assert!(err(r#"{"method_override":true}"#).starts_with("method_override:"));
    assert!(err(r#"{"rules":[{"method_override":"keep"}]}"#)
        .starts_with("rules[0].method_override: unknown field"));

    let schema = palisade_headers::config_schema();
    let text = schema.to_string();
    assert!(
        text.contains("\"strip\"") && text.contains("\"keep\""),
        "{text}"
    );
    assert!(
        schema["properties"]["method_override"].is_object(),
        "{text}"
    );
}
