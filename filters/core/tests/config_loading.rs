//! Config errors name the field at fault.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use palisade_core::config::{load, ConfigError, Validate};
use palisade_core::route::{validate_rules, Match, Rule};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cfg {
    #[serde(default)]
    rules: Vec<RuleCfg>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleCfg {
    #[serde(rename = "match", default)]
    matcher: Match,
    limit: Option<u32>,
}

impl Rule for RuleCfg {
    fn matcher(&self) -> &Match {
        &self.matcher
    }
}

impl Validate for Cfg {
    fn validate(&self) -> Result<(), ConfigError> {
        validate_rules(&self.rules)
    }
}

fn err(json: &str) -> String {
    load::<Cfg>(json.as_bytes()).unwrap_err().to_string()
}

#[test]
fn unknown_method_names_its_path() {
    let e = err(r#"{"rules":[{},{},{"match":{"methods":["GET","GTE"]}}]}"#);
    assert_eq!(e, r#"rules[2].match.methods[1]: unknown method "GTE""#);
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let e = err(r#"{"rules":[{"match":{"prefx":"/a"}}]}"#);
    assert!(
        e.starts_with("rules[0].match.prefx: unknown field `prefx`, expected one of `prefix`"),
        "{e}"
    );
    let e = err(r#"{"dryrun":true}"#);
    assert!(e.starts_with("dryrun: unknown field `dryrun`"), "{e}");
}

#[test]
fn wrong_types_and_bad_json_are_refused_without_positions() {
    let e = err(r#"{"rules":[{"limit":"ten"}]}"#);
    assert!(e.starts_with("rules[0].limit: invalid type"), "{e}");
    assert!(!e.contains("line"), "{e}");
    assert!(err(r#"{"rules":["#).contains("EOF"));
    assert!(err(r#"{} {}"#).contains("trailing"));
    assert_eq!(err("[]"), "the config must be a JSON object");
    assert_eq!(err("5"), "the config must be a JSON object");
}

#[test]
fn semantic_validation_reports_rule_index() {
    let e = err(r#"{"rules":[{"match":{"prefix":"/ok"}},{"match":{"prefix":"nope"}}]}"#);
    assert_eq!(e, "rules[1].match.prefix: must start with '/'");
    let e = err(r#"{"rules":[{"match":{"path_template":"/a/{"}}]}"#);
    assert!(e.starts_with("rules[0].match.path_template: "), "{e}");
}

#[test]
fn empty_config_means_defaults() {
    let c = load::<Cfg>(b"").unwrap();
    assert!(c.rules.is_empty() && !c.dry_run);
    let c = load::<Cfg>(b"  \n").unwrap();
    assert!(c.rules.is_empty());
    let c = load::<Cfg>(br#"{"dry_run":true,"rules":[{"limit":3}]}"#).unwrap();
    assert!(c.dry_run && c.rules[0].limit == Some(3));
}

#[test]
fn hostile_config_bytes_never_panic() {
    let inputs: [&[u8]; 6] = [
        b"\xff\xfe",
        b"{\"rules\":[{\"match\":{\"methods\":[\"\\ud800\"]}}]}",
        b"{\"rules\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        b"null",
        b"{\"rules\":null}",
        b"\"",
    ];
    for input in inputs {
        assert!(load::<Cfg>(input).is_err());
    }
}

#[test]
fn shared_config_types_describe_themselves_as_json_schema() {
    use palisade_core::route::Match;
    let schema = serde_json::to_value(schemars::schema_for!(Match)).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    let methods = &schema["properties"]["methods"]["items"]["enum"];
    assert!(methods.as_array().unwrap().iter().any(|m| m == "GET"));
    assert!(!methods.as_array().unwrap().iter().any(|m| m == "GTE"));
    let pattern = serde_json::to_value(schemars::schema_for!(
        palisade_core::header_pattern::HeaderPattern
    ))
    .unwrap();
    assert!(pattern["pattern"].as_str().unwrap().ends_with("[*]?$"));
}
