//! `sqlraftd`: argv -> Config -> tracing -> Node::start -> signal -> shutdown.

use std::process::ExitCode;

use sqlraft::config::Config;

// Request handling allocates many small short-lived objects; mimalloc handles that pattern
// with less contention than glibc's malloc (measured: docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: sqlraft::allocator::Allocator = sqlraft::allocator::Allocator;

use sqlraft::node::Node;

/// Sets up the log on stderr: the filter from `-log-level`/`-raft-log-level` or the
/// environment, text or JSON lines, colours only when a person is watching a terminal.
fn init_tracing(cfg: &Config) -> Result<(), String> {
    use std::io::IsTerminal;
    let env = ["SQLRAFT_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok());
    let directives = cfg.log.filter(&cfg.raft.log_level, env.as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| format!("invalid log filter {directives:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        // One flat object per line: what log shippers index without a parsing rule.
        fmt.json().flatten_event(true).init();
    } else {
        // Escape codes in a file or a pipe are noise for whoever reads it later.
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        fmt.with_ansi(ansi).init();
    }
    Ok(())
}

/// The first thing an operator needs: where the API is and how to reach it with the shell
/// (and which address other nodes `-join`).
fn banner(node: &Node) -> String {
    let me = node.info();
    let (host, port) = sqlraft::config::split_host_port(&me.api_addr)
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap_or_else(|| (me.api_addr.clone(), String::new()));
    let scheme = if me.api_https { " -s https" } else { "" };
    format!(
        "sqlraftd {} listening: HTTP API {}, Raft {} (other nodes -join this), connect with: sqlraft -H {host} -p {port}{scheme}",
        sqlraft::VERSION,
        me.api_url(),
        me.raft_addr,
    )
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() -> ExitCode {
    sqlraft::allocator::return_freed_memory_promptly();
    let cfg = match Config::load(std::env::args(), |p| std::fs::read_to_string(p)) {
        Ok(c) => c,
        Err(sqlraft::config::ConfigError::Args(e))
            if e.kind() == clap::error::ErrorKind::DisplayHelp =>
        {
            print!("{}", sqlraft::config::help());
            return ExitCode::SUCCESS;
        }
        Err(sqlraft::config::ConfigError::Args(e)) => {
            // Version goes to stdout with success; usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(e) => {
            eprintln!("sqlraftd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_tracing(&cfg) {
        eprintln!("sqlraftd: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sqlraftd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let node = match Node::start(cfg).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("sqlraftd: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One structured line that scripts and tests read the bound addresses from.
        println!(
            "{{\"event\":\"started\",\"node_id\":{},\"http_addr\":\"{}\",\"raft_addr\":\"{}\",\"api_adv_addr\":{},\"raft_adv_addr\":{}}}",
            serde_json::Value::from(node.info().id.clone()),
            node.http_addr(),
            node.raft_addr(),
            serde_json::Value::from(node.info().api_addr.clone()),
            serde_json::Value::from(node.info().raft_addr.clone()),
        );
        tracing::info!("{}", banner(&node));
        // A node that cannot become part of a cluster (join attempts used up, bootstrap
        // timeout) exits with an error, as rqlited does; it served its API meanwhile.
        let code = tokio::select! {
            _ = wait_for_signal() => ExitCode::SUCCESS,
            r = async {
                match node.formed().await {
                    Err(e) => e,
                    // Part of a cluster: from here only a signal stops the node.
                    Ok(()) => std::future::pending().await,
                }
            } => {
                eprintln!("sqlraftd: {r}");
                ExitCode::FAILURE
            }
        };
        tracing::info!("shutting down");
        node.shutdown().await;
        code
    })
}
