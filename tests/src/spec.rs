//! Service specs for the tests, built in code and rendered as the TOML that
//! `berthctl apply -f` reads. One builder, so every test states only what
//! its service needs beyond the usual shape.
//!
//! A [`Spec`] is plain data: top-level keys, then tables, in the order they
//! were first set; setting a key again replaces its value in place. Values
//! are Rust values ([`TomlValue`]), quoted and escaped here.

use std::path::{Path, PathBuf};

use crate::image;

/// A service spec under construction; [`Spec::toml`] renders it.
#[derive(Debug, Clone)]
pub struct Spec {
    name: String,
    /// Table name ("" for the top level) and its keys with rendered values.
    tables: Vec<(String, Vec<(String, String)>)>,
}

impl Spec {
    /// `name`, the test image `tag` (see [`image`]) and `stop_timeout = "2s"`:
    /// no published port, no health check.
    pub fn new(name: &str, tag: &str) -> Spec {
        Spec {
            name: name.to_owned(),
            tables: Vec::new(),
        }
        .key("name", name)
        .key("image", image(tag))
        .key("stop_timeout", "2s")
    }

    /// The spec most tests deploy: container port 8000 published on a
    /// host port Docker picks, health-checked on `/health`
    /// ([`Spec::health_http`]), and a 20s deploy gate.
    pub fn checked(name: &str, tag: &str) -> Spec {
        Spec::new(name, tag)
            .key("ports", ["8000"])
            .health_http("/health")
            .set("deploy", "health_deadline", "20s")
    }

    /// Sets the top-level `key` (e.g. `priority`, `ports`, `image`).
    pub fn key(self, key: &str, value: impl TomlValue) -> Spec {
        self.set("", key, value)
    }

    /// Sets `key` in `[table]`.
    pub fn set(mut self, table: &str, key: &str, value: impl TomlValue) -> Spec {
        let value = value.toml();
        let keys = match self.tables.iter_mut().find(|(t, _)| t == table) {
            Some((_, keys)) => keys,
            None => {
                self.tables.push((table.to_owned(), Vec::new()));
                let last = self.tables.len() - 1;
                &mut self.tables[last].1
            }
        };
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => keys.push((key.to_owned(), value)),
        }
        self
    }

    /// `[health] http = PATH`, probed every 500ms with a 500ms timeout and
    /// 3 retries, so a bad version fails its gate quickly.
    pub fn health_http(self, path: &str) -> Spec {
        self.set("health", "http", path).health_timing()
    }

    /// `[health] exec = ARGV`, with the timing of [`Spec::health_http`].
    pub fn health_exec(self, argv: &[&str]) -> Spec {
        self.set("health", "exec", argv).health_timing()
    }

    fn health_timing(self) -> Spec {
        self.set("health", "interval", "500ms")
            .set("health", "timeout", "500ms")
            .set("health", "retries", 3)
    }

    /// `[proxy]`: an nginx site for `server_name` on `listen`.
    pub fn proxy(self, server_name: &str, listen: u16) -> Spec {
        self.set("proxy", "server_names", [server_name])
            .set("proxy", "listen", [listen])
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec as TOML.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        for (table, keys) in &self.tables {
            if !table.is_empty() {
                out.push_str(&format!("[{table}]\n"));
            }
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }

    /// Writes the spec as `DIR/NAME.toml` and returns the path.
    pub fn write_in(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, self.toml()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

/// A value a spec key can take, rendered as TOML.
pub trait TomlValue {
    /// The value as TOML text.
    fn toml(&self) -> String;
}

impl TomlValue for &str {
    fn toml(&self) -> String {
        let mut s = String::from('"');
        for c in self.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                c if c.is_control() => s.push_str(&format!("\\u{:04X}", u32::from(c))),
                c => s.push(c),
            }
        }
        s.push('"');
        s
    }
}

impl TomlValue for String {
    fn toml(&self) -> String {
        self.as_str().toml()
    }
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl TomlValue for $t {
            fn toml(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
plain!(i32, i64, u16, u32, u64, f64, bool);

impl<T: TomlValue> TomlValue for &[T] {
    fn toml(&self) -> String {
        let items: Vec<String> = self.iter().map(TomlValue::toml).collect();
        format!("[{}]", items.join(", "))
    }
}

impl<T: TomlValue, const N: usize> TomlValue for [T; N] {
    fn toml(&self) -> String {
        self.as_slice().toml()
    }
}

impl<T: TomlValue> TomlValue for Vec<T> {
    fn toml(&self) -> String {
        self.as_slice().toml()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_keys_then_tables_and_replaces_in_place() {
        let spec = Spec::new("web", "v1")
            .key("ports", ["8000"])
            .set("resources", "cpus", 0.5)
            .health_exec(&["sh", "-c", "test ! -f \"/tmp/x\""])
            .set("health", "retries", 2)
            .key("stop_timeout", "1s")
            .key("priority", -5);
        assert_eq!(
            spec.toml(),
            format!(
                "name = \"web\"\nimage = \"{}\"\nstop_timeout = \"1s\"\nports = [\"8000\"]\npriority = -5\n\
                 [resources]\ncpus = 0.5\n\
                 [health]\nexec = [\"sh\", \"-c\", \"test ! -f \\\"/tmp/x\\\"\"]\ninterval = \"500ms\"\n\
                 timeout = \"500ms\"\nretries = 2\n",
                image("v1")
            )
        );
    }
}
