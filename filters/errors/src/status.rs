//! Which response statuses a setting covers: classes (`"5xx"`, `"4xx"`) and
//! single codes (`502` or `"502"`).
//!
//! Only error statuses (400–599) can be listed: masking a 2xx or 3xx would
//! break working clients, so such a value is a config error, not a no-op.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// A set of error statuses, parsed once at configure time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSet {
    client_errors: bool,
    server_errors: bool,
    codes: Vec<u16>,
}

impl StatusSet {
    /// Nothing: `[]` in the config.
    pub fn none() -> Self {
        StatusSet::default()
    }

    /// Every 5xx, the default of `statuses`.
    pub fn server_errors() -> Self {
        StatusSet {
            server_errors: true,
            ..StatusSet::default()
        }
    }

    /// Every 4xx, the default of `detect_leaks_in`.
    pub fn client_errors() -> Self {
        StatusSet {
            client_errors: true,
            ..StatusSet::default()
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        (self.client_errors && (400..500).contains(&status))
            || (self.server_errors && (500..600).contains(&status))
            || self.codes.contains(&status)
    }

    pub fn is_empty(&self) -> bool {
        !self.client_errors && !self.server_errors && self.codes.is_empty()
    }

    fn add(&mut self, spec: Spec) {
        match spec {
            Spec::ClientErrors => self.client_errors = true,
            Spec::ServerErrors => self.server_errors = true,
            Spec::Code(c) if !self.codes.contains(&c) => self.codes.push(c),
            Spec::Code(_) => {}
        }
    }
}

/// One list element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    ClientErrors,
    ServerErrors,
    Code(u16),
}

fn code(n: u64) -> Result<Spec, String> {
    match u16::try_from(n) {
        Ok(c) if (400..600).contains(&c) => Ok(Spec::Code(c)),
        _ => Err(format!(
            "status {n} is not an error status (only 400-599, \"4xx\" and \"5xx\" can be masked)"
        )),
    }
}

/// Parses `"5xx"`, `"4xx"` (any case) or a code given as text.
fn parse_text(s: &str) -> Result<Spec, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("5xx") {
        return Ok(Spec::ServerErrors);
    }
    if t.eq_ignore_ascii_case("4xx") {
        return Ok(Spec::ClientErrors);
    }
    match t.parse::<u64>() {
        Ok(n) if t.len() == 3 => code(n),
        _ => Err(format!(
            "invalid status {s:?}: expected \"4xx\", \"5xx\" or a code like 502"
        )),
    }
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Spec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"4xx\", \"5xx\" or a status code")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Spec, E> {
                code(n).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Spec, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("status {n} is not an error status")))
                    .and_then(|n| code(n).map_err(E::custom))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Spec, E> {
                parse_text(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    /// A list (`["5xx", 404]`) or, for convenience, a single value (`"5xx"`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of statuses like [\"5xx\", 404]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSet, A::Error> {
                let mut set = StatusSet::none();
                while let Some(spec) = seq.next_element::<Spec>()? {
                    set.add(spec);
                }
                Ok(set)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<StatusSet, E> {
                let mut set = StatusSet::none();
                set.add(code(n).map_err(E::custom)?);
                Ok(set)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusSet, E> {
                let mut set = StatusSet::none();
                set.add(parse_text(s).map_err(E::custom)?);
                Ok(set)
            }
        }
        d.deserialize_any(V)
    }
}
