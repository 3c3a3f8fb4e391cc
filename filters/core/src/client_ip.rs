//! The client's address, as every control that needs it finds it: the
//! connection's peer, or the `X-Forwarded-For` entry the nearest trusted
//! proxy wrote (`ratelimit`'s `client_ip` keys, `jwt`'s `client_ip`
//! requirement). Written once so both trust the same entry.

use schemars::JsonSchema;
use serde::Deserialize;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The top-level `client_ip` option of the controls that read the address.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIpConfig {
    /// Proxies in front of this one that append to `X-Forwarded-For`. 0: the
    /// connection's peer is the client and the header is ignored. N: the N-th
    /// entry from the right (what the nearest trusted proxy recorded).
    #[serde(default)]
    pub xff_num_trusted_hops: u8,
}

/// The client's address: the peer, or the X-Forwarded-For entry the nearest
/// trusted proxy wrote. Entries left of it are the client's own words and are
/// never read. With fewer entries than trusted hops, the request did not come
/// through the trusted chain, so the peer is the client.
pub fn client_address(
    source_address: Option<&str>,
    headers: &[(String, Vec<u8>)],
    config: &ClientIpConfig,
) -> Option<IpAddr> {
    let peer = source_address.and_then(parse_ip);
    let hops = usize::from(config.xff_num_trusted_hops);
    if hops == 0 {
        return peer;
    }
    let entries: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n == "x-forwarded-for")
        .flat_map(|(_, v)| v.split(|b| *b == b','))
        .collect();
    if entries.len() < hops {
        return peer;
    }
    let chosen = entries[entries.len() - hops];
    std::str::from_utf8(chosen)
        .ok()
        .and_then(|s| parse_ip(s.trim()))
        .or(peer)
}

/// Whether the peer address is the client's own last `X-Forwarded-For`
/// entry, as Envoy's HTTP connection manager makes it under its default
/// `use_remote_address: false` with `xff_num_trusted_hops: 0`: then any
/// client picks its `client_ip` by rotating the header.
///
/// The proof is the port: an address Envoy takes from a header has none,
/// so `source.address` reads `ip:0`, which no TCP peer has. The address
/// alone would not do: with `use_remote_address: true` Envoy appends the
/// real peer to the header, so its last entry equals the peer there too
/// (with port). Kong's addresses carry no port: never flagged there.
pub fn peer_from_forwarded_for(source_address: &str, headers: &[(String, Vec<u8>)]) -> bool {
    let text = source_address.trim().trim_end_matches('\0');
    let Ok(peer) = text.parse::<SocketAddr>() else {
        return false;
    };
    if peer.port() != 0 {
        return false;
    }
    let last = headers
        .iter()
        .filter(|(n, _)| n == "x-forwarded-for")
        .flat_map(|(_, v)| v.split(|b| *b == b','))
        .next_back();
    last.and_then(|entry| std::str::from_utf8(entry).ok())
        .and_then(parse_ip)
        .is_some_and(|ip| parse_ip(text) == Some(ip))
}

/// "1.2.3.4", "1.2.3.4:80", "::1", "[::1]:80"; IPv4-mapped IPv6 counts as IPv4.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_end_matches('\0');
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })?;
    Some(match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    })
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
    fn peer_addresses_parse_on_both_hosts() {
        assert_eq!(parse_ip("10.1.2.3:5555"), "10.1.2.3".parse().ok());
        assert_eq!(parse_ip("10.1.2.3"), "10.1.2.3".parse().ok());
        assert_eq!(parse_ip("[2001:db8::1]:443"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("[2001:db8::1]"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("::ffff:192.0.2.7"), "192.0.2.7".parse().ok());
        assert_eq!(parse_ip("10.0.0.1\0"), "10.0.0.1".parse().ok());
        assert_eq!(parse_ip("unix:/tmp/sock"), None);
        assert_eq!(parse_ip(""), None);
    }

    #[test]
    fn without_trusted_hops_forwarded_for_is_ignored() {
        let h = hdrs(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            client_address(Some("10.0.0.9:4000"), &h, &hops(0)),
            "10.0.0.9".parse().ok()
        );
    }

    #[test]
    fn trusted_hops_pick_the_entry_the_nearest_trusted_proxy_wrote() {
        // client spoofs "6.6.6.6"; the trusted proxy appends the real peer.
        let h = hdrs(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5")]);
        assert_eq!(
            client_address(Some("10.0.0.2:1"), &h, &hops(1)),
            "203.0.113.5".parse().ok()
        );
        let h = hdrs(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.5"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        assert_eq!(
            client_address(Some("10.0.0.2:1"), &h, &hops(2)),
            "203.0.113.5".parse().ok()
        );
    }

    #[test]
    fn too_few_entries_or_garbage_falls_back_to_the_peer() {
        let h = hdrs(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(
            client_address(Some("10.0.0.2:1"), &h, &hops(2)),
            "10.0.0.2".parse().ok()
        );
        let h = hdrs(&[("x-forwarded-for", "1.1.1.1, not-an-ip")]);
        assert_eq!(
            client_address(Some("10.0.0.2:1"), &h, &hops(1)),
            "10.0.0.2".parse().ok()
        );
        assert_eq!(client_address(None, &[], &hops(1)), None);
    }

    #[test]
    fn only_a_portless_peer_equal_to_the_last_forwarded_entry_came_from_the_header() {
        // use_remote_address: false (Envoy's default): the last entry, port 0.
        let h = hdrs(&[("x-forwarded-for", "1.1.1.1, 7.7.7.7")]);
        assert!(peer_from_forwarded_for("7.7.7.7:0", &h));
        let split = hdrs(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", " 2001:db8::7 "),
        ]);
        assert!(peer_from_forwarded_for("[2001:db8::7]:0", &split));
        // use_remote_address: true: Envoy appended the real peer, which has a port.
        let h = hdrs(&[("x-forwarded-for", "6.6.6.6,203.0.113.5")]);
        assert!(!peer_from_forwarded_for("203.0.113.5:40000", &h));
        // The HCM trusted a hop: the address is not the last entry.
        assert!(!peer_from_forwarded_for("6.6.6.6:0", &h));
        // No header, garbage, or Kong's portless address.
        assert!(!peer_from_forwarded_for("7.7.7.7:0", &[]));
        let junk = hdrs(&[("x-forwarded-for", "7.7.7.7, nope")]);
        assert!(!peer_from_forwarded_for("7.7.7.7:0", &junk));
        let one = hdrs(&[("x-forwarded-for", "7.7.7.7")]);
        assert!(!peer_from_forwarded_for("7.7.7.7", &one));
        assert!(!peer_from_forwarded_for("", &one));
    }
}
