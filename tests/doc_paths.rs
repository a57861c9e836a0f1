//! Every repository path the README and the docs name exists: a moved or renamed file
//! fails the build instead of leaving a reader at a dead end.

use std::path::{Path, PathBuf};

/// Where paths named in the docs start.
const ROOTS: [&str; 7] = [
    "src/",
    "tests/",
    "infra/",
    "docs/",
    "workers/",
    "examples/",
    ".ci/",
];

/// Files at the top level the docs name.
const TOP_LEVEL: [&str; 6] = [
    "Cargo.toml",
    "Dockerfile",
    "docker-compose.yml",
    "deny.toml",
    "CHANGELOG.md",
    "README.md",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents checked: the README and every Markdown file under docs/.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![repo().join("README.md")];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading a docs directory") {
            let path = entry.expect("a docs entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    docs
}

/// The repository paths `text` names: inside backticks, or as a Markdown link's target
/// (resolved from the document's directory).
fn named(text: &str, dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let mut consider = |raw: &str, base: &Path| {
        let token = raw
            .split(['#', ' '])
            .next()
            .unwrap_or_default()
            .trim_end_matches([',', '.', ';', ':', ')']);
        if token.contains("://") || token.contains('<') || token.contains('*') {
            return;
        }
        let rooted = ROOTS.iter().any(|r| token.starts_with(r)) || TOP_LEVEL.contains(&token);
        if rooted {
            found.push((raw.to_owned(), repo().join(token)));
        } else if token.ends_with(".md") || token.starts_with("../") {
            found.push((raw.to_owned(), base.join(token)));
        }
    };
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 && !part.contains(' ') {
            consider(part, &repo());
        }
    }
    for link in text.split("](").skip(1) {
        if let Some(target) = link.split(')').next() {
            consider(target, dir);
        }
    }
    found
}

#[test]
fn every_path_the_docs_name_exists() {
    let mut missing = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("reading a document");
        let dir = doc.parent().expect("a document's directory").to_owned();
        for (raw, path) in named(&text, &dir) {
            if !path.exists() {
                missing.push(format!("{}: {raw}", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths named but missing:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checker_sees_paths_in_backticks_and_links() {
    let names = named(
        "see `src/lib.rs`, [the protocol](protocol.md#fence), `cargo run`, `src/nowhere.rs`",
        &repo().join("docs"),
    );
    let paths: Vec<_> = names.iter().map(|(raw, _)| raw.as_str()).collect();
    assert_eq!(paths, ["src/lib.rs", "src/nowhere.rs", "protocol.md#fence"]);
    assert!(names[0].1.exists() && !names[1].1.exists() && names[2].1.exists());
}

#[test]
fn the_readme_stays_a_front_door() {
    let lines = std::fs::read_to_string(repo().join("README.md"))
        .expect("reading the README")
        .lines()
        .count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines; the detail belongs in docs/"
    );
}

/// Every figure and recording under `docs/img/` is named by a document: a result nobody
/// cites is one nobody keeps current.
#[test]
fn every_recorded_figure_is_cited() {
    let docs: String = documents()
        .iter()
        .chain([repo().join("CHANGELOG.md")].iter())
        .map(|d| std::fs::read_to_string(d).expect("reading a document"))
        .collect();
    let uncited: Vec<String> = std::fs::read_dir(repo().join("docs/img"))
        .expect("reading docs/img")
        .map(|e| e.expect("a docs/img entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !docs.contains(&format!("img/{name}")))
        .collect();
    assert!(
        uncited.is_empty(),
        "files in docs/img no document names: {uncited:?}"
    );
}

/// The project speaks of itself, not of how it was made: no document or source names a
/// work session or a tracker issue by number (what changed is in CHANGELOG.md by version
/// and date, figures name their commit).
#[test]
fn no_work_log_references() {
    let mut files = documents();
    files.push(repo().join("CHANGELOG.md"));
    let mut dirs: Vec<PathBuf> = ["src", "tests", "workers", "examples", "infra"]
        .iter()
        .map(|d| repo().join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading a source directory") {
            let path = entry.expect("a source entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| {
                ["rs", "sh", "toml", "yaml", "yml", "md"].contains(&e.to_str().unwrap_or_default())
            }) {
                files.push(path);
            }
        }
    }
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if work_log_reference(line) {
                found.push(format!("{}:{}: {line}", file.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "work-log references:\n{}",
        found.join("\n")
    );
}

/// A word for a work period or a tracker entry ("session", "issue") followed by its number,
/// with or without `#`.
fn work_log_reference(line: &str) -> bool {
    let lower = line.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '#')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|w| {
        ["session", "sessions", "issue", "issues"].contains(&w[0])
            && w[1]
                .trim_start_matches('#')
                .chars()
                .all(|c| c.is_ascii_digit())
            && w[1]
                .trim_start_matches('#')
                .chars()
                .any(|c| c.is_ascii_digit())
    })
}

#[test]
fn the_work_log_check_sees_numbered_sessions_and_issues() {
    // Assembled, so that this file does not hold what it looks for.
    assert!(work_log_reference(&format!("measured in {} 12", "session")));
    assert!(work_log_reference(&format!("see {} #33", "Issue")));
    assert!(!work_log_reference("an issue with 3 rows"));
    assert!(!work_log_reference("the session's 12 calls"));
}
