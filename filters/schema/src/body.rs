//! JSON bodies parsed under limits, with duplicate keys refused.
//!
//! serde_json's streaming deserializer does the parsing; a custom
//! [`DeserializeSeed`] builds the `Value` and checks, as each piece arrives,
//! the nesting depth, the members of each object, the items of each array and
//! the length of each string, so a JSON bomb is stopped before it is built.
//! Duplicate keys are refused at any depth: a validator that reads the first
//! and a service that reads the last is a known way around validation.

use crate::config::Limits;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// Why a body was refused before any schema ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not well-formed JSON (or not UTF-8).
    Syntax,
    DuplicateKey,
    TooDeep,
    TooManyMembers,
    TooManyItems,
    StringTooLong,
}

impl BodyError {
    /// Metric and log reason.
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::Syntax => "invalid_json",
            BodyError::DuplicateKey => "duplicate_key",
            BodyError::TooDeep => "too_deep",
            BodyError::TooManyMembers => "too_many_members",
            BodyError::TooManyItems => "too_many_items",
            BodyError::StringTooLong => "string_too_long",
        }
    }

    /// The problem `detail`: names the limit, never the offending content.
    pub fn detail(self, limits: &Limits) -> String {
        match self {
            BodyError::Syntax => "the body is not well-formed JSON".into(),
            BodyError::DuplicateKey => "the body repeats a key within one object".into(),
            BodyError::TooDeep => format!("the body nests deeper than {}", limits.max_depth),
            BodyError::TooManyMembers => {
                format!("an object has more than {} members", limits.max_members)
            }
            BodyError::TooManyItems => {
                format!("an array has more than {} items", limits.max_items)
            }
            BodyError::StringTooLong => {
                format!("a string is longer than {} bytes", limits.max_string_bytes)
            }
        }
    }
}

/// Parses a whole body as one JSON value within `limits`.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Value, BodyError> {
    let failure = Cell::new(None);
    let seed = Node {
        limits,
        depth: 0,
        failure: &failure,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, failure.get()) {
        (Ok(value), None) => Ok(value),
        (_, Some(limit)) => Err(limit),
        (Err(_), None) => Err(BodyError::Syntax),
    }
}

/// One value at `depth`; a limit hit is recorded in `failure` (serde's error
/// type only carries text) and aborts the parse.
#[derive(Clone, Copy)]
struct Node<'a> {
    limits: &'a Limits,
    depth: u32,
    failure: &'a Cell<Option<BodyError>>,
}

impl Node<'_> {
    fn fail<E: de::Error>(&self, error: BodyError) -> E {
        self.failure.set(Some(error));
        E::custom(error.reason())
    }

    fn check_string<E: de::Error>(&self, s: &str) -> Result<(), E> {
        if s.len() as u64 > self.limits.max_string_bytes {
            return Err(self.fail(BodyError::StringTooLong));
        }
        Ok(())
    }

    fn child<E: de::Error>(&self) -> Result<Node<'_>, E> {
        let depth = self.depth + 1;
        if depth > self.limits.max_depth {
            return Err(self.fail(BodyError::TooDeep));
        }
        Ok(Node { depth, ..*self })
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.check_string(v)?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.check_string(&v)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            if items.len() >= self.limits.max_items as usize {
                return Err(self.fail(BodyError::TooManyItems));
            }
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key_seed(Key(self))? {
            if members.len() >= self.limits.max_members as usize {
                return Err(self.fail(BodyError::TooManyMembers));
            }
            let value = map.next_value_seed(child)?;
            // One lookup per member: a repeated key is found as it replaces.
            if members.insert(key, value).is_some() {
                return Err(self.fail(BodyError::DuplicateKey));
            }
        }
        Ok(Value::Object(members))
    }
}

/// An object key: a string under the same length limit.
struct Key<'a>(Node<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.0.check_string(v)?;
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.0.check_string(&v)?;
        Ok(v)
    }
}
