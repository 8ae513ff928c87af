//! `allowed_hosts`: which origins a flow's plugin may call.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

/// One `scheme://host[:port]` entry; `*.example.com` matches any subdomain of example.com.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The entry as the config writes it (trimmed): what metrics are labelled by.
    entry: String,
    scheme: String,
    host: HostPattern,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

impl HostRule {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if entry == "*" || entry.ends_with("://*") {
            return Err(format!(
                "`{entry}` would allow every host; name each host (`*.` may start a host name)"
            ));
        }
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| format!("`{entry}` needs a scheme: write `https://{entry}`"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{entry}`: scheme must be http or https"));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('?') || authority.contains('#') {
            return Err(format!(
                "`{entry}` has a path; an entry is `scheme://host[:port]` only"
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "`{entry}` has user info; write `scheme://host[:port]`"
            ));
        }
        let (pattern, probe_host) = match authority.strip_prefix("*.") {
            Some(domain) => (true, format!("wildcard.{domain}")),
            None => (false, authority.to_string()),
        };
        if probe_host.contains('*') {
            return Err(format!(
                "`{entry}`: `*` is only allowed as a leading `*.` of the host"
            ));
        }
        let url = Url::parse(&format!("{scheme}://{probe_host}"))
            .map_err(|e| format!("`{entry}` is not a valid origin: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("`{entry}` has no host"))?
            .to_ascii_lowercase();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("`{entry}` has no port"))?;
        let host = if pattern {
            if matches!(url.host(), Some(Host::Ipv4(_) | Host::Ipv6(_))) {
                return Err(format!("`{entry}`: `*.` cannot apply to an IP address"));
            }
            let suffix = host.trim_start_matches("wildcard");
            // `*.` with no domain after it: the suffix `.` matches every host written with
            // its trailing dot (`evil.com.`), which resolves as the host without it.
            if suffix.trim_matches('.').is_empty() {
                return Err(format!(
                    "`{entry}` would allow every host; `*.` must be followed by a domain"
                ));
            }
            HostPattern::Subdomains(suffix.to_string())
        } else {
            HostPattern::Exact(host)
        };
        Ok(Self {
            entry: entry.to_string(),
            scheme,
            host,
            port,
        })
    }

    /// The entry as the config writes it.
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// Whether this rule allows `url`; `explicit` is true when it names the url's host exactly
    /// (not through `*.`).
    pub fn matches(&self, url: &Url) -> Option<Match> {
        if url.scheme() != self.scheme || url.port_or_known_default() != Some(self.port) {
            return None;
        }
        let host = url.host_str()?.to_ascii_lowercase();
        match &self.host {
            HostPattern::Exact(exact) if *exact == host => Some(Match { explicit: true }),
            HostPattern::Subdomains(suffix)
                if host.ends_with(suffix.as_str()) && host.len() > suffix.len() =>
            {
                Some(Match { explicit: false })
            }
            _ => None,
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Subdomains(s) => format!("*{s}"),
        };
        write!(f, "{}://{}:{}", self.scheme, host, self.port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub explicit: bool,
}

/// A flow's `allowed_hosts`; empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<HostRule>,
}

impl AllowList {
    pub fn new(rules: Vec<HostRule>) -> Self {
        Self { rules }
    }

    pub fn rules(&self) -> &[HostRule] {
        &self.rules
    }

    /// The entry `url` matches, one naming its host exactly before any `*.` one; the address
    /// rules of [`Self::check`] are not applied.
    pub fn matching(&self, url: &Url) -> Option<&HostRule> {
        self.best(url).map(|(rule, _)| rule)
    }

    fn best(&self, url: &Url) -> Option<(&HostRule, Match)> {
        self.rules
            .iter()
            .filter_map(|r| r.matches(url).map(|m| (r, m)))
            .max_by_key(|(_, m)| m.explicit)
    }

    /// Checks `url` against the list and against the address rules: a loopback, private or
    /// link-local address (or `localhost`) is reachable only through an entry that names it
    /// exactly, never through `*.`.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        // The plugin's, of any length: quoted back in refusals and errors.
        let shown = crate::runtime::budget::quote(&origin(url)).into_owned();
        let (_, best) = self
            .best(url)
            .ok_or_else(|| format!("{shown} is not in the flow's allowed_hosts"))?;
        let internal = match url.host() {
            Some(Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => is_localhost_name(name),
            None => return Err(format!("{shown} has no host")),
        };
        if internal && !best.explicit {
            return Err(format!(
                "{shown} is a loopback, private or link-local address; allowed_hosts must name it exactly"
            ));
        }
        Ok(())
    }
}

pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

pub fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// True for addresses on the public internet; false for loopback, private, link-local,
/// shared (CGNAT), benchmarking, unspecified, multicast, broadcast and documentation
/// ranges, IPv6's old site-local and local-use NAT64 ranges; an IPv4 address inside an IPv6
/// one (mapped, compatible, or behind the well-known NAT64 prefix, which a DNS64 resolver
/// answers for every IPv4 name) is judged as that IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let [_, _, _, _, _, _, high, low] = s;
            let embedded = || {
                IpAddr::V4(std::net::Ipv4Addr::from(
                    (u32::from(high) << 16) | u32::from(low),
                ))
            };
            // 64:ff9b::/96, the well-known NAT64 prefix; ::a.b.c.d, IPv4-compatible.
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
            if nat64 || compatible {
                return is_public(embedded());
            }
            let first = s[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || (first == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || first == 0x2001 && s[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::new(
            entries
                .iter()
                .map(|e| HostRule::parse(e).unwrap())
                .collect(),
        )
    }

    fn check(list: &AllowList, url: &str) -> Result<(), String> {
        list.check(&Url::parse(url).unwrap())
    }

    #[test]
    fn exact_hosts_match_scheme_host_and_port() {
        let l = list(&["https://api.victorops.com"]);
        assert!(check(&l, "https://api.victorops.com/api-public/v1/team").is_ok());
        assert!(check(&l, "https://API.victorops.com:443/x").is_ok());
        assert!(check(&l, "http://api.victorops.com/x").is_err());
        assert!(check(&l, "https://api.victorops.com:8443/x").is_err());
        assert!(check(&l, "https://evil.com/?https://api.victorops.com").is_err());
        assert!(check(&l, "https://api.victorops.com.evil.com/").is_err());
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let l = list(&["https://*.example.com"]);
        assert!(check(&l, "https://a.example.com/").is_ok());
        assert!(check(&l, "https://a.b.example.com/").is_ok());
        assert!(check(&l, "https://example.com/").is_err());
        assert!(check(&l, "https://badexample.com/").is_err());
    }

    #[test]
    fn the_matching_entry_is_named_as_written_exact_ones_first() {
        let l = list(&[" https://*.Example.com/ ", "https://api.example.com:443"]);
        let matching = |url: &str| l.matching(&Url::parse(url).unwrap()).map(HostRule::entry);
        assert_eq!(
            matching("https://a1.example.com/x"),
            Some("https://*.Example.com/")
        );
        assert_eq!(
            matching("https://A2.EXAMPLE.com/"),
            Some("https://*.Example.com/")
        );
        assert_eq!(
            matching("https://api.example.com/"),
            Some("https://api.example.com:443")
        );
        assert_eq!(matching("https://evil.test/"), None);
    }

    #[test]
    fn bare_star_and_malformed_entries_are_rejected() {
        for bad in [
            "*",
            "https://*",
            "https://*.",
            "http://*.:80",
            "https://*./",
            "api.victorops.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://a*.x.com",
            "https://u@x.com",
        ] {
            assert!(HostRule::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn internal_addresses_need_an_exact_entry() {
        let l = list(&["http://127.0.0.1:8080", "https://*.localhost"]);
        assert!(check(&l, "http://127.0.0.1:8080/x").is_ok());
        assert!(check(&l, "http://127.0.0.1:8081/x").is_err());
        let err = check(&l, "https://a.localhost/").unwrap_err();
        assert!(err.contains("must name it exactly"), "{err}");
        assert!(!is_public("169.254.169.254".parse().unwrap()));
        assert!(!is_public("10.1.2.3".parse().unwrap()));
        assert!(!is_public("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        // IPv4 inside IPv6: NAT64's well-known prefix and the old compatible form are judged
        // by the IPv4 address they carry; local-use NAT64 and site-local are internal.
        for internal in [
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.1.2.3",
            "64:ff9b::127.0.0.1",
            "::169.254.169.254",
            "::10.0.0.1",
            "64:ff9b:1::93.184.216.34",
            "fec0::1",
            "198.18.0.1",
            "198.19.255.255",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["64:ff9b::93.184.216.34", "::93.184.216.34", "198.20.0.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert!(is_public("93.184.216.34".parse().unwrap()));
    }
}
