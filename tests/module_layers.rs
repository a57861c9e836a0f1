//! The library's top-level modules form layers: no module reaches, through `crate::` paths
//! in its production code, a module that reaches back to it. A cycle means two concepts
//! cannot be read, tested or moved apart; this test names the cycle when one appears.
//!
//! Unit tests (a trailing `#[cfg(test)] mod …`) and comments (doc links included) are not
//! dependencies and are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading a source directory") {
            let path = entry.expect("a source entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The file's production code: without its trailing unit-test module and without comments.
fn production_code(text: &str) -> String {
    let mut kept = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.contains("mod ") && next.trim_end().ends_with('{'))
        {
            break;
        }
        if !trimmed.starts_with("//") {
            kept.push(line);
        }
    }
    kept.join("\n")
}

/// The first path segment of every `crate::` path in `code`, grouped imports included.
fn crate_roots(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut roots = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of `crate::{a, b::{c, d}, e}`.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        roots.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            roots.insert(ident(rest));
        }
    }
    roots
}

/// Which top-level module's production code names which other top-level module.
fn module_graph() -> Graph {
    let root = src();
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&root).expect("reading src/") {
        let path = entry.expect("a src/ entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name")
            .to_owned();
        if name == "lib" {
            continue;
        }
        let files = if path.is_dir() {
            rust_files(&path)
        } else {
            vec![path]
        };
        if !files.is_empty() {
            modules.insert(name, files);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .into_iter()
        .map(|(name, files)| {
            let mut uses = BTreeSet::new();
            for file in files {
                let text = std::fs::read_to_string(&file).expect("reading a source file");
                uses.extend(crate_roots(&production_code(&text)));
            }
            uses.retain(|used| used != &name && names.contains(used));
            (name, uses)
        })
        .collect()
}

/// One cycle in `graph`, as the modules along it, if there is any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = path.iter().position(|n| n == next).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(graph, next, marks, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node.as_str())
            && let Some(cycle) = visit(graph, node, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_module_reaches_back_to_itself() {
    let graph = module_graph();
    assert!(
        graph.len() > 10 && graph.values().any(|uses| !uses.is_empty()),
        "the scan found the library's modules and their uses: {graph:#?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("a module cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_checker_sees_a_cycle_through_a_grouped_import() {
    let code = "use crate::{model::Key, writer::{Writer, Outcome}};\n\
                // crate::audit in a comment is not a use\n\
                fn f() { crate::lt::NameRange::all(); }";
    assert_eq!(
        crate_roots(&production_code(code)),
        ["lt", "model", "writer"].map(String::from).into()
    );
    let tail = "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::audit::Audit;\n}\n";
    assert!(crate_roots(&production_code(tail)).is_empty());

    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(Graph::new(), |mut g, (from, to)| {
            g.entry(from.into()).or_default().insert(to.into());
            g
        });
    let cycle = find_cycle(&graph).expect("a → b → c → a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let acyclic: Graph =
        [("a", "b"), ("b", "c"), ("a", "c")]
            .into_iter()
            .fold(Graph::new(), |mut g, (from, to)| {
                g.entry(from.into()).or_default().insert(to.into());
                g
            });
    assert_eq!(find_cycle(&acyclic), None);
}
