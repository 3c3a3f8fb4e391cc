//! A tiny block-YAML emitter for the bootstrap.
//!
//! The bootstrap is built as a `serde_json::Value`; it is written as YAML (not JSON) only
//! so that tests can splice in raw YAML snippets copied from Envoy's docs. Scalars are
//! emitted as double-quoted strings, numbers, booleans or null, which YAML reads exactly
//! as JSON would, so no YAML library is needed.

use serde_json::Value;
use std::fmt::Write;

/// Prefix of a string value that stands for raw YAML snippet number N.
pub(crate) const RAW_MARKER: &str = "\u{1}palisade-raw-yaml:";

/// Renders `value` as block YAML; strings `RAW_MARKER<n>` are replaced by `raws[n]`,
/// re-indented to their position.
pub(crate) fn to_yaml(value: &Value, raws: &[String]) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => emit_block(&mut out, value, 0, raws),
        Value::Array(a) if !a.is_empty() => emit_block(&mut out, value, 0, raws),
        _ => {
            out.push_str(&scalar(value));
            out.push('\n');
        }
    }
    out
}

fn emit_block(out: &mut String, value: &Value, indent: usize, raws: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                push_indent(out, indent);
                out.push_str(&quote(key));
                out.push(':');
                emit_child(out, v, indent, raws);
            }
        }
        Value::Array(items) => {
            for v in items {
                push_indent(out, indent);
                out.push('-');
                emit_child(out, v, indent, raws);
            }
        }
        _ => unreachable!("emit_block is only called for containers"),
    }
}

fn emit_child(out: &mut String, v: &Value, indent: usize, raws: &[String]) {
    if let Some(raw) = raw_snippet(v, raws) {
        out.push('\n');
        push_reindented(out, raw, indent + 2);
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_block(out, v, indent + 2, raws);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_block(out, v, indent + 2, raws);
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

fn raw_snippet<'a>(v: &Value, raws: &'a [String]) -> Option<&'a str> {
    let index: usize = v.as_str()?.strip_prefix(RAW_MARKER)?.parse().ok()?;
    raws.get(index).map(String::as_str)
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Strips the snippet's common indentation and indents it to `indent`.
fn push_reindented(out: &mut String, raw: &str, indent: usize) {
    let lines: Vec<&str> = raw.lines().collect();
    let common = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    for line in lines {
        if line.trim().is_empty() {
            out.push('\n');
            continue;
        }
        push_indent(out, indent);
        out.push_str(&line[common..]);
        out.push('\n');
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
        other => other.to_string(),
    }
}

/// A YAML double-quoted string. Escapes everything YAML does not allow raw (control
/// characters, DEL, C1, line/paragraph separators, BOM), unlike a JSON encoder.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emits_nested_blocks_and_raw_snippets() {
        let v = json!({
            "a": {"b": [1, "x\"y", {"c": true}], "empty": {}, "none": []},
            "list": [format!("{RAW_MARKER}0")],
        });
        let raw = "\n    name: n\n    typed_config:\n      k: v\n".to_string();
        let y = to_yaml(&v, &[raw]);
        assert_eq!(
            y,
            "\"a\":\n  \"b\":\n    - 1\n    - \"x\\\"y\"\n    -\n      \"c\": true\n  \"empty\": {}\n  \"none\": []\n\"list\":\n  -\n\n    name: n\n    typed_config:\n      k: v\n"
        );
    }

    #[test]
    fn escapes_what_yaml_forbids() {
        assert_eq!(
            quote("a\u{7f}b\u{85}\u{2028}"),
            "\"a\\u007fb\\u0085\\u2028\""
        );
    }
}
