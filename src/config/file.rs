//! The TOML config file (`-config FILE`), fed to the flags' own definitions as defaults.
//!
//! Keys are the flags' long names (`http-addr = "..."`, `raft-snap = 100`); a `[discovery]`
//! table holds `mode`, `key` and `config` (a table, or JSON text / a file path as with
//! `-disco-config`). Each value becomes the default of its flag, so precedence is what clap
//! gives: built-in default < file < environment < command line. An unknown key is refused.

use clap::Command;

use super::ConfigError;

/// Makes every setting of `text` the default of its flag in `cmd`.
pub(crate) fn apply(mut cmd: Command, text: &str, path: &str) -> Result<Command, ConfigError> {
    let file_err = |msg: String| ConfigError::File {
        path: path.to_string(),
        msg,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
    let mut settings: Vec<(String, String)> = Vec::new();
    for (key, value) in table {
        if key == "discovery" {
            let toml::Value::Table(d) = value else {
                return Err(file_err("[discovery] must be a table".into()));
            };
            for (k, v) in d {
                let flag = match k.as_str() {
                    "mode" => "disco-mode",
                    "key" => "disco-key",
                    "config" => "disco-config",
                    other => {
                        return Err(file_err(format!(
                            "unknown key `{other}` in [discovery] (mode, key, config)"
                        )))
                    }
                };
                let text = match v {
                    // A table is the backend's settings themselves, as JSON.
                    toml::Value::Table(t) => serde_json::to_string(&t)
                        .map_err(|e| file_err(format!("[discovery] config: {e}")))?,
                    other => scalar(&other).ok_or_else(|| {
                        file_err(format!("[discovery] {k}: expected a string or a table"))
                    })?,
                };
                settings.push((flag.to_string(), text));
            }
            continue;
        }
        let text = scalar(&value).ok_or_else(|| {
            file_err(format!("{key}: expected a string, number, boolean or list"))
        })?;
        settings.push((key, text));
    }
    for (flag, value) in settings {
        let id = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
            .map(|a| a.get_id().clone())
            .ok_or_else(|| file_err(format!("unknown key `{flag}` (keys are the flags' names)")))?;
        cmd = cmd.mut_arg(id, |a| a.default_value(value));
    }
    Ok(cmd)
}

/// A value as it would be written on the command line (lists comma-separated).
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        toml::Value::Datetime(_) | toml::Value::Table(_) => None,
    }
}
