//! Docker's timestamps (RFC 3339) as milliseconds since the epoch, the
//! agent's unit ([`crate::clock`]). Pure.

/// Parses Docker's RFC 3339 timestamps (`2024-05-01T12:34:56.123456789Z`,
/// or with a `+02:00` offset) into ms since the Unix epoch. Docker's zero
/// time (`0001-01-01T00:00:00Z`, "never") and anything unparsable are `None`.
pub(super) fn parse_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if year <= 1 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms_digits = &fraction[..digits.min(3)];
        millis = ms_digits.parse::<i64>().ok()? * 10_i64.pow(3 - ms_digits.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps_parse_to_millis() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time_ms("2024-05-01T12:34:56.123456789Z"), Some(1_714_566_896_123));
        assert_eq!(parse_time_ms("2024-05-01T14:34:56.5+02:00"), Some(1_714_566_896_500));
        assert_eq!(parse_time_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_time_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time_ms(""), None);
        assert_eq!(parse_time_ms("yesterday at noon"), None);
        assert_eq!(parse_time_ms("2024-05-01T12:34:56."), None);
    }
}
