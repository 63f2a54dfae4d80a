//! Rendering results for people: aligned tables (rqlite's look), CSV, JSON lines, `col = value`.

use serde_json::Value;

/// `.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Column,
    Csv,
    Json,
    Line,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "column" | "table" => Some(Self::Column),
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "line" => Some(Self::Line),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Column => "column",
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Line => "line",
        }
    }
}

/// A cell as text: NULL is `<nil>` as in rqlite's shell; strings unquoted.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        // A blob as an array of bytes (`.blobarray on`) prints as Go's `%v` does, as in
        // rqlite's shell: `[222 173 190 239]`.
        Value::Array(items) => {
            format!("[{}]", items.iter().map(cell).collect::<Vec<_>>().join(" "))
        }
        other => other.to_string(),
    }
}

/// "1 row affected", "2 rows affected" (rqlite says "0 row affected").
pub fn affected(n: i64) -> String {
    format!("{n} {} affected", if n > 1 { "rows" } else { "row" })
}

/// Renders the rows of one query result.
pub fn rows(mode: Mode, columns: &[String], values: &[Vec<Value>]) -> String {
    match mode {
        Mode::Column => table(columns, values),
        Mode::Csv => {
            let mut out = String::new();
            out.push_str(
                &columns
                    .iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
            for row in values {
                let cells: Vec<String> = row
                    .iter()
                    .map(|v| {
                        if v.is_null() {
                            String::new()
                        } else {
                            csv_field(&cell(v))
                        }
                    })
                    .collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
            out
        }
        Mode::Json => {
            let objs: Vec<Value> = values
                .iter()
                .map(|row| {
                    Value::Object(columns.iter().cloned().zip(row.iter().cloned()).collect())
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&Value::Array(objs)).unwrap_or_default();
            s.push('\n');
            s
        }
        Mode::Line => {
            let width = columns.iter().map(|c| c.chars().count()).max().unwrap_or(0);
            let mut out = String::new();
            for (i, row) in values.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                for (c, v) in columns.iter().zip(row) {
                    out.push_str(&format!("{c:>width$} = {}\n", cell(v)));
                }
            }
            out
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// rqlite's table: a border line between every row.
fn table(columns: &[String], values: &[Vec<Value>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    let cells: Vec<Vec<String>> = values
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let border = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |items: &[String]| -> String {
        let parts: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let s = items.get(i).map(String::as_str).unwrap_or("");
                format!(" {s}{} ", " ".repeat(w - s.chars().count()))
            })
            .collect();
        format!("|{}|\n", parts.join("|"))
    };
    let mut out = border.clone();
    out.push_str(&line(columns));
    out.push_str(&border);
    for row in &cells {
        out.push_str(&line(row));
        out.push_str(&border);
    }
    out
}

/// A JSON document as indented `key: value` lines (`.status`, `.nodes`).
pub fn yaml_like(v: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match val {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        yaml_like(val, indent + 1, out);
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(val))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_look_like_rqlites() {
        let cols = vec!["id".to_string(), "name".to_string()];
        let vals = vec![vec![json!(1), json!("alice")], vec![json!(2), Value::Null]];
        assert_eq!(
            rows(Mode::Column, &cols, &vals),
            "+----+-------+\n| id | name  |\n+----+-------+\n| 1  | alice |\n+----+-------+\n| 2  | <nil> |\n+----+-------+\n"
        );
        assert_eq!(rows(Mode::Csv, &cols, &vals), "id,name\n1,alice\n2,\n");
        assert_eq!(cell(&json!([222, 173, 0])), "[222 173 0]");
        assert_eq!(
            rows(Mode::Line, &cols, &vals),
            "  id = 1\nname = alice\n\n  id = 2\nname = <nil>\n"
        );
        assert_eq!(affected(0), "0 row affected");
        assert_eq!(affected(2), "2 rows affected");
    }
}
