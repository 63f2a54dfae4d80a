//! Every setting, once: its flag (rqlite's name), default and help, grouped in the section
//! its owner receives. The TOML file feeds these same definitions (`file.rs`), so there is no
//! second list to keep in step. What every flag shares is said once, in [`conventions`]: its
//! environment variable, and Go's forms for booleans (`-flag`, `-flag=true`, `-flag=false`).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Command};

use crate::duration;

/// Applies the rules every flag follows, so that no definition can drift from them: the
/// environment variable is `SQLRAFT_` and the flag's name in upper snake case
/// (`-http-addr`: `SQLRAFT_HTTP_ADDR`), and a boolean takes Go's forms. A boolean defaults to
/// false unless its definition says otherwise.
pub(super) fn conventions(cmd: Command) -> Command {
    cmd.mut_args(|a| {
        // Only flags: the positional data directory has no variable.
        let Some(long) = a.get_long().map(str::to_string) else {
            return a;
        };
        // A flag that reads rqlite's own variable (RQLITE_DISCO_DNS_HOSTS) keeps it.
        let a = if a.get_env().is_some() {
            a
        } else {
            a.env(format!("SQLRAFT_{}", long.to_uppercase().replace('-', "_")))
        };
        if !matches!(a.get_action(), ArgAction::SetTrue) {
            return a;
        }
        // `-flag=false` must not be read as a positional `false`: a value needs the `=`.
        a.num_args(0..=1)
            .require_equals(true)
            .value_parser(BoolishValueParser::new())
    })
}

pub(crate) fn go_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s)
        .ok_or_else(|| format!("'{s}' is not a valid duration (e.g. 500ms, 2s, 1m30s)"))
}

/// The HTTP API listener (and the limits both listeners share).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP API")]
pub struct Http {
    /// HTTP API bind address.
    #[arg(id = "http-addr", long, default_value = "localhost:4001")]
    pub addr: String,

    /// Advertised HTTP address (default: -http-addr).
    #[arg(id = "http-adv-addr", long)]
    pub adv_addr: Option<String>,

    /// Allowed CORS origin (`Access-Control-Allow-Origin`).
    #[arg(id = "http-allow-origin", long)]
    pub allow_origin: Option<String>,

    /// Largest accepted request body, in bytes (larger bodies get 413; /db/load and /boot
    /// stream to disk and are not limited).
    #[arg(id = "http-max-body", long, default_value_t = 256 << 20)]
    pub max_body: usize,

    /// Statements one request may carry (more gets 413).
    #[arg(id = "http-max-statements", long, default_value_t = 100_000)]
    pub max_statements: usize,

    /// Most simultaneous connections on each listener.
    #[arg(id = "http-max-connections", long, default_value_t = 1024)]
    pub max_connections: usize,

    /// Time a client has to send a whole request (head and body); slower clients are cut off.
    #[arg(id = "http-read-timeout", long, default_value = "30s", value_parser = go_duration)]
    pub read_timeout: Duration,
}

/// TLS on the API and between nodes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TLS")]
pub struct Tls {
    /// PEM certificate for HTTPS on the API (with -http-key).
    #[arg(id = "http-cert", long)]
    pub http_cert: Option<PathBuf>,

    /// PEM private key for HTTPS on the API.
    #[arg(id = "http-key", long)]
    pub http_key: Option<PathBuf>,

    /// PEM CA bundle to verify API clients' certificates (with -http-verify-client).
    #[arg(id = "http-ca-cert", long)]
    pub http_ca_cert: Option<PathBuf>,

    /// Require API clients to present a certificate signed by -http-ca-cert.
    #[arg(id = "http-verify-client", long)]
    pub http_verify_client: bool,

    /// PEM certificate for node-to-node TLS (with -node-key).
    #[arg(id = "node-cert", long)]
    pub node_cert: Option<PathBuf>,

    /// PEM private key for node-to-node TLS.
    #[arg(id = "node-key", long)]
    pub node_key: Option<PathBuf>,

    /// PEM CA bundle that signs the other nodes' certificates.
    #[arg(id = "node-ca-cert", long)]
    pub node_ca_cert: Option<PathBuf>,

    /// Do not verify other nodes' certificates (testing only).
    #[arg(id = "node-no-verify", long)]
    pub node_no_verify: bool,

    /// Require other nodes to present a certificate signed by -node-ca-cert (mutual TLS).
    #[arg(id = "node-verify-client", long)]
    pub node_verify_client: bool,

    /// Expect this name in other nodes' certificates instead of their address.
    #[arg(id = "node-verify-server-name", long)]
    pub node_verify_server_name: Option<String>,

    /// Common Name API client certificates must carry (needs -http-verify-client).
    #[arg(id = "http-verify-common-name", long = "http-verify-common-name")]
    pub http_verify_common_name: Option<String>,

    /// Common Name other nodes' client certificates must carry (needs -node-verify-client).
    #[arg(id = "node-verify-common-name", long = "node-verify-common-name")]
    pub node_verify_common_name: Option<String>,
}

/// Raft: the internode listener, timers, snapshots, membership behaviour.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Raft")]
pub struct Raft {
    /// Raft (internode) bind address.
    #[arg(id = "raft-addr", long, default_value = "localhost:4002")]
    pub addr: String,

    /// Advertised Raft address (default: -raft-addr).
    #[arg(id = "raft-adv-addr", long)]
    pub adv_addr: Option<String>,

    /// Raft election timeout.
    #[arg(id = "raft-election-timeout", long, default_value = "1s", value_parser = go_duration)]
    pub election_timeout: Duration,

    /// Raft heartbeat timeout.
    #[arg(id = "raft-heartbeat-timeout", long, alias = "raft-timeout", default_value = "1s", value_parser = go_duration)]
    pub heartbeat_timeout: Duration,

    /// How long a write may wait to be committed and applied.
    #[arg(id = "raft-apply-timeout", long, default_value = "10s", value_parser = go_duration)]
    pub apply_timeout: Duration,

    /// Applied entries that trigger a snapshot.
    #[arg(id = "raft-snap", long, default_value_t = 8192)]
    pub snap: u64,

    /// How often the snapshot threshold is checked.
    #[arg(id = "raft-snap-int", long, default_value = "30s", value_parser = go_duration)]
    pub snap_int: Duration,

    /// Log level of the Raft library (DEBUG, INFO, WARN, ERROR).
    // rqlite's default is WARN; openraft's WARN lines are routine retries (a peer not up yet,
    // a vote refused) that sqlraft reports itself in operator terms, hence ERROR.
    #[arg(id = "raft-log-level", long, default_value = "ERROR")]
    pub log_level: String,

    /// Join as a read-only node that does not vote.
    #[arg(id = "raft-non-voter", long)]
    pub non_voter: bool,

    /// Hand leadership to another voter on graceful shutdown.
    #[arg(id = "raft-shutdown-stepdown", long, default_value = "true")]
    pub shutdown_stepdown: bool,

    /// Stop Raft on this node once it learns it was removed from the cluster.
    #[arg(id = "raft-remove-shutdown", long)]
    pub remove_shutdown: bool,

    /// Ask the leader to remove this node on graceful shutdown.
    #[arg(id = "raft-cluster-remove-shutdown", long)]
    pub cluster_remove_shutdown: bool,

    /// Remove a voter the leader has not reached for this long (0 = never).
    #[arg(id = "raft-reap-node-timeout", long, default_value = "0s", value_parser = go_duration)]
    pub reap_node_timeout: Duration,

    /// Remove a non-voter the leader has not reached for this long (0 = never).
    #[arg(id = "raft-reap-read-only-node-timeout", long, default_value = "0s", value_parser = go_duration)]
    pub reap_read_only_node_timeout: Duration,

    /// How long a leader keeps acting as one without hearing from a quorum (0s: the
    /// election timeout). Capped at the election timeout, past which another leader may exist.
    #[arg(id = "raft-leader-lease-timeout", long = "raft-leader-lease-timeout", default_value = "0s",
          value_parser = go_duration)]
    pub leader_lease_timeout: Duration,

    /// SQLite WAL size in bytes past which it is checkpointed into the database file (0: the
    /// default). rqlite snapshots at this size; here snapshots copy the database file, and
    /// the WAL is only bounded.
    #[arg(
        id = "raft-snap-wal-size",
        long = "raft-snap-wal-size",
        default_value_t = 4 << 20
    )]
    pub snap_wal_size: u64,
}

impl Raft {
    /// Entries kept behind a snapshot: 1.25 x the threshold, as rqlite does.
    pub fn trailing_logs(&self) -> u64 {
        self.snap.saturating_add(self.snap / 4)
    }
}

/// The SQLite database and the limits on what SQL may cost.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct Database {
    /// Accepted for rqlite compatibility; SQLite always runs in WAL mode on a scratch file.
    #[arg(id = "on-disk", long)]
    pub on_disk: bool,

    /// Enable SQLite foreign key constraints.
    #[arg(id = "fk", long)]
    pub fk: bool,

    /// Time limit of a read statement that sets no db_timeout of its own (0s = none).
    #[arg(id = "db-timeout", long, default_value = "30s", value_parser = go_duration)]
    pub timeout: Duration,

    /// SQLite VM steps one write request may take when applied, the same on every node
    /// (0 = unlimited).
    #[arg(id = "db-max-steps", long, default_value_t = 100_000_000)]
    pub max_steps: u64,

    /// Read-only SQLite connections in use at most (reads beyond wait for one; 0 = no limit,
    /// as in rqlite). Reads run on one thread per connection, at most 64.
    #[arg(id = "db-max-ro-conns", long, default_value_t = 16)]
    pub max_ro_conns: usize,

    /// How long an interactive transaction (/db/tx) may stay idle before the leader drops it.
    #[arg(id = "tx-idle-timeout", long = "tx-idle-timeout", default_value = "30s", value_parser = go_duration)]
    pub tx_idle_timeout: Duration,

    /// SQLite extensions to load at start on every connection: files, directories of them,
    /// or zip archives, comma-separated. SQL's `load_extension()` stays refused.
    #[arg(
        id = "extensions-path",
        long = "extensions-path",
        value_delimiter = ','
    )]
    pub extensions_path: Vec<PathBuf>,
}

/// Forming and joining a cluster.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster")]
pub struct Cluster {
    /// Raft addresses (host:port) of nodes to join, comma-separated.
    #[arg(id = "join", long, value_delimiter = ',')]
    pub join: Vec<String>,

    /// Join rounds before giving up.
    #[arg(id = "join-attempts", long, default_value_t = 5)]
    pub join_attempts: u32,

    /// Pause between join rounds.
    #[arg(id = "join-interval", long, default_value = "3s", value_parser = go_duration)]
    pub join_interval: Duration,

    /// User (from the -auth file) whose credentials joins and notifies carry.
    #[arg(id = "join-as", long)]
    pub join_as: Option<String>,

    /// Form a cluster of exactly this many voters with the -join list (notify protocol).
    #[arg(id = "bootstrap-expect", long, default_value_t = 0)]
    pub bootstrap_expect: usize,

    /// Give up forming a cluster with -bootstrap-expect after this long.
    #[arg(id = "bootstrap-expect-timeout", long, default_value = "120s", value_parser = go_duration)]
    pub bootstrap_expect_timeout: Duration,

    /// Timeout for connecting to another node.
    #[arg(id = "cluster-connect-timeout", long, default_value = "30s", value_parser = go_duration)]
    pub connect_timeout: Duration,
}

/// Discovery as given (validated into [`super::Discovery`]).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Discovery")]
pub struct DiscoveryFlags {
    /// Discovery: dns, dns-srv, etcd-kv or consul-kv.
    #[arg(id = "disco-mode", long)]
    pub mode: Option<String>,

    /// Discovery key: names the cluster in etcd/Consul.
    #[arg(id = "disco-key", long, default_value = "rqlite")]
    pub key: String,

    /// Discovery settings: inline JSON or the path of a JSON file (default, as rqlite:
    /// dns {"name":"rqlite"}, dns-srv {"name":"rqlite","service":"rqlite"}, etcd-kv
    /// {"endpoints":["localhost:2379"]}, consul-kv the local agent 127.0.0.1:8500).
    #[arg(id = "disco-config", long)]
    pub config: Option<String>,

    /// With -disco-mode dns: use these host:port Raft addresses instead of looking the
    /// name up (rqlite's test aid).
    #[arg(
        id = "disco-dns-hosts",
        long = "disco-dns-hosts",
        env = "RQLITE_DISCO_DNS_HOSTS",
        value_name = "HOST:PORT,..."
    )]
    pub dns_hosts: Option<String>,
}

/// What the node logs, and how (the log goes to stderr).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct Logging {
    /// Log level (error, warn, info, debug, trace) [default: info], or a filter such as
    /// `info,sqlraft::cluster=debug`. The Raft library logs at -raft-log-level unless the
    /// filter names `openraft`. Without this flag, SQLRAFT_LOG or RUST_LOG, when set, are
    /// the whole filter.
    // No clap default: an absent flag must be told apart from `info` so the environment
    // filters can take its place.
    #[arg(id = "log-level", long)]
    pub level: Option<String>,

    /// Log line format: text (for people; coloured only on a terminal) or json (one object
    /// per line, for log shippers).
    #[arg(id = "log-format", long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

impl Logging {
    /// The tracing filter directives: `-log-level` with openraft at `raft_level` (unless the
    /// filter says what openraft logs); without the flag, `env_filter` (SQLRAFT_LOG or
    /// RUST_LOG, as `main.rs` read it) as it stands; else `info` and openraft at `raft_level`.
    pub fn filter(&self, raft_level: &str, env_filter: Option<&str>) -> String {
        let given = |s: Option<&str>| {
            s.map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let base = match (given(self.level.as_deref()), given(env_filter)) {
            (Some(level), _) => level,
            (None, Some(env)) => return env,
            (None, None) => "info".to_string(),
        };
        if base.contains("openraft") {
            base
        } else {
            format!("{base},openraft={}", raft_level.to_ascii_lowercase())
        }
    }
}

/// Queued writes (`/db/execute?queue`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Write queue")]
pub struct Queue {
    /// How many requests may wait in the queue.
    #[arg(id = "write-queue-capacity", long, default_value_t = 1024)]
    pub capacity: usize,

    /// Requests combined into one batch.
    #[arg(id = "write-queue-batch-size", long, default_value_t = 128)]
    pub batch_size: usize,

    /// How long a batch waits to fill up.
    #[arg(id = "write-queue-timeout", long, default_value = "50ms", value_parser = go_duration)]
    pub timeout: Duration,

    /// Run each batch in one transaction.
    #[arg(id = "write-queue-tx", long)]
    pub tx: bool,
}

/// Automatic backups and the restore at first start (rqlite's JSON files; `file` storage).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Automatic backup and restore")]
pub struct Auto {
    /// JSON file configuring automatic backups (taken by the leader).
    #[arg(id = "auto-backup", long = "auto-backup")]
    pub backup: Option<PathBuf>,

    /// JSON file naming a backup to restore when this node starts with no state.
    #[arg(id = "auto-restore", long = "auto-restore")]
    pub restore: Option<PathBuf>,

    /// Change data capture: an endpoint URL, `stdout`, or JSON (inline or a file) with
    /// rqlite's keys (see the README's CDC section).
    #[arg(id = "cdc-config", long = "cdc-config", value_name = "URL|JSON|FILE")]
    pub cdc: Option<String>,
}
