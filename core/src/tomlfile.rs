//! Reading TOML documents written by people: finding which key a value
//! error is about, and on which line, so messages can say
//! `resources.memory "16x": expected a size like 512m or 16g` or
//! `fleets.toml:12: fleets.prod.hosts[2].address: ...` instead of only a
//! byte span. Used by the spec parser and by berthctl's inventory.

use std::ops::Range;

/// The dotted key path of the scalar value whose span contains `span`.
/// Array elements answer with the array's key (`ports`).
pub fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(document.get_ref(), span, &mut path).then(|| path.join("."))
}

fn find_in_table<'a>(table: &'a toml::de::DeTable<'_>, span: &Range<usize>, path: &mut Vec<&'a str>) -> bool {
    for (key, value) in table {
        path.push(key.get_ref().as_ref());
        if find_in_value(value, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value<'a>(
    value: &'a toml::Spanned<toml::de::DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<&'a str>,
) -> bool {
    match value.get_ref() {
        toml::de::DeValue::Table(table) => find_in_table(table, span, path),
        toml::de::DeValue::Array(items) => items.iter().any(|item| find_in_value(item, span, path)),
        _ => {
            let found = value.span();
            found.start <= span.start && span.end <= found.end
        }
    }
}
