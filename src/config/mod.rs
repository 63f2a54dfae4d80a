//! Configuration: command-line flags (rqlite's names, Go-style single-dash spelling accepted),
//! an optional TOML file, and environment variables, merged into one validated [`Config`].
//!
//! Precedence: defaults < file < environment (`SQLRAFT_<FLAG>`) < command line.
//! Owns: every setting's name, default and validation. Does not: read anything but what it is
//! handed (`main.rs` passes argv and the process environment is read by clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use crate::duration;

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

fn go_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s)
        .ok_or_else(|| format!("'{s}' is not a valid duration (e.g. 500ms, 2s, 1m30s)"))
}

/// The flags of `sqlraftd`, named as rqlite names them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sqlraftd",
    version,
    about = "sqlraft node: rqlite-compatible, Raft-replicated SQLite"
)]
pub struct Args {
    /// Directory for the Raft log, snapshots and node state.
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: PathBuf,

    /// TOML file with the same settings as the flags (kebab-case keys).
    #[arg(long = "config", value_name = "FILE", env = "SQLRAFT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Unique node ID (default: the advertised Raft address).
    #[arg(long = "node-id", env = "SQLRAFT_NODE_ID")]
    pub node_id: Option<String>,

    /// HTTP API bind address.
    #[arg(
        long = "http-addr",
        default_value = "localhost:4001",
        env = "SQLRAFT_HTTP_ADDR"
    )]
    pub http_addr: String,

    /// Advertised HTTP address (default: -http-addr).
    #[arg(long = "http-adv-addr", env = "SQLRAFT_HTTP_ADV_ADDR")]
    pub http_adv_addr: Option<String>,

    /// Raft (internode) bind address.
    #[arg(
        long = "raft-addr",
        default_value = "localhost:4002",
        env = "SQLRAFT_RAFT_ADDR"
    )]
    pub raft_addr: String,

    /// Advertised Raft address (default: -raft-addr).
    #[arg(long = "raft-adv-addr", env = "SQLRAFT_RAFT_ADV_ADDR")]
    pub raft_adv_addr: Option<String>,

    /// Keep the SQLite database in a file instead of memory (rebuilt from snapshot and log at start).
    #[arg(long = "on-disk", env = "SQLRAFT_ON_DISK", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub on_disk: bool,

    /// Enable SQLite foreign key constraints.
    #[arg(long = "fk", env = "SQLRAFT_FK", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub fk: bool,

    /// Applied entries that trigger a snapshot.
    #[arg(long = "raft-snap", default_value_t = 8192, env = "SQLRAFT_RAFT_SNAP")]
    pub raft_snap: u64,

    /// How often the snapshot threshold is checked.
    #[arg(long = "raft-snap-int", default_value = "30s", value_parser = go_duration, env = "SQLRAFT_RAFT_SNAP_INT")]
    pub raft_snap_int: Duration,

    /// Raft election timeout.
    #[arg(long = "raft-election-timeout", default_value = "1s", value_parser = go_duration, env = "SQLRAFT_RAFT_ELECTION_TIMEOUT")]
    pub raft_election_timeout: Duration,

    /// Raft heartbeat timeout.
    #[arg(long = "raft-heartbeat-timeout", alias = "raft-timeout", default_value = "1s", value_parser = go_duration,
          env = "SQLRAFT_RAFT_HEARTBEAT_TIMEOUT")]
    pub raft_heartbeat_timeout: Duration,

    /// How long a write may wait to be committed and applied.
    #[arg(long = "raft-apply-timeout", default_value = "10s", value_parser = go_duration, env = "SQLRAFT_RAFT_APPLY_TIMEOUT")]
    pub raft_apply_timeout: Duration,

    /// Log level of the Raft library (DEBUG, INFO, WARN, ERROR).
    #[arg(
        long = "raft-log-level",
        default_value = "WARN",
        env = "SQLRAFT_RAFT_LOG_LEVEL"
    )]
    pub raft_log_level: String,

    /// Largest accepted HTTP request body, in bytes (larger bodies get 413).
    #[arg(long = "http-max-body", default_value_t = 256 << 20, env = "SQLRAFT_HTTP_MAX_BODY")]
    pub http_max_body: usize,

    /// Raft addresses (host:port) of nodes to join, comma-separated.
    #[arg(long = "join", env = "SQLRAFT_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,

    /// Join rounds before giving up.
    #[arg(
        long = "join-attempts",
        default_value_t = 5,
        env = "SQLRAFT_JOIN_ATTEMPTS"
    )]
    pub join_attempts: u32,

    /// Pause between join rounds.
    #[arg(long = "join-interval", default_value = "3s", value_parser = go_duration, env = "SQLRAFT_JOIN_INTERVAL")]
    pub join_interval: Duration,

    /// User (from the -auth file) whose credentials joins and notifies carry.
    #[arg(long = "join-as", env = "SQLRAFT_JOIN_AS")]
    pub join_as: Option<String>,

    /// Join as a read-only node that does not vote.
    #[arg(long = "raft-non-voter", env = "SQLRAFT_RAFT_NON_VOTER", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub raft_non_voter: bool,

    /// Form a cluster of exactly this many voters with the -join list (notify protocol).
    #[arg(
        long = "bootstrap-expect",
        default_value_t = 0,
        env = "SQLRAFT_BOOTSTRAP_EXPECT"
    )]
    pub bootstrap_expect: usize,

    /// Give up forming a cluster with -bootstrap-expect after this long.
    #[arg(long = "bootstrap-expect-timeout", default_value = "120s", value_parser = go_duration,
          env = "SQLRAFT_BOOTSTRAP_EXPECT_TIMEOUT")]
    pub bootstrap_expect_timeout: Duration,

    /// Timeout for connecting to another node.
    #[arg(long = "cluster-connect-timeout", default_value = "30s", value_parser = go_duration,
          env = "SQLRAFT_CLUSTER_CONNECT_TIMEOUT")]
    pub cluster_connect_timeout: Duration,

    /// Hand leadership to another voter on graceful shutdown.
    #[arg(long = "raft-shutdown-stepdown", env = "SQLRAFT_RAFT_SHUTDOWN_STEPDOWN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub raft_shutdown_stepdown: bool,

    /// Stop Raft on this node once it learns it was removed from the cluster.
    #[arg(long = "raft-remove-shutdown", env = "SQLRAFT_RAFT_REMOVE_SHUTDOWN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub raft_remove_shutdown: bool,

    /// Ask the leader to remove this node on graceful shutdown.
    #[arg(long = "raft-cluster-remove-shutdown", env = "SQLRAFT_RAFT_CLUSTER_REMOVE_SHUTDOWN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub raft_cluster_remove_shutdown: bool,

    /// Remove a voter the leader has not reached for this long (0 = never).
    #[arg(long = "raft-reap-node-timeout", default_value = "0s", value_parser = go_duration,
          env = "SQLRAFT_RAFT_REAP_NODE_TIMEOUT")]
    pub raft_reap_node_timeout: Duration,

    /// Remove a non-voter the leader has not reached for this long (0 = never).
    #[arg(long = "raft-reap-read-only-node-timeout", default_value = "0s", value_parser = go_duration,
          env = "SQLRAFT_RAFT_REAP_READ_ONLY_NODE_TIMEOUT")]
    pub raft_reap_read_only_node_timeout: Duration,

    /// JSON file of users, passwords (plaintext or bcrypt) and permissions; enables auth.
    #[arg(long = "auth", env = "SQLRAFT_AUTH")]
    pub auth: Option<PathBuf>,

    /// Allowed CORS origin (`Access-Control-Allow-Origin`).
    #[arg(long = "http-allow-origin", env = "SQLRAFT_HTTP_ALLOW_ORIGIN")]
    pub http_allow_origin: Option<String>,

    /// PEM certificate for HTTPS on the API (with -http-key).
    #[arg(long = "http-cert", env = "SQLRAFT_HTTP_CERT")]
    pub http_cert: Option<PathBuf>,

    /// PEM private key for HTTPS on the API.
    #[arg(long = "http-key", env = "SQLRAFT_HTTP_KEY")]
    pub http_key: Option<PathBuf>,

    /// PEM CA bundle to verify API clients' certificates (with -http-verify-client).
    #[arg(long = "http-ca-cert", env = "SQLRAFT_HTTP_CA_CERT")]
    pub http_ca_cert: Option<PathBuf>,

    /// Require API clients to present a certificate signed by -http-ca-cert.
    #[arg(long = "http-verify-client", env = "SQLRAFT_HTTP_VERIFY_CLIENT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub http_verify_client: bool,

    /// PEM certificate for node-to-node TLS (with -node-key).
    #[arg(long = "node-cert", env = "SQLRAFT_NODE_CERT")]
    pub node_cert: Option<PathBuf>,

    /// PEM private key for node-to-node TLS.
    #[arg(long = "node-key", env = "SQLRAFT_NODE_KEY")]
    pub node_key: Option<PathBuf>,

    /// PEM CA bundle that signs the other nodes' certificates.
    #[arg(long = "node-ca-cert", env = "SQLRAFT_NODE_CA_CERT")]
    pub node_ca_cert: Option<PathBuf>,

    /// Do not verify other nodes' certificates (testing only).
    #[arg(long = "node-no-verify", env = "SQLRAFT_NODE_NO_VERIFY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub node_no_verify: bool,

    /// Require other nodes to present a certificate signed by -node-ca-cert (mutual TLS).
    #[arg(long = "node-verify-client", env = "SQLRAFT_NODE_VERIFY_CLIENT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub node_verify_client: bool,

    /// Expect this name in other nodes' certificates instead of their address.
    #[arg(
        long = "node-verify-server-name",
        env = "SQLRAFT_NODE_VERIFY_SERVER_NAME"
    )]
    pub node_verify_server_name: Option<String>,

    /// Most simultaneous connections on each listener.
    #[arg(
        long = "http-max-connections",
        default_value_t = 1024,
        env = "SQLRAFT_HTTP_MAX_CONNECTIONS"
    )]
    pub http_max_connections: usize,

    /// Time a client has to send a whole request (head and body); slower clients are cut off.
    #[arg(long = "http-read-timeout", default_value = "30s", value_parser = go_duration, env = "SQLRAFT_HTTP_READ_TIMEOUT")]
    pub http_read_timeout: Duration,

    /// Time limit of a read statement that sets no db_timeout of its own (0s = none).
    #[arg(long = "db-timeout", default_value = "30s", value_parser = go_duration, env = "SQLRAFT_DB_TIMEOUT")]
    pub db_timeout: Duration,

    /// SQLite VM steps one write request may take when applied, the same on every node (0 = unlimited).
    #[arg(
        long = "db-max-steps",
        default_value_t = 100_000_000,
        env = "SQLRAFT_DB_MAX_STEPS"
    )]
    pub db_max_steps: u64,

    /// Read-only SQLite connections in use at most (reads beyond wait for one).
    #[arg(
        long = "db-max-ro-conns",
        default_value_t = 16,
        env = "SQLRAFT_DB_MAX_RO_CONNS"
    )]
    pub db_max_ro_conns: usize,

    /// Statements one request may carry (more gets 413).
    #[arg(
        long = "http-max-statements",
        default_value_t = 100_000,
        env = "SQLRAFT_HTTP_MAX_STATEMENTS"
    )]
    pub http_max_statements: usize,

    /// Discovery: dns, dns-srv, etcd-kv or consul-kv.
    #[arg(long = "disco-mode", env = "SQLRAFT_DISCO_MODE")]
    pub disco_mode: Option<String>,

    /// Discovery key: names the cluster in etcd/Consul.
    #[arg(
        long = "disco-key",
        default_value = "rqlite",
        env = "SQLRAFT_DISCO_KEY"
    )]
    pub disco_key: String,

    /// Discovery settings: inline JSON or the path of a JSON file.
    #[arg(long = "disco-config", env = "SQLRAFT_DISCO_CONFIG")]
    pub disco_config: Option<String>,

    /// Queued writes: how many requests may wait in the queue.
    #[arg(
        long = "write-queue-capacity",
        default_value_t = 1024,
        env = "SQLRAFT_WRITE_QUEUE_CAPACITY"
    )]
    pub write_queue_capacity: usize,

    /// Queued writes: requests batched into one log entry.
    #[arg(
        long = "write-queue-batch-size",
        default_value_t = 128,
        env = "SQLRAFT_WRITE_QUEUE_BATCH_SIZE"
    )]
    pub write_queue_batch_size: usize,

    /// Queued writes: how long a batch may wait to fill.
    #[arg(long = "write-queue-timeout", default_value = "50ms", value_parser = go_duration, env = "SQLRAFT_WRITE_QUEUE_TIMEOUT")]
    pub write_queue_timeout: Duration,

    /// Queued writes: run each batch in a transaction.
    #[arg(long = "write-queue-tx", env = "SQLRAFT_WRITE_QUEUE_TX", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub write_queue_tx: bool,
}

/// The TOML file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub node_id: Option<String>,
    pub http_addr: Option<String>,
    pub http_adv_addr: Option<String>,
    pub raft_addr: Option<String>,
    pub raft_adv_addr: Option<String>,
    pub on_disk: Option<bool>,
    pub fk: Option<bool>,
    pub raft_snap: Option<u64>,
    pub raft_snap_int: Option<String>,
    pub raft_election_timeout: Option<String>,
    pub raft_heartbeat_timeout: Option<String>,
    pub raft_apply_timeout: Option<String>,
    pub raft_log_level: Option<String>,
    pub http_max_body: Option<usize>,
    pub write_queue_capacity: Option<usize>,
    pub write_queue_batch_size: Option<usize>,
    pub write_queue_timeout: Option<String>,
    pub write_queue_tx: Option<bool>,
    pub join: Option<Vec<String>>,
    pub join_attempts: Option<u32>,
    pub join_interval: Option<String>,
    pub join_as: Option<String>,
    pub raft_non_voter: Option<bool>,
    pub bootstrap_expect: Option<usize>,
    pub bootstrap_expect_timeout: Option<String>,
    pub cluster_connect_timeout: Option<String>,
    pub raft_shutdown_stepdown: Option<bool>,
    pub raft_remove_shutdown: Option<bool>,
    pub raft_cluster_remove_shutdown: Option<bool>,
    pub raft_reap_node_timeout: Option<String>,
    pub raft_reap_read_only_node_timeout: Option<String>,
    pub discovery: Option<FileDiscovery>,
    pub auth: Option<PathBuf>,
    pub http_allow_origin: Option<String>,
    pub http_cert: Option<PathBuf>,
    pub http_key: Option<PathBuf>,
    pub http_ca_cert: Option<PathBuf>,
    pub http_verify_client: Option<bool>,
    pub node_cert: Option<PathBuf>,
    pub node_key: Option<PathBuf>,
    pub node_ca_cert: Option<PathBuf>,
    pub node_no_verify: Option<bool>,
    pub node_verify_client: Option<bool>,
    pub node_verify_server_name: Option<String>,
    pub http_max_connections: Option<usize>,
    pub http_read_timeout: Option<String>,
    pub db_timeout: Option<String>,
    pub db_max_steps: Option<u64>,
    pub db_max_ro_conns: Option<usize>,
    pub http_max_statements: Option<usize>,
}

/// `[discovery]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    pub mode: Option<String>,
    pub key: Option<String>,
    /// The backend's settings: a table, or a JSON string / file path as with `-disco-config`.
    pub config: Option<toml::Value>,
}

impl FileConfig {
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File {
            path: path.into(),
            msg: e.to_string(),
        })
    }
}

/// The validated configuration a node starts from.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub node_id: Option<String>,
    pub http_addr: String,
    pub http_adv_addr: Option<String>,
    pub raft_addr: String,
    pub raft_adv_addr: Option<String>,
    pub on_disk: bool,
    pub fk: bool,
    pub raft_snap: u64,
    pub raft_snap_int: Duration,
    pub raft_election_timeout: Duration,
    pub raft_heartbeat_timeout: Duration,
    pub raft_apply_timeout: Duration,
    pub raft_log_level: String,
    pub http_max_body: usize,
    pub write_queue_capacity: usize,
    pub write_queue_batch_size: usize,
    pub write_queue_timeout: Duration,
    pub write_queue_tx: bool,
    pub join: Vec<String>,
    pub join_attempts: u32,
    pub join_interval: Duration,
    pub join_as: Option<String>,
    pub raft_non_voter: bool,
    pub bootstrap_expect: usize,
    pub bootstrap_expect_timeout: Duration,
    pub cluster_connect_timeout: Duration,
    pub raft_shutdown_stepdown: bool,
    pub raft_remove_shutdown: bool,
    pub raft_cluster_remove_shutdown: bool,
    pub raft_reap_node_timeout: Duration,
    pub raft_reap_read_only_node_timeout: Duration,
    /// `-disco-mode`, validated.
    pub disco_mode: Option<DiscoMode>,
    pub disco_key: String,
    /// The backend settings as JSON (inline, from a file, or from the TOML table).
    pub disco_config: Option<serde_json::Value>,
    pub auth: Option<PathBuf>,
    pub http_allow_origin: Option<String>,
    pub http_cert: Option<PathBuf>,
    pub http_key: Option<PathBuf>,
    pub http_ca_cert: Option<PathBuf>,
    pub http_verify_client: bool,
    pub node_cert: Option<PathBuf>,
    pub node_key: Option<PathBuf>,
    pub node_ca_cert: Option<PathBuf>,
    pub node_no_verify: bool,
    pub node_verify_client: bool,
    pub node_verify_server_name: Option<String>,
    pub http_max_connections: usize,
    pub http_read_timeout: Duration,
    pub db_timeout: Duration,
    pub db_max_steps: u64,
    pub db_max_ro_conns: usize,
    pub http_max_statements: usize,
}

/// How nodes find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoMode {
    Dns,
    DnsSrv,
    EtcdKv,
    ConsulKv,
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

    /// Key backends elect through the key; the others form a cluster with the notify protocol.
    pub fn uses_key(self) -> bool {
        matches!(self, Self::EtcdKv | Self::ConsulKv)
    }
}

impl Config {
    /// Settings for tests and embedding: everything default, binding port 0 on loopback.
    pub fn for_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = Self::from_args(Args::parse_from(["sqlraftd", "x"]));
        c.data_dir = data_dir.into();
        c.http_addr = "127.0.0.1:0".into();
        c.raft_addr = "127.0.0.1:0".into();
        c
    }

    fn from_args(a: Args) -> Self {
        Self {
            data_dir: a.data_dir,
            node_id: a.node_id,
            http_addr: a.http_addr,
            http_adv_addr: a.http_adv_addr,
            raft_addr: a.raft_addr,
            raft_adv_addr: a.raft_adv_addr,
            on_disk: a.on_disk,
            fk: a.fk,
            raft_snap: a.raft_snap,
            raft_snap_int: a.raft_snap_int,
            raft_election_timeout: a.raft_election_timeout,
            raft_heartbeat_timeout: a.raft_heartbeat_timeout,
            raft_apply_timeout: a.raft_apply_timeout,
            raft_log_level: a.raft_log_level,
            http_max_body: a.http_max_body,
            write_queue_capacity: a.write_queue_capacity,
            write_queue_batch_size: a.write_queue_batch_size,
            write_queue_timeout: a.write_queue_timeout,
            write_queue_tx: a.write_queue_tx,
            join: a
                .join
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            join_attempts: a.join_attempts,
            join_interval: a.join_interval,
            join_as: a.join_as,
            raft_non_voter: a.raft_non_voter,
            bootstrap_expect: a.bootstrap_expect,
            bootstrap_expect_timeout: a.bootstrap_expect_timeout,
            cluster_connect_timeout: a.cluster_connect_timeout,
            raft_shutdown_stepdown: a.raft_shutdown_stepdown,
            raft_remove_shutdown: a.raft_remove_shutdown,
            raft_cluster_remove_shutdown: a.raft_cluster_remove_shutdown,
            raft_reap_node_timeout: a.raft_reap_node_timeout,
            raft_reap_read_only_node_timeout: a.raft_reap_read_only_node_timeout,
            disco_mode: None,
            disco_key: a.disco_key,
            disco_config: None,
            auth: a.auth,
            http_allow_origin: a.http_allow_origin,
            http_cert: a.http_cert,
            http_key: a.http_key,
            http_ca_cert: a.http_ca_cert,
            http_verify_client: a.http_verify_client,
            node_cert: a.node_cert,
            node_key: a.node_key,
            node_ca_cert: a.node_ca_cert,
            node_no_verify: a.node_no_verify,
            node_verify_client: a.node_verify_client,
            node_verify_server_name: a.node_verify_server_name,
            http_max_connections: a.http_max_connections,
            http_read_timeout: a.http_read_timeout,
            db_timeout: a.db_timeout,
            db_max_steps: a.db_max_steps,
            db_max_ro_conns: a.db_max_ro_conns,
            http_max_statements: a.http_max_statements,
        }
    }

    /// Parses argv (Go-style `-flag`, `-flag=value` and `--flag` all accepted) and merges the
    /// `-config` file read by `read_file`.
    pub fn load<I, F>(argv: I, read_file: F) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = String>,
        F: Fn(&std::path::Path) -> std::io::Result<String>,
    {
        let argv: Vec<String> = normalize_args(argv);
        let matches = Args::command()
            .try_get_matches_from(&argv)
            .map_err(|e| ConfigError::Args(Box::new(e)))?;
        let args = Args::from_arg_matches(&matches).map_err(|e| ConfigError::Args(Box::new(e)))?;
        let mut file = match &args.config {
            Some(p) => {
                let text = read_file(p).map_err(|e| ConfigError::File {
                    path: p.display().to_string(),
                    msg: e.to_string(),
                })?;
                FileConfig::parse(&text, &p.display().to_string())?
            }
            None => FileConfig::default(),
        };
        let (disco_mode_arg, disco_config_arg) =
            (args.disco_mode.clone(), args.disco_config.clone());
        let (file_mode, file_key, file_cfg) = match file.discovery.take() {
            Some(d) => (d.mode, d.key, d.config),
            None => (None, None, None),
        };
        let mut c = Self::from_args(args);
        c.merge_file(file, &matches)?;
        // Discovery: command line / environment over the file's [discovery] table.
        c.disco_mode = match disco_mode_arg.or(file_mode).as_deref() {
            None | Some("") => None,
            Some(m) => Some(DiscoMode::parse(m).ok_or_else(|| ConfigError::Invalid {
                flag: "disco-mode",
                msg: format!("'{m}' is not one of dns, dns-srv, etcd-kv, consul-kv"),
            })?),
        };
        if let Some(k) = file_key {
            if !matches!(
                matches.value_source("disco_key"),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                c.disco_key = k;
            }
        }
        c.disco_config = match (disco_config_arg, file_cfg) {
            (Some(text), _) | (None, Some(toml::Value::String(text))) => {
                Some(parse_disco_config(&text, &read_file)?)
            }
            (None, Some(table)) => {
                Some(
                    serde_json::to_value(&table).map_err(|e| ConfigError::Invalid {
                        flag: "disco-config",
                        msg: e.to_string(),
                    })?,
                )
            }
            (None, None) => None,
        };
        c.validate()?;
        Ok(c)
    }

    /// Takes a file value wherever the flag was neither on the command line nor in the environment.
    fn merge_file(&mut self, f: FileConfig, m: &ArgMatches) -> Result<(), ConfigError> {
        let from_file = |id: &str| {
            !matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let dur = |flag: &'static str, v: String| {
            go_duration(&v).map_err(|msg| ConfigError::Invalid { flag, msg })
        };
        macro_rules! take {
            ($field:ident, $id:literal) => {
                if let Some(v) = f.$field {
                    if from_file($id) {
                        self.$field = v.into();
                    }
                }
            };
        }
        macro_rules! take_dur {
            ($field:ident, $id:literal) => {
                if let Some(v) = f.$field {
                    if from_file($id) {
                        self.$field = dur($id, v)?;
                    }
                }
            };
        }
        take!(node_id, "node_id");
        take!(http_addr, "http_addr");
        take!(http_adv_addr, "http_adv_addr");
        take!(raft_addr, "raft_addr");
        take!(raft_adv_addr, "raft_adv_addr");
        take!(on_disk, "on_disk");
        take!(fk, "fk");
        take!(raft_snap, "raft_snap");
        take_dur!(raft_snap_int, "raft_snap_int");
        take_dur!(raft_election_timeout, "raft_election_timeout");
        take_dur!(raft_heartbeat_timeout, "raft_heartbeat_timeout");
        take_dur!(raft_apply_timeout, "raft_apply_timeout");
        take!(raft_log_level, "raft_log_level");
        take!(http_max_body, "http_max_body");
        take!(write_queue_capacity, "write_queue_capacity");
        take!(write_queue_batch_size, "write_queue_batch_size");
        take_dur!(write_queue_timeout, "write_queue_timeout");
        take!(write_queue_tx, "write_queue_tx");
        take!(join, "join");
        take!(join_attempts, "join_attempts");
        take_dur!(join_interval, "join_interval");
        take!(join_as, "join_as");
        take!(raft_non_voter, "raft_non_voter");
        take!(bootstrap_expect, "bootstrap_expect");
        take_dur!(bootstrap_expect_timeout, "bootstrap_expect_timeout");
        take_dur!(cluster_connect_timeout, "cluster_connect_timeout");
        take!(raft_shutdown_stepdown, "raft_shutdown_stepdown");
        take!(raft_remove_shutdown, "raft_remove_shutdown");
        take!(raft_cluster_remove_shutdown, "raft_cluster_remove_shutdown");
        take_dur!(raft_reap_node_timeout, "raft_reap_node_timeout");
        take_dur!(
            raft_reap_read_only_node_timeout,
            "raft_reap_read_only_node_timeout"
        );
        take!(auth, "auth");
        take!(http_allow_origin, "http_allow_origin");
        take!(http_cert, "http_cert");
        take!(http_key, "http_key");
        take!(http_ca_cert, "http_ca_cert");
        take!(http_verify_client, "http_verify_client");
        take!(node_cert, "node_cert");
        take!(node_key, "node_key");
        take!(node_ca_cert, "node_ca_cert");
        take!(node_no_verify, "node_no_verify");
        take!(node_verify_client, "node_verify_client");
        take!(node_verify_server_name, "node_verify_server_name");
        take!(http_max_connections, "http_max_connections");
        take_dur!(http_read_timeout, "http_read_timeout");
        take_dur!(db_timeout, "db_timeout");
        take!(db_max_steps, "db_max_steps");
        take!(db_max_ro_conns, "db_max_ro_conns");
        take!(http_max_statements, "http_max_statements");
        Ok(())
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
            ("http-addr", &self.http_addr),
            ("raft-addr", &self.raft_addr),
        ] {
            if split_host_port(addr).is_none() {
                return inv(flag, "must be host:port");
            }
        }
        for (flag, addr) in [
            ("http-adv-addr", &self.http_adv_addr),
            ("raft-adv-addr", &self.raft_adv_addr),
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
        if self.http_adv_addr.is_some() && self.http_adv_addr == self.raft_adv_addr {
            return inv("raft-adv-addr", "must differ from -http-adv-addr");
        }
        if self.raft_snap == 0 {
            return inv("raft-snap", "must be at least 1");
        }
        if self.raft_election_timeout.is_zero() || self.raft_heartbeat_timeout.is_zero() {
            return inv("raft-election-timeout", "Raft timeouts must be positive");
        }
        if self.write_queue_capacity == 0 || self.write_queue_batch_size == 0 {
            return inv("write-queue-capacity", "queue sizes must be at least 1");
        }
        if let Some(mode) = self.disco_mode {
            if !self.join.is_empty() {
                return inv("join", "cannot be combined with -disco-mode");
            }
            if self.disco_config.is_none() {
                return inv("disco-config", "is required with -disco-mode");
            }
            if mode.uses_key() && self.bootstrap_expect > 0 {
                return inv(
                    "bootstrap-expect",
                    "cannot be used with etcd-kv or consul-kv (the key decides)",
                );
            }
            if !mode.uses_key() && self.bootstrap_expect == 0 && !self.raft_non_voter {
                return inv(
                    "bootstrap-expect",
                    "is required with dns and dns-srv discovery",
                );
            }
        }
        if self.bootstrap_expect > 0 && self.raft_non_voter {
            return inv("bootstrap-expect", "a non-voter cannot bootstrap a cluster");
        }
        if self.bootstrap_expect > 0 && self.join.is_empty() && self.disco_mode.is_none() {
            return inv(
                "bootstrap-expect",
                "needs the -join list (or -disco-mode) of the nodes to form a cluster with",
            );
        }
        if self.bootstrap_expect > 0
            && self.disco_mode.is_none()
            && self.join.len() < self.bootstrap_expect
        {
            return inv(
                "bootstrap-expect",
                "is larger than the number of -join addresses",
            );
        }
        for j in &self.join {
            if split_host_port(j).is_none() || j.contains("://") {
                return inv("join", "takes Raft host:port addresses (not URLs)");
            }
        }
        if self.http_cert.is_some() != self.http_key.is_some() {
            return inv("http-cert", "-http-cert and -http-key go together");
        }
        if self.node_cert.is_some() != self.node_key.is_some() {
            return inv("node-cert", "-node-cert and -node-key go together");
        }
        if self.http_verify_client && (self.http_cert.is_none() || self.http_ca_cert.is_none()) {
            return inv(
                "http-verify-client",
                "needs -http-cert, -http-key and -http-ca-cert",
            );
        }
        if self.node_verify_client && (self.node_cert.is_none() || self.node_ca_cert.is_none()) {
            return inv(
                "node-verify-client",
                "needs -node-cert, -node-key and -node-ca-cert",
            );
        }
        if self.http_max_connections == 0 {
            return inv("http-max-connections", "must be at least 1");
        }
        if self.http_max_body == 0 {
            return inv("http-max-body", "must be at least 1");
        }
        Ok(())
    }

    /// Entries kept behind a snapshot: 1.25 x the threshold, as rqlite does.
    pub fn trailing_logs(&self) -> u64 {
        self.raft_snap.saturating_add(self.raft_snap / 4)
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
    Args::command()
        .get_arguments()
        .find(|arg| {
            arg.get_long() == Some(name)
                || arg.get_all_aliases().is_some_and(|al| al.contains(&name))
        })
        .is_some_and(|arg| arg.get_num_args().is_none_or(|n| n.min_values() != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("sqlraftd")
            .chain(args.iter().copied())
            .map(String::from);
        Config::load(argv, |_| Err(std::io::Error::other("no file")))
    }

    #[test]
    fn rqlite_defaults() {
        let c = load(&["data"]).unwrap();
        assert_eq!(c.http_addr, "localhost:4001");
        assert_eq!(c.raft_addr, "localhost:4002");
        assert_eq!(c.raft_snap, 8192);
        assert_eq!(c.raft_snap_int, Duration::from_secs(30));
        assert_eq!(c.raft_election_timeout, Duration::from_secs(1));
        assert!(!c.fk && !c.on_disk);
        assert_eq!(c.trailing_logs(), 10240);
    }

    #[test]
    fn go_style_flags() {
        let c = load(&[
            "-http-addr",
            "127.0.0.1:5001",
            "-raft-addr=127.0.0.1:5002",
            "-fk",
            "-on-disk=false",
            "-raft-snap-int",
            "1m30s",
            "--node-id",
            "n1",
            "-raft-timeout",
            "500ms",
            "data",
        ])
        .unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:5001");
        assert_eq!(c.raft_addr, "127.0.0.1:5002");
        assert!(c.fk);
        assert!(!c.on_disk);
        assert_eq!(c.raft_snap_int, Duration::from_secs(90));
        assert_eq!(c.raft_heartbeat_timeout, Duration::from_millis(500));
        assert_eq!(c.node_id.as_deref(), Some("n1"));
    }

    #[test]
    fn unknown_flags_and_bad_values_fail() {
        assert!(load(&["-no-such-flag", "data"]).is_err());
        assert!(load(&["-raft-snap-int", "5", "data"]).is_err());
        assert!(load(&[]).is_err());
        assert!(load(&["a", "b"]).is_err());
        assert!(load(&["-http-adv-addr", "0.0.0.0:4001", "data"]).is_err());
    }

    #[test]
    fn file_is_below_command_line() {
        let argv = ["sqlraftd", "-config", "c.toml", "-raft-snap", "7", "data"].map(String::from);
        let c = Config::load(argv, |_| {
            Ok("raft-snap = 100\nhttp-addr = \"127.0.0.1:9\"\nraft-snap-int = \"2s\"\n".into())
        })
        .unwrap();
        assert_eq!(c.raft_snap, 7);
        assert_eq!(c.http_addr, "127.0.0.1:9");
        assert_eq!(c.raft_snap_int, Duration::from_secs(2));
        let bad = Config::load(["sqlraftd", "-config", "c", "d"].map(String::from), |_| {
            Ok("nope = 1".into())
        });
        assert!(bad.is_err());
    }

    #[test]
    fn example_config_files_parse() {
        let text = include_str!("../../config/sqlraft.toml");
        let argv = ["sqlraftd", "-config", "sqlraft.toml", "data"].map(String::from);
        let c = Config::load(argv, |_| Ok(text.to_string())).unwrap();
        assert_eq!(c.node_id.as_deref(), Some("1"));
        assert_eq!(c.raft_snap, 8192);
        assert_eq!(c.write_queue_timeout, Duration::from_millis(50));
    }
}

#[cfg(test)]
mod deploy_examples {
    //! The deployment examples pass flags `sqlraftd` accepts.
    use super::*;

    fn load_args(args: Vec<String>) -> Config {
        let argv = std::iter::once("sqlraftd".to_string()).chain(args);
        Config::load(argv, |p| {
            Err(std::io::Error::other(format!(
                "unexpected file {}",
                p.display()
            )))
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Strips one layer of single or double quotes, as a shell, YAML or systemd would.
    fn unquote(s: &str) -> String {
        let s = s.trim();
        for q in ['\'', '"'] {
            if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
                return s[1..s.len() - 1].to_string();
            }
        }
        s.to_string()
    }

    #[test]
    fn kubernetes_statefulset_flags_are_accepted() {
        let yaml = include_str!("../../examples/deploy/kubernetes.yaml");
        let mut args = Vec::new();
        let mut in_args = false;
        for line in yaml.lines() {
            let t = line.trim();
            if t == "args:" {
                in_args = true;
                continue;
            }
            if in_args {
                match t.strip_prefix("- ") {
                    Some(item) => args.push(unquote(item).replace("$(POD_NAME)", "sqlraft-0")),
                    None => break,
                }
            }
        }
        let c = load_args(args);
        assert_eq!(c.disco_mode, Some(DiscoMode::DnsSrv));
        assert_eq!(c.bootstrap_expect, 3);
        assert_eq!(c.node_id.as_deref(), Some("sqlraft-0"));
        assert_eq!(c.raft_adv_addr.as_deref(), Some("sqlraft-0.sqlraft:4002"));
    }

    #[test]
    fn systemd_unit_flags_are_accepted() {
        let unit = include_str!("../../examples/deploy/sqlraftd.service");
        let exec: String = unit
            .split("ExecStart=")
            .nth(1)
            .expect("ExecStart")
            .lines()
            .map(|l| l.trim().trim_end_matches('\\').to_string())
            .take_while(|l| !l.is_empty() && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ");
        // Split like systemd: whitespace, with single-quoted words kept whole.
        let mut args = Vec::new();
        let mut rest = exec.as_str();
        while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
            rest = &rest[start..];
            let end = match rest.strip_prefix('\'') {
                Some(quoted) => quoted.find('\'').map(|i| i + 2).unwrap_or(rest.len()),
                None => rest.find(char::is_whitespace).unwrap_or(rest.len()),
            };
            args.push(unquote(&rest[..end]).replace("%H", "node1"));
            rest = &rest[end..];
        }
        assert_eq!(
            args.first().map(String::as_str),
            Some("/usr/local/bin/sqlraftd")
        );
        let c = load_args(args.into_iter().skip(1).collect());
        assert_eq!(c.disco_mode, Some(DiscoMode::Dns));
        assert_eq!(
            c.disco_config,
            Some(serde_json::json!({"name": "sqlraft.internal", "port": 4002}))
        );
    }
}

#[cfg(test)]
mod discovery_config {
    use super::*;

    #[test]
    fn disco_config_comes_inline_from_a_file_or_from_the_toml_table() {
        let argv = |a: &[&str]| {
            std::iter::once("sqlraftd")
                .chain(a.iter().copied())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let inline = Config::load(
            argv(&[
                "-disco-mode",
                "dns",
                "-disco-config",
                r#"{"name":"x.test","port":4002}"#,
                "-bootstrap-expect",
                "3",
                "d",
            ]),
            |_| Err(std::io::Error::other("no file")),
        )
        .unwrap();
        assert_eq!(inline.disco_mode, Some(DiscoMode::Dns));
        assert_eq!(
            inline.disco_config,
            Some(serde_json::json!({"name": "x.test", "port": 4002}))
        );

        let from_file = Config::load(
            argv(&[
                "-disco-mode",
                "etcd-kv",
                "-disco-config",
                "/etc/disco.json",
                "d",
            ]),
            |p| {
                assert_eq!(p, std::path::Path::new("/etc/disco.json"));
                Ok(r#"{"endpoints":["http://127.0.0.1:2379"]}"#.into())
            },
        )
        .unwrap();
        assert_eq!(from_file.disco_key, "rqlite");

        let toml = "[discovery]\nmode = \"consul-kv\"\nkey = \"prod\"\nconfig = { address = \"127.0.0.1:8500\" }\n";
        let from_toml =
            Config::load(argv(&["-config", "c.toml", "d"]), |_| Ok(toml.into())).unwrap();
        assert_eq!(from_toml.disco_mode, Some(DiscoMode::ConsulKv));
        assert_eq!(from_toml.disco_key, "prod");
        assert_eq!(
            from_toml.disco_config,
            Some(serde_json::json!({"address": "127.0.0.1:8500"}))
        );
    }

    #[test]
    fn discovery_settings_are_validated() {
        let load = |a: &[&str]| {
            let argv = std::iter::once("sqlraftd")
                .chain(a.iter().copied())
                .map(String::from);
            Config::load(argv, |_| Err(std::io::Error::other("no file")))
        };
        assert!(load(&["-disco-mode", "zookeeper", "-disco-config", "{}", "d"]).is_err());
        assert!(
            load(&["-disco-mode", "dns", "-disco-config", "{}", "d"]).is_err(),
            "dns needs -bootstrap-expect"
        );
        assert!(
            load(&["-disco-mode", "etcd-kv", "d"]).is_err(),
            "needs -disco-config"
        );
        assert!(load(&[
            "-disco-mode",
            "etcd-kv",
            "-disco-config",
            "{}",
            "-bootstrap-expect",
            "3",
            "d"
        ])
        .is_err());
        assert!(load(&[
            "-disco-mode",
            "etcd-kv",
            "-disco-config",
            "{}",
            "-join",
            "a:1",
            "d"
        ])
        .is_err());
        assert!(load(&["-disco-mode", "etcd-kv", "-disco-config", "{not json", "d"]).is_err());
    }
}
