//! Reading TOML documents written by people: finding which key an error is
//! about, and on which line, so messages can say `resources.memory "16x":
//! expected a size like 512m or 16g` or `fleets.toml:12:
//! fleets.prod.hosts[2].address: ...` instead of only a byte span. Used by
//! the spec parser and by berthctl's inventory.

use std::ops::Range;

use crate::units::InvalidValue;

/// A TOML deserialization error, placed in its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Dotted path of the key the error is about (`fleets.prod.hosts[2].address`),
    /// when the error points at one.
    pub key: Option<String>,
    /// 1-based line of the error, when toml reported a position.
    pub line: Option<usize>,
    /// For a bad value of a newtype: what was written and what was expected.
    pub value: Option<InvalidValue>,
    /// toml's own message, without its position and snippet.
    pub message: String,
}

/// Places `error`, raised while reading `text`, at a key and a line.
pub fn locate(text: &str, error: &toml::de::Error) -> Located {
    let span = error.span();
    Located {
        key: span.as_ref().and_then(|s| key_at(text, s)),
        line: span.map(|s| line_of(text, s.start)),
        value: InvalidValue::from_message(error.message()),
        message: error.message().trim_end().to_owned(),
    }
}

/// The 1-based line holding byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// The dotted key path of the key or scalar value whose span contains
/// `span`. Elements of an array of values answer with the array's key
/// (`ports`); tables in an array add their index (`hosts[2].address`).
pub fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(document.get_ref(), span, &mut path).then(|| path.concat())
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn find_in_table(table: &toml::de::DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        let part = if path.is_empty() {
            key.get_ref().to_string()
        } else {
            format!(".{}", key.get_ref())
        };
        path.push(part);
        if contains(&key.span(), span) || find_in_value(value, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &toml::Spanned<toml::de::DeValue<'_>>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    match value.get_ref() {
        toml::de::DeValue::Table(table) => find_in_table(table, span, path),
        toml::de::DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            if matches!(item.get_ref(), toml::de::DeValue::Table(_)) {
                path.push(format!("[{i}]"));
                if find_in_value(item, span, path) {
                    return true;
                }
                path.pop();
                false
            } else {
                find_in_value(item, span, path)
            }
        }),
        _ => contains(&value.span(), span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keys_and_table_array_elements_are_named() {
        let text = "a = 1\n[t]\nb = \"x\"\nlist = [1, 2]\n[[t.rows]]\nc = 1\n[[t.rows]]\nc = 2\nd = 3\n";
        let at = |needle: &str| {
            let start = text.rfind(needle).expect("needle");
            key_at(text, &(start..start + needle.len()))
        };
        assert_eq!(at("\"x\""), Some("t.b".to_owned()));
        let two = text.find(", 2").expect("list") + 2;
        assert_eq!(key_at(text, &(two..two + 1)), Some("t.list".to_owned()));
        assert_eq!(at("d"), Some("t.rows[1].d".to_owned()));
        let second_c = text.rfind("c = 2").expect("c") + 4;
        assert_eq!(key_at(text, &(second_c..second_c + 1)), Some("t.rows[1].c".to_owned()));
        assert_eq!(line_of(text, text.rfind('d').expect("d")), 9);
        assert_eq!(line_of(text, 0), 1);
    }
}
