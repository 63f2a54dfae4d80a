//! `sqlraftd`: argv -> Config -> tracing -> Node::start -> signal -> shutdown.

use std::process::ExitCode;

use sqlraft::config::Config;

// Request handling allocates many small short-lived objects; mimalloc handles that pattern
// with less contention than glibc's malloc (measured: docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sqlraft::node::Node;

fn init_tracing(raft_level: &str) {
    let raft_level = raft_level.to_ascii_lowercase();
    let default = format!("info,openraft={raft_level}");
    let filter = tracing_subscriber::EnvFilter::try_from_env("SQLRAFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    let cfg = match Config::load(std::env::args(), |p| std::fs::read_to_string(p)) {
        Ok(c) => c,
        Err(sqlraft::config::ConfigError::Args(e)) => {
            // Help and version go to stdout with success; usage errors to stderr.
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
    init_tracing(&cfg.raft.log_level);
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
