//! Env files in Docker's env-file syntax: what agent and berthctl must read
//! the same way.
//!
//! Owns the syntax (`KEY=VALUE` per line, `#` comments and blank lines
//! ignored, values taken literally as Docker does), the checks a variable
//! must pass to be written as such a file and read back unchanged, the text
//! berth writes, and comparing two envs by key. No I/O: the agent reads and
//! writes the files, berthctl reads the ones it imports.
//!
//! Errors name the file and line but never echo a value, or even a name
//! read from a file, since a mangled line may well be a pasted secret.
//! [`Vars`] prints only its keys under `{:?}`, so a stray debug log of a
//! revision cannot leak one either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest env file accepted; larger is almost certainly a mistake, and it
/// all goes into the container's environment block.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The first line of every env file the agent writes.
pub const HEADER: &str = "# Managed by berth-agent. Hand edits are validated and applied by the \
                          service's env_change policy; see `berthctl env --help`.\n";

/// Env text or a variable that breaks the syntax.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A line is not `KEY=VALUE` (the value is never shown).
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number; 0 for the whole file.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A variable given through the API cannot be written as an env file.
    #[error("{key}: {message}")]
    Var {
        /// The variable's name (names are not secret; values are).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Variables by name, in a stable order. `{:?}` shows names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Vars(BTreeMap<String, String>);

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values are secrets: never in logs, even at debug level.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Vars {
    /// No variables.
    pub fn new() -> Self {
        Vars(BTreeMap::new())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Sets `key`; returns the old value.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.0.insert(key, value)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// `(name, value)` pairs, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for Vars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Vars(iter.into_iter().collect())
    }
}

/// Parses env-file bytes; `path` is only used in messages.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Vars, EnvError> {
    let invalid = |line: usize, message: String| EnvError::Invalid {
        path: path.to_owned(),
        line,
        message,
    };
    if bytes.len() > MAX_BYTES {
        return Err(invalid(
            0,
            format!("{} bytes is over the {MAX_BYTES}-byte limit", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        invalid(line, "not valid UTF-8".into())
    })?;
    let mut vars = Vars::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if raw.contains('\0') {
            return Err(invalid(n, "contains a NUL byte".into()));
        }
        let Some((key, value)) = line.split_once('=') else {
            // The line itself may be a pasted secret: never echo it.
            return Err(invalid(n, "expected KEY=VALUE, got a line without '='".into()));
        };
        check_key(key).map_err(|m| invalid(n, format!("the name before '=' {m}")))?;
        if value.contains('\r') {
            return Err(invalid(n, "contains a carriage return (\\r) inside the value".into()));
        }
        vars.insert(key.to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// Checks a variable name: a letter or `_`, then letters, digits or `_`.
/// The message does not repeat the name (see the module doc); callers that
/// know it is a name, not a mangled secret, add it.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("is empty".into());
    }
    let bad = key
        .chars()
        .enumerate()
        .find(|(i, c)| !(c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit())));
    match bad {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "is not a valid variable name: character {} is not allowed \
             (use letters, digits and _, not starting with a digit)",
            i + 1
        )),
    }
}

/// Checks one variable given through the API, so that it can be written
/// as an env file and read back unchanged.
pub fn check_var(key: &str, value: &str) -> Result<(), EnvError> {
    check_key(key).map_err(|message| EnvError::Var {
        key: shown_name(key),
        message,
    })?;
    let shown: String = key.chars().take(64).collect();
    let bad = |message: &str| EnvError::Var {
        key: shown.clone(),
        message: message.to_owned(),
    };
    if value.contains('\0') {
        return Err(bad("the value contains a NUL byte"));
    }
    if value.contains(['\n', '\r']) {
        return Err(bad(
            "the value contains a line break, which Docker's env-file syntax cannot hold",
        ));
    }
    Ok(())
}

/// How an invalid name is named in an error: quoted when it could be a
/// mistyped name; otherwise only its length, since what does not look like
/// a name is often a pasted value (`postgres://u:pw@db/x`), and errors are
/// shown and logged.
fn shown_name(key: &str) -> String {
    let namelike = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ');
    if key.len() <= 64 && key.chars().all(namelike) {
        format!("{key:?}")
    } else {
        format!("a name of {} characters (not shown)", key.chars().count())
    }
}

/// Checks a whole env given through the API, including its written size.
pub fn check_vars(vars: &Vars) -> Result<(), EnvError> {
    for (k, v) in vars.iter() {
        check_var(k, v)?;
    }
    let size = render(vars).len();
    if size > MAX_BYTES {
        return Err(EnvError::Var {
            key: format!("{} variables", vars.len()),
            message: format!("{size} bytes as an env file is over the {MAX_BYTES}-byte limit"),
        });
    }
    Ok(())
}

/// The env file's text: [`HEADER`], then `KEY=VALUE` lines in name order.
/// [`parse`] reads it back to the same [`Vars`] when [`check_vars`] passed.
pub fn render(vars: &Vars) -> Vec<u8> {
    let mut out = String::from(HEADER);
    for (k, v) in vars.iter() {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    out.into_bytes()
}

/// A variable whose value, as written in an env file, is wrapped in a
/// matching pair of quotes (`KEY="value"` or `KEY='value'`). Docker keeps
/// such quotes as part of the value, which is rarely what a file copied
/// from a shell script or a `.env` of another tool meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    /// 1-based line of the assignment that counts (the last one of the key).
    pub line: usize,
    /// The variable's name.
    pub key: String,
}

/// The variables of env-file `text` (already accepted by [`parse`]) whose
/// value is wrapped in matching quotes, in line order. Only the last
/// assignment of a key counts, as in [`parse`].
pub fn quoted_values(text: &str) -> Vec<Quoted> {
    let mut last: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            last.insert(key, (i + 1, unquote(value).is_some()));
        }
    }
    let mut found: Vec<Quoted> = last
        .into_iter()
        .filter(|(_, (_, quoted))| *quoted)
        .map(|(key, (line, _))| Quoted {
            line,
            key: key.to_owned(),
        })
        .collect();
    found.sort_by_key(|q| q.line);
    found
}

/// `value` without the matching pair of quotes (`"` or `'`) around it, or
/// None when it is not wrapped in one. Nothing inside is unescaped.
pub fn unquote(value: &str) -> Option<&str> {
    ['"', '\'']
        .into_iter()
        .find_map(|q| value.strip_prefix(q).and_then(|rest| rest.strip_suffix(q)))
}

/// Splits a `KEY=VALUE` command-line argument (`berthctl env set`) and
/// checks both halves. An argument without `=` is not echoed, in case it is
/// a secret.
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg.split_once('=').ok_or_else(|| {
        "expected KEY=VALUE (an argument without '=' is not shown, in case it is a secret)".to_owned()
    })?;
    check_key(key).map_err(|m| format!("{} {m}", shown_name(key)))?;
    check_var(key, value).map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Names of variables added, removed or changed from `old` to `new`, in
/// name order. Never their values.
pub fn changed_keys(old: &Vars, new: &Vars) -> Vec<String> {
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(k) != Some(*v))
        .map(|(k, _)| k.to_owned())
        .chain(new.keys().filter(|k| !old.contains_key(k)).map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parses_docker_syntax_literally() {
        let v = parse(
            b"# db\nDB_URL=postgres://u:p@h/db?x=1\n\n  QUEUE=jobs \nEMPTY=\nQUOTED=\"kept\"\n",
            Path::new("a.env"),
        )
        .expect("valid");
        assert_eq!(v.get("DB_URL"), Some("postgres://u:p@h/db?x=1"));
        assert_eq!(v.get("QUEUE"), Some("jobs "));
        assert_eq!(v.get("EMPTY"), Some(""));
        assert_eq!(v.get("QUOTED"), Some("\"kept\""));
    }

    #[test]
    fn errors_name_the_line_but_not_the_value() {
        let e = parse(b"A=1\n1BAD=secret-value\n", Path::new("a.env"))
            .expect_err("bad key")
            .to_string();
        assert!(e.contains("a.env:2"), "{e}");
        assert!(!e.contains("secret-value"), "{e}");
        let e = parse(b"A=1\nB=2\njust-a-secret\n", Path::new("a.env"))
            .expect_err("no =")
            .to_string();
        assert!(e.contains("a.env:3") && e.contains("KEY=VALUE"), "{e}");
        assert!(!e.contains("just-a-secret"), "{e}");
        let e = parse(b"A=x\0y\n", Path::new("a.env")).expect_err("nul").to_string();
        assert!(e.contains("NUL"), "{e}");
        // A pasted URL with '=' in it: the part before '=' is not echoed either.
        let e = parse(b"postgres://user:hunter2@db/x?a=b\n", Path::new("a.env"))
            .expect_err("url")
            .to_string();
        assert!(e.contains("a.env:1") && e.contains("character 9"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        // CRLF line endings are fine (as for Docker); a stray \r inside a value is not.
        assert_eq!(
            parse(b"A=ok\r\n", Path::new("a.env")).expect("crlf").get("A"),
            Some("ok")
        );
        let e = parse(b"A=o\rk\n", Path::new("a.env")).expect_err("cr").to_string();
        assert!(e.contains("a.env:1") && e.contains("carriage return"), "{e}");
        let e = parse(&[b'A', b'=', 0xff, b'\n'], Path::new("a.env"))
            .expect_err("utf8")
            .to_string();
        assert!(e.contains("a.env:1: not valid UTF-8"), "{e}");
    }

    #[test]
    fn api_values_must_fit_the_syntax() {
        assert!(check_var("A_1", "anything = goes # here").is_ok());
        let e = check_var("A", "line\nbreak").expect_err("newline").to_string();
        assert!(e.contains("line break") && !e.contains("break\""), "{e}");
        assert!(check_var("A", "x\0").is_err());
        assert!(check_var("9A", "x").is_err());
        let e = check_var("postgres://u:pw@db/x?a", "")
            .expect_err("not a name")
            .to_string();
        assert!(!e.contains("pw@db"), "a pasted value is not echoed: {e}");
        assert!(e.contains("a name of 22 characters (not shown)"), "{e}");
        let e = check_var("MY-KEY", "").expect_err("a dash").to_string();
        assert!(e.contains("\"MY-KEY\""), "a mistyped name is: {e}");
        assert!(check_var("", "x").is_err());
        let big = vars(&[("A", &"x".repeat(MAX_BYTES))]);
        assert!(check_vars(&big).expect_err("too big").to_string().contains("limit"));
    }

    #[test]
    fn changed_keys_lists_names_only() {
        let old = vars(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let new = vars(&[("A", "1"), ("B", "two"), ("D", "4")]);
        assert_eq!(changed_keys(&old, &new), vec!["B", "C", "D"]);
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn debug_never_shows_values() {
        let v = vars(&[("PASSWORD", "hunter2")]);
        let shown = format!("{v:?}");
        assert!(shown.contains("PASSWORD") && !shown.contains("hunter2"), "{shown}");
    }

    proptest! {
        #[test]
        fn rendered_envs_parse_back(
            entries in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,12}", "[^\n\r\0]{0,30}", 0..8)
        ) {
            let v: Vars = entries.into_iter().collect();
            prop_assert!(check_vars(&v).is_ok());
            prop_assert_eq!(parse(&render(&v), Path::new("p.env")).expect("parses"), v);
        }
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

    #[test]
    fn quoted_values_are_found_by_their_last_line_and_unquoted() {
        let text = "A=\"prod\"\n# B=\"x\"\nB='one'\nC=plain\nD=\"half\nB=two\nE=\"\"\nF=\"\n";
        let found = quoted_values(text);
        let got: Vec<(usize, &str)> = found.iter().map(|q| (q.line, q.key.as_str())).collect();
        assert_eq!(got, [(1, "A"), (7, "E")]);
        assert_eq!(unquote("\"prod\""), Some("prod"));
        assert_eq!(unquote("'a b'"), Some("a b"));
        assert_eq!(unquote("\"mixed'"), None);
        assert_eq!(unquote("\""), None, "one quote is not a pair");
        assert_eq!(unquote("plain"), None);
    }
}
