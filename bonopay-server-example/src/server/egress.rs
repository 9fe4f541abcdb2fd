//! Outbound destinations: where this server may send HTTP requests on a
//! tenant's behalf (webhooks) or the operator's (the WhatsApp-style
//! messaging API).
//!
//! A webhook URL is chosen by a merchant, so without a rule an owner key
//! could make the server post to its own loopback services, the private
//! network behind it or the cloud metadata endpoint, and read the answers
//! (status, error text) back from the delivery log: a port scanner and a
//! credential thief run from inside the operator's network. The rule here
//! is the one such a server needs: **public internet only**, unless the
//! operator allows more in `config.json`:
//!
//! ```json
//! "egress": {"allow": ["127.0.0.1", "10.0.0.0/8", "erp.local"]}
//! ```
//!
//! Each entry is an IP address, a network in CIDR notation, or an exact
//! host name (any case, trailing dot ignored). An allowed host name is
//! trusted whatever it resolves to; an allowed address or network is
//! trusted whatever name leads there. `BONOPAY_EGRESS_ALLOW` (comma
//! separated) replaces the list. Without entries only public addresses are
//! reached.
//!
//! **What is refused** ([`non_public_reason`]): loopback, private
//! (RFC 1918, RFC 6598 shared address space, IPv6 unique local), link-local
//! (with the metadata address `169.254.169.254`), multicast, broadcast,
//! unspecified, "this network", documentation, benchmarking, IETF protocol
//! and reserved ranges, AWS's IPv6 metadata address `fd00:ec2::254`, and the
//! IPv6 forms that lead to any of those (IPv4-mapped, IPv4-compatible,
//! NAT64 `64:ff9b::/96`, 6to4 `2002::/16`). Special-use and private-use
//! host names (`localhost`, `*.localhost`, `*.local`, `*.internal` (so
//! `metadata.google.internal`), `*.home.arpa`, `metadata.goog`) are refused
//! by name.
//!
//! **Where it is checked.** Twice, because a name can change its answer
//! between the two (DNS rebinding):
//! - at registration, on the URL as the URL parser reads it
//!   ([`EgressPolicy::check_url`]). The parser is the one the HTTP client
//!   uses, and it turns every spelling of an address (`2130706433`,
//!   `0x7f000001`, `0177.0.0.1`, `127.1`, `[::ffff:127.0.0.1]`, a trailing
//!   dot, percent-escapes, full-width digits) into the one address it
//!   connects to, so the check sees what the connection would use. Names
//!   are not resolved there: an answer that depends on the server's DNS
//!   would tell a merchant which internal names exist.
//! - at every connection, on the addresses the name resolves to then: the
//!   HTTP clients built by [`Egress::client_builder`] resolve through
//!   [`EgressResolver`], which drops every address the policy refuses and
//!   fails when none is left, so the client can only connect to an address
//!   that was checked. The client never resolves a literal address, so
//!   [`Egress::check_url`] is called on the URL before each request too.
//!
//! Those clients follow no redirect (a `Location` could point anywhere)
//! and use no proxy from the environment (a proxy would resolve the name
//! itself, past the check).
//!
//! A refused destination is reported to the tenant as [`NOT_ALLOWED`]
//! only: the request was never sent, so there is no status, and the text is
//! the same whether the address was refused or the name did not resolve,
//! so the log tells nothing about the network behind the server.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};

/// What the delivery logs say when a destination is refused, whatever the
/// reason: one text, so the log is no oracle of the server's network.
pub const NOT_ALLOWED: &str = "destination not allowed";

/// Egress failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The destination is not a public address (or name) and the operator
    /// did not allow it. The text says why, for the one who registered the
    /// URL; delivery logs show [`NOT_ALLOWED`] instead.
    #[error("destination not allowed: {0}")]
    NotAllowed(String),
    /// The host name resolved to no address at all (or could not be
    /// resolved), so nothing was sent.
    #[error("destination not allowed: the host name does not resolve")]
    Unresolved,
    /// An entry of the operator's allow-list that is neither an address, a
    /// network nor a host name.
    #[error("egress.allow entry `{entry}`: {why}")]
    InvalidAllowEntry {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl EgressError {
    /// Whether `e`, or any error it was caused by, is a refused destination
    /// (the HTTP client wraps what [`EgressResolver`] returns several
    /// layers deep).
    #[must_use]
    pub fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(c) = cur {
            if let Some(EgressError::NotAllowed(_) | EgressError::Unresolved) =
                c.downcast_ref::<EgressError>()
            {
                return true;
            }
            cur = c.source();
        }
        false
    }
}

// ----- addresses ---------------------------------------------------------------

/// Whether `ip` lies in `net/len`.
fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// Whether `ip` lies in `net/len`.
fn in_v6(ip: Ipv6Addr, net: u128, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

/// The IPv4 address in bytes `at..at + 4` of `ip`.
fn embedded_v4(ip: Ipv6Addr, at: usize) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3])
}

/// GCP, AWS, Azure, OpenStack… all answer credentials here.
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// AWS's IPv6 metadata address.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    Some(if ip == METADATA_V4 {
        "a cloud metadata address"
    } else if ip.is_unspecified() || in_v4(ip, [0, 0, 0, 0], 8) {
        "an unspecified (\"this network\") address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_private() {
        "a private (RFC 1918) address"
    } else if in_v4(ip, [100, 64, 0, 0], 10) {
        "a shared (carrier-grade NAT, RFC 6598) address"
    } else if ip.is_link_local() {
        "a link-local address"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_documentation() {
        "a documentation address"
    } else if in_v4(ip, [198, 18, 0, 0], 15) {
        "a benchmarking address"
    } else if in_v4(ip, [192, 0, 0, 0], 24) {
        "an IETF protocol address"
    } else if in_v4(ip, [192, 88, 99, 0], 24) {
        "a 6to4 relay address"
    } else if in_v4(ip, [240, 0, 0, 0], 4) {
        "a reserved address"
    } else {
        return None;
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        // `::ffff:a.b.c.d` is a.b.c.d on a dual-stack socket.
        return v4_reason(v4);
    }
    Some(if ip == METADATA_V6 {
        "a cloud metadata address"
    } else if ip.is_unspecified() {
        "an unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if in_v6(ip, 0, 96) {
        // `::a.b.c.d`, deprecated since 2006: nothing public uses it.
        "an IPv4-compatible address"
    } else if in_v6(ip, 0x0064_ff9b_u128 << 96, 96) {
        // NAT64: reaches the embedded IPv4 address.
        return v4_reason(embedded_v4(ip, 12));
    } else if in_v6(ip, 0x0064_ff9b_0001_u128 << 80, 48) {
        "a local-use NAT64 address"
    } else if in_v6(ip, 0x2002_u128 << 112, 16) {
        // 6to4: reaches the IPv4 address in bits 16..48.
        return v4_reason(embedded_v4(ip, 2));
    } else if ip.is_unique_local() {
        "a private (unique local) address"
    } else if ip.is_unicast_link_local() {
        "a link-local address"
    } else if in_v6(ip, 0xfec0_u128 << 112, 10) {
        "a site-local address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if in_v6(ip, 0x2001_0db8_u128 << 96, 32) || in_v6(ip, 0x3fff_u128 << 112, 20) {
        "a documentation address"
    } else if in_v6(ip, 0x2001_u128 << 112, 23) {
        // Teredo (whose client address is obfuscated), benchmarking, ORCHID…
        "an IETF protocol address"
    } else if !in_v6(ip, 0x2000_u128 << 112, 3) {
        // Outside 2000::/3 nothing is global unicast (discard, reserved…).
        "a reserved address"
    } else {
        return None;
    })
}

/// Why `ip` is not a public internet address, or `None` if it is.
#[must_use]
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

/// `ip` with an IPv4-mapped IPv6 address turned into its IPv4 address, so
/// an allow-list entry matches both spellings.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A host name lowercased, without its trailing dot: `LocalHost.` and
/// `localhost` are one name to the resolver.
fn normal_name(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Why the host name `name` (normalised) is not a public name, or `None`.
fn name_reason(name: &str) -> Option<&'static str> {
    let under = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    if under("localhost") || name == "localhost.localdomain" {
        Some("a loopback host name")
    } else if name == "metadata.goog" || under("internal") {
        // `.internal` is reserved for private use; `metadata.google.internal`
        // is the GCP metadata server.
        Some("a private-use host name (cloud metadata, `.internal`)")
    } else if under("local") || under("home.arpa") {
        Some("a local-network host name")
    } else {
        None
    }
}

// ----- the policy --------------------------------------------------------------

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowRule {
    /// An address or a network: `addr/len`, host bits cleared.
    Net { addr: IpAddr, len: u32 },
    /// An exact host name, normalised.
    Name(String),
}

impl AllowRule {
    fn parse(entry: &str) -> Result<Self, EgressError> {
        let bad = |why| EgressError::InvalidAllowEntry {
            entry: entry.to_owned(),
            why,
        };
        let e = entry.trim();
        if e.is_empty() {
            return Err(bad("empty"));
        }
        let (addr, len) = match e.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (e, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let ip = canonical(ip);
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => match l.parse::<u32>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(bad("the prefix length is not a number up to 32 (128)")),
                },
            };
            let addr = match ip {
                IpAddr::V4(v4) => {
                    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                    IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
                }
                IpAddr::V6(v6) => {
                    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                }
            };
            return Ok(AllowRule::Net { addr, len });
        }
        if len.is_some() {
            return Err(bad("a network is an IP address, `/` and a prefix length"));
        }
        let name = normal_name(e);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad(
                "neither an IP address, a network (CIDR) nor a host name",
            ));
        }
        Ok(AllowRule::Name(name))
    }

    fn covers_ip(&self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (
                AllowRule::Net {
                    addr: IpAddr::V4(net),
                    len,
                },
                IpAddr::V4(ip),
            ) => in_v4(ip, net.octets(), *len),
            (
                AllowRule::Net {
                    addr: IpAddr::V6(net),
                    len,
                },
                IpAddr::V6(ip),
            ) => in_v6(ip, u128::from(*net), *len),
            _ => false,
        }
    }
}

/// Which destinations are allowed: public addresses, plus the operator's
/// allow-list. The default allows public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<AllowRule>,
}

impl EgressPolicy {
    /// Public addresses only (the default).
    #[must_use]
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Public addresses and `entries`: IP addresses (`127.0.0.1`, `::1`),
    /// networks (`10.0.0.0/8`, `fd00::/8`) and exact host names
    /// (`erp.local`).
    ///
    /// # Errors
    /// [`EgressError::InvalidAllowEntry`] naming the first entry that is
    /// none of those.
    pub fn allowing<I, S>(entries: I) -> Result<Self, EgressError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let allow = entries
            .into_iter()
            .map(|e| AllowRule::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allow })
    }

    /// Whether the operator allowed the host name `host` by name.
    fn allows_name(&self, host: &str) -> bool {
        let name = normal_name(host);
        self.allow
            .iter()
            .any(|r| matches!(r, AllowRule::Name(n) if *n == name))
    }

    /// Checks one address: public, or allowed by the operator.
    ///
    /// # Errors
    /// [`EgressError::NotAllowed`] saying what kind of address it is.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        match non_public_reason(ip) {
            Some(why) if !self.allow.iter().any(|r| r.covers_ip(ip)) => {
                Err(EgressError::NotAllowed(format!("{ip} is {why}")))
            }
            _ => Ok(()),
        }
    }

    /// Checks a host name before it is resolved: refused if it is a
    /// special-use or private-use name the operator did not allow.
    ///
    /// # Errors
    /// [`EgressError::NotAllowed`].
    pub fn check_name(&self, host: &str) -> Result<(), EgressError> {
        match name_reason(&normal_name(host)) {
            Some(why) if !self.allows_name(host) => {
                Err(EgressError::NotAllowed(format!("`{host}` is {why}")))
            }
            _ => Ok(()),
        }
    }

    /// Checks the host of `url` as the HTTP client will read it: an address
    /// in any spelling is checked as the address it is; a name is checked
    /// as a name (its addresses are checked when it is resolved, at each
    /// connection).
    ///
    /// # Errors
    /// [`EgressError::NotAllowed`], also for a URL with no host or one
    /// that does not parse.
    pub fn check_url(&self, url: &str) -> Result<(), EgressError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|_| EgressError::NotAllowed("not a URL".into()))?;
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => self.check_name(name),
            None => Err(EgressError::NotAllowed("the URL has no host".into())),
        }
    }
}

/// The operator's egress settings in `config.json`:
/// `"egress": {"allow": ["127.0.0.1", "10.0.0.0/8", "erp.local"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Destinations allowed besides public addresses: IP addresses,
    /// networks in CIDR notation, exact host names. Empty (the default):
    /// public internet only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

impl EgressConfig {
    /// Whether nothing is set (the file then leaves the member out).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }

    /// The list of `BONOPAY_EGRESS_ALLOW`: comma-separated entries.
    #[must_use]
    pub fn from_env_list(list: &str) -> Self {
        Self {
            allow: list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The policy these settings describe.
    ///
    /// # Errors
    /// [`EgressError::InvalidAllowEntry`].
    pub fn policy(&self) -> Result<EgressPolicy, EgressError> {
        EgressPolicy::allowing(&self.allow)
    }
}

// ----- resolution --------------------------------------------------------------

/// A boxed future returned by [`Lookup`].
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Resolves a host name to addresses. A trait so tests can answer as a
/// rebinding DNS server would, without one.
pub trait Lookup: fmt::Debug + Send + Sync {
    /// The addresses of `host`.
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a>;
}

/// The system resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The egress policy with the resolver it checks answers from: what an
/// outbound HTTP client needs. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl Default for Egress {
    /// Public addresses only, over the system resolver.
    fn default() -> Self {
        Self::new(EgressPolicy::public_only())
    }
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("policy", &self.policy)
            .field("lookup", &self.lookup)
            .finish()
    }
}

impl From<EgressPolicy> for Egress {
    fn from(policy: EgressPolicy) -> Self {
        Self::new(policy)
    }
}

impl Egress {
    /// `policy` over the system resolver.
    #[must_use]
    pub fn new(policy: EgressPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            lookup: Arc::new(SystemLookup),
        }
    }

    /// Resolves names with `lookup` instead of the system resolver.
    #[must_use]
    pub fn with_lookup(mut self, lookup: Arc<dyn Lookup>) -> Self {
        self.lookup = lookup;
        self
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// [`EgressPolicy::check_url`]: called before each request, since the
    /// client connects to a literal address without resolving it.
    ///
    /// # Errors
    /// [`EgressError::NotAllowed`].
    pub fn check_url(&self, url: &str) -> Result<(), EgressError> {
        self.policy.check_url(url)
    }

    /// The addresses of `host` this server may connect to: all of them for
    /// a name the operator allowed, else those the policy allows.
    ///
    /// # Errors
    /// [`EgressError::NotAllowed`] if the name itself is refused or every
    /// address is; [`EgressError::Unresolved`] if it has none.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, EgressError> {
        self.policy.check_name(host)?;
        let addrs = self
            .lookup
            .lookup(host)
            .await
            .map_err(|_| EgressError::Unresolved)?;
        if addrs.is_empty() {
            return Err(EgressError::Unresolved);
        }
        if self.policy.allows_name(host) {
            return Ok(addrs);
        }
        let mut refused = None;
        let allowed: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| match self.policy.check_ip(*ip) {
                Ok(()) => true,
                Err(e) => {
                    refused.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(EgressError::Unresolved),
            (false, _) => Ok(allowed),
        }
    }

    /// A `reqwest` client builder that resolves through this policy,
    /// follows no redirect and ignores proxy settings from the environment
    /// (a proxy would resolve and connect past the check). Callers add
    /// their timeouts and build.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(EgressResolver {
                egress: self.clone(),
            }))
    }
}

/// The `reqwest` resolver of [`Egress::client_builder`]: every connection
/// resolves its host here, so only addresses the policy allows are ever
/// connected to, whatever the name answered at registration.
#[derive(Debug, Clone)]
pub struct EgressResolver {
    egress: Egress,
}

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = egress.resolve(&host).await?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn refused(url: &str) -> bool {
        EgressPolicy::public_only().check_url(url).is_err()
    }

    #[test]
    fn every_spelling_of_a_forbidden_address_is_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://127.0.0.1./",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://%31%32%37.0.0.1/",
            "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a00:1::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "http://0x0a.0.0.1/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://169.254.1.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://0.1.2.3/",
            "http://[::]/",
            "http://255.255.255.255/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://[ff02::1]/",
            "http://[fe80::1]/",
            "http://[fec0::1]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://192.0.0.8/",
            "http://192.0.2.1/",
            "http://198.51.100.7/",
            "http://203.0.113.9/",
            "http://198.18.0.1/",
            "http://192.88.99.1/",
            "http://240.0.0.1/",
            "http://[2001:db8::1]/",
            "http://[3fff::1]/",
            "http://[2001::1]/",
            "http://[100::1]/",
            "http://[64:ff9b:1::1]/",
            "http://localhost/",
            "http://LocalHost./",
            "http://api.localhost/",
            "http://\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.GOOGLE.INTERNAL./",
            "http://metadata.goog/",
            "http://printer.local/",
            "http://nas.home.arpa/",
            "https://127.0.0.1:8443/h",
        ] {
            assert!(refused(url), "{url} was allowed");
        }
    }

    #[test]
    fn public_destinations_pass() {
        for url in [
            "https://erp.example.cd/hooks?x=1",
            "http://93.184.216.34/h",
            "http://8.8.8.8/",
            "http://[2606:4700:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::1]/",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
            "http://localhost.example.cd/",
            "http://internal.example.cd/",
        ] {
            assert!(!refused(url), "{url} was refused");
        }
    }

    #[test]
    fn the_allow_list_admits_addresses_networks_and_names() {
        let p = EgressPolicy::allowing(["127.0.0.1", "10.0.0.0/8", "ERP.local.", "[fd00::]/8"])
            .unwrap();
        for url in [
            "http://127.0.0.1:9000/",
            "http://2130706433/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.200.3.4/",
            "http://erp.local/",
            "http://erp.LOCAL./",
            "http://[fd12::1]/",
        ] {
            assert!(p.check_url(url).is_ok(), "{url} was refused");
        }
        for url in [
            "http://127.0.0.2/",
            "http://[::1]/",
            "http://192.168.0.1/",
            "http://localhost/",
            "http://other.local/",
            "http://169.254.169.254/",
        ] {
            assert!(p.check_url(url).is_err(), "{url} was allowed");
        }
    }

    #[test]
    fn bad_allow_entries_are_named() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "http://x",
            "a b",
            "x/8",
            "1.2.3.4/x",
        ] {
            match EgressPolicy::allowing([bad]) {
                Err(EgressError::InvalidAllowEntry { entry, .. }) => assert_eq!(entry, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(
            EgressConfig::from_env_list(" 127.0.0.1, ,erp.local ").allow,
            ["127.0.0.1", "erp.local"]
        );
    }

    #[derive(Debug)]
    struct Fixed(Vec<IpAddr>);
    impl Lookup for Fixed {
        fn lookup<'a>(&'a self, _host: &'a str) -> LookupFuture<'a> {
            let addrs = self.0.clone();
            Box::pin(async move { Ok(addrs) })
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn resolved_addresses_are_filtered() {
        let answer = |list: &[&str]| {
            Egress::new(EgressPolicy::public_only()).with_lookup(Arc::new(Fixed(ips(list))))
        };
        // A name answering loopback (as a rebinding DNS server does after
        // the registration) is refused…
        let e = answer(&["127.0.0.1"]).resolve("rebind.example").await;
        assert!(matches!(e, Err(EgressError::NotAllowed(_))), "{e:?}");
        let e = answer(&["::ffff:10.0.0.1", "fd00:ec2::254"])
            .resolve("rebind.example")
            .await;
        assert!(matches!(e, Err(EgressError::NotAllowed(_))), "{e:?}");
        // …and of a mixed answer only the public addresses are kept.
        let ok = answer(&["127.0.0.1", "93.184.216.34", "169.254.169.254"])
            .resolve("mixed.example")
            .await
            .unwrap();
        assert_eq!(ok, ips(&["93.184.216.34"]));
        // No address at all is refused too.
        let e = answer(&[]).resolve("nothing.example").await;
        assert_eq!(e, Err(EgressError::Unresolved));
        // A special-use name is refused before any lookup.
        let e = answer(&["93.184.216.34"]).resolve("localhost.").await;
        assert!(matches!(e, Err(EgressError::NotAllowed(_))), "{e:?}");
        // A name the operator allowed keeps every address.
        let allowed = Egress::new(EgressPolicy::allowing(["erp.local"]).unwrap())
            .with_lookup(Arc::new(Fixed(ips(&["10.1.2.3", "127.0.0.1"]))));
        assert_eq!(
            allowed.resolve("ERP.local.").await.unwrap(),
            ips(&["10.1.2.3", "127.0.0.1"])
        );
    }

    #[tokio::test]
    async fn the_system_resolver_answer_for_localhost_is_refused() {
        // Looked up for real (without the by-name refusal, to reach the
        // address filter): /etc/hosts maps it to loopback.
        let e = Egress::default();
        let addrs = SystemLookup.lookup("localhost").await.unwrap();
        assert!(!addrs.is_empty());
        for ip in addrs {
            assert!(e.policy().check_ip(ip).is_err(), "{ip}");
        }
    }

    #[test]
    fn refusals_are_found_through_error_chains() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] EgressError);
        assert!(EgressError::is_refusal(&Outer(EgressError::Unresolved)));
        assert!(!EgressError::is_refusal(&io::Error::other("refused")));
    }
}
