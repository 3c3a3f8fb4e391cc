//! Who a request is counted against: a limit's key parts, read from the request.
//!
//! Every part becomes a `(label, value)` pair. Header values (API keys,
//! tokens) are replaced by a SHA-256 prefix right away, so they are never
//! stored, logged or sent to a rate-limit service; the other parts are not
//! secrets. The local table keys on a digest of the limit's name and all
//! parts ([`Key::digest`]); global mode sends the pairs as RLS descriptor
//! entries, which is why the digest is stable across proxies (no random seed).

use crate::config::{ClaimFrom, ClaimSource, ClientIpConfig, IpGrouping, KeyPart};
// The client-address logic is shared with `jwt`'s `client_ip` requirement.
pub use palisade_core::client_ip::{client_address, parse_ip, peer_from_forwarded_for};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Request facts the key parts read, fetched once per request by the caller.
#[derive(Debug, Clone, Default)]
pub struct KeyInput<'a> {
    /// The connection's peer (`source.address`: "ip:port" on Envoy, "ip" on Kong).
    pub source_address: Option<&'a str>,
    /// Lowercase request headers, as the host lists them.
    pub headers: &'a [(String, Vec<u8>)],
    pub method: &'a str,
    /// Normalised path.
    pub path: &'a str,
    pub route_name: Option<&'a str>,
    /// The claims object read from [`ClaimSource::property`] (`from: property`).
    pub claims: Option<&'a serde_json::Value>,
}

/// A limit's key for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `(label, value)` per part, values safe to send and log.
    pub parts: Vec<(String, String)>,
    /// SHA-256 of the limit name and the parts: slot and fingerprint source.
    pub digest: [u8; 32],
}

impl Key {
    pub fn new(limit: &str, parts: Vec<(String, String)>) -> Key {
        let mut h = Sha256::new();
        h.update((limit.len() as u64).to_le_bytes());
        h.update(limit.as_bytes());
        for (label, value) in &parts {
            // Length-prefixed, so ("ab","c") and ("a","bc") never collide.
            h.update((label.len() as u64).to_le_bytes());
            h.update(label.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
        }
        Key {
            parts,
            digest: h.finalize().into(),
        }
    }

    /// The one bucket requests without the key share (`on_missing_key: shared`).
    pub fn anonymous(limit: &str) -> Key {
        Key::new(limit, vec![("anonymous".into(), String::new())])
    }
}

/// Builds the key of a limit, or `None` when a part is missing.
pub fn build(
    limit: &str,
    parts: &[KeyPart],
    input: &KeyInput<'_>,
    client_ip: &ClientIpConfig,
    claims: &ClaimSource,
) -> Option<Key> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let value = match part {
            KeyPart::ClientIp(grouping) => {
                client_address(input.source_address, input.headers, client_ip)
                    .map(|ip| group(ip, *grouping))?
            }
            KeyPart::Header(name) => header(input.headers, name).map(hash_value)?,
            KeyPart::Route => input.route_name.filter(|r| !r.is_empty())?.to_string(),
            KeyPart::Method => input.method.to_string(),
            KeyPart::Path => input.path.to_string(),
            KeyPart::Claim(name) => claim(input, claims, name)?,
        };
        out.push((part.label(), value));
    }
    Some(Key::new(limit, out))
}

/// The first value of a header (names are lowercase on both hosts).
fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .filter(|v| !v.is_empty())
}

/// 128 bits of SHA-256, hex: enough to tell keys apart, useless to recover them.
pub fn hash_value(value: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(value);
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A claim from the JWT filter's property (JSON object, dotted paths), or
/// with `from: headers` from its claim header (`x-jwt-` + the path, `.` as `-`).
fn claim(input: &KeyInput<'_>, source: &ClaimSource, name: &str) -> Option<String> {
    if source.from == ClaimFrom::Headers {
        let header_name = format!("{}{}", source.header_prefix, name.replace('.', "-"));
        return header(input.headers, &header_name)
            .map(|v| String::from_utf8_lossy(v).into_owned());
    }
    let mut v = input.claims?;
    for seg in name.split('.') {
        v = v.get(seg)?;
    }
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The address, or its network when grouped (`198.51.100.0/24`).
pub fn group(ip: IpAddr, grouping: IpGrouping) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(grouping.v4_prefix.min(32));
            if bits == 32 {
                return v4.to_string();
            }
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            format!("{}/{bits}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u32::from(grouping.v6_prefix.min(128));
            if bits == 128 {
                return v6.to_string();
            }
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            format!("{}/{bits}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn hops(n: u8) -> ClientIpConfig {
        ClientIpConfig {
            xff_num_trusted_hops: n,
        }
    }

    #[test]
    fn prefixes_group_addresses_into_networks() {
        let g = IpGrouping {
            v4_prefix: 24,
            v6_prefix: 64,
        };
        assert_eq!(
            group("198.51.100.77".parse().unwrap(), g),
            "198.51.100.0/24"
        );
        assert_eq!(
            group("2001:db8:1:2:3:4:5:6".parse().unwrap(), g),
            "2001:db8:1:2::/64"
        );
        let all = IpGrouping {
            v4_prefix: 0,
            v6_prefix: 0,
        };
        assert_eq!(group("198.51.100.77".parse().unwrap(), all), "0.0.0.0/0");
        assert_eq!(group("::1".parse().unwrap(), all), "::/0");
        assert_eq!(
            group("198.51.100.77".parse().unwrap(), IpGrouping::default()),
            "198.51.100.77"
        );
    }

    #[test]
    fn header_values_are_hashed_and_keys_differ_by_limit_and_value() {
        let h = hdrs(&[("x-api-key", "secret-key-123")]);
        let input = KeyInput {
            headers: &h,
            ..KeyInput::default()
        };
        let parts = [KeyPart::Header("x-api-key".into())];
        let k = build("a", &parts, &input, &hops(0), &ClaimSource::default()).unwrap();
        assert_eq!(k.parts[0].0, "header.x-api-key");
        assert!(!k.parts[0].1.contains("secret"));
        assert_eq!(k.parts[0].1.len(), 32);
        let k2 = build("b", &parts, &input, &hops(0), &ClaimSource::default()).unwrap();
        assert_ne!(k.digest, k2.digest);
        let h3 = hdrs(&[("x-api-key", "other")]);
        let input3 = KeyInput {
            headers: &h3,
            ..KeyInput::default()
        };
        let k3 = build("a", &parts, &input3, &hops(0), &ClaimSource::default()).unwrap();
        assert_ne!(k.digest, k3.digest);
        // Absent or empty header: no key.
        let none = KeyInput::default();
        assert!(build("a", &parts, &none, &hops(0), &ClaimSource::default()).is_none());
    }

    #[test]
    fn claims_come_from_the_property_or_the_claim_headers() {
        let h = hdrs(&[("x-jwt-sub", "alice"), ("x-jwt-tenant-id", "t1")]);
        let claims = serde_json::json!({"sub": "bob", "tenant": {"id": 7}, "n": null});
        let with = KeyInput {
            headers: &h,
            claims: Some(&claims),
            ..KeyInput::default()
        };
        let without = KeyInput {
            headers: &h,
            ..KeyInput::default()
        };
        let src = ClaimSource::default();
        let one = |input: &KeyInput<'_>, src: &ClaimSource, name: &str| {
            build("l", &[KeyPart::Claim(name.into())], input, &hops(0), src)
                .map(|k| k.parts[0].1.clone())
        };
        assert_eq!(one(&with, &src, "sub").as_deref(), Some("bob"));
        assert_eq!(one(&with, &src, "tenant.id").as_deref(), Some("7"));
        assert_eq!(one(&with, &src, "n"), None);
        assert_eq!(one(&with, &src, "nope"), None);
        // No verified token: no claim, whatever headers say.
        assert_eq!(one(&without, &src, "sub"), None);
        let headers = ClaimSource {
            from: ClaimFrom::Headers,
            ..ClaimSource::default()
        };
        assert_eq!(one(&with, &headers, "sub").as_deref(), Some("alice"));
        assert_eq!(one(&with, &headers, "tenant.id").as_deref(), Some("t1"));
    }

    #[test]
    fn route_method_path_and_empty_key() {
        let input = KeyInput {
            method: "POST",
            path: "/login",
            route_name: Some("r1"),
            ..KeyInput::default()
        };
        let src = ClaimSource::default();
        let k = build(
            "l",
            &[KeyPart::Route, KeyPart::Method, KeyPart::Path],
            &input,
            &hops(0),
            &src,
        )
        .unwrap();
        assert_eq!(
            k.parts,
            vec![
                ("route".to_string(), "r1".to_string()),
                ("method".to_string(), "POST".to_string()),
                ("path".to_string(), "/login".to_string())
            ]
        );
        let no_route = KeyInput::default();
        assert!(build("l", &[KeyPart::Route], &no_route, &hops(0), &src).is_none());
        let global = build("l", &[], &no_route, &hops(0), &src).unwrap();
        assert_eq!(global, Key::new("l", vec![]));
        assert_ne!(global.digest, Key::anonymous("l").digest);
    }
}
