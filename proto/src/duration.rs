//! The one syntax for durations that people write: every flag of `strata-master`,
//! `strata-agent` and `strata`, and any config value that is a duration string, goes
//! through [`parse`].
//!
//! The syntax is [humantime]'s: a number and a unit, repeated: `500ms`, `30s`, `1.5s`,
//! `2m`, `1h30m`, `7d` (units `ms`, `s`/`sec`, `m`/`min`, `h`, `d`, `w` and their long
//! names; `M` is months). `0` alone is zero. A number without a unit is refused (is
//! `30` seconds or minutes?), except where a flag has always been documented as a
//! number of seconds: those use [`parse_or_seconds`].
//!
//! [humantime]: https://docs.rs/humantime

use std::time::Duration;

/// The longest duration accepted: a year. Timers of more than a year are a mistake
/// (and far-future deadlines overflow `Instant` arithmetic).
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// The expected form, shown in every error.
const EXPECTED: &str = "write a number and a unit, e.g. 30s, 500ms, 2m or 1h30m";

/// What is wrong with a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationProblem {
    #[error("it is empty")]
    Empty,
    #[error("'{0}' has no unit")]
    MissingUnit(String),
    #[error("unknown unit '{0}' (units: ms, s, m, h, d, w)")]
    UnknownUnit(String),
    #[error("a duration cannot be negative")]
    Negative,
    #[error("'{0}' is not allowed in a duration")]
    InvalidCharacter(char),
    #[error("a number must come before each unit")]
    NumberExpected,
    #[error("it is longer than a year")]
    TooLong,
}

/// A duration that could not be read, with the input and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration '{input}': {problem}; {EXPECTED}")]
pub struct DurationError {
    /// The text as given.
    pub input: String,
    pub problem: DurationProblem,
}

/// Parses a duration such as `500ms`, `30s`, `2m` or `1h30m` (humantime's syntax, see
/// the module docs), at most [`MAX`]. Leading and trailing whitespace is ignored.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |problem| DurationError {
        input: input.to_string(),
        problem,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err(DurationProblem::Empty));
    }
    if s.starts_with('-') {
        return Err(err(DurationProblem::Negative));
    }
    if s != "0" && is_bare_number(s) {
        return Err(err(DurationProblem::MissingUnit(s.to_string())));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        err(match e {
            humantime::DurationError::Empty => DurationProblem::Empty,
            humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                DurationProblem::MissingUnit(value.to_string())
            }
            humantime::DurationError::UnknownUnit { unit, .. } => {
                DurationProblem::UnknownUnit(unit)
            }
            humantime::DurationError::InvalidCharacter(at) => {
                DurationProblem::InvalidCharacter(s[at..].chars().next().unwrap_or('?'))
            }
            humantime::DurationError::NumberExpected(_) => DurationProblem::NumberExpected,
            humantime::DurationError::NumberOverflow => DurationProblem::TooLong,
        })
    })?;
    if d > MAX {
        return Err(err(DurationProblem::TooLong));
    }
    Ok(d)
}

/// Like [`parse`], but a bare number is a number of seconds (`300`, `1.5`). Only for
/// flags documented as taking seconds before they took durations (`strata app ...
/// --timeout`), so that what their users wrote keeps working.
pub fn parse_or_seconds(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if !is_bare_number(s) {
        return parse(input);
    }
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| *d <= MAX)
        .ok_or_else(|| DurationError {
            input: input.to_string(),
            problem: DurationProblem::TooLong,
        })
}

/// `30`, `1.5`: digits with at most one '.', and at least one digit.
fn is_bare_number(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.matches('.').count() <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(input: &str) -> DurationProblem {
        parse(input).expect_err(input).problem
    }

    #[test]
    fn the_forms_the_docs_show_are_accepted() {
        for (input, want) in [
            ("500ms", Duration::from_millis(500)),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("30s", Duration::from_secs(30)),
            ("1m", Duration::from_secs(60)),
            ("2m", Duration::from_secs(120)),
            ("10m", Duration::from_secs(600)),
            ("2h", Duration::from_secs(7200)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h 30m", Duration::from_secs(5400)),
            ("7d", Duration::from_secs(7 * 86400)),
            ("5 sec", Duration::from_secs(5)),
            ("2min", Duration::from_secs(120)),
            ("0", Duration::ZERO),
            (" 0 ", Duration::ZERO),
            ("0s", Duration::ZERO),
            (" 15s ", Duration::from_secs(15)),
            ("365d", MAX),
        ] {
            assert_eq!(parse(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong_and_the_expected_form() {
        assert_eq!(problem(""), DurationProblem::Empty);
        assert_eq!(problem("  "), DurationProblem::Empty);
        assert_eq!(problem("30"), DurationProblem::MissingUnit("30".into()));
        assert_eq!(problem("1.5"), DurationProblem::MissingUnit("1.5".into()));
        assert_eq!(problem("1m30"), DurationProblem::MissingUnit("30".into()));
        assert_eq!(problem("5x"), DurationProblem::UnknownUnit("x".into()));
        assert_eq!(
            problem("10 parsecs"),
            DurationProblem::UnknownUnit("parsecs".into())
        );
        assert_eq!(problem("-1s"), DurationProblem::Negative);
        assert_eq!(problem("1,5s"), DurationProblem::InvalidCharacter(','));
        assert_eq!(problem("soon"), DurationProblem::NumberExpected);
        assert_eq!(problem("s"), DurationProblem::NumberExpected);
        assert_eq!(problem("366d"), DurationProblem::TooLong);
        assert_eq!(problem("99999999999999999999h"), DurationProblem::TooLong);
        assert_eq!(
            parse("30").unwrap_err().to_string(),
            "invalid duration '30': '30' has no unit; write a number and a unit, \
             e.g. 30s, 500ms, 2m or 1h30m"
        );
        assert_eq!(
            parse("5x").unwrap_err().to_string(),
            "invalid duration '5x': unknown unit 'x' (units: ms, s, m, h, d, w); write a \
             number and a unit, e.g. 30s, 500ms, 2m or 1h30m"
        );
    }

    #[test]
    fn bare_seconds_only_where_asked_for() {
        assert_eq!(parse_or_seconds("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_or_seconds(" 1.5 "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_or_seconds("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_or_seconds("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_or_seconds("99999999999").unwrap_err().problem,
            DurationProblem::TooLong
        );
        assert_eq!(
            parse_or_seconds("-5").unwrap_err().problem,
            DurationProblem::Negative
        );
        assert_eq!(
            parse_or_seconds("soon").unwrap_err().problem,
            DurationProblem::NumberExpected
        );
    }
}
