//! The crate's layering, checked from its sources: every module path a file names (`use` items
//! and inline `crate::`/`super::`/`self::` paths) is an edge, and
//!
//! 1. a top-level module uses only the layers below it (the table in `LAYERS`), so the core
//!    never reaches the runtime and the runtime never reaches the features;
//! 2. no modules import each other in a loop — the equivalent of
//!    `cargo modules dependencies --acyclic`, with one allowance: a parent module naming its own
//!    children (`mod x; pub use x::Y;`) is structure, not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the top-level modules it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("document", &["protocol"]),
    ("ops", &["protocol"]),
    ("core", &["protocol"]),
    ("storage", &["ops", "document"]),
    ("testing", &["core", "protocol"]),
    ("runtime", &["core", "protocol", "ops"]),
    (
        "features",
        &["core", "protocol", "document", "ops", "storage"],
    ),
    (
        "config",
        &[
            "runtime", "features", "storage", "ops", "core", "protocol", "document",
        ],
    ),
    (
        "app",
        &[
            "config", "features", "storage", "runtime", "ops", "core", "protocol", "document",
            "testing",
        ],
    ),
];

/// `a::b::c` as segments.
type ModPath = Vec<String>;

struct Source {
    module: ModPath,
    text: String,
    children: BTreeSet<String>,
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (doc links name modules without depending on them) and
/// without string literals.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
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
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A char literal such as '"'.
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        match t.find('{') {
            None => {
                for part in t.split(',').filter(|p| !p.is_empty()) {
                    out.push(format!("{prefix}{part}"));
                }
            }
            Some(open) => {
                let head = &t[..open];
                let inner = &t[open + 1..t.rfind('}').unwrap()];
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&format!("{prefix}{head}"), &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                go(&format!("{prefix}{head}"), &inner[start..], out);
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Paths this file names: `use` trees and inline `crate::` / `super::` / `self::` paths.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        paths.extend(expand_use(&after[..end]));
        rest = &after[end..];
    }
    for root in ["crate::", "super::", "self::"] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                paths.push(tail[..len].trim_end_matches(':').to_string());
            }
            rest = &tail[root.len()..];
        }
    }
    paths
}

fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(word) {
        let at = from + i;
        let before = s[..at].chars().last();
        let after = s[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if boundary(before) && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The module a path names: the longest prefix that is a module of the crate.
fn resolve(path: &str, src: &Source, modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut base, rest): (ModPath, &[&str]) = match segs.first()? {
        &"crate" => (Vec::new(), &segs[1..]),
        &"self" => (src.module.clone(), &segs[1..]),
        &"super" => {
            // `super` is the parent module whatever the file layout; each one goes up a level.
            let ups = segs.iter().take_while(|s| **s == "super").count();
            let keep = src.module.len().checked_sub(ups)?;
            (src.module[..keep].to_vec(), &segs[ups..])
        }
        first if src.children.contains(*first) => (src.module.clone(), &segs[..]),
        _ => return None, // an external crate or std
    };
    let mut best = base.clone();
    for s in rest {
        base.push(s.to_string());
        if modules.contains(&base) {
            best = base.clone();
        } else {
            break;
        }
    }
    Some(best)
}

#[test]
fn layers_and_modules_have_no_cycles() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let mut sources = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let text = code_only(&std::fs::read_to_string(file).unwrap());
        let module = module_of(&src, file);
        let mut children = BTreeSet::new();
        for line in text.lines() {
            let l = line.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            if let Some(name) = l.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) {
                children.insert(name.trim().to_string());
            }
        }
        modules.insert(module.clone());
        sources.push(Source {
            module,
            text,
            children,
        });
    }

    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let mut violations = Vec::new();
    for source in &sources {
        if source.module.is_empty() {
            continue; // lib.rs: the crate map and its re-exports
        }
        let top = source.module[0].as_str();
        let allowed = layers
            .get(top)
            .unwrap_or_else(|| panic!("top-level module `{top}` has no layer in LAYERS"));
        for path in named_paths(&source.text) {
            let Some(target) = resolve(&path, source, &modules) else {
                continue;
            };
            if target.is_empty() || target == source.module {
                continue;
            }
            let target_top = target[0].as_str();
            if target_top != top && !allowed.contains(&target_top) {
                violations.push(format!(
                    "{} uses {} (`{path}`): layer `{top}` may use only {allowed:?}",
                    source.module.join("::"),
                    target.join("::"),
                ));
            }
            // A parent naming its own descendants is structure.
            if target.starts_with(&source.module) {
                continue;
            }
            edges
                .entry(source.module.clone())
                .or_default()
                .insert(target);
        }
    }
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );

    // Cycles: depth-first search with colours.
    fn visit(
        m: &ModPath,
        edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        state: &mut BTreeMap<ModPath, u8>,
        stack: &mut Vec<ModPath>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, cycles),
                1 => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    let names: Vec<String> = stack[from..]
                        .iter()
                        .chain(std::iter::once(next))
                        .map(|p| p.join("::"))
                        .collect();
                    cycles.push(names.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for m in edges.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            visit(m, &edges, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    // The check sees the crate: every layer has files, and edges were found.
    assert!(edges.len() > 20, "only {} modules with edges", edges.len());
}

#[test]
fn the_checker_sees_cycles_and_layer_breaks() {
    // Its parsing, on the shapes the crate uses.
    assert_eq!(
        expand_use("crate::core::{Addr, ctx::{A, B}}"),
        vec![
            "crate::core::Addr",
            "crate::core::ctx::A",
            "crate::core::ctx::B"
        ]
    );
    let code = code_only("use super::x; // crate::runtime\nlet a = crate::ops::y(\"crate::z\");");
    let paths = named_paths(&code);
    assert!(paths.contains(&"super::x".to_string()));
    assert!(paths.contains(&"crate::ops::y".to_string()));
    assert!(!paths
        .iter()
        .any(|p| p.contains("runtime") || p.contains("z")));
}
