//! SQL and the dot commands.

use serde_json::{json, Value};

use super::format::{self, Mode};
use super::{run_script, Session};

/// Whether the loop goes on.
pub enum Flow {
    Continue,
    Exit,
}

const HELP: &str = "\
.backup FILE                                  Write database backup to FILE
.blobarray on|off                             Display BLOB data as byte arrays
.boot FILE                                    Boot the node using a SQLite file read from FILE
.changes on|off                               Show rows affected by statements
.consistency [none|weak|linearizable|strong]  Show or set read consistency level
.dump FILE [TABLE,TABLE...]                   Dump the database in SQL text to FILE, optionally limited to TABLEs
.exit                                         Exit this program
.expvar                                       Show expvar information for connected node
.extensions                                   Show loaded SQLite extensions
.help                                         Show this message
.indexes                                      Show names of all indexes
.leader                                       Show the current leader
.mode [column|csv|json|line]                  Show or set the output mode
.nodes [all]                                  Show connection status of voting nodes. 'all' to show all nodes
.output [FILE]                                Send output to FILE, or back to the screen
.quit                                         Exit this program
.read FILE                                    Execute the SQL statements in FILE
.ready                                        Show ready status for connected node
.remove NODEID                                Remove node NODEID from the cluster
.restore FILE                                 Load using SQLite file or SQL dump contained in FILE
.schema                                       Show CREATE statements for all tables
.show                                         Show the current settings
.snapshot [TRAILINGLOGS]                      Request a Raft snapshot and log truncation on connected node
.status                                       Show status and diagnostic information for connected node
.stepdown [NODEID]                            Instruct the leader to stepdown, optionally specifying new Leader node
.sysdump FILE                                 Dump system diagnostics to FILE
.tables                                       List names of tables
.timer on|off                                 Turn query timings on or off
";

/// Runs one SQL statement through `/db/request` and prints its result.
pub fn sql(s: &mut Session, stmt: &str) -> Result<(), String> {
    if let Some(c) = super::tx::control(stmt) {
        return super::tx::run(s, c);
    }
    let mut path = match &s.tx {
        Some(id) => format!("/db/tx/{id}/request?timings"),
        None => format!("/db/request?timings&level={}", s.consistency),
    };
    if s.blob_array {
        path.push_str("&blob_array");
    }
    let reply = match s.tx {
        Some(_) => super::tx::post(s, &path, &json!([stmt]))?,
        None => s.client.post_json(&path, &json!([stmt]))?,
    };
    if let Some(e) = reply.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    let results = reply["results"].as_array().cloned().unwrap_or_default();
    for r in &results {
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            return Err(e.to_string());
        }
        if let Some(cols) = r.get("columns").and_then(Value::as_array) {
            let columns: Vec<String> = cols.iter().map(format::cell).collect();
            let values: Vec<Vec<Value>> = r
                .get("values")
                .and_then(Value::as_array)
                .map(|rows| {
                    rows.iter()
                        .map(|row| row.as_array().cloned().unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            let text = format::rows(s.mode, &columns, &values);
            s.out(&text);
        } else if s.changes {
            let n = r.get("rows_affected").and_then(Value::as_i64).unwrap_or(0);
            s.out(&format!("{}\n", format::affected(n)));
        }
    }
    if s.timer {
        let t = reply.get("time").and_then(Value::as_f64).unwrap_or(0.0);
        // Go's `%f`, as rqlite's shell prints it.
        s.out(&format!("Run Time: {t:.6} seconds\n"));
    }
    Ok(())
}

fn on_off(arg: Option<&str>, what: &str) -> Result<bool, String> {
    match arg {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err(format!("usage: .{what} on|off")),
    }
}

fn need<'a>(arg: Option<&'a str>, usage: &str) -> Result<&'a str, String> {
    arg.ok_or_else(|| format!("usage: {usage}"))
}

fn write_file(path: &str, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("{path}: {e}"))
}

/// `.status KEY` and `.expvar KEY`: only that top-level key of the document, as rqlite's
/// shell shows it; the whole document without one.
fn only_key(mut doc: Value, key: Option<&str>, from: &str) -> Result<Value, String> {
    let Some(key) = key else { return Ok(doc) };
    match doc.get_mut(key).map(Value::take) {
        Some(v) => Ok(serde_json::json!({ key: v })),
        None => Err(format!("{from} has no key {key}")),
    }
}

fn print_doc(s: &mut Session, v: &Value) {
    let mut out = String::new();
    format::yaml_like(v, 0, &mut out);
    s.out(&out);
}

/// The tables of `.dump FILE a, b`: the words after the file joined, split at commas and
/// trimmed, as rqlite's shell reads them (`a,b` and `a, b` name the same two tables);
/// encoded for the query string. `None` when no table is named.
fn tables_param(words: &[&str]) -> Option<String> {
    let joined = words.join(" ");
    let names: Vec<&str> = joined
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    (!names.is_empty())
        .then(|| form_urlencoded::byte_serialize(names.join(",").as_bytes()).collect::<String>())
}

/// Runs one dot command (also `QUIT`/`EXIT`).
pub fn dot(s: &mut Session, line: &str) -> Result<Flow, String> {
    let mut parts = line.split_whitespace();
    let cmd = parts.next().unwrap_or("").to_ascii_lowercase();
    let arg = parts.next();
    let rest: Vec<&str> = parts.collect();
    match cmd.as_str() {
        ".exit" | ".quit" | "exit" | "quit" => return Ok(Flow::Exit),
        ".help" => s.out(HELP),
        ".tables" => sql(s, "SELECT name FROM sqlite_master WHERE type='table'")?,
        ".schema" => sql(s, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")?,
        ".indexes" => sql(
            s,
            "SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL",
        )?,
        ".nodes" => {
            let path = if arg == Some("all") {
                "/nodes?nonvoters"
            } else {
                "/nodes"
            };
            let v = s.client.get_json(path)?;
            print_doc(s, &v);
        }
        ".leader" => {
            let v = s.client.get_json("/leader")?;
            print_doc(s, &v);
        }
        ".status" => {
            let v = s.client.get_json("/status")?;
            print_doc(s, &only_key(v, arg, "/status")?);
        }
        ".expvar" => {
            let v = s.client.get_json("/debug/vars")?;
            print_doc(s, &only_key(v, arg, "/debug/vars")?);
        }
        // As rqlite's shell: the names in `/status?key=extensions`, one a line.
        ".extensions" => {
            let v = s.client.get_json("/status?key=extensions")?;
            if let Some(names) = v.get("names").and_then(|n| n.as_array()) {
                for n in names.iter().filter_map(|n| n.as_str()) {
                    s.out(&format!("{n}\n"));
                }
            }
        }
        ".ready" => {
            // rqlite's shell answers in one word; the node's reasons follow when it is not.
            let r = s.client.send("GET", "/readyz", None)?;
            match r.status {
                200 => s.out("ready\n"),
                401 => return Err("unauthorized (check -u user:password)".into()),
                _ => {
                    let mut text = String::from("not ready\n");
                    for reason in r.text().lines().filter(|l| !l.trim().is_empty()) {
                        text.push_str(&format!("  {}\n", reason.trim()));
                    }
                    s.out(&text);
                }
            }
        }
        ".timer" => s.timer = on_off(arg, "timer")?,
        ".changes" => s.changes = on_off(arg, "changes")?,
        ".blobarray" => s.blob_array = on_off(arg, "blobarray")?,
        ".consistency" => match arg {
            None => {
                let c = s.consistency.clone();
                s.out(&format!("{c}\n"));
            }
            Some(l @ ("none" | "weak" | "linearizable" | "strong" | "auto")) => {
                s.consistency = l.to_string()
            }
            Some(other) => return Err(format!("invalid consistency level: {other}")),
        },
        ".mode" => match arg {
            None => {
                let m = s.mode.name();
                s.out(&format!("{m}\n"));
            }
            Some(m) => {
                s.mode = Mode::parse(m)
                    .ok_or_else(|| format!("unknown mode {m}: use column, csv, json or line"))?
            }
        },
        ".backup" => {
            let file = need(arg, ".backup FILE")?;
            let r = s.client.ok("GET", "/db/backup", None)?;
            write_file(file, &r.body)?;
            s.out("backup file written successfully\n");
        }
        ".dump" => {
            let file = need(arg, ".dump FILE [TABLE,...]")?;
            let path = match tables_param(&rest) {
                Some(t) => format!("/db/backup?fmt=sql&tables={t}"),
                None => "/db/backup?fmt=sql".to_string(),
            };
            let r = s.client.ok("GET", &path, None)?;
            write_file(file, &r.body)?;
            s.out("SQL text file written successfully\n");
        }
        ".restore" => {
            let file = need(arg, ".restore FILE")?;
            let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let ct = if data.starts_with(b"SQLite format 3\0") {
                "application/octet-stream"
            } else {
                "text/plain"
            };
            let r = s.client.ok("POST", "/db/load", Some((data, ct)))?;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if let Some(e) = v["results"]
                .as_array()
                .and_then(|a| a.iter().find_map(|x| x.get("error")))
            {
                return Err(format::cell(e));
            }
            s.out("Database restored successfully.\n");
        }
        ".boot" => {
            let file = need(arg, ".boot FILE")?;
            let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            s.client
                .ok("POST", "/boot", Some((data, "application/octet-stream")))?;
            s.out("Node booted successfully.\n");
        }
        ".read" => {
            let file = need(arg, ".read FILE")?;
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let mut ok = true;
            run_script(s, &text, &mut ok);
            if !ok {
                return Err(format!("{file}: not every statement succeeded"));
            }
        }
        ".output" => {
            s.output = match arg {
                None | Some("stdout") => None,
                Some(f) => Some(std::fs::File::create(f).map_err(|e| format!("{f}: {e}"))?),
            };
        }
        ".remove" => {
            let id = need(arg, ".remove NODEID")?;
            let body = json!({ "id": id }).to_string().into_bytes();
            s.client
                .ok("DELETE", "/remove", Some((body, "application/json")))?;
        }
        ".stepdown" => {
            let body = arg.map(|id| {
                (
                    json!({ "id": id }).to_string().into_bytes(),
                    "application/json",
                )
            });
            s.client.ok("POST", "/leader?wait", body)?;
        }
        ".snapshot" => {
            let path = match arg {
                Some(n) => format!("/snapshot?trailing_logs={n}"),
                None => "/snapshot".to_string(),
            };
            s.client.ok("POST", &path, None)?;
        }
        ".sysdump" => {
            let file = need(arg, ".sysdump FILE")?;
            // Every node the connected one knows (voters and non-voters), else just this one.
            let mut urls: Vec<String> = match s.client.get_json("/nodes?nonvoters") {
                Ok(Value::Object(nodes)) => nodes
                    .values()
                    .filter_map(|n| {
                        n.get("api_addr")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if urls.is_empty() {
                urls.push(s.client.current_url());
            }
            let mut dump = String::new();
            for base in &urls {
                for path in ["/status?pretty", "/nodes?nonvoters&pretty", "/debug/vars"] {
                    dump.push_str(&format!("{base}{path}:\n"));
                    match s.client.get_url(&format!("{base}{path}")) {
                        Ok(r) => dump.push_str(&r.text()),
                        Err(e) => dump.push_str(&format!("ERR! {e}")),
                    }
                    dump.push_str("\n\n");
                }
            }
            write_file(file, dump.as_bytes())?;
            s.out("sysdump written successfully\n");
        }
        ".show" => {
            let text = format!(
                "     host: {}\n     mode: {}\n    timer: {}\n  changes: {}\nblobarray: {}\nconsistency: {}\n   output: {}\n",
                s.client.current_url(),
                s.mode.name(),
                if s.timer { "on" } else { "off" },
                if s.changes { "on" } else { "off" },
                if s.blob_array { "on" } else { "off" },
                s.consistency,
                if s.output.is_some() { "file" } else { "stdout" },
            );
            s.out(&text);
        }
        other => {
            return Err(format!(
                "unknown command {other}; enter \".help\" for usage hints"
            ))
        }
    }
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_tables_are_split_at_commas_whatever_the_spaces() {
        // What the node reads back from the query string.
        let tables = |words: &[&str]| {
            tables_param(words).map(|p| {
                form_urlencoded::parse(format!("tables={p}").as_bytes())
                    .map(|(_, v)| v.into_owned())
                    .collect::<String>()
            })
        };
        assert_eq!(tables(&["people,foo"]).as_deref(), Some("people,foo"));
        assert_eq!(tables(&["people,", "foo"]).as_deref(), Some("people,foo"));
        assert_eq!(tables(&["people", ",foo"]).as_deref(), Some("people,foo"));
        assert_eq!(tables(&["my", "table"]).as_deref(), Some("my table"));
        assert_eq!(tables(&["a&b"]).as_deref(), Some("a&b"));
        assert_eq!(tables(&[]), None);
        assert_eq!(tables(&[",", " "]), None);
    }
}
