//! `--select KEY=VALUE` and `KEY!=VALUE`: which hosts of a selection a
//! command talks to. Selectors are ANDed; a key is a label, or `name` /
//! `address` for the host's own fields. A host without the label does not
//! match `KEY=VALUE` and does match `KEY!=VALUE`.

use std::fmt;
use std::str::FromStr;

use super::inventory::Host;

/// One `--select` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Label key, or `name` / `address`.
    pub key: String,
    /// True for `!=`.
    pub negated: bool,
    /// The value compared with.
    pub value: String,
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, negated, value) = match s.split_once("!=") {
            Some((k, v)) => (k, true, v),
            None => match s.split_once('=') {
                Some((k, v)) => (k, false, v),
                None => return Err(format!("{s:?}: expected KEY=VALUE or KEY!=VALUE, e.g. role=web")),
            },
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{s:?}: the key before '=' is empty"));
        }
        Ok(Selector {
            key: key.to_owned(),
            negated,
            value: value.trim().to_owned(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{}{op}{}", self.key, self.value)
    }
}

impl Selector {
    /// Whether `host` satisfies this condition.
    pub fn matches(&self, host: &Host) -> bool {
        let actual = match self.key.as_str() {
            "name" => Some(host.name.clone()),
            "address" => Some(host.target.to_string()),
            key => host.labels.get(key).cloned(),
        };
        let equal = actual.as_deref() == Some(self.value.as_str());
        equal != self.negated
    }
}

/// The hosts that satisfy every selector, in their order.
pub fn filter(hosts: Vec<Host>, selectors: &[Selector]) -> Vec<Host> {
    hosts
        .into_iter()
        .filter(|h| selectors.iter().all(|s| s.matches(h)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn host(name: &str, labels: &[(&str, &str)]) -> Host {
        Host {
            name: name.to_owned(),
            target: format!("{name}.internal:7443").parse().expect("target"),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            tls_dir: None,
            cert: None,
        }
    }

    #[test]
    fn selectors_and_together() {
        let hosts = vec![
            host("web-1", &[("role", "web"), ("az", "a")]),
            host("web-2", &[("role", "web"), ("az", "b")]),
            host("worker-1", &[("role", "worker")]),
        ];
        let sel = |v: &[&str]| -> Vec<String> {
            let s: Vec<Selector> = v.iter().map(|s| s.parse().expect("selector")).collect();
            filter(hosts.clone(), &s).into_iter().map(|h| h.name).collect()
        };
        assert_eq!(sel(&["role=web"]), ["web-1", "web-2"]);
        assert_eq!(sel(&["role=web", "az!=a"]), ["web-2"]);
        assert_eq!(sel(&["az!=a"]), ["web-2", "worker-1"], "no label matches !=");
        assert_eq!(sel(&["name=worker-1"]), ["worker-1"]);
        assert_eq!(sel(&["address=web-2.internal:7443"]), ["web-2"]);
        assert!(sel(&["role=db"]).is_empty());
        assert!("role".parse::<Selector>().is_err());
        assert!("=web".parse::<Selector>().is_err());
        assert_eq!("a!=b".parse::<Selector>().expect("ne").to_string(), "a!=b");
    }
}
