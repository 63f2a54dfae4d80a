//! Configuration: command-line flags (rqlite's names, Go-style single-dash spelling accepted),
//! an optional TOML file, and environment variables, merged into one validated [`Config`].
//!
//! Precedence: defaults < file < environment (`SQLRAFT_<FLAG>`) < command line.
//! Owns: every setting's name, default and validation, each defined once (`sections.rs`) and
//! grouped by the component it configures, which receives its section and nothing else.
//! Does not: read anything but what it is handed (`main.rs` passes argv and a file reader;
//! clap reads the environment).

mod file;
mod sections;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

pub use sections::{Auto, Cluster, Database, DiscoveryFlags, Http, Logging, Queue, Raft, Tls};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad command line, or `--help`/`--version` (clap knows which and where to print it).
    #[error("{0}")]
    Args(Box<clap::Error>),
    #[error("config file {path}: {msg}")]
    File { path: String, msg: String },
    #[error("invalid value for -{flag}: {msg}")]
    Invalid { flag: &'static str, msg: String },
}

/// The flags of `sqlraftd`, named as rqlite names them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sqlraftd",
    version = crate::VERSION,
    about = "sqlraft node: rqlite-compatible, Raft-replicated SQLite"
)]
pub struct Args {
    /// Directory for the Raft log, snapshots and node state.
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: PathBuf,

    /// TOML file with the same settings as the flags (kebab-case keys).
    #[arg(long = "config", value_name = "FILE", help_heading = "Node")]
    pub config: Option<PathBuf>,

    /// Unique node ID (default: the advertised Raft address).
    #[arg(long = "node-id", help_heading = "Node")]
    pub node_id: Option<String>,

    /// JSON file of users, passwords (plaintext or bcrypt) and permissions; enables auth.
    #[arg(long = "auth", value_name = "FILE", help_heading = "Node")]
    pub auth: Option<PathBuf>,

    #[command(flatten)]
    pub http: Http,
    #[command(flatten)]
    pub tls: Tls,
    #[command(flatten)]
    pub raft: Raft,
    #[command(flatten)]
    pub db: Database,
    #[command(flatten)]
    pub cluster: Cluster,
    #[command(flatten)]
    pub discovery: DiscoveryFlags,
    #[command(flatten)]
    pub queue: Queue,
    #[command(flatten)]
    pub log: Logging,
    #[command(flatten)]
    pub auto: Auto,
}

/// The validated configuration a node starts from.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub node_id: Option<String>,
    pub auth: Option<PathBuf>,
    pub http: Http,
    pub tls: Tls,
    pub raft: Raft,
    pub db: Database,
    pub cluster: Cluster,
    /// `None` without `-disco-mode`.
    pub discovery: Option<Discovery>,
    /// The discovery key (`-disco-key`), also used without discovery.
    pub disco_key: String,
    pub queue: Queue,
    pub log: Logging,
    /// `-auto-backup`, read and validated.
    pub auto_backup: Option<crate::auto::BackupConfig>,
    /// `-auto-restore`, read and validated.
    pub auto_restore: Option<crate::auto::RestoreConfig>,
    /// `-cdc-config`, read and validated.
    pub cdc: Option<crate::cdc::config::CdcConfig>,
}

/// Validated discovery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub mode: DiscoMode,
    /// The backend settings as JSON (inline, from a file, or from the TOML table; rqlite's
    /// defaults for the mode when none is given).
    pub config: serde_json::Value,
    /// `RQLITE_DISCO_DNS_HOSTS`: in mode `dns`, these `host:port` addresses instead of a
    /// lookup (rqlite's test aid, kept so its test set-ups run unchanged).
    pub dns_hosts: Option<Vec<String>>,
}

/// How nodes find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoMode {
    Dns,
    DnsSrv,
    EtcdKv,
    ConsulKv,
}

/// The flags as clap parses them, with the rules every flag follows applied.
fn command() -> clap::Command {
    sections::conventions(Args::command())
}

impl DiscoMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dns" => Some(Self::Dns),
            "dns-srv" => Some(Self::DnsSrv),
            "etcd-kv" => Some(Self::EtcdKv),
            "consul-kv" => Some(Self::ConsulKv),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::DnsSrv => "dns-srv",
            Self::EtcdKv => "etcd-kv",
            Self::ConsulKv => "consul-kv",
        }
    }

    /// The settings rqlite uses when `-disco-config` is not given: the name `rqlite` for
    /// DNS (service `rqlite` for SRV), one etcd at localhost:2379, the local Consul agent
    /// (Consul's own default, 127.0.0.1:8500).
    pub fn default_config(self) -> serde_json::Value {
        match self {
            Self::Dns => serde_json::json!({"name": "rqlite"}),
            Self::DnsSrv => serde_json::json!({"name": "rqlite", "service": "rqlite"}),
            Self::EtcdKv => serde_json::json!({"endpoints": ["localhost:2379"]}),
            Self::ConsulKv => serde_json::json!({}),
        }
    }

    /// Key backends elect through the key; the others form a cluster with the notify protocol.
    pub fn uses_key(self) -> bool {
        matches!(self, Self::EtcdKv | Self::ConsulKv)
    }
}

impl Config {
    /// Settings for tests and embedding: everything default, binding port 0 on loopback.
    pub fn for_dir(data_dir: impl Into<PathBuf>) -> Self {
        let m = command().get_matches_from(["sqlraftd", "x"]);
        let mut c = Self::from_args(
            Args::from_arg_matches(&m).unwrap_or_else(|e| e.exit()),
            None,
        );
        c.data_dir = data_dir.into();
        c.http.addr = "127.0.0.1:0".into();
        c.raft.addr = "127.0.0.1:0".into();
        c
    }

    fn from_args(a: Args, discovery: Option<Discovery>) -> Self {
        let mut cluster = a.cluster;
        cluster.join = cluster
            .join
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Self {
            data_dir: a.data_dir,
            node_id: a.node_id,
            auth: a.auth,
            http: a.http,
            tls: a.tls,
            raft: a.raft,
            db: a.db,
            cluster,
            discovery,
            disco_key: a.discovery.key,
            queue: a.queue,
            log: a.log,
            auto_backup: None,
            auto_restore: None,
            cdc: None,
        }
    }

    /// Parses argv (Go-style `-flag`, `-flag=value` and `--flag` all accepted), with the
    /// `-config` file read by `read_file` feeding the defaults.
    pub fn load<I, F>(argv: I, read_file: F) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = String>,
        F: Fn(&std::path::Path) -> std::io::Result<String>,
    {
        let argv: Vec<String> = normalize_args(argv);
        let args_err = |e: clap::Error| ConfigError::Args(Box::new(e));
        // A first pass finds -config (and refuses bad flags); the file then becomes the
        // defaults of a second pass.
        let first = command().try_get_matches_from(&argv).map_err(args_err)?;
        let first = Args::from_arg_matches(&first).map_err(args_err)?;
        let args = match &first.config {
            None => first,
            Some(p) => {
                let text = read_file(p).map_err(|e| ConfigError::File {
                    path: p.display().to_string(),
                    msg: e.to_string(),
                })?;
                let cmd = file::apply(command(), &text, &p.display().to_string())?;
                let m = cmd.try_get_matches_from(&argv).map_err(args_err)?;
                Args::from_arg_matches(&m).map_err(args_err)?
            }
        };
        let discovery = match args.discovery.mode.as_deref() {
            None | Some("") => None,
            Some(m) => {
                let mode = DiscoMode::parse(m).ok_or_else(|| ConfigError::Invalid {
                    flag: "disco-mode",
                    msg: format!("'{m}' is not one of dns, dns-srv, etcd-kv, consul-kv"),
                })?;
                let config = match args.discovery.config.as_deref() {
                    Some(text) => parse_disco_config(text, &read_file)?,
                    None => mode.default_config(),
                };
                Some(Discovery {
                    mode,
                    config,
                    dns_hosts: dns_hosts(args.discovery.dns_hosts.as_deref())?,
                })
            }
        };
        let auto = args.auto.clone();
        let mut c = Self::from_args(args, discovery);
        // rqlite's JSON files, `$VAR`s expanded as rqlite does; refused here (S3 and GCS
        // too) so that a node never starts without the backups its operator asked for.
        c.auto_backup = auto
            .backup
            .as_deref()
            .map(|p| {
                json_file(
                    "auto-backup",
                    p,
                    &read_file,
                    crate::auto::BackupConfig::parse,
                )
            })
            .transpose()?;
        c.auto_restore = auto
            .restore
            .as_deref()
            .map(|p| {
                json_file(
                    "auto-restore",
                    p,
                    &read_file,
                    crate::auto::RestoreConfig::parse,
                )
            })
            .transpose()?;
        c.cdc = auto
            .cdc
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse_cdc_config(t, &read_file))
            .transpose()?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what clap cannot: relations between settings and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let inv = |flag: &'static str, msg: &str| {
            Err(ConfigError::Invalid {
                flag,
                msg: msg.into(),
            })
        };
        for (flag, addr) in [
            ("http-addr", &self.http.addr),
            ("raft-addr", &self.raft.addr),
        ] {
            if split_host_port(addr).is_none() {
                return inv(flag, "must be host:port");
            }
        }
        for (flag, addr) in [
            ("http-adv-addr", &self.http.adv_addr),
            ("raft-adv-addr", &self.raft.adv_addr),
        ] {
            if let Some(a) = addr {
                match split_host_port(a) {
                    Some((h, _)) if is_unspecified(h) => {
                        return inv(flag, "must not be an unspecified address")
                    }
                    Some((_, 0)) => return inv(flag, "must have a non-zero port"),
                    Some(_) => {}
                    None => return inv(flag, "must be host:port"),
                }
            }
        }
        if self.http.adv_addr.is_some() && self.http.adv_addr == self.raft.adv_addr {
            return inv("raft-adv-addr", "must differ from -http-adv-addr");
        }
        if self.raft.snap == 0 {
            return inv("raft-snap", "must be at least 1");
        }
        if self.raft.election_timeout.is_zero() || self.raft.heartbeat_timeout.is_zero() {
            return inv("raft-election-timeout", "Raft timeouts must be positive");
        }
        if self.queue.capacity == 0 || self.queue.batch_size == 0 {
            return inv("write-queue-capacity", "queue sizes must be at least 1");
        }
        let cl = &self.cluster;
        if let Some(d) = &self.discovery {
            if !cl.join.is_empty() {
                return inv("join", "cannot be combined with -disco-mode");
            }
            if d.mode.uses_key() && cl.bootstrap_expect > 0 {
                return inv(
                    "bootstrap-expect",
                    "cannot be used with etcd-kv or consul-kv (the key decides)",
                );
            }
            if !d.mode.uses_key() && cl.bootstrap_expect == 0 && !self.raft.non_voter {
                return inv(
                    "bootstrap-expect",
                    "is required with dns and dns-srv discovery",
                );
            }
        }
        if cl.bootstrap_expect > 0 && self.raft.non_voter {
            return inv("bootstrap-expect", "a non-voter cannot bootstrap a cluster");
        }
        if cl.bootstrap_expect > 0 && cl.join.is_empty() && self.discovery.is_none() {
            return inv(
                "bootstrap-expect",
                "needs the -join list (or -disco-mode) of the nodes to form a cluster with",
            );
        }
        if cl.bootstrap_expect > 0
            && self.discovery.is_none()
            && cl.join.len() < cl.bootstrap_expect
        {
            return inv(
                "bootstrap-expect",
                "is larger than the number of -join addresses",
            );
        }
        for j in &cl.join {
            if split_host_port(j).is_none() || j.contains("://") {
                return inv("join", "takes Raft host:port addresses (not URLs)");
            }
        }
        let t = &self.tls;
        if t.http_cert.is_some() != t.http_key.is_some() {
            return inv("http-cert", "-http-cert and -http-key go together");
        }
        if t.node_cert.is_some() != t.node_key.is_some() {
            return inv("node-cert", "-node-cert and -node-key go together");
        }
        if t.http_verify_client && (t.http_cert.is_none() || t.http_ca_cert.is_none()) {
            return inv(
                "http-verify-client",
                "needs -http-cert, -http-key and -http-ca-cert",
            );
        }
        if t.node_verify_client && (t.node_cert.is_none() || t.node_ca_cert.is_none()) {
            return inv(
                "node-verify-client",
                "needs -node-cert, -node-key and -node-ca-cert",
            );
        }
        if t.http_verify_common_name.is_some() && !t.http_verify_client {
            return inv(
                "http-verify-common-name",
                "requires -http-verify-client (the name is checked on client certificates)",
            );
        }
        if t.node_verify_common_name.is_some() && !t.node_verify_client {
            return inv(
                "node-verify-common-name",
                "requires -node-verify-client (the name is checked on other nodes' certificates)",
            );
        }
        if self.http.max_connections == 0 {
            return inv("http-max-connections", "must be at least 1");
        }
        if self.http.max_body == 0 {
            return inv("http-max-body", "must be at least 1");
        }
        if self.cdc.is_some() && self.raft.non_voter {
            // As in rqlite: only voters can lead, and only the leader sends.
            return inv(
                "cdc-config",
                "cannot be used on a non-voter (-raft-non-voter)",
            );
        }
        Ok(())
    }
}

/// `-disco-config`: inline JSON if it looks like JSON, else the path of a JSON file. `$VAR`
/// and `${VAR}` are expanded from the environment, as rqlite does.
fn parse_disco_config<F>(text: &str, read_file: &F) -> Result<serde_json::Value, ConfigError>
where
    F: Fn(&std::path::Path) -> std::io::Result<String>,
{
    let trimmed = text.trim();
    let json = if trimmed.starts_with('{') {
        trimmed.to_string()
    } else {
        read_file(std::path::Path::new(trimmed)).map_err(|e| ConfigError::File {
            path: trimmed.into(),
            msg: e.to_string(),
        })?
    };
    serde_json::from_str(&expand_env(&json)).map_err(|e| ConfigError::Invalid {
        flag: "disco-config",
        msg: format!("not valid JSON: {e}"),
    })
}

/// `-cdc-config`: an endpoint URL or `stdout`, inline JSON, or the path of a JSON file
/// (`$VAR`s expanded in JSON, as for `-disco-config`).
fn parse_cdc_config<F>(
    text: &str,
    read_file: &F,
) -> Result<crate::cdc::config::CdcConfig, ConfigError>
where
    F: Fn(&std::path::Path) -> std::io::Result<String>,
{
    use crate::cdc::config::CdcConfig;
    let invalid = |msg: String| ConfigError::Invalid {
        flag: "cdc-config",
        msg,
    };
    if let Some(c) = CdcConfig::from_endpoint(text) {
        return c.map_err(invalid);
    }
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return CdcConfig::parse_json(&expand_env(trimmed)).map_err(invalid);
    }
    let json = read_file(std::path::Path::new(trimmed)).map_err(|e| ConfigError::File {
        path: trimmed.into(),
        msg: e.to_string(),
    })?;
    CdcConfig::parse_json(&expand_env(&json)).map_err(|m| invalid(format!("{trimmed}: {m}")))
}

/// Parses `RQLITE_DISCO_DNS_HOSTS` (comma-separated `host:port`; blanks ignored).
fn dns_hosts(value: Option<&str>) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let hosts: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    if let Some(bad) = hosts.iter().find(|h| split_host_port(h).is_none()) {
        return Err(ConfigError::Invalid {
            flag: "disco-dns-hosts",
            msg: format!("{bad:?} is not host:port (RQLITE_DISCO_DNS_HOSTS)"),
        });
    }
    Ok(Some(hosts))
}

/// Replaces `$VAR` and `${VAR}` with environment values (unset variables become empty).
fn expand_env(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if !(n.is_ascii_alphanumeric() || n == '_') {
                break;
            }
            name.push(n);
            chars.next();
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&std::env::var(&name).unwrap_or_default());
        }
    }
    out
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port))
}

/// True for `0.0.0.0`, `::` and an empty host: addresses others cannot dial.
pub fn is_unspecified(host: &str) -> bool {
    host.is_empty()
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_unspecified())
            .unwrap_or(false)
}

/// `sqlraftd --help`, in the `-flag` spelling rqlite and the README use (clap prints
/// `--flag`; both are accepted), grouped by topic, defaults shown.
pub fn help() -> String {
    single_dash(&Args::command().render_help().to_string())
}

/// Turns the `--flag` column of clap's help into `-flag`, keeping the columns aligned.
fn single_dash(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    for line in help.lines() {
        let body = line.trim_start();
        match body.strip_prefix("--") {
            Some(rest) if !rest.is_empty() => {
                out.push_str(&line[..line.len() - body.len()]);
                out.push_str(" -");
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Rewrites Go-style `-flag` into clap's `--flag`; leaves values, `--flag` and `-` alone.
/// A lone `-h`/`-V` stays short.
pub fn normalize_args<I: IntoIterator<Item = String>>(argv: I) -> Vec<String> {
    let mut out = Vec::new();
    let mut expecting_value = false;
    let mut after_dashdash = false;
    for (i, a) in argv.into_iter().enumerate() {
        if i == 0 || after_dashdash || expecting_value {
            expecting_value = false;
            out.push(a);
            continue;
        }
        if a == "--" {
            after_dashdash = true;
            out.push(a);
            continue;
        }
        let is_single_dash_flag = a.starts_with('-') && !a.starts_with("--") && a.len() > 2;
        let a = if is_single_dash_flag {
            format!("-{a}")
        } else {
            a
        };
        // A flag without `=` that takes a value consumes the next argument verbatim, even if
        // that value starts with a dash.
        if let Some(name) = a.strip_prefix("--") {
            if !name.contains('=') && takes_value(name) {
                expecting_value = true;
            }
        }
        out.push(a);
    }
    out
}

fn takes_value(name: &str) -> bool {
    command()
        .get_arguments()
        .find(|arg| {
            arg.get_long() == Some(name)
                || arg.get_all_aliases().is_some_and(|al| al.contains(&name))
        })
        .is_some_and(|arg| arg.get_num_args().is_none_or(|n| n.min_values() != 0))
}

/// A flag's JSON file (`-auto-backup`, `-auto-restore`): read, `$VAR`s expanded, parsed;
/// any failure names the flag and the file.
fn json_file<T>(
    flag: &'static str,
    path: &std::path::Path,
    read_file: &impl Fn(&std::path::Path) -> std::io::Result<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    read_file(path)
        .map_err(|e| e.to_string())
        .and_then(|text| parse(&expand_env(&text)))
        .map_err(|msg| ConfigError::Invalid {
            flag,
            msg: format!("{}: {msg}", path.display()),
        })
}

#[cfg(test)]
mod tests;
