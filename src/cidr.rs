//! Networks in CIDR notation ("10.0.0.0/8", "2001:db8::/32", a bare address = one host) for
//! the listeners' address admission (`allow_from`, `deny_from`) and `proxy_trusted`.
//!
//! Parsed once when the configuration is loaded (a bad entry fails the load, naming it) and
//! shared read-only. An IPv4 client seen on a dual-stack socket as `::ffff:a.b.c.d` matches
//! IPv4 networks, and an IPv4 address matches the IPv4-mapped IPv6 network it falls in.

use std::net::IpAddr;

use serde::Deserialize;

/// One network: an address with its host bits cleared and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => self.matches(a.into()) || self.matches(a.to_ipv6_mapped().into()),
            v6 => self.matches(v6),
        }
    }

    fn matches(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask(u32::from(a).into(), self.prefix, 32) == u32::from(n).into()
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                mask(u128::from(a), self.prefix, 128) == u128::from(n)
            }
            _ => false,
        }
    }
}

/// `bits` with all but the top `prefix` of `width` bits cleared.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u128::MAX << (width - prefix);
    bits & keep & (u128::MAX >> (128 - width))
}

/// Whether any of `nets` contains `ip`.
pub fn any_contains(nets: &[Cidr], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: not an IP address or CIDR network"))?;
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= width && (p == "0" || !p.starts_with('0')) => n,
                _ => return Err(format!("{s:?}: prefix length must be 0..={width}")),
            },
        };
        let net = match ip {
            IpAddr::V4(a) => IpAddr::V4((mask(u32::from(a).into(), prefix, 32) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6(mask(u128::from(a), prefix, 128).into()),
        };
        if net != ip {
            // "10.1.2.3/8" is most likely a typo for a host or for "10.0.0.0/8": say so.
            return Err(format!(
                "{s:?}: host bits set (the network is {net}/{prefix})"
            ));
        }
        Ok(Cidr { net, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        s.parse()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_hosts_and_refuses_bad_ones() {
        assert!(c("10.0.0.0/8").contains("10.200.3.4".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(c("127.0.0.3").contains("127.0.0.3".parse().unwrap()));
        assert!(!c("127.0.0.3").contains("127.0.0.2".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(!c("0.0.0.0/0").contains("::1".parse().unwrap()));
        assert!(c("::/0").contains("::1".parse().unwrap()));
        assert!(c("2001:db8::/32").contains("2001:db8:1::7".parse().unwrap()));
        assert!(!c("2001:db8::/32").contains("2001:db9::7".parse().unwrap()));
        // A v4 client on a dual-stack socket.
        assert!(c("127.0.0.0/8").contains("::ffff:127.0.0.9".parse().unwrap()));
        assert!(c("::ffff:10.0.0.0/104").contains("10.1.1.1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/08",
            "10.1.0.0/8",
            "host",
            "::/129",
            "1.2.3.4/-1",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(c("10.0.0.0/8").to_string(), "10.0.0.0/8");
    }

    proptest! {
        /// Against a naive bit-by-bit comparison.
        #[test]
        fn contains_matches_the_top_prefix_bits(a: u32, b: u32, prefix in 0u8..=32) {
            let net = if prefix == 0 { 0 } else { a & (u32::MAX << (32 - prefix)) };
            let cidr: Cidr = format!("{}/{prefix}", std::net::Ipv4Addr::from(net)).parse().unwrap();
            let same = (0..prefix).all(|i| (net >> (31 - i)) & 1 == (b >> (31 - i)) & 1);
            prop_assert_eq!(cidr.contains(std::net::Ipv4Addr::from(b).into()), same);
        }

        #[test]
        fn v6_contains_matches_the_top_prefix_bits(a: u128, b: u128, prefix in 0u8..=128) {
            let net = if prefix == 0 { 0 } else { a & (u128::MAX << (128 - prefix)) };
            let cidr: Cidr = format!("{}/{prefix}", std::net::Ipv6Addr::from(net)).parse().unwrap();
            let same = (0..prefix).all(|i| (net >> (127 - i)) & 1 == (b >> (127 - i)) & 1);
            let ip = IpAddr::from(std::net::Ipv6Addr::from(b));
            prop_assert_eq!(cidr.contains(ip), same);
        }
    }
}
