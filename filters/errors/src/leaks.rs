//! Does an error body give away the stack behind the proxy?
//!
//! A 4xx body is usually the application's own, deliberate message, so it is
//! masked only when it looks like a leak: a stack trace, a database driver
//! error, a server file path or a credential. All patterns are compiled into
//! one [`RegexSet`] at configure time and run once over at most `scan_bytes`
//! of the body. The `regex` crate matches in linear time, so no body, however
//! hostile, can make the scan slow; patterns run on raw bytes with ASCII
//! classes (`\w`, `\b`, `\d`), so non-UTF-8 bodies scan like any other.

use palisade_core::ConfigError;
use regex::bytes::{RegexSet, RegexSetBuilder};
use std::collections::BTreeMap;

/// The default patterns, by name. Names show up in the warn log of a masked
/// response, so operators can tell which one fired and disable it if needed.
pub const DEFAULT_PATTERNS: &[(&str, &str)] = &[
    (
        "java_stack",
        r"\bat (?:[\w$-]+[./])+[\w$<>-]+\((?:[\w$-]+\.(?:java|kt|scala|groovy|clj)(?::\d+)?|Native Method|Unknown Source)\)|\b(?:java|javax|jakarta|kotlin|scala)\.(?:[\w$]+\.)+[\w$]*(?:Exception|Error)\b|Exception in thread ",
    ),
    (
        "python_stack",
        r#"Traceback \(most recent call last\)|\bFile "[^"\n]+", line \d+, in "#,
    ),
    (
        "node_stack",
        r"\bat (?:async )?(?:[^\s()]+ \()?(?:file://|/|[A-Za-z]:\\)[^\s()]*\.(?:js|mjs|cjs|ts|jsx|tsx):\d+:\d+\)?|\bnode:internal/[\w/.-]+:\d+",
    ),
    (
        "go_stack",
        r"goroutine \d+ \[[\w ,.:]+\]:|\.go:\d+ \+0x[0-9a-f]+|\bpanic: runtime error:",
    ),
    (
        "dotnet_stack",
        r"\bat [\w.`+<>\[\],]+\([^)\n]*\) in [^\n]+:line \d+|\bSystem\.(?:[A-Z]\w*\.)*[A-Z]\w*Exception\b|--- End of (?:inner exception )?stack trace",
    ),
    ("ruby_stack", r"\.rb:\d+:in [`']|\bfrom [^\s:]+\.rb:\d+"),
    (
        "php_error",
        r"\bPHP (?:Fatal error|Parse error|Warning|Notice)\b|\bStack trace:\s*#0 |\.php(?::\d+| on line \d+)",
    ),
    ("sqlstate", r"\bSQLSTATE\s*\[?[0-9A-Z]{5}\]?"),
    ("oracle_error", r"\bORA-\d{5}\b"),
    (
        "mysql_error",
        r"You have an error in your SQL syntax|\bcom\.mysql\.(?:cj\.)?jdbc\b|\bMySqlException\b|Unknown column '[^'\n]+' in '",
    ),
    (
        "postgres_error",
        r"\bPG::[A-Z]\w*|\bpsycopg2?\.(?:errors\.)?\w+|\bPSQLException\b|\bERROR:\s+(?:relation|column) .{1,128} does not exist|\bpq: ",
    ),
    (
        "sqlite_error",
        r"\bSQLITE_[A-Z]+\b|\bsqlite3?\.(?:\w+\.)*\w*Error\b|\bSQLiteException\b|\bno such (?:table|column): ",
    ),
    (
        "mssql_error",
        r"Unclosed quotation mark after the character string|\bSqlException\b|Microsoft (?:OLE DB Provider for SQL Server|SQL Server Native Client)",
    ),
    (
        "file_path",
        r"/home/[\w.-]+/|/var/www/|/usr/src/app/|/usr/local/lib/python\d|/srv/(?:app|www)/|/opt/apps?/|/site-packages/|/node_modules/|\b[A-Za-z]:\\(?:Users|inetpub|Windows|Program Files|src)\\",
    ),
    (
        "aws_key",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
    ),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    (
        "github_token",
        r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}",
    ),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    (
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    ),
];

/// Keeps the compiled program bounded whatever an operator writes.
const SIZE_LIMIT: usize = 8 << 20;

/// The compiled leak patterns.
#[derive(Debug, Clone)]
pub struct LeakDetector {
    set: RegexSet,
    names: Vec<String>,
}

impl LeakDetector {
    /// Compiles named patterns; an invalid one is reported at `field.name`.
    pub fn compile(patterns: &[(String, String, String)]) -> Result<Self, ConfigError> {
        // Each pattern alone first: a RegexSet error does not say which one failed.
        for (field, name, re) in patterns {
            builder(std::slice::from_ref(re)).build().map_err(|e| {
                ConfigError::new(format!("{field}.{name}"), format!("invalid regex: {e}"))
            })?;
        }
        let sources: Vec<&String> = patterns.iter().map(|(_, _, re)| re).collect();
        let set = builder(&sources)
            .build()
            .map_err(|e| ConfigError::new("leak_patterns", format!("too large together: {e}")))?;
        Ok(LeakDetector {
            set,
            names: patterns.iter().map(|(_, n, _)| n.clone()).collect(),
        })
    }

    /// The defaults alone.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::compile(&resolve(None, &BTreeMap::new(), &[])?)
    }

    /// Names of the patterns found in `body` (empty: no leak).
    pub fn find(&self, body: &[u8]) -> Vec<&str> {
        if self.names.is_empty() {
            return Vec::new();
        }
        self.set
            .matches(body)
            .iter()
            .filter_map(|i| self.names.get(i).map(String::as_str))
            .collect()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

fn builder<I, S>(patterns: I) -> RegexSetBuilder
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut b = RegexSetBuilder::new(patterns);
    b.unicode(false)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT);
    b
}

/// Valid pattern names: they appear in logs, so keep them plain.
fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            format!("{field}.{name}"),
            "pattern names are 1-64 characters of [A-Za-z0-9_.-]",
        ))
    }
}

/// The effective `(field, name, regex)` list: `leak_patterns` (or the
/// defaults) minus `disabled_leak_patterns`, then `extra_leak_patterns`
/// added or replacing by name.
pub fn resolve(
    replace: Option<&BTreeMap<String, String>>,
    extra: &BTreeMap<String, String>,
    disabled: &[String],
) -> Result<Vec<(String, String, String)>, ConfigError> {
    let mut out: Vec<(String, String, String)> = match replace {
        Some(map) => {
            for name in map.keys() {
                check_name("leak_patterns", name)?;
            }
            map.iter()
                .map(|(n, r)| ("leak_patterns".to_string(), n.clone(), r.clone()))
                .collect()
        }
        None => DEFAULT_PATTERNS
            .iter()
            .map(|(n, r)| ("leak_patterns".to_string(), n.to_string(), r.to_string()))
            .collect(),
    };
    for (i, name) in disabled.iter().enumerate() {
        let before = out.len();
        out.retain(|(_, n, _)| n != name);
        if out.len() == before {
            return Err(ConfigError::new(
                format!("disabled_leak_patterns[{i}]"),
                format!("no leak pattern is named {name:?}"),
            ));
        }
    }
    for (name, re) in extra {
        check_name("extra_leak_patterns", name)?;
        out.retain(|(_, n, _)| n != name);
        out.push(("extra_leak_patterns".to_string(), name.clone(), re.clone()));
    }
    Ok(out)
}
