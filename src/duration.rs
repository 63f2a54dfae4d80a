//! Go's duration syntax (`500ms`, `1m30s`, `1.5h`), which rqlite's flags and parameters use,
//! and Go's `Duration.String()` rendering, which its status output uses.

use std::time::Duration;

/// Parses a Go duration string (`time.ParseDuration`). Negative durations are refused (a
/// timeout or interval cannot be negative).
pub fn parse(s: &str) -> Option<Duration> {
    u64::try_from(parse_nanos(s)?)
        .ok()
        .map(Duration::from_nanos)
}

/// Go's `time.ParseDuration` as signed nanoseconds, exactly: `[-+]?([0-9]*(\.[0-9]*)?unit)+`
/// with units ns, us, µs (U+00B5 or U+03BC), ms, s, m, h; a bare `0` needs no unit.
pub fn parse_nanos(s: &str) -> Option<i64> {
    const LIMIT: u64 = 1 << 63;
    let mut s = s.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return None;
        }
        // Integer part; overflow is an error, as in Go's leadingInt.
        let mut v: u64 = 0;
        let mut i = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return None;
            }
            v = v * 10 + u64::from(s[i] - b'0');
            if v > LIMIT {
                return None;
            }
            i += 1;
        }
        let pre = i > 0;
        s = &s[i..];
        // Fraction; extra digits beyond u64 precision are ignored, as in Go's leadingFraction.
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let mut i = 0;
            let mut overflow = false;
            while i < s.len() && s[i].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(s[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i > 0;
            s = &s[i..];
        }
        if !pre && !post {
            return None;
        }
        let unit_len = s
            .iter()
            .position(|c| *c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return None;
        }
        let unit: u64 = match &s[..unit_len] {
            b"ns" => 1,
            // "µs" with U+00B5 or U+03BC.
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60 * 1_000_000_000,
            b"h" => 3_600 * 1_000_000_000,
            _ => return None,
        };
        s = &s[unit_len..];
        if v > LIMIT / unit {
            return None;
        }
        v *= unit;
        if f > 0 {
            // Go computes the fraction in float64 and truncates.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return None;
            }
        }
        total += v;
        if total > LIMIT {
            return None;
        }
    }
    if neg {
        // total <= 2^63 here, so the negation fits.
        Some(0i64.wrapping_sub_unsigned(total))
    } else {
        i64::try_from(total).ok()
    }
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
