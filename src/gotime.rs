//! Go's duration syntax (`500ms`, `1m30s`, `1.5h`), which rqlite's flags and parameters use,
//! and Go's `Duration.String()` rendering, which its status output uses.

use std::time::Duration;

/// Parses a Go duration string (`time.ParseDuration`). Negative durations are refused.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        // A negative timeout or interval has no meaning here.
        return (s == "-0").then_some(Duration::ZERO);
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos_per;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total.round() as u64))
}

/// Renders like Go's `Duration.String()`: `0s`, `560ns`, `210µs`, `1.5ms`, `10s`, `1m25.17s`.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let trim = |whole: u128, frac: u128, digits: usize, unit: &str| -> String {
        if frac == 0 {
            return format!("{whole}{unit}");
        }
        let f = format!("{frac:0digits$}");
        format!("{whole}.{}{unit}", f.trim_end_matches('0'))
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return trim(ns / 1_000, ns % 1_000, 3, "\u{b5}s");
    }
    if ns < 1_000_000_000 {
        return trim(ns / 1_000_000, ns % 1_000_000, 6, "ms");
    }
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&trim(s, frac, 9, "s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(parse("1ns"), Some(Duration::from_nanos(1)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        for bad in ["", "5", "1x", "abc", "s", "1..5s", "-1s"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_nanos(560)), "560ns");
        assert_eq!(format(Duration::from_micros(210)), "210\u{b5}s");
        assert_eq!(format(Duration::from_millis(50)), "50ms");
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(
            format(Duration::from_nanos(85_176_021_664)),
            "1m25.176021664s"
        );
        assert_eq!(format(Duration::from_secs(3600)), "1h0m0s");
    }
}
