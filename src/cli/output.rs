//! Output helpers for the CLI: kubectl-style aligned tables, key-value blocks, JSON,
//! ages ("5m3s"), sizes, and writing to stdout without panicking on a closed pipe.

use std::io::Write;

use serde::Serialize;

/// How command results are printed (`-o/--output`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns with a header in capitals.
    #[default]
    Table,
    /// The server's JSON, pretty-printed.
    Json,
}

/// Writes `text` to stdout. A closed pipe (`strata app list | head -1`) is not an
/// error worth reporting, so write failures are ignored.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes `text` and a newline to stdout (see [`emit`]).
pub fn emit_line(text: &str) {
    emit(&format!("{text}\n"));
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text);
    Ok(())
}

/// A table printed kubectl-style: no borders, a header in capitals, columns
/// left-aligned and separated by three spaces, no trailing whitespace.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Space between columns.
const GAP: usize = 3;

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped. Newlines and
    /// tabs in a cell become spaces so one row stays on one line.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(|c| {
                c.into()
                    .chars()
                    .map(|ch| if ch.is_control() { ' ' } else { ch })
                    .collect()
            })
            .take(self.header.len())
            .collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row (header first), each ending in a newline.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - width(cell) + GAP;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout, or `empty` on stderr when it has no rows.
    pub fn print_or(&self, empty: &str) {
        if self.is_empty() {
            eprintln!("{empty}");
        } else {
            emit(&self.render());
        }
    }
}

/// `Label:   value` lines with the values aligned (`strata app show`). Empty values
/// are left out.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    lines: Vec<(String, String)>,
}

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    pub fn add(&mut self, label: &str, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.lines.push((format!("{label}:"), value));
        }
    }

    pub fn render(&self) -> String {
        let width = self
            .lines
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.lines {
            let pad = width - label.chars().count() + 2;
            out.push_str(label);
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(value);
            out.push('\n');
        }
        out
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Parses an RFC 3339 timestamp (`2026-01-02T03:04:05.678Z`, `...+02:00`) to Unix
/// seconds.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let s = text.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Leap seconds (60) are accepted and land on the next second.
    if second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = &rest[1..];
            if hm.len() != 5 || hm.as_bytes()[2] != b':' {
                return None;
            }
            let (h, m): (i64, i64) = (hm[..2].parse().ok()?, hm[3..].parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration the way kubectl shows ages: `45s`, `5m3s`, `42m`, `3h5m`, `20h`,
/// `2d4h`, `12d`, `1y30d`. Negative durations (clock skew) show as `0s`.
pub fn format_age(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;
    let with = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match s {
        s if s < MIN => format!("{s}s"),
        s if s < 10 * MIN => with(s / MIN, "m", s % MIN, "s"),
        s if s < 3 * HOUR => format!("{}m", s / MIN),
        s if s < 8 * HOUR => with(s / HOUR, "h", s % HOUR / MIN, "m"),
        s if s < 2 * DAY => format!("{}h", s / HOUR),
        s if s < 8 * DAY => with(s / DAY, "d", s % DAY / HOUR, "h"),
        s if s < 2 * YEAR => format!("{}d", s / DAY),
        s => with(s / YEAR, "y", s % YEAR / DAY, "d"),
    }
}

/// The age of an RFC 3339 timestamp at `now` (Unix seconds), or `-` when it does not
/// parse.
pub fn age_since(timestamp: &str, now: f64) -> String {
    match parse_rfc3339(timestamp) {
        Some(t) => format_age(now - t),
        None => "-".to_string(),
    }
}

/// A number without a needless fraction: `2`, `1.5`, `0.25`.
pub fn format_number(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Megabytes for people: `512M`, `4G`, `1.5G`, `15.6G`.
pub fn format_mb(mb: f64) -> String {
    if mb.abs() < 1024.0 {
        format!("{}M", format_number(mb.round()))
    } else {
        let gb = mb / 1024.0;
        format!("{}G", format_number((gb * 10.0).round() / 10.0))
    }
}

/// A task state without its `TASK_` prefix: `RUNNING`.
pub fn short_state(state: &str) -> &str {
    state.strip_prefix("TASK_").unwrap_or(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_space() {
        let mut t = Table::new(&["id", "instances", "deployment"]);
        t.row(["web", "3", "update 1/3"]);
        t.row(["a-much-longer-id", "10", ""]);
        assert_eq!(
            t.render(),
            "ID                 INSTANCES   DEPLOYMENT\n\
             web                3           update 1/3\n\
             a-much-longer-id   10\n"
        );
    }

    #[test]
    fn table_pads_short_rows_and_flattens_newlines() {
        let mut t = Table::new(&["a", "b"]);
        t.row(["x"]);
        t.row(["one\ntwo", "z", "dropped"]);
        assert_eq!(t.render(), "A         B\nx\none two   z\n");
        assert!(!t.is_empty());
        assert!(Table::new(&["a"]).is_empty());
        assert_eq!(Table::new(&["only"]).render(), "ONLY\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(&["name", "x"]);
        t.row(["héé", "1"]);
        assert_eq!(t.render(), "NAME   X\nhéé    1\n");
    }

    #[test]
    fn fields_align_and_skip_empty_values() {
        let mut f = Fields::new();
        f.add("ID", "web");
        f.add("Image", "");
        f.add("Instances", "3");
        assert_eq!(f.render(), "ID:         web\nInstances:  3\n");
    }

    #[test]
    fn rfc3339_parses_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Some(1_709_208_000.0));
        assert_eq!(
            parse_rfc3339("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000.0)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T11:30:00-00:30"),
            Some(1_709_208_000.0)
        );
        let frac = parse_rfc3339("2024-02-29T12:00:00.25Z").unwrap();
        assert!((frac - 1_709_208_000.25).abs() < 1e-6);
        let nanos = parse_rfc3339("2024-02-29T12:00:00.123456789Z").unwrap();
        assert!((nanos - 1_709_208_000.123_457).abs() < 1e-5);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1.0));
    }

    #[test]
    fn rfc3339_refuses_garbage() {
        for bad in [
            "",
            "yesterday",
            "2024-02-29",
            "2024-02-29T12:00:00",
            "2024-13-01T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-02-29T12:00:00.Z",
            "2024-02-29T12:00:00+0200",
            "2024-02-29T12:00:00 UTC",
            "2024-02-29X12:00:00Z",
            "2024-0a-29T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (-5.0, "0s"),
            (f64::NAN, "0s"),
            (0.4, "0s"),
            (45.0, "45s"),
            (59.9, "59s"),
            (60.0, "1m"),
            (303.0, "5m3s"),
            (599.0, "9m59s"),
            (600.0, "10m"),
            (42.0 * 60.0 + 30.0, "42m"),
            (3.0 * 3600.0, "3h"),
            (3.0 * 3600.0 + 5.0 * 60.0, "3h5m"),
            (20.0 * 3600.0, "20h"),
            (47.0 * 3600.0 + 59.0 * 60.0, "47h"),
            (2.0 * 86400.0 + 4.0 * 3600.0, "2d4h"),
            (12.0 * 86400.0, "12d"),
            (730.0 * 86400.0 + 30.0 * 86400.0, "2y30d"),
            (730.0 * 86400.0, "2y"),
        ];
        for (secs, want) in cases {
            assert_eq!(format_age(secs), want, "{secs}");
        }
    }

    #[test]
    fn age_since_timestamps() {
        let now = parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
        assert_eq!(age_since("2026-01-01T00:05:00Z", now), "5m");
        assert_eq!(age_since("2026-01-01T00:09:15.5Z", now), "44s");
        assert_eq!(age_since("not a time", now), "-");
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(format_number(2.0), "2");
        assert_eq!(format_number(1.5), "1.5");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(-0.0001), "0");
        assert_eq!(format_mb(512.0), "512M");
        assert_eq!(format_mb(64.4), "64M");
        assert_eq!(format_mb(4096.0), "4G");
        assert_eq!(format_mb(1536.0), "1.5G");
        assert_eq!(format_mb(15999.0), "15.6G");
        assert_eq!(short_state("TASK_RUNNING"), "RUNNING");
        assert_eq!(short_state("weird"), "weird");
    }
}
