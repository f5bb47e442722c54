//! The real client address behind trusted reverse proxies.
//!
//! A reverse proxy on the same host makes every client look like `127.0.0.1`; the
//! address the proxy saw is in `Forwarded: for=` (RFC 7239) or `X-Forwarded-For`. Those
//! headers are written by whoever sends the request, so they are believed only when the
//! peer that sent them is a configured proxy, and only as far back as the chain of
//! configured proxies goes: the client is the right-most address that is not a trusted
//! proxy (everything left of it could have been made up by that client).
//!
//! Pure functions over addresses and header values, so that the trust rules are tested
//! without sockets.

use std::net::IpAddr;
use std::str::FromStr;

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not an IP address or range like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| bad())?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(ranges: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(ranges)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request that came from `peer` with these `Forwarded`
    /// and `X-Forwarded-For` header values (each in the order received; one header may
    /// be repeated). Headers are ignored unless `peer` is trusted; `Forwarded` wins
    /// when it is present. Walking the hops from the right, the first address that is
    /// not a trusted proxy is the client; a hop that names no usable address
    /// (`unknown`, an obfuscated name, garbage) stops the walk at the proxy that
    /// reported it.
    pub fn client_address<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl IntoIterator<Item = &'a str>,
        x_forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut hops: Vec<&str> = forwarded
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(forwarded_for)
            .collect();
        if hops.is_empty() {
            hops = x_forwarded_for
                .into_iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_node(hop) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.1;proto=https`), unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (ip, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn ranges() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.200.1.1")) && !c.contains(ip("11.0.0.1")));
        assert!(
            c.contains(ip("::ffff:10.0.0.1")),
            "IPv4-mapped counts as IPv4"
        );
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "host", "10.0.0.0/x", ""] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains("not an IP address"), "{bad}: {err}");
        }
        assert_eq!("fd00::/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = trusted(&["10.0.0.1"]);
        let peer = ip("127.0.0.1");
        assert_eq!(t.client_address(peer, ["for=203.0.113.9"], []), peer);
        assert_eq!(t.client_address(peer, [], ["203.0.113.9"]), peer);
        let none = TrustedProxies::default();
        assert_eq!(none.client_address(peer, [], ["203.0.113.9"]), peer);
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let lo = ip("127.0.0.1");
        assert_eq!(t.client_address(lo, [], ["203.0.113.9"]), ip("203.0.113.9"));
        // The right-most untrusted hop: the left ones were written by the client.
        assert_eq!(
            t.client_address(lo, [], ["1.2.3.4, 203.0.113.9, 10.1.1.1"]),
            ip("203.0.113.9")
        );
        // Repeated header lines are one list.
        assert_eq!(
            t.client_address(lo, [], ["1.2.3.4", "203.0.113.9"]),
            ip("203.0.113.9")
        );
        // Every hop trusted: the left-most one.
        assert_eq!(
            t.client_address(lo, [], ["10.0.0.5, 10.0.0.6"]),
            ip("10.0.0.5")
        );
        // No header: the peer itself.
        assert_eq!(t.client_address(lo, [], []), lo);
        // Garbage stops at the proxy that wrote it.
        assert_eq!(t.client_address(lo, [], ["1.2.3.4, nonsense"]), lo);
        assert_eq!(
            t.client_address(lo, [], ["nonsense, 10.0.0.7"]),
            ip("10.0.0.7")
        );
        // IPv4-mapped peers are trusted as their IPv4 address.
        assert_eq!(
            t.client_address(ip("::ffff:127.0.0.1"), [], ["203.0.113.9"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_wins_and_is_parsed_per_rfc_7239() {
        let t = trusted(&["127.0.0.1"]);
        let lo = ip("127.0.0.1");
        assert_eq!(
            t.client_address(
                lo,
                ["for=192.0.2.60;proto=http;by=203.0.113.43"],
                ["1.1.1.1"]
            ),
            ip("192.0.2.60")
        );
        assert_eq!(
            t.client_address(lo, ["For=\"[2001:db8:cafe::17]:4711\""], []),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            t.client_address(lo, ["for=\"192.0.2.43:47011\", for=198.51.100.17"], []),
            ip("198.51.100.17")
        );
        assert_eq!(t.client_address(lo, ["for=unknown"], []), lo);
        assert_eq!(t.client_address(lo, ["for=_hidden"], []), lo);
        // A Forwarded header without `for=` leaves X-Forwarded-For in force.
        assert_eq!(
            t.client_address(lo, ["proto=https"], ["192.0.2.1"]),
            ip("192.0.2.1")
        );
    }
}
