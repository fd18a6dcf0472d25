//! Units shared by every part: byte sizes for people, Kubernetes quantities, and the one
//! duration grammar (`--ttl`, `--grace`, a schedule's `ttl`, a retention policy's `ttl`). Depends on nothing in the crate,
//! so any part may use it without an upward import.

use jiff::{SignedDuration, Span, SpanRelativeTo};

/// `1.2 GiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A Kubernetes quantity (`10Gi`, `500M`, `1.5Gi`, `1e9`, `100`) as a whole number of units
/// (bytes, for storage), rounded up; exact for every integer quantity. None if it is not one.
pub fn parse_quantity(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (mult, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1000u128.pow(2), 1),
        "G" => (1000u128.pow(3), 1),
        "T" => (1000u128.pow(4), 1),
        "P" => (1000u128.pow(5), 1),
        "E" => (1000u128.pow(6), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => (10u128.checked_pow(s[1..].parse().ok()?)?, 1),
        _ => return None,
    };
    let number = number.strip_prefix('+').unwrap_or(number);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |s: &str| -> Option<u128> {
        if s.is_empty() {
            Some(0)
        } else {
            s.parse().ok()
        }
    };
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    // (int + frac / scale) * mult / div, rounded up, in integers.
    let numerator = (digits(int)?
        .checked_mul(scale)?
        .checked_add(digits(frac)?)?)
    .checked_mul(mult)?;
    Some(numerator.div_ceil(scale.checked_mul(div)?))
}

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not in the grammar, or out of range.
    #[error("{value:?} is not a duration (expected e.g. 72h, 30d, 1h30m): {reason}")]
    Invalid {
        /// The value as given.
        value: String,
        /// What the parser said.
        reason: String,
    },
    /// Zero or negative.
    #[error("{value:?} must be positive")]
    NonPositive {
        /// The value as given.
        value: String,
    },
}

/// Parses a positive duration in jiff's friendly format (`720h`, `30d`, `90m`, `3600s`, `1h30m`,
/// `2 weeks`). Days and weeks count as 24 hours and 7 days; months and years are refused, as
/// they have no fixed length. jiff checks every unit for overflow, so `99999999999d` is an
/// error, not a wrapped number.
pub fn parse_duration(s: &str) -> Result<SignedDuration, DurationError> {
    let invalid = |reason: String| DurationError::Invalid {
        value: s.to_owned(),
        reason,
    };
    let span: Span = s
        .trim()
        .parse()
        .map_err(|e: jiff::Error| invalid(e.to_string()))?;
    let d = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| invalid(e.to_string()))?;
    if d <= SignedDuration::ZERO {
        return Err(DurationError::NonPositive {
            value: s.to_owned(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly_like_kubernetes() {
        assert_eq!(parse_quantity("10Gi"), Some(10 << 30));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("100"), Some(100));
        assert_eq!(parse_quantity("100m"), Some(1));
        assert_eq!(parse_quantity("10Xi"), None);
        assert_eq!(parse_quantity("-1"), None);
        assert_eq!(parse_quantity("Gi"), None);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn one_grammar_covers_every_old_spelling() {
        for (s, secs) in [
            ("720h", 720 * 3600),
            ("30d", 30 * 86_400),
            ("90m", 90 * 60),
            ("3600s", 3600),
            ("1h30m", 5400),
            ("2 weeks", 14 * 86_400),
        ] {
            assert_eq!(
                parse_duration(s),
                Ok(SignedDuration::from_secs(secs)),
                "{s}"
            );
        }
    }

    #[test]
    fn overflow_months_and_non_positive_are_errors() {
        for s in ["99999999999999d", "1 month", "1y", "3x", ""] {
            assert!(
                matches!(parse_duration(s), Err(DurationError::Invalid { .. })),
                "{s}: {:?}",
                parse_duration(s)
            );
        }
        assert_eq!(
            parse_duration("0s").map_err(|e| e.to_string()),
            Err("\"0s\" must be positive".to_owned())
        );
    }
}
