//! The network half of DNS discovery: one query of one record type to a DNS server.
//!
//! Owns: building the hickory resolver (system configuration or one given server, short cache)
//! and turning its answers and errors into plain values. Does not: combine A and AAAA answers,
//! follow SRV targets, apply the overall time bound or format peers; `super` does that, over
//! the [`Resolve`] trait, so that logic is unit-tested with a fake instead of a network.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::system_conf::read_system_conf;
use hickory_resolver::TokioResolver;

/// Which address record a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

/// One SRV record: where one instance of the service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvTarget {
    /// The target host as DNS spells it: absolute, with the trailing dot.
    pub target: String,
    pub port: u16,
}

/// Why a query got no usable answer, in words for an operator ("the server answered Server
/// Failure", "no answer (timed out)"). "No such name" and "no such records" are not errors:
/// implementations return them as an empty answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolveError(pub String);

/// One DNS query at a time; the seam between the lookup logic and the network.
///
/// The futures are `Send` so that a backend's `lookup` future can be spawned by the caller.
pub(crate) trait Resolve: Send + Sync {
    /// The `family` addresses of `name`; empty if the name does not exist or has none.
    fn ips(
        &self,
        name: &str,
        family: Family,
    ) -> impl Future<Output = Result<Vec<IpAddr>, ResolveError>> + Send;
    /// The SRV records of `name`; empty if the name does not exist or has none.
    fn srv(&self, name: &str) -> impl Future<Output = Result<Vec<SrvTarget>, ResolveError>> + Send;
    /// The server(s) asked, for error messages: `127.0.0.1:5353`, `system resolver 10.0.0.2:53`.
    fn server(&self) -> &str;
}

/// How long answers may be reused. Discovery asks every second or so and nodes are added at
/// runtime; a longer cache (hickory's default honours TTLs of hours) would hide a new node's
/// record. One second still lets one round's A, AAAA and SRV-target queries share answers.
const MAX_CACHE_TTL: Duration = Duration::from_secs(1);

/// hickory's own per-query timeout and retries. The caller bounds the whole lookup anyway;
/// these only keep hickory from waiting longer than that bound on one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_RETRIES: usize = 1;

/// [`Resolve`] over hickory-resolver on the tokio runtime.
#[derive(Debug, Clone)]
pub(crate) struct HickoryResolver {
    resolver: TokioResolver,
    server: String,
}

impl HickoryResolver {
    /// Asks `nameserver` (UDP, TCP when an answer is truncated) or, without one, the servers of
    /// the system configuration (`/etc/resolv.conf`, with its search domains and `/etc/hosts`).
    pub(crate) fn new(nameserver: Option<SocketAddr>) -> Result<Self, String> {
        let (config, mut opts, server) = match nameserver {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for conn in &mut ns.connections {
                    conn.port = addr.port();
                }
                let mut opts = ResolverOpts::default();
                // The operator named the server to ask: answers come from it alone.
                opts.use_hosts_file = ResolveHosts::Never;
                (
                    ResolverConfig::from_name_servers(vec![ns]),
                    opts,
                    addr.to_string(),
                )
            }
            None => {
                let (config, opts) = read_system_conf().map_err(|e| {
                    format!("cannot read the system DNS configuration (/etc/resolv.conf): {e}")
                })?;
                let server = describe_system(&config);
                (config, opts, server)
            }
        };
        tune(&mut opts);
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(Self { resolver, server })
    }

    async fn query(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, ResolveError> {
        match self.resolver.lookup(name, rtype).await {
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            // NXDOMAIN and NODATA: nobody is registered (yet).
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(ResolveError(explain(&e))),
        }
    }
}

fn tune(opts: &mut ResolverOpts) {
    opts.positive_max_ttl = Some(MAX_CACHE_TTL);
    opts.negative_max_ttl = Some(MAX_CACHE_TTL);
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = QUERY_RETRIES;
}

/// `system resolver 10.0.0.2:53, 10.0.0.3:53`: which servers a failure came from.
fn describe_system(config: &ResolverConfig) -> String {
    let servers: Vec<String> = config
        .name_servers()
        .iter()
        .map(|ns| {
            let port = ns.connections.first().map_or(53, |c| c.port);
            SocketAddr::new(ns.ip, port).to_string()
        })
        .collect();
    if servers.is_empty() {
        "system resolver (no nameserver in /etc/resolv.conf)".to_string()
    } else {
        format!("system resolver {}", servers.join(", "))
    }
}

/// Words for a resolver error that point at the cause and at what to check.
fn explain(e: &NetError) -> String {
    match e {
        NetError::Timeout => {
            "no answer (timed out); is the DNS server running and reachable from this node?"
                .to_string()
        }
        NetError::Dns(DnsError::ResponseCode(code)) if *code == ResponseCode::Refused => {
            "the server refused the query; does it serve (or forward) this name?".to_string()
        }
        NetError::Dns(DnsError::ResponseCode(code)) => {
            format!("the server answered {code}; check the DNS server's own logs")
        }
        NetError::Io(io) => {
            format!("network error: {io}; is the DNS server reachable from this node?")
        }
        NetError::NoConnections => "no name server could be reached".to_string(),
        other => other.to_string(),
    }
}

impl Resolve for HickoryResolver {
    async fn ips(&self, name: &str, family: Family) -> Result<Vec<IpAddr>, ResolveError> {
        let rtype = match family {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        };
        let data = self.query(name, rtype).await?;
        // Answers may also carry the CNAME chain that led to the addresses; the hosts file may
        // answer with either family: keep only addresses of the family asked.
        Ok(data
            .iter()
            .filter_map(RData::ip_addr)
            .filter(|ip| {
                matches!(
                    (family, ip),
                    (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
                )
            })
            .collect())
    }

    async fn srv(&self, name: &str) -> Result<Vec<SrvTarget>, ResolveError> {
        let data = self.query(name, RecordType::SRV).await?;
        Ok(data
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(srv) => Some(SrvTarget {
                    target: srv.target.to_utf8(),
                    port: srv.port,
                }),
                _ => None,
            })
            .collect())
    }

    fn server(&self) -> &str {
        &self.server
    }
}
