//! Go's time handling, as rqlite's SQLite driver (mattn/go-sqlite3) applies it to columns
//! declared `DATE`, `DATETIME` or `TIMESTAMP`, and as Go's JSON encoder prints the result.
//!
//! Owns: the driver's integer rule (unix seconds, or milliseconds past 1e12), its text rule
//! (strip one trailing `Z`, try nine layouts with Go's parser semantics, else the zero time),
//! and `time.Time.MarshalText` (RFC 3339 with nanoseconds, trailing zeros trimmed).
//! Does not: use a date crate; the civil-date arithmetic is written out here so that the
//! edge cases follow Go, not another library.

/// A wall-clock time with a fixed UTC offset, as Go's `time.Time` would hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    nsec: u32,
    /// Seconds east of UTC; 0 prints as `Z`.
    offset: i32,
}

/// Go's zero `time.Time`, what the driver returns for text it cannot parse.
const ZERO: GoTime = GoTime {
    year: 1,
    month: 1,
    day: 1,
    hour: 0,
    min: 0,
    sec: 0,
    nsec: 0,
    offset: 0,
};

/// go-sqlite3: an INTEGER in a time column is unix seconds, or unix milliseconds when its
/// magnitude is over 1e12 (the multiplication wraps like Go's int64 arithmetic).
pub(crate) fn from_integer(v: i64) -> GoTime {
    if !(-1_000_000_000_000..=1_000_000_000_000).contains(&v) {
        let ns = v.wrapping_mul(1_000_000);
        from_unix(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    } else {
        from_unix(v, 0)
    }
}

/// go-sqlite3: TEXT in a time column, with one trailing `Z` trimmed, parsed with the first
/// matching layout of `SQLiteTimestampFormats`; the zero time when none matches.
pub(crate) fn from_text(text: &[u8]) -> GoTime {
    let text = text.strip_suffix(b"Z").unwrap_or(text);
    LAYOUTS
        .iter()
        .find_map(|layout| parse(layout, text))
        .unwrap_or(ZERO)
}

/// `time.Time.MarshalText`: RFC 3339 with nanoseconds (trailing zeros trimmed), `Z` for
/// UTC. Go refuses years outside 0..=9999 and offsets of 24 hours or more, and so do we.
pub(crate) fn marshal_text(t: &GoTime) -> Result<String, String> {
    if !(0..=9999).contains(&t.year) {
        return Err("Time.MarshalText: year outside of range [0,9999]".to_string());
    }
    let minutes = t.offset / 60;
    if minutes.abs() / 60 >= 24 {
        return Err("Time.MarshalText: timezone hour outside of range [0,23]".to_string());
    }
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.min, t.sec
    );
    if t.nsec > 0 {
        let frac = format!("{:09}", t.nsec);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if minutes == 0 {
        s.push('Z');
    } else {
        let sign = if minutes < 0 { '-' } else { '+' };
        let m = minutes.abs();
        s.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
    }
    Ok(s)
}

/// A unix time as Go's layout `20060102150405` in UTC (timestamped backup names).
pub(crate) fn utc_compact(unix_secs: i64) -> String {
    let t = from_unix(unix_secs, 0);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.min, t.sec
    )
}

fn from_unix(secs: i64, nsec: u32) -> GoTime {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    GoTime {
        year,
        month,
        day,
        hour: sod / 3600,
        min: sod / 60 % 60,
        sec: sod % 60,
        nsec,
        offset: 0,
    }
}

/// Days since 1970-01-01 to the proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in(month: u32, year: i64) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One element of a Go layout string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum El {
    /// `2006`
    Year,
    /// `01`
    Month,
    /// `02`
    Day,
    /// `15` (one or two digits)
    Hour,
    /// `04`
    Minute,
    /// `05`
    Second,
    /// `.999999999` (optional)
    Frac,
    /// `-07:00`
    Zone,
    /// Any other byte, matched literally.
    Lit(u8),
}

/// go-sqlite3's `SQLiteTimestampFormats`, in order.
const LAYOUTS: [&str; 9] = [
    "2006-01-02 15:04:05.999999999-07:00",
    "2006-01-02T15:04:05.999999999-07:00",
    "2006-01-02 15:04:05.999999999",
    "2006-01-02T15:04:05.999999999",
    "2006-01-02 15:04:05",
    "2006-01-02T15:04:05",
    "2006-01-02 15:04",
    "2006-01-02T15:04",
    "2006-01-02",
];

/// Go's `nextStdChunk`, for the elements these layouts use: the element at the start of
/// `layout` and the rest of the layout.
fn next_chunk(layout: &str) -> Option<(El, &str)> {
    const STD: [(&str, El); 8] = [
        ("2006", El::Year),
        ("-07:00", El::Zone),
        (".999999999", El::Frac),
        ("01", El::Month),
        ("02", El::Day),
        ("15", El::Hour),
        ("04", El::Minute),
        ("05", El::Second),
    ];
    if let Some((std, el)) = STD.iter().find(|(std, _)| layout.starts_with(std)) {
        return Some((*el, &layout[std.len()..]));
    }
    let (&b, _) = layout.as_bytes().split_first()?;
    Some((El::Lit(b), &layout[1..]))
}

fn digit(v: &[u8], i: usize) -> bool {
    v.get(i).is_some_and(u8::is_ascii_digit)
}

/// Go's `getnum`: one or two digits, exactly two when `fixed`.
fn getnum(v: &[u8], fixed: bool) -> Option<(u32, &[u8])> {
    if !digit(v, 0) {
        return None;
    }
    if !digit(v, 1) {
        return (!fixed).then(|| (u32::from(v[0] - b'0'), &v[1..]));
    }
    Some((
        u32::from(v[0] - b'0') * 10 + u32::from(v[1] - b'0'),
        &v[2..],
    ))
}

/// Go's `skip` for one layout byte: it must match, except that a space matches any run of
/// spaces (or the end of the value).
fn skip(v: &[u8], lit: u8) -> Option<&[u8]> {
    if lit == b' ' {
        if v.first().is_some_and(|&b| b != b' ') {
            return None;
        }
        return Some(trim_spaces(v));
    }
    match v.split_first() {
        Some((&b, rest)) if b == lit => Some(rest),
        _ => None,
    }
}

fn trim_spaces(mut v: &[u8]) -> &[u8] {
    while let Some((b' ', rest)) = v.split_first() {
        v = rest;
    }
    v
}

/// Go's `parseNanoseconds`: `v[0]` is the separator, digits past the ninth are dropped.
fn nanos(v: &[u8], nbytes: usize) -> Option<u32> {
    let nbytes = nbytes.min(10);
    let digits = v.get(1..nbytes)?;
    let mut ns: u32 = 0;
    for &d in digits {
        ns = ns * 10 + u32::from(d - b'0');
    }
    for _ in digits.len()..9 {
        ns *= 10;
    }
    Some(ns)
}

fn is_sep(b: Option<&u8>) -> bool {
    matches!(b, Some(b'.' | b','))
}

/// Go's `time.ParseInLocation(layout, value, time.UTC)` for the elements used here.
fn parse(layout: &str, value: &[u8]) -> Option<GoTime> {
    let mut v = value;
    let mut t = GoTime { offset: 0, ..ZERO };
    let mut layout = layout;
    while let Some((el, after)) = next_chunk(layout) {
        layout = after;
        match el {
            El::Lit(b) => v = skip(v, b)?,
            El::Year => {
                let y = v.get(..4).filter(|y| y.iter().all(u8::is_ascii_digit))?;
                t.year = y.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
                v = &v[4..];
            }
            El::Month => {
                let (m, rest) = getnum(v, true)?;
                if !(1..=12).contains(&m) {
                    return None;
                }
                t.month = m;
                v = rest;
            }
            El::Day => (t.day, v) = getnum(v, true)?,
            El::Hour => {
                let (h, rest) = getnum(v, false)?;
                if h >= 24 {
                    return None;
                }
                (t.hour, v) = (h, rest);
            }
            El::Minute => {
                let (m, rest) = getnum(v, true)?;
                if m >= 60 {
                    return None;
                }
                (t.min, v) = (m, rest);
            }
            El::Second => {
                let (s, rest) = getnum(v, true)?;
                if s >= 60 {
                    return None;
                }
                (t.sec, v) = (s, rest);
                // Go accepts a fraction after the seconds even when the layout has none.
                let layout_has_frac = matches!(next_chunk(layout), Some((El::Frac, _)));
                if !layout_has_frac && v.len() >= 2 && is_sep(v.first()) && digit(v, 1) {
                    let n = 2 + v[2..].iter().take_while(|b| b.is_ascii_digit()).count();
                    t.nsec = nanos(v, n)?;
                    v = &v[n..];
                }
            }
            El::Frac => {
                if v.len() >= 2 && is_sep(v.first()) && digit(v, 1) {
                    let n = 1 + v[1..].iter().take_while(|b| b.is_ascii_digit()).count();
                    t.nsec = nanos(v, n)?;
                    v = &v[n..];
                }
            }
            El::Zone => {
                if v.len() < 6 || v[3] != b':' {
                    return None;
                }
                let (hh, _) = getnum(&v[1..3], true)?;
                let (mm, _) = getnum(&v[4..6], true)?;
                // Go's range test uses `>`: "+24:00" parses.
                if hh > 24 || mm > 60 {
                    return None;
                }
                let off = ((hh * 60 + mm) * 60) as i32;
                t.offset = match v[0] {
                    b'+' => off,
                    b'-' => -off,
                    _ => return None,
                };
                v = &v[6..];
            }
        }
    }
    if !v.is_empty() || t.day < 1 || t.day > days_in(t.month, t.year) {
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        marshal_text(&from_text(s.as_bytes())).unwrap_or_else(|e| e)
    }

    fn int(v: i64) -> String {
        marshal_text(&from_integer(v)).unwrap_or_else(|e| e)
    }

    #[test]
    fn golden_c120_time_columns() {
        assert_eq!(text("2024-01-02"), "2024-01-02T00:00:00Z");
        assert_eq!(text("2024-01-02 03:04:05"), "2024-01-02T03:04:05Z");
        assert_eq!(text("2024-01-02T03:04:05.123Z"), "2024-01-02T03:04:05.123Z");
        assert_eq!(int(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(int(1_700_000_000_000), "2023-11-14T22:13:20Z");
        for bad in ["not a date", "", "now"] {
            assert_eq!(text(bad), "0001-01-01T00:00:00Z");
        }
    }

    #[test]
    fn offsets_fractions_and_go_parser_leniency() {
        for (input, want) in [
            ("2024-01-02 03:04:05+02:00", "2024-01-02T03:04:05+02:00"),
            ("2024-01-02T03:04:05.5-07:30", "2024-01-02T03:04:05.5-07:30"),
            ("2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05Z"),
            ("2024-01-02 03:04", "2024-01-02T03:04:00Z"),
            ("2024-01-02T3:04", "2024-01-02T03:04:00Z"),
            ("2024-01-02   03:04:05", "2024-01-02T03:04:05Z"),
            ("2024-01-02 03:04:05,25", "2024-01-02T03:04:05.25Z"),
            ("2021-10-22 19:39:32.016087", "2021-10-22T19:39:32.016087Z"),
            (
                "2024-01-02 03:04:05.1234567891234",
                "2024-01-02T03:04:05.123456789Z",
            ),
            // Only one trailing Z is trimmed; a lone Z after a date is fine.
            ("2024-01-02Z", "2024-01-02T00:00:00Z"),
            ("2024-01-02ZZ", "0001-01-01T00:00:00Z"),
        ] {
            assert_eq!(text(input), want, "{input:?}");
        }
    }

    #[test]
    fn invalid_dates_are_the_zero_time() {
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-02",
            "24-01-02",
            "2024-01-02 24:00:00",
            "2024-01-02 03:60:00",
            "2024-01-02 03:04:60",
            "2024-01-02 03:04:05 extra",
            "2024-01-02 03:04:05+2:00",
        ] {
            assert_eq!(text(bad), "0001-01-01T00:00:00Z", "{bad}");
        }
        assert_eq!(text("2024-02-29"), "2024-02-29T00:00:00Z");
    }

    #[test]
    fn integers_before_the_epoch_and_out_of_range() {
        assert_eq!(int(0), "1970-01-01T00:00:00Z");
        assert_eq!(int(-1), "1969-12-31T23:59:59Z");
        assert_eq!(int(-1_000_000_000_001), "1938-04-24T22:13:19.999Z");
        assert_eq!(int(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(
            int(253_402_300_800),
            "Time.MarshalText: year outside of range [0,9999]"
        );
        assert_eq!(int(-62_167_219_200), "0000-01-01T00:00:00Z");
        assert_eq!(
            int(-62_167_219_201),
            "Time.MarshalText: year outside of range [0,9999]"
        );
        // The millisecond multiplication wraps as in Go; it must not panic.
        let _ = (int(i64::MAX), int(i64::MIN));
    }

    #[test]
    fn offsets_of_a_day_do_not_marshal() {
        assert_eq!(
            text("2024-01-02 03:04:05+24:00"),
            "Time.MarshalText: timezone hour outside of range [0,23]"
        );
        assert_eq!(text("2024-01-02 03:04:05+25:00"), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn civil_dates_round_trip_over_four_centuries() {
        // Every day from 1600 to 2400 advances the calendar by exactly one day.
        let mut prev = civil_from_days(-135_140 - 1);
        for d in -135_140..156_000 {
            let cur = civil_from_days(d);
            let (py, pm, pd) = prev;
            let expected = if pd < days_in(pm, py) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {d}");
            prev = cur;
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
