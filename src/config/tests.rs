//! The configuration's tests: flags, the file, precedence, the shipped examples.

mod flags {
    use std::time::Duration;

    use super::super::*;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("sqlraftd")
            .chain(args.iter().copied())
            .map(String::from);
        Config::load(argv, |_| Err(std::io::Error::other("no file")))
    }

    #[test]
    fn rqlite_defaults() {
        let c = load(&["data"]).unwrap();
        assert_eq!(c.http.addr, "localhost:4001");
        assert_eq!(c.raft.addr, "localhost:4002");
        assert_eq!(c.raft.snap, 8192);
        assert_eq!(c.raft.snap_int, Duration::from_secs(30));
        assert_eq!(c.raft.election_timeout, Duration::from_secs(1));
        assert!(!c.db.fk && !c.db.on_disk);
        assert_eq!(c.raft.trailing_logs(), 10240);
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
        assert_eq!(c.http.addr, "127.0.0.1:5001");
        assert_eq!(c.raft.addr, "127.0.0.1:5002");
        assert!(c.db.fk);
        assert!(!c.db.on_disk);
        assert_eq!(c.raft.snap_int, Duration::from_secs(90));
        assert_eq!(c.raft.heartbeat_timeout, Duration::from_millis(500));
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
        assert_eq!(c.raft.snap, 7);
        assert_eq!(c.http.addr, "127.0.0.1:9");
        assert_eq!(c.raft.snap_int, Duration::from_secs(2));
        let bad = Config::load(["sqlraftd", "-config", "c", "d"].map(String::from), |_| {
            Ok("nope = 1".into())
        });
        assert!(bad.is_err());
    }

    /// defaults < file < environment < command line, for one setting.
    #[test]
    fn precedence_is_default_file_env_flag() {
        // A setting no other test looks at: the environment is the whole process's.
        const VAR: &str = "SQLRAFT_RAFT_REAP_READ_ONLY_NODE_TIMEOUT";
        let file = |_: &std::path::Path| Ok("raft-reap-read-only-node-timeout = \"2s\"".into());
        let run = |extra: &[&str]| {
            let argv = ["sqlraftd", "-config", "c.toml"]
                .iter()
                .chain(extra)
                .chain(&["d"])
                .map(|s| s.to_string())
                .collect::<Vec<_>>();
            Config::load(argv, file)
                .unwrap()
                .raft
                .reap_read_only_node_timeout
        };
        assert_eq!(run(&[]), Duration::from_secs(2));
        std::env::set_var(VAR, "3s");
        assert_eq!(run(&[]), Duration::from_secs(3));
        assert_eq!(
            run(&["-raft-reap-read-only-node-timeout", "4s"]),
            Duration::from_secs(4)
        );
        std::env::remove_var(VAR);
    }

    /// Every boolean takes Go's forms from each source, and keeps its own default.
    #[test]
    fn booleans_take_go_forms_from_flags_file_and_env() {
        // A setting no other test looks at: the environment is the whole process's.
        const VAR: &str = "SQLRAFT_RAFT_REMOVE_SHUTDOWN";
        let c = load(&["d"]).unwrap();
        assert!(c.raft.shutdown_stepdown && !c.raft.remove_shutdown && !c.queue.tx);
        let c = load(&["-raft-shutdown-stepdown=false", "-write-queue-tx", "d"]).unwrap();
        assert!(!c.raft.shutdown_stepdown && c.queue.tx);
        let argv = ["sqlraftd", "-config", "c.toml", "d"].map(String::from);
        let c = Config::load(argv, |_| Ok("node-no-verify = true".into())).unwrap();
        assert!(c.tls.node_no_verify);
        std::env::set_var(VAR, "true");
        assert!(load(&["d"]).unwrap().raft.remove_shutdown);
        assert!(
            !load(&["-raft-remove-shutdown=false", "d"])
                .unwrap()
                .raft
                .remove_shutdown
        );
        std::env::remove_var(VAR);
    }

    #[test]
    fn example_config_files_parse() {
        let text = include_str!("../../config/sqlraft.toml");
        let argv = ["sqlraftd", "-config", "sqlraft.toml", "data"].map(String::from);
        let c = Config::load(argv, |_| Ok(text.to_string())).unwrap();
        assert_eq!(c.node_id.as_deref(), Some("1"));
        assert_eq!(c.raft.snap, 8192);
        assert_eq!(c.queue.timeout, Duration::from_millis(50));
    }
}

mod rqlite_9_and_10_flags {
    use std::time::Duration;

    use super::super::*;

    fn load(args: &[&str], file: &'static str) -> Result<Config, ConfigError> {
        let argv = std::iter::once("sqlraftd")
            .chain(args.iter().copied())
            .map(String::from);
        Config::load(argv, move |_| Ok(file.to_string()))
    }

    #[test]
    fn the_flags_rqlite_9_and_10_added_are_accepted() {
        let c = load(
            &[
                "-extensions-path",
                "/x/a.so,/x/dir",
                "-raft-leader-lease-timeout",
                "250ms",
                "-raft-snap-wal-size=0",
                "-node-cert",
                "n.crt",
                "-node-key",
                "n.key",
                "-node-ca-cert",
                "ca.crt",
                "-node-verify-client",
                "-node-verify-common-name",
                "member",
                "-auto-backup",
                "backup.json",
                "data",
            ],
            r#"{"version": 1, "type": "file", "interval": "${SQLRAFT_TEST_UNSET_INTERVAL}1h",
                "sub": {"dir": "/b", "name": "db.gz"}}"#,
        )
        .unwrap();
        assert_eq!(c.db.extensions_path.len(), 2);
        assert_eq!(c.raft.leader_lease_timeout, Duration::from_millis(250));
        assert_eq!(c.raft.snap_wal_size, 0);
        assert_eq!(c.tls.node_verify_common_name.as_deref(), Some("member"));
        let b = c.auto_backup.unwrap();
        assert_eq!(b.interval, Duration::from_secs(3600));
        assert!(b.compress);
        assert!(c.auto_restore.is_none());
    }

    #[test]
    fn common_names_need_client_verification_and_cloud_storage_is_refused() {
        let e = load(&["-http-verify-common-name", "app", "data"], "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("requires -http-verify-client"), "{e}");
        let e = load(
            &["-auto-restore", "r.json", "data"],
            r#"{"version": 1, "type": "gcs", "sub": {}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("-auto-restore") && e.contains("\"gcs\" is not supported"),
            "{e}"
        );
    }
}

mod deploy_examples {
    //! The deployment examples pass flags `sqlraftd` accepts.
    use super::super::*;

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
        assert_eq!(
            c.discovery.as_ref().map(|d| d.mode),
            Some(DiscoMode::DnsSrv)
        );
        assert_eq!(c.cluster.bootstrap_expect, 3);
        assert_eq!(c.node_id.as_deref(), Some("sqlraft-0"));
        assert_eq!(c.raft.adv_addr.as_deref(), Some("sqlraft-0.sqlraft:4002"));
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
        assert_eq!(c.discovery.as_ref().map(|d| d.mode), Some(DiscoMode::Dns));
        assert_eq!(
            c.discovery.as_ref().map(|d| d.config.clone()),
            Some(serde_json::json!({"name": "sqlraft.internal", "port": 4002}))
        );
    }
}

mod discovery_config {
    use super::super::*;

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
        assert_eq!(
            inline.discovery.as_ref().map(|d| d.mode),
            Some(DiscoMode::Dns)
        );
        assert_eq!(
            inline.discovery.as_ref().map(|d| d.config.clone()),
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
        assert_eq!(
            from_toml.discovery.as_ref().map(|d| d.mode),
            Some(DiscoMode::ConsulKv)
        );
        assert_eq!(from_toml.disco_key, "prod");
        assert_eq!(
            from_toml.discovery.as_ref().map(|d| d.config.clone()),
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
        assert!(load(&[
            "-disco-mode",
            "dns",
            "-bootstrap-expect",
            "3",
            "-disco-dns-hosts",
            "a:1,nonsense",
            "d"
        ])
        .is_err());
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

    #[test]
    fn discovery_config_defaults_to_rqlites_per_mode() {
        // Steps: each mode without -disco-config gets the settings rqlite uses then; the
        // DNS override list is read from -disco-dns-hosts (RQLITE_DISCO_DNS_HOSTS).
        let load = |a: &[&str]| {
            let argv = std::iter::once("sqlraftd")
                .chain(a.iter().copied())
                .map(String::from);
            Config::load(argv, |_| Err(std::io::Error::other("no file")))
        };
        let config = |a: &[&str]| {
            load(a)
                .unwrap_or_else(|e| panic!("{a:?}: {e}"))
                .discovery
                .unwrap_or_else(|| panic!("{a:?}: no discovery"))
        };
        let etcd = config(&["-disco-mode", "etcd-kv", "d"]);
        assert_eq!(
            etcd.config,
            serde_json::json!({"endpoints": ["localhost:2379"]})
        );
        assert_eq!(
            config(&["-disco-mode", "consul-kv", "d"]).config,
            serde_json::json!({})
        );
        let dns = config(&[
            "-disco-mode",
            "dns",
            "-bootstrap-expect",
            "2",
            "-disco-dns-hosts",
            "127.0.0.1:4002, 127.0.0.2:4002",
            "d",
        ]);
        assert_eq!(dns.config, serde_json::json!({"name": "rqlite"}));
        assert_eq!(
            dns.dns_hosts,
            Some(vec![
                "127.0.0.1:4002".to_string(),
                "127.0.0.2:4002".to_string()
            ])
        );
        let srv = config(&["-disco-mode", "dns-srv", "-bootstrap-expect", "2", "d"]);
        assert_eq!(
            srv.config,
            serde_json::json!({"name": "rqlite", "service": "rqlite"})
        );
        assert_eq!(srv.dns_hosts, None);
    }

    #[test]
    fn help_is_grouped_with_defaults_in_the_single_dash_spelling() {
        let h = help();
        for want in [
            "HTTP API:",
            "Raft:",
            "Cluster:",
            "Discovery:",
            "Logging:",
            "       -http-addr <",
            "[default: localhost:4001]",
            "       -raft-non-voter\n",
            "-h, --help",
        ] {
            assert!(h.contains(want), "{want:?} missing:\n{h}");
        }
        assert!(
            h.lines().all(|l| !l.trim_start().starts_with("--")),
            "a --flag left:\n{h}"
        );
    }

    #[test]
    fn log_filter_precedence() {
        let log = |level: Option<&str>| Logging {
            level: level.map(String::from),
            format: "text".into(),
        };
        // Default: info, with openraft at -raft-log-level.
        assert_eq!(log(None).filter("ERROR", None), "info,openraft=error");
        // The environment's filter is taken whole.
        assert_eq!(
            log(None).filter("ERROR", Some("debug,hyper=warn")),
            "debug,hyper=warn"
        );
        // -log-level wins over the environment and keeps openraft at its own level...
        assert_eq!(
            log(Some("debug")).filter("WARN", Some("trace")),
            "debug,openraft=warn"
        );
        // ...unless it says what openraft logs.
        assert_eq!(
            log(Some("info,openraft=debug")).filter("ERROR", None),
            "info,openraft=debug"
        );
    }
}
