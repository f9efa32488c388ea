//! Cutting text to a byte budget without splitting a character: for
//! messages and probe output that must fit a header or a record.

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
