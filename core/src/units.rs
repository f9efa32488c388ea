//! Units that service specs are written in: byte sizes, durations and CPU counts.
//!
//! This module owns the human forms users type in TOML (`16g`, `1m30s`, `0.5`),
//! their conversion to what Docker wants (bytes, [`std::time::Duration`],
//! NanoCpus), and the shortest exact form they print back as. Each type
//! (de)serializes as its human form, so a spec stored as TOML or JSON and shown
//! back to a user reads like the one they wrote.
//!
//! Every parse failure is an [`InvalidValue`], which displays as
//! `{expected}, got "{value}"`. `spec::parse` relies on that shape to pair a bad
//! value with its key path (`resources.memory "16x": expected a size like 512m
//! or 16g`), so the other newtypes of the spec use it too.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A value that did not parse, and what was expected instead.
///
/// Displays as `{expected}, got "{value}"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{expected}, got \"{value}\"")]
pub struct InvalidValue {
    expected: String,
    value: String,
}

/// What separates the expectation from the value in an [`InvalidValue`]'s text.
const GOT: &str = ", got \"";

impl InvalidValue {
    /// An error for `value`, where `expected` reads like "expected a size like 512m".
    pub fn new(expected: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            expected: expected.into(),
            value: value.into(),
        }
    }

    /// What was expected, e.g. "expected a size like 512m or 16g".
    pub fn expected(&self) -> &str {
        &self.expected
    }

    /// The value as the user wrote it.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Recovers an `InvalidValue` from its displayed text.
    ///
    /// serde errors carry only a message, so this is how `spec::parse` gets the
    /// value back out of a toml error. Splitting at the *first* `, got "` is
    /// exact: the expectation is our own text and never contains it, while the
    /// value (which might) comes after it.
    pub fn from_message(message: &str) -> Option<Self> {
        let (expected, rest) = message.split_once(GOT)?;
        let value = rest.strip_suffix('"')?;
        Some(Self::new(expected, value))
    }
}

/// A serde visitor for types written as a string and parsed with [`FromStr`].
struct FromStrVisitor<T> {
    expecting: &'static str,
    target: PhantomData<fn() -> T>,
}

impl<T> de::Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr<Err = InvalidValue>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// Deserializes a `T` from a string with `T::from_str`.
///
/// `expecting` ("a size like 512m or 16g") completes serde's message when the
/// value is not a string at all: `invalid type: integer `5`, expected a size ...`.
pub(crate) fn deserialize_from_str<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = InvalidValue>,
{
    deserializer.deserialize_str(FromStrVisitor {
        expecting,
        target: PhantomData,
    })
}

// ---------------------------------------------------------------------------
// ByteSize
// ---------------------------------------------------------------------------

const SIZE_EXPECTING: &str = "a size like 512m or 16g";

/// Binary multipliers, largest last. Docker's convention: `k`, `m`, `g`, `t`
/// and `p` are powers of 1024 whether written `g`, `gb`, `gi` or `gib`.
const SIZE_UNITS: [(char, u64); 5] = [
    ('k', 1 << 10),
    ('m', 1 << 20),
    ('g', 1 << 30),
    ('t', 1 << 40),
    ('p', 1 << 50),
];

/// A non-zero number of bytes, such as a memory limit.
///
/// Parses `2048` (bytes), `1024k`, `512m`, `1.5g`, `16G`, `16gb`, `16Gi`,
/// `16GiB`; every unit is a power of 1024, as in `docker run --memory`. A
/// fraction that does not come out to whole bytes is rounded down, as Docker
/// does. Displays in the shortest exact form (`16g`, `1536m`). At most
/// `i64::MAX`, because Docker's API takes sizes as signed 64-bit integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `bytes`; `None` for 0 or more than `i64::MAX`.
    pub fn new(bytes: u64) -> Option<Self> {
        (bytes != 0 && i64::try_from(bytes).is_ok()).then_some(Self(bytes))
    }

    /// The size in bytes; always fits in an `i64`.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        parse_size(s).ok_or_else(|| InvalidValue::new(format!("expected {SIZE_EXPECTING}"), s))
    }
}

fn parse_size(s: &str) -> Option<ByteSize> {
    let s = s.trim();
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let multiplier = size_multiplier(&unit.trim_start().to_ascii_lowercase())?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || (number.contains('.') && !all_digits(fraction)) {
        return None;
    }
    // A fraction of a byte means nothing; "1.5" is surely a typo for "1.5g".
    // 18 fraction digits keep the arithmetic below inside u128.
    if !fraction.is_empty() && (multiplier == 1 || fraction.len() > 18) {
        return None;
    }
    let mut bytes = whole.parse::<u64>().ok()?.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).ok()?;
        let numerator = fraction.parse::<u128>().ok()? * u128::from(multiplier);
        let part = u64::try_from(numerator / 10u128.pow(digits)).ok()?;
        bytes = bytes.checked_add(part)?;
    }
    ByteSize::new(bytes)
}

/// The multiplier for a lowercased unit: "", "b", or a prefix letter followed
/// by nothing, "b", "i" or "ib".
fn size_multiplier(unit: &str) -> Option<u64> {
    if unit.is_empty() || unit == "b" {
        return Some(1);
    }
    let mut chars = unit.chars();
    let prefix = chars.next()?;
    if !matches!(chars.as_str(), "" | "b" | "i" | "ib") {
        return None;
    }
    SIZE_UNITS
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|&(_, multiplier)| multiplier)
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &(suffix, multiplier) in SIZE_UNITS.iter().rev() {
            if self.0.is_multiple_of(multiplier) {
                return write!(f, "{}{suffix}", self.0 / multiplier);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, SIZE_EXPECTING)
    }
}

// ---------------------------------------------------------------------------
// Duration
// ---------------------------------------------------------------------------

const DURATION_EXPECTING: &str = "a duration like 500ms, 2s or 1m";

/// Duration units, largest first, in milliseconds.
const DURATION_UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// A span of time with millisecond precision, such as a health check interval.
///
/// Parses `500ms`, `2s`, `90s`, `1m`, `1m30s`, `1h`, `0s`: whole numbers, each
/// unit at most once and largest first. Displays in the canonical form
/// (`1m30s`, `0s`). Converts into [`std::time::Duration`] for timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// The same duration as a [`std::time::Duration`].
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// The whole number of milliseconds; exact, since that is the precision.
    pub fn as_millis(self) -> u64 {
        // Only `from_millis`/`from_secs` and parsing build a Duration, and
        // both stay within u64 milliseconds.
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// True for `0s`.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        parse_duration(s).ok_or_else(|| InvalidValue::new(format!("expected {DURATION_EXPECTING}"), s))
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    // Index into DURATION_UNITS of the previous unit; each must be smaller.
    let mut previous: Option<usize> = None;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return None;
        }
        let count: u64 = rest[..digits_end].parse().ok()?;
        rest = &rest[digits_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let index = DURATION_UNITS.iter().position(|(name, _)| *name == unit)?;
        if previous.is_some_and(|p| p >= index) {
            return None;
        }
        previous = Some(index);
        total = total.checked_add(count.checked_mul(DURATION_UNITS[index].1)?)?;
    }
    Some(Duration::from_millis(total))
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.as_millis();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (name, millis) in DURATION_UNITS {
            if rest >= millis {
                write!(f, "{}{name}", rest / millis)?;
                rest %= millis;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, DURATION_EXPECTING)
    }
}

// ---------------------------------------------------------------------------
// Cpus
// ---------------------------------------------------------------------------

const CPUS_EXPECTING: &str = "a CPU count like 0.5 or 8 (more than 0, at most 3 decimals)";

/// A positive number of CPUs, with millicpu precision, such as a CPU limit.
///
/// Written in TOML as an integer (`8`), a float (`0.5`) or a string (`"0.5"`);
/// at most three decimals, like `docker run --cpus`. Displays as `8` or `0.5`
/// and serializes as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(u32);

impl Cpus {
    /// `millis` thousandths of a CPU; `None` for 0.
    pub fn from_millis(millis: u32) -> Option<Self> {
        (millis != 0).then_some(Self(millis))
    }

    /// Thousandths of a CPU: 500 for `0.5`.
    pub fn millis(self) -> u32 {
        self.0
    }

    /// Docker's `NanoCpus`: billionths of a CPU.
    pub fn nano_cpus(self) -> i64 {
        i64::from(self.0) * 1_000_000
    }

    /// The count as a float, for comparing with the host's CPU count.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

impl FromStr for Cpus {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        parse_cpus(s).ok_or_else(|| InvalidValue::new(format!("expected {CPUS_EXPECTING}"), s))
    }
}

fn parse_cpus(s: &str) -> Option<Cpus> {
    let s = s.trim();
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || s.ends_with('.') {
        return None;
    }
    // "0.500" is as precise as "0.5"; only significant decimals count.
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 3 {
        return None;
    }
    let thousandths: u32 = format!("{fraction:0<3}").parse().ok()?;
    let millis = whole.parse::<u32>().ok()?.checked_mul(1000)?.checked_add(thousandths)?;
    Cpus::from_millis(millis)
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 1000, self.0 % 1000);
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let decimals = format!("{fraction:03}");
            write!(f, "{whole}.{}", decimals.trim_end_matches('0'))
        }
    }
}

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            serializer.serialize_u32(self.0 / 1000)
        } else {
            // At most 10 significant digits, so the float's shortest form is
            // exactly the decimal we mean and parses back to the same millis.
            serializer.serialize_f64(self.as_f64())
        }
    }
}

/// Accepts integers, floats and strings; floats go through their shortest
/// decimal form so that `0.1` is read as 0.1, not as 0.1000000000000000055.
struct CpusVisitor;

impl de::Visitor<'_> for CpusVisitor {
    type Value = Cpus;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CPUS_EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cpus, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cpus, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cpus, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpus, E> {
        self.visit_str(&v.to_string())
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CpusVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn size(s: &str) -> u64 {
        match s.parse::<ByteSize>() {
            Ok(size) => size.bytes(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn sizes_parse_as_powers_of_1024() {
        assert_eq!(size("2048"), 2048);
        assert_eq!(size("2048b"), 2048);
        assert_eq!(size("1024k"), 1 << 20);
        assert_eq!(size("512m"), 512 << 20);
        assert_eq!(size("16g"), 16 << 30);
        assert_eq!(size("16G"), 16 << 30);
        assert_eq!(size("16gb"), 16 << 30);
        assert_eq!(size("16GB"), 16 << 30);
        assert_eq!(size("16Gi"), 16 << 30);
        assert_eq!(size("16GiB"), 16 << 30);
        assert_eq!(size("1.5g"), 3 << 29);
        assert_eq!(size("2t"), 2 << 40);
        assert_eq!(size(" 16 g "), 16 << 30);
    }

    #[test]
    fn sizes_reject_junk_zero_and_overflow() {
        for bad in [
            "",
            "16x",
            "g",
            "-1g",
            "1.5",
            "1..5g",
            "1.g",
            ".5g",
            "0",
            "0g",
            "16gg",
            "16 ib",
            "9223372036854775808",
            "8388608t",
            "99999999999999999999999",
        ] {
            let err = bad.parse::<ByteSize>().err();
            assert!(err.is_some(), "{bad:?} should not parse");
        }
        assert_eq!(
            "16x".parse::<ByteSize>().err().map(|e| e.to_string()),
            Some(r#"expected a size like 512m or 16g, got "16x""#.to_owned())
        );
        assert_eq!(ByteSize::new(0), None);
        assert!(ByteSize::new(i64::MAX as u64).is_some());
        assert_eq!(ByteSize::new(i64::MAX as u64 + 1), None);
    }

    #[test]
    fn sizes_display_in_shortest_exact_form() {
        let show = |s: &str| ByteSize::new(size(s)).map(|b| b.to_string()).unwrap_or_default();
        assert_eq!(show("16g"), "16g");
        assert_eq!(show("16384m"), "16g");
        assert_eq!(show("1.5g"), "1536m");
        assert_eq!(show("1024"), "1k");
        assert_eq!(show("1000"), "1000");
        assert_eq!(show("1024t"), "1p");
    }

    #[test]
    fn size_serde_uses_the_string() {
        let json = serde_json::to_string(&ByteSize::new(16 << 30));
        assert_eq!(json.ok().as_deref(), Some(r#""16g""#));
        let back: Result<ByteSize, _> = serde_json::from_str(r#""16g""#);
        assert_eq!(back.ok(), ByteSize::new(16 << 30));
        let err = serde_json::from_str::<ByteSize>(r#""16x""#).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with(r#"expected a size like 512m or 16g, got "16x""#),
            "{text}"
        );
        let err = serde_json::from_str::<ByteSize>("5").err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("expected a size like 512m or 16g"), "{text}");
    }

    fn duration(s: &str) -> u64 {
        match s.parse::<Duration>() {
            Ok(d) => d.as_millis(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(duration("500ms"), 500);
        assert_eq!(duration("2s"), 2_000);
        assert_eq!(duration("1m"), 60_000);
        assert_eq!(duration("1m30s"), 90_000);
        assert_eq!(duration("90s"), 90_000);
        assert_eq!(duration("1h"), 3_600_000);
        assert_eq!(duration("1h2m3s4ms"), 3_723_004);
        assert_eq!(duration("0s"), 0);
        for bad in ["", "2", "2x", "s", "1.5s", "-1s", "30s1m", "1m1m", "2S", "1 m"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            "2x".parse::<Duration>().err().map(|e| e.to_string()),
            Some(r#"expected a duration like 500ms, 2s or 1m, got "2x""#.to_owned())
        );
    }

    #[test]
    fn durations_display_canonically() {
        assert_eq!(Duration::from_secs(2).to_string(), "2s");
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
        assert_eq!(Duration::from_millis(1_500).to_string(), "1s500ms");
        assert_eq!(Duration::from_millis(0).to_string(), "0s");
        assert_eq!(
            std::time::Duration::from(Duration::from_millis(1_500)),
            std::time::Duration::from_millis(1_500)
        );
    }

    fn cpus(s: &str) -> u32 {
        match s.parse::<Cpus>() {
            Ok(c) => c.millis(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn cpus_parse_and_display() {
        assert_eq!(cpus("8"), 8_000);
        assert_eq!(cpus("0.5"), 500);
        assert_eq!(cpus("1.25"), 1_250);
        assert_eq!(cpus("0.001"), 1);
        assert_eq!(cpus("0.5000"), 500);
        for bad in [
            "", "0", "0.0", "-1", "0.0001", "1.", ".5", "abc", "1e3", "NaN", "5000000",
        ] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad:?} should not parse");
        }
        let show = |m: u32| Cpus::from_millis(m).map(|c| c.to_string());
        assert_eq!(show(8_000).as_deref(), Some("8"));
        assert_eq!(show(500).as_deref(), Some("0.5"));
        assert_eq!(show(1_250).as_deref(), Some("1.25"));
        assert_eq!(show(1).as_deref(), Some("0.001"));
        assert_eq!(Cpus::from_millis(500).map(Cpus::nano_cpus), Some(500_000_000));
        assert_eq!(Cpus::from_millis(8_000).map(Cpus::nano_cpus), Some(8_000_000_000));
    }

    #[test]
    fn cpus_deserialize_from_numbers_and_strings() {
        let from = |json: &str| serde_json::from_str::<Cpus>(json).map(Cpus::millis);
        assert_eq!(from("8").ok(), Some(8_000));
        assert_eq!(from("0.5").ok(), Some(500));
        assert_eq!(from("0.1").ok(), Some(100));
        assert_eq!(from(r#""0.5""#).ok(), Some(500));
        for bad in ["0", "-2", "0.0001", "-0.5", "true", "1e300"] {
            assert!(from(bad).is_err(), "{bad} should not deserialize");
        }
        let text = from("0.0001").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(r#"got "0.0001""#), "{text}");
        let json = |m: u32| Cpus::from_millis(m).and_then(|c| serde_json::to_string(&c).ok());
        assert_eq!(json(8_000).as_deref(), Some("8"));
        assert_eq!(json(500).as_deref(), Some("0.5"));
    }

    #[test]
    fn invalid_value_round_trips_through_its_message() {
        let err = InvalidValue::new("expected a thing", r#"a, got "b""#);
        assert_eq!(InvalidValue::from_message(&err.to_string()), Some(err));
        assert_eq!(InvalidValue::from_message("missing field `name`"), None);
    }

    proptest! {
        #[test]
        fn size_display_round_trips(bytes in 1..=i64::MAX as u64) {
            let size = ByteSize::new(bytes).ok_or_else(|| TestCaseError::fail("valid"))?;
            prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }

        #[test]
        fn size_units_multiply(n in 1..(1u64 << 12), unit in 0..SIZE_UNITS.len(), upper: bool, suffix in 0..4usize) {
            let (prefix, multiplier) = SIZE_UNITS[unit];
            let prefix = if upper { prefix.to_ascii_uppercase() } else { prefix };
            let text = format!("{n}{prefix}{}", ["", "b", "i", "iB"][suffix]);
            prop_assert_eq!(text.parse::<ByteSize>().map(ByteSize::bytes), Ok(n * multiplier));
            let size = ByteSize::new(n * multiplier).ok_or_else(|| TestCaseError::fail("valid"))?;
            prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }

        #[test]
        fn duration_display_round_trips(millis in 0..=u64::MAX) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
            prop_assert_eq!(d.as_millis(), millis);
        }

        #[test]
        fn duration_components_add_up(h in 0..1000u64, m in 0..60u64, s in 0..60u64, ms in 0..1000u64) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let expected = ((h * 60 + m) * 60 + s) * 1000 + ms;
            prop_assert_eq!(text.parse::<Duration>().map(Duration::as_millis), Ok(expected));
        }

        #[test]
        fn cpus_display_round_trips(millis in 1..=u32::MAX) {
            let c = Cpus::from_millis(millis).ok_or_else(|| TestCaseError::fail("valid"))?;
            prop_assert_eq!(c.to_string().parse::<Cpus>(), Ok(c));
            let json = serde_json::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(serde_json::from_str::<Cpus>(&json).ok(), Some(c));
        }
    }
}
