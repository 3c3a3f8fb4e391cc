//! Media types: which bodies a route accepts (415 otherwise) and which of
//! them are JSON (validated against the schema).

/// `type/subtype`, `type/*` or `*/*`, lowercased, parameters dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    kind: String,
    subtype: String,
}

impl MediaRange {
    pub fn parse(text: &str) -> Option<MediaRange> {
        let (kind, subtype) = essence(text)?;
        if kind == "*" && subtype != "*" {
            return None;
        }
        Some(MediaRange { kind, subtype })
    }

    /// Whether a request's media type falls in this range.
    pub fn accepts(&self, media_type: &MediaType) -> bool {
        (self.kind == "*" || self.kind == media_type.kind)
            && (self.subtype == "*" || self.subtype == media_type.subtype)
    }

    pub fn as_string(&self) -> String {
        format!("{}/{}", self.kind, self.subtype)
    }
}

/// A request's `content-type`, lowercased, parameters dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    kind: String,
    subtype: String,
}

impl MediaType {
    pub fn parse(text: &str) -> Option<MediaType> {
        let (kind, subtype) = essence(text)?;
        if kind == "*" || subtype == "*" {
            return None;
        }
        Some(MediaType { kind, subtype })
    }

    /// `application/json` and every `+json` structured syntax (RFC 6839).
    pub fn is_json(&self) -> bool {
        self.kind == "application" && (self.subtype == "json" || self.subtype.ends_with("+json"))
    }
}

/// The `type/subtype` of a media type: both RFC 9110 tokens.
fn essence(text: &str) -> Option<(String, String)> {
    let main = text.split(';').next().unwrap_or("").trim();
    let (kind, subtype) = main.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(kind) || !token(subtype) {
        return None;
    }
    Some((kind.to_ascii_lowercase(), subtype.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_accept_types_case_insensitively_ignoring_parameters() {
        let json = MediaType::parse("Application/JSON; charset=utf-8").unwrap();
        assert!(MediaRange::parse("application/json")
            .unwrap()
            .accepts(&json));
        assert!(MediaRange::parse("application/*").unwrap().accepts(&json));
        assert!(MediaRange::parse("*/*").unwrap().accepts(&json));
        assert!(!MediaRange::parse("text/plain").unwrap().accepts(&json));
        assert!(json.is_json());
        assert!(MediaType::parse("application/merge-patch+json")
            .unwrap()
            .is_json());
        assert!(!MediaType::parse("text/json2").unwrap().is_json());
    }

    #[test]
    fn malformed_types_are_refused() {
        for bad in [
            "",
            "json",
            "/json",
            "application/",
            "*/json",
            "a b/c",
            "application/json/x",
        ] {
            assert!(MediaRange::parse(bad).is_none(), "{bad}");
        }
        assert!(MediaType::parse("*/*").is_none());
    }
}
