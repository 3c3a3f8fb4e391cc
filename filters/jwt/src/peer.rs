//! The calling workload's identity for `peer` requirements: the SPIFFE id
//! in the connection's verified client certificate (Envoy's
//! `connection.uri_san_peer_certificate`), or, behind a trusted proxy, in
//! the last element of `x-forwarded-client-cert` (XFCC).
//!
//! No well-kept crate parses Envoy's XFCC format, so [`xfcc_uris`] is a
//! small parser: elements separated by `,`, `key=value` pairs by `;`,
//! values optionally double-quoted with `\` escapes; separators inside
//! quotes do not separate. It never fails: malformed input yields no URI.

use palisade_core::host::Headers;
use spiffe::{SpiffeId, TrustDomain};

/// The XFCC header, lowercase as hosts list names.
pub const XFCC: &str = "x-forwarded-client-cert";

/// Longest XFCC value read: Envoy's default header limit is 60 KiB; more
/// than this is not a proxy's element list.
const MAX_XFCC: usize = 16 * 1024;

/// What the request says about its peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// No client certificate (or, trusted XFCC, no header).
    Missing,
    /// A certificate whose SPIFFE ids are these (none: not a SPIFFE
    /// certificate, or an XFCC element without a valid `URI`).
    Ids(Vec<SpiffeId>),
}

/// A compiled `peer` node.
#[derive(Debug, Clone)]
pub struct PeerRule {
    pub ids: Vec<SpiffeId>,
    pub domains: Vec<TrustDomain>,
}

impl PeerRule {
    /// Whether one of the peer's ids is listed or belongs to a listed domain.
    pub fn admits(&self, ids: &[SpiffeId]) -> bool {
        ids.iter()
            .any(|id| self.ids.contains(id) || self.domains.iter().any(|d| id.is_member_of(d)))
    }
}

/// The peer from a URI SAN property value (Envoy: the first URI SAN).
pub fn from_uri_san(uri: Option<&str>) -> Option<Peer> {
    let uri = uri?.trim_end_matches('\0');
    if uri.is_empty() {
        return None;
    }
    Some(Peer::Ids(SpiffeId::new(uri).ok().into_iter().collect()))
}

/// The peer the nearest trusted hop wrote: the last element of the last
/// XFCC header line. `Missing` without the header.
pub fn from_xfcc(headers: &Headers) -> Peer {
    let Some((_, last)) = headers.iter().rev().find(|(n, _)| n == XFCC) else {
        return Peer::Missing;
    };
    let ids = std::str::from_utf8(last)
        .ok()
        .filter(|v| v.len() <= MAX_XFCC)
        .map(|v| {
            xfcc_uris(v)
                .into_iter()
                .filter_map(|u| SpiffeId::new(u).ok())
                .collect()
        })
        .unwrap_or_default();
    Peer::Ids(ids)
}

/// Every `URI` value of the last element of an XFCC value.
pub fn xfcc_uris(value: &str) -> Vec<String> {
    let mut elements = split_unquoted(value, ',');
    let Some(last) = elements.pop() else {
        return Vec::new();
    };
    split_unquoted(last, ';')
        .into_iter()
        .filter_map(|pair| {
            let (key, val) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("uri")
                .then(|| unquote(val.trim()))
                .flatten()
        })
        .collect()
}

/// `text` split at `sep` outside double quotes (a `\` escapes the next
/// character inside quotes). An unterminated quote runs to the end.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&text[start..]);
    out
}

/// A value without its quotes and escapes; `None` if a quote is unbalanced.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then(|| value.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(values: &[&str]) -> Headers {
        values
            .iter()
            .map(|v| (XFCC.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn the_last_element_is_the_nearest_hops() {
        let v = "By=spiffe://cluster.local/ns/a/sa/x;Hash=ab;URI=spiffe://evil.example/sa/admin,\
                 By=spiffe://cluster.local/ns/shop/sa/api;Hash=cd;\
                 Subject=\"CN=frontend,O=shop;x=y\";URI=spiffe://cluster.local/ns/shop/sa/frontend";
        assert_eq!(
            from_xfcc(&hdrs(&[v])),
            Peer::Ids(vec![id("spiffe://cluster.local/ns/shop/sa/frontend")])
        );
        // Several header lines: the last line's last element.
        let lines = hdrs(&[
            "URI=spiffe://cluster.local/ns/shop/sa/frontend",
            "URI=spiffe://cluster.local/ns/shop/sa/other",
        ]);
        assert_eq!(
            from_xfcc(&lines),
            Peer::Ids(vec![id("spiffe://cluster.local/ns/shop/sa/other")])
        );
        assert_eq!(from_xfcc(&Vec::new()), Peer::Missing);
    }

    #[test]
    fn quoted_values_and_several_uris() {
        assert_eq!(
            xfcc_uris("Hash=1;URI=\"spiffe://td/a\";uri=spiffe://td/b;DNS=x"),
            vec!["spiffe://td/a".to_string(), "spiffe://td/b".to_string()]
        );
        // A comma inside quotes does not start an element.
        assert_eq!(
            xfcc_uris("URI=spiffe://td/a;Subject=\"a,b\""),
            vec!["spiffe://td/a".to_string()]
        );
        assert_eq!(
            xfcc_uris("Subject=\"a\\\",URI=spiffe://td/evil\";URI=spiffe://td/ok"),
            vec!["spiffe://td/ok".to_string()]
        );
    }

    #[test]
    fn hostile_values_yield_nothing_and_never_panic() {
        for v in [
            "",
            ",",
            ";;;",
            "URI",
            "URI=",
            "URI=\"",
            "URI=\"spiffe://td/a",
            "URI=spiffe://td/a\"",
            "\"\"\"\\",
            "URI=\"\\",
            "URI=spiffe://TD/../a",
            "URI=http://td/a",
            "URI=spiffe://td/a%00",
            "é=ü;URI=\u{1F600}",
        ] {
            let peer = from_xfcc(&hdrs(&[v]));
            assert_eq!(peer, Peer::Ids(vec![]), "{v:?}");
        }
        let long = format!("URI=spiffe://td/a;x={}", "a".repeat(MAX_XFCC));
        assert_eq!(from_xfcc(&hdrs(&[&long])), Peer::Ids(vec![]));
        let bytes: Headers = vec![(XFCC.into(), vec![0xff, b'U', b'='])];
        assert_eq!(from_xfcc(&bytes), Peer::Ids(vec![]));
    }

    #[test]
    fn rules_admit_listed_ids_and_members_of_listed_domains() {
        let rule = PeerRule {
            ids: vec![id("spiffe://cluster.local/ns/shop/sa/frontend")],
            domains: vec![TrustDomain::new("partner.example").unwrap()],
        };
        assert!(rule.admits(&[id("spiffe://cluster.local/ns/shop/sa/frontend")]));
        assert!(rule.admits(&[id("spiffe://partner.example/any/thing")]));
        assert!(!rule.admits(&[id("spiffe://cluster.local/ns/shop/sa/other")]));
        assert!(!rule.admits(&[id("spiffe://cluster.local/ns/shop/sa/frontend/x")]));
        assert!(!rule.admits(&[]));
        assert_eq!(from_uri_san(None), None);
        assert_eq!(from_uri_san(Some("")), None);
        assert_eq!(from_uri_san(Some("urn:x")), Some(Peer::Ids(vec![])));
        assert_eq!(
            from_uri_san(Some("spiffe://cluster.local/ns/shop/sa/frontend\0")),
            Some(Peer::Ids(vec![id(
                "spiffe://cluster.local/ns/shop/sa/frontend"
            )]))
        );
    }
}
