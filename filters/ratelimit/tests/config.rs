//! Config loading: the issue's example, defaults, and errors naming the field.

mod common;

use palisade_core::HostKind;
use palisade_ratelimit::{check_config, config_schema};

const ISSUE_EXAMPLE: &str = r#"{
  "rules": [
    { "match": { "prefix": "/login", "methods": ["POST"] },
      "limits": [ { "name": "login-per-ip", "key": ["client_ip"], "requests": 5, "per_s": 60 } ] },
    { "match": { "prefix": "/" },
      "limits": [ { "name": "per-subject", "key": [ { "header": "x-jwt-sub" } ], "requests": 100, "per_s": 1, "burst": 200 },
                  { "name": "daily-quota", "key": [ { "header": "x-api-key" }, "route" ], "requests": 10000, "per_s": 86400 } ] }
  ],
  "client_ip": { "xff_num_trusted_hops": 0 },
  "on_missing_key": "skip",
  "response_headers": "draft",
  "mode": "local"
}"#;

fn err(json: &str) -> String {
    check_config(json.as_bytes(), HostKind::Envoy)
        .expect_err(json)
        .to_string()
}

#[test]
fn the_issue_example_loads_and_a_config_that_limits_nothing_does_not() {
    check_config(ISSUE_EXAMPLE.as_bytes(), HostKind::Envoy).unwrap();
    check_config(ISSUE_EXAMPLE.as_bytes(), HostKind::Kong).unwrap();
    for nothing in ["", "{}", r#"{"dry_run": true}"#] {
        let e = check_config(nothing.as_bytes(), HostKind::Envoy).expect_err(nothing);
        assert_eq!(e.path, "limits", "{nothing:?}: {e}");
        assert!(e.message.contains("nothing is limited"), "{e}");
    }
    common::Worker::new(ISSUE_EXAMPLE);
    for example in ["local.json", "global.json", "dry-run.json"] {
        let path = format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read(&path).unwrap();
        check_config(&text, HostKind::Envoy).unwrap_or_else(|e| panic!("{example}: {e}"));
    }
}

#[test]
fn errors_name_the_field() {
    let limit =
        |l: &str| format!(r#"{{"rules": [{{"limits": [{{"name": "a", "key": [], {l}}}]}}]}}"#);
    assert_eq!(
        err(&limit(r#""requests": 5, "per_s": 0"#)),
        "rules[0].limits[0].per_s: must be > 0"
    );
    assert_eq!(
        err(&limit(r#""requests": 0, "per_s": 1"#)),
        "rules[0].limits[0].requests: must be > 0"
    );
    assert_eq!(
        err(&limit(r#""requests": 1, "per_s": 1, "burst": 0"#)),
        "rules[0].limits[0].burst: must be > 0"
    );
    assert!(err(&limit(r#""requests": 1, "per_s": 99999999999"#))
        .starts_with("rules[0].limits[0].per_s"));
    assert!(err(
        r#"{"rules": [{"limits": [{"name": "a b", "key": [], "requests": 1, "per_s": 1}]}]}"#
    )
    .starts_with("rules[0].limits[0].name"));
    assert!(err(
        r#"{"rules": [{"limits": [{"name": "a", "key": ["nope"], "requests": 1, "per_s": 1}]}]}"#
    )
    .contains("unknown key part \"nope\""));
    assert!(err(r#"{"rules": [{"limits": [{"name": "a", "key": [{"header": "X-Key"}], "requests": 1, "per_s": 1}]}]}"#)
        .starts_with("rules[0].limits[0].key[0].header"));
    assert!(err(r#"{"rules": [{"limits": [{"name": "a", "key": [{"client_ip": {"v4_prefix": 33}}], "requests": 1, "per_s": 1}]}]}"#)
        .starts_with("rules[0].limits[0].key[0].client_ip.v4_prefix"));
    assert!(err(r#"{"rules": [{"limits": [{"name": "a", "key": ["method", "method"], "requests": 1, "per_s": 1}]}]}"#)
        .starts_with("rules[0].limits[0].key[1]"));
    assert!(err(r#"{"rules": [{"limits": []}]}"#).starts_with("rules[0].limits"));
    assert!(err(
        r#"{"rules": [{"limits": [{"name": "a", "key": [], "requests": 1, "per_s": 1}]},
                               {"limits": [{"name": "a", "key": [], "requests": 1, "per_s": 1}]}]}"#
    )
    .starts_with("rules[1].limits[0].name"));
    assert!(err(r#"{"rules": [{"match": {"prefix": "x"}, "limits": [{"name": "a", "key": [], "requests": 1, "per_s": 1}]}]}"#)
        .starts_with("rules[0].match.prefix"));
    assert!(err(r#"{"mode": "global"}"#).starts_with("global: required"));
    assert!(err(r#"{"global": {"cluster": "", "domain": "d"}}"#).starts_with("global.cluster"));
    assert!(
        err(r#"{"global": {"cluster": "c", "domain": "d", "timeout_ms": 0}}"#)
            .starts_with("global.timeout_ms")
    );
    assert!(
        err(r#"{"global": {"cluster": "c", "domain": "d", "on_error": "maybe"}}"#)
            .starts_with("global.on_error")
    );
    assert!(err(r#"{"local": {"slots": 0}}"#).starts_with("local.slots"));
    assert!(err(r#"{"local": {"entries_per_slot": 100}}"#).starts_with("local.entries_per_slot"));
    assert!(err(r#"{"response_headers": "yes"}"#).starts_with("response_headers"));
    assert!(err(r#"{"rulez": []}"#).contains("unknown field"));
    assert!(err(r#"{"claims": {"header_prefix": "X-"}}"#).starts_with("claims.header_prefix"));
}

#[test]
fn global_mode_is_refused_on_kong_naming_the_host_and_field() {
    let global = r#"{"mode": "global", "global": {"cluster": "rls", "domain": "d"},
                     "limits": [{"name": "a", "key": [], "requests": 1, "per_s": 1}]}"#;
    check_config(global.as_bytes(), HostKind::Envoy).unwrap();
    let e = check_config(global.as_bytes(), HostKind::Kong).unwrap_err();
    assert_eq!(e.path, "mode");
    assert!(e.message.contains("kong"), "{e}");
    let mut root = palisade_core::fake::FakeHost::kong();
    let refused = <palisade_ratelimit::RateLimitPlugin as palisade_core::Plugin>::configure(
        global.as_bytes(),
        &mut root,
    );
    assert!(refused.is_err());
}

#[test]
fn the_schema_describes_the_config() {
    let schema = config_schema();
    let props = &schema["properties"];
    for field in [
        "rules",
        "client_ip",
        "on_missing_key",
        "response_headers",
        "mode",
        "global",
        "local",
        "dry_run",
    ] {
        assert!(props.get(field).is_some(), "{field} missing from {schema}");
    }
    let text = schema.to_string();
    assert!(text.contains("x-ratelimit"));
    assert!(text.contains("v6_prefix"));
}

#[test]
fn top_level_limits_apply_to_every_request_no_rule_matches() {
    let config = r#"{
      "rules": [ { "match": { "prefix": "/login" },
                   "limits": [ { "name": "login", "key": ["client_ip"], "requests": 1, "per_s": 60 } ] } ],
      "limits": [ { "name": "route", "key": [], "requests": 2, "per_s": 60 } ]
    }"#;
    let worker = common::Worker::new(config);
    let get = |path: &str| worker.status(worker.request("GET", path));
    let statuses: Vec<u16> = (0..3).map(|_| get("/orders")).collect();
    assert_eq!(statuses, [200, 200, 429], "the route-wide limit");
    assert_eq!(get("/login"), 200, "the rule's own limit, not the route's");
    assert_eq!(get("/login"), 429);
    assert!(
        err(r#"{"limits": [{"name": "a", "key": [], "requests": 1, "per_s": 0}]}"#)
            .starts_with("limits[0].per_s"),
        "the field's path"
    );
    assert!(err(
        r#"{"rules": [{"limits": [{"name": "a", "key": [], "requests": 1, "per_s": 1}]}],
                  "limits": [{"name": "a", "key": [], "requests": 1, "per_s": 1}]}"#
    )
    .starts_with("limits[0].name"));
}

#[test]
fn count_and_max_in_flight_are_validated_with_the_fields_path() {
    let two = |second: &str| {
        format!(
            r#"{{"rules": [{{"limits": [{{"name": "a", "key": [], "requests": 1, "per_s": 1}},
                                        {{"name": "b", "key": ["client_ip"], {second}}}]}}]}}"#
        )
    };
    let rate = r#""requests": 5, "per_s": 900"#;
    check_config(
        two(&format!(
            r#"{rate}, "count": {{"response_status": [401, 403]}}"#
        ))
        .as_bytes(),
        HostKind::Kong,
    )
    .unwrap();
    check_config(two(r#""max_in_flight": 4"#).as_bytes(), HostKind::Kong).unwrap();
    check_config(
        two(&format!(r#"{rate}, "max_in_flight": 4"#)).as_bytes(),
        HostKind::Envoy,
    )
    .unwrap();
    let cases = [
        (
            format!(r#"{rate}, "count": {{"response_status": []}}"#),
            "rules[0].limits[1].count.response_status: must not be empty: list the statuses that spend a token",
        ),
        (
            format!(r#"{rate}, "count": {{"response_status": [401, 403, 99]}}"#),
            "rules[0].limits[1].count.response_status[2]: must be an HTTP status (100-599)",
        ),
        (
            format!(r#"{rate}, "count": {{"response_status": [401, 600]}}"#),
            "rules[0].limits[1].count.response_status[1]: must be an HTTP status (100-599)",
        ),
        (
            format!(r#"{rate}, "count": {{"response_status": [401, 403, 401]}}"#),
            "rules[0].limits[1].count.response_status[2]: listed twice",
        ),
        (
            r#""max_in_flight": 0"#.to_string(),
            "rules[0].limits[1].max_in_flight: must be between 1 and 1000000",
        ),
        (
            r#""max_in_flight": 2, "count": {"response_status": [401]}"#.to_string(),
            "rules[0].limits[1].count: needs a rate: set `requests` and `per_s`",
        ),
        (
            r#""requests": 5"#.to_string(),
            "rules[0].limits[1].per_s: required with `requests`",
        ),
    ];
    for (second, expected) in cases {
        assert_eq!(err(&two(&second)), expected, "{second}");
    }
    let neither = err(&two(r#""burst": 3"#));
    assert!(
        neither.starts_with("rules[0].limits[1]: a limit needs a rate"),
        "{neither}"
    );
    assert!(err(&format!(
        r#"{{"rules": [{{"limits": [{{"name": "a", "key": [], "count": {{"response_status": [401, "x"]}}, {rate}}}]}}]}}"#
    ))
    .starts_with("rules[0].limits[0].count.response_status[1]"));
    assert!(err(r#"{"limits": [{"name": "a", "key": [], "max_in_flight": 1, "count": {"response_status": [401], "extra": 1}}]}"#)
        .contains("unknown field"));
}

#[test]
fn global_mode_refuses_what_it_cannot_undo_or_count() {
    let global = |extra: &str| {
        format!(
            r#"{{"mode": "global", "global": {{"cluster": "rls", "domain": "d"}},
                 "limits": [{{"name": "a", "key": [], "requests": 5, "per_s": 60{extra}}}]}}"#
        )
    };
    check_config(global("").as_bytes(), HostKind::Envoy).unwrap();
    let e = check_config(
        global(r#", "count": {"response_status": [401]}"#).as_bytes(),
        HostKind::Envoy,
    )
    .unwrap_err();
    assert_eq!(e.path, "limits[0].count");
    assert!(e.message.contains("cannot give a token back"), "{e}");
    let e = check_config(
        global(r#", "max_in_flight": 3"#).as_bytes(),
        HostKind::Envoy,
    )
    .unwrap_err();
    assert_eq!(e.path, "limits[0].max_in_flight");
    assert!(e.message.contains("\"local\""), "{e}");
}

#[test]
fn the_schema_knows_count_and_max_in_flight() {
    let text = config_schema().to_string();
    for field in ["max_in_flight", "response_status", "CountConfig"] {
        assert!(text.contains(field), "{field} missing from the schema");
    }
}
