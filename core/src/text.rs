//! Cutting text to a budget without splitting a character: for messages
//! and probe output that must fit a header or a record, and for the values
//! and source lines an error quotes.

/// Longest value (or source line) an error quotes, in characters: enough
/// to recognise it, never a pasted blob (or a secret) echoed in full.
pub const SHOWN_VALUE: usize = 80;

/// `value` as an error quotes it: its first [`SHOWN_VALUE`] characters.
pub fn shown(value: &str) -> String {
    cut(value, SHOWN_VALUE)
}

/// `text`'s first `limit` characters, saying how long it was when cut.
pub fn cut(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

/// A line of toml's message: the quoted source lines (`5 | key = ...`, and
/// the caret line under them) are cut like values; its own text (which
/// lists the valid keys) gets more room.
pub fn shown_toml_line(line: &str) -> String {
    let snippet = line
        .split_once('|')
        .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
    cut(line, if snippet { SHOWN_VALUE } else { 1024 })
}

/// Truncates `text` to at most `max` bytes at a character boundary;
/// returns how many bytes were cut (0 when it fit).
pub fn truncate_bytes(text: &mut String, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_boundary() {
        let mut short = "abc".to_owned();
        assert_eq!(truncate_bytes(&mut short, 3), 0);
        assert_eq!(short, "abc");
        let mut s = "aé".to_owned(); // 3 bytes; 2 would split é
        assert_eq!(truncate_bytes(&mut s, 2), 2);
        assert_eq!(s, "a");
    }
}
