//! Reading env files and `KEY=VALUE` arguments on the client side, so
//! `berthctl env import` and `env set` refuse a bad file or argument before
//! anything is sent. The agent checks again with the same rules (Docker's
//! env-file syntax: `KEY=VALUE` lines, `#` comments, values literal).
//! Messages name the file and line, never a value.

use std::collections::HashMap;
use std::path::Path;

/// Largest env file the agent accepts.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Parses env-file bytes; `path` is only used in messages. Later lines win
/// over earlier ones with the same key, as with Docker.
pub fn parse(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>, String> {
    let at = |line: usize, m: &str| format!("{}:{line}: {m}", path.display());
    if bytes.len() > MAX_BYTES {
        return Err(at(
            0,
            &format!("{} bytes is over the {MAX_BYTES}-byte limit", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        at(line, "not valid UTF-8")
    })?;
    let mut vars = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if raw.contains('\0') {
            return Err(at(n, "contains a NUL byte"));
        }
        // A malformed line may be a pasted secret: never echo any of it.
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| at(n, "expected KEY=VALUE, got a line without '='"))?;
        check_key(key).map_err(|m| at(n, &format!("the name before '=' {m}")))?;
        if value.contains('\r') {
            return Err(at(n, "contains a carriage return (\\r) inside the value"));
        }
        vars.insert(key.to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// Splits a `KEY=VALUE` argument and checks both halves.
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg.split_once('=').ok_or_else(|| {
        "expected KEY=VALUE (an argument without '=' is not shown, in case it is a secret)".to_owned()
    })?;
    check_key(key).map_err(|m| format!("{:?} {m}", truncate(key)))?;
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "{key}: the value contains a line break or NUL, which an env file cannot hold"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Checks a variable name: a letter or `_`, then letters, digits or `_`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("is empty".into());
    }
    match key
        .chars()
        .enumerate()
        .find(|(i, c)| !(c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit())))
    {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "is not a valid variable name: character {} is not allowed \
             (use letters, digits and _, not starting with a digit)",
            i + 1
        )),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_like_the_agent_and_errors_hide_values() {
        let v = parse(b"# c\nA=1=2\n  B= x \nA=3\n", Path::new("f.env")).expect("valid");
        assert_eq!(v["A"], "3");
        assert_eq!(v["B"], " x ");
        let e = parse(b"A=1\nsecret-token\n", Path::new("f.env")).expect_err("bad");
        assert!(e.starts_with("f.env:2:") && !e.contains("secret-token"), "{e}");
        let e = parse(b"pass word=x\n", Path::new("f.env")).expect_err("bad key");
        assert!(e.contains("f.env:1") && !e.contains("pass word"), "{e}");
    }

    #[test]
    fn assignments_split_at_the_first_equals() {
        assert_eq!(
            parse_assignment("URL=a=b").expect("ok"),
            ("URL".to_owned(), "a=b".to_owned())
        );
        assert_eq!(parse_assignment("E=").expect("ok"), ("E".to_owned(), String::new()));
        let e = parse_assignment("hunter2").expect_err("no =");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(parse_assignment("1A=x").is_err());
        assert!(parse_assignment("A=x\ny").is_err());
    }
}
