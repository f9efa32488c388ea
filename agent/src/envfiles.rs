//! Service env files: `env_dir/NAME.env` in Docker's env-file syntax.
//!
//! Owns parsing and validating them (`KEY=VALUE` per line, `#` comments and
//! blank lines ignored, values taken literally as Docker does), with errors
//! that name the file and line but never echo a value, since values are
//! secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest env file accepted; larger is almost certainly a mistake, and it
/// all goes into the container's environment block.
pub const MAX_BYTES: usize = 1024 * 1024;

/// An env file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Reading failed.
    #[error("cannot read env file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `KEY=VALUE` (the value is never shown).
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Variables by name, in a stable order.
pub type Vars = BTreeMap<String, String>;

/// Reads `path`; a missing file is an empty env.
pub fn read(path: &Path) -> Result<Vars, EnvError> {
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vars::new()),
        Err(source) => Err(EnvError::Read {
            path: path.to_owned(),
            source,
        }),
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
        check_key(key).map_err(|m| invalid(n, m))?;
        vars.insert(key.to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// Checks a variable name: a letter or `_`, then letters, digits or `_`.
pub fn check_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid variable name (letters, digits and _, not starting with a digit)",
            truncate(key)
        ))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `KEY=VALUE` strings for Docker's container config.
pub fn to_docker(vars: &Vars) -> Vec<String> {
    vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax_literally() {
        let v = parse(
            b"# db\nDB_URL=postgres://u:p@h/db?x=1\n\n  QUEUE=jobs \nEMPTY=\nQUOTED=\"kept\"\n",
            Path::new("a.env"),
        )
        .expect("valid");
        assert_eq!(v["DB_URL"], "postgres://u:p@h/db?x=1");
        assert_eq!(v["QUEUE"], "jobs ");
        assert_eq!(v["EMPTY"], "");
        assert_eq!(v["QUOTED"], "\"kept\"");
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
    }
}
