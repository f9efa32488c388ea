//! The agent's modules only point down, and none imports another in a
//! circle.
//!
//! Reads every file under `agent/src`, finds the modules each one names
//! (`crate::NAME` in code, comments skipped; `berth_agent::NAME` in
//! `main.rs`), and checks the graph of top-level modules against the layer
//! table below: an edge to a higher layer fails, and so does a cycle within
//! a layer. A new top-level module fails until it is given a layer. The
//! graph is printed (`cargo test -p berth-agent --test layers --
//! --nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may use its own layer (without a cycle) and the
/// ones below; `berth-core` is below all of them.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundation", &["clock", "config", "atomicfile"]),
    (
        "adapters",
        &[
            "docker",
            "nginx",
            "envfiles",
            "envwatch",
            "state",
            "health",
            "metrics",
            "oomwatch",
            "events",
            "audit",
            "hostinfo",
            "preflight",
            "tls",
            "telemetry",
            "notify",
            "leases",
            "dirs",
            "tlsreload",
            "neighbours",
        ],
    ),
    ("supervisor", &["supervisor", "fleet"]),
    ("policy", &["reconcile", "limits", "alerts"]),
    ("grpc", &["grpc"]),
    // cli: the binary's command line (build.rs compiles it too).
    ("root", &["lib", "main", "cli"]),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to: `supervisor/owner.rs` →
/// `supervisor`, `limits.rs` → `limits`, `lib.rs` → `lib`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a file").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The text with comments and string literals blanked out, so a doc link
/// or a message naming a module is not an import.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            // Char boundaries: copy whole UTF-8 sequences.
            let ch = text[i..].chars().next().expect("a char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Modules named after `prefix::` in `code`, including each top-level
/// name of a `prefix::{a, b::c}` group.
fn named(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let pat = format!("{prefix}::");
    let mut rest = code;
    while let Some(at) = rest.find(&pat) {
        // Not the tail of a longer path (`other_crate::...`).
        let before = rest[..at].chars().next_back();
        rest = &rest[at + pat.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.insert(ident(item.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// module → the modules it names. A name that is not a module (an item
/// of `lib.rs`, like `crate::CAPABILITIES` or `berth_agent::run`) counts as
/// the crate root. `lib.rs` also reaches modules by their bare names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let code = code_only(&text);
        let mut uses = named(&code, "crate");
        if module == "main" {
            uses.extend(named(&code, "berth_agent"));
        }
        if module == "lib" {
            for m in &modules {
                if !named(&code, m).is_empty() {
                    uses.insert(m.clone());
                }
            }
        }
        let uses: BTreeSet<String> = uses
            .into_iter()
            .map(|u| if modules.contains(&u) { u } else { "lib".to_owned() })
            .filter(|u| *u != module)
            .collect();
        graph.entry(module).or_default().extend(uses);
    }
    graph
}

/// A cycle through `start`, if the graph has one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn render(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut out = String::new();
    for (layer, mods) in LAYERS.iter().rev() {
        out.push_str(&format!("{layer}:\n"));
        for m in mods.iter().filter(|m| graph.contains_key(**m)) {
            let deps: Vec<&str> = graph[*m].iter().map(String::as_str).collect();
            out.push_str(&format!("  {m} -> {}\n", deps.join(", ")));
        }
    }
    out
}

#[test]
fn modules_only_point_down_and_never_in_a_circle() {
    let graph = graph();
    let shown = render(&graph);
    println!("{shown}");
    let mut problems = Vec::new();
    for (module, uses) in &graph {
        let Some((rank, layer)) = layer_of(module) else {
            problems.push(format!(
                "module {module} has no layer: add it to LAYERS in agent/tests/layers.rs"
            ));
            continue;
        };
        for used in uses {
            match layer_of(used) {
                Some((r, l)) if r > rank => {
                    problems.push(format!("{module} ({layer}) uses {used} ({l}), a layer above it"));
                }
                Some(_) => {}
                None => problems.push(format!("{module} uses {used}, which has no layer")),
            }
        }
    }
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            problems.push(format!("import circle: {}", cycle.join(" -> ")));
        }
    }
    assert!(problems.is_empty(), "{}\n\n{shown}", problems.join("\n"));
}

#[test]
fn the_scanner_finds_grouped_and_plain_uses_and_skips_comments() {
    let code = code_only(
        "use crate::{docker::{Engine, X}, nginx};\n// crate::grpc in a comment\n\
         let s = \"crate::limits\"; crate::clock::now_ms(); other_crate::state::x();\n\
         /* crate::reconcile */ use crate::config::Config;",
    );
    let found: Vec<String> = named(&code, "crate").into_iter().collect();
    assert_eq!(found, ["clock", "config", "docker", "nginx"]);
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle_from(&g, "a"), Some(vec!["a".into(), "b".into(), "a".into()]));
    g.insert("b".to_owned(), BTreeSet::new());
    assert_eq!(cycle_from(&g, "a"), None);
}
