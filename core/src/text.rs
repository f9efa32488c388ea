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

/// The most bytes of toml's own message a parser's error carries: room
/// for its position, the quoted line and its caret, and the list of valid
/// keys; well inside the 2 KiB an error may take on the wire.
pub const TOML_MESSAGE_MAX: usize = 1536;

/// `text` cut to at most `max` bytes at a character boundary, saying how
/// many bytes were cut.
pub fn capped(mut text: String, max: usize) -> String {
    let cut = truncate_bytes(&mut text, max);
    if cut > 0 {
        text.push_str(&format!("… ({cut} more bytes cut)"));
    }
    text
}

/// toml's error as berth's parsers show it: its position, its quoted
/// source lines cut like values ([`shown_toml_line`]), and the whole at
/// most [`TOML_MESSAGE_MAX`] bytes, however long the document's lines or
/// how many of them a multi-line value spans.
pub fn toml_error_text(error: &toml::de::Error) -> String {
    let text = error
        .to_string()
        .trim_end()
        .lines()
        .map(shown_toml_line)
        .collect::<Vec<_>>()
        .join("\n");
    capped(text, TOML_MESSAGE_MAX)
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
    fn toml_errors_stay_bounded_however_long_the_line() {
        let long_line = format!("a = 1 {}\n", "x".repeat(100_000));
        let many_lines = format!("a = \"\"\"\n{}\"\"\"\nb = [", "é\n".repeat(10_000));
        for text in [long_line, many_lines] {
            let error = toml::from_str::<toml::Table>(&text).expect_err("not TOML");
            let shown = toml_error_text(&error);
            assert!(shown.len() <= TOML_MESSAGE_MAX + 40, "{} bytes: {shown}", shown.len());
            assert!(shown.contains("line "), "keeps the position: {shown}");
        }
        assert_eq!(capped("abc".into(), 3), "abc");
        assert_eq!(capped("abcd".into(), 3), "abc… (1 more bytes cut)");
    }

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
