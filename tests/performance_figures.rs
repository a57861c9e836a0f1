//! Every figure in docs/performance.md can be traced to the run that produced it: each
//! table of numbers sits in a section that names a recorded result under `docs/img/` and
//! the commit it was measured at, and a recorded bench report's own commit (the bench
//! writes it) is one the section names. A figure whose code has moved on is regenerated,
//! not carried: git keeps the history.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A heading and the lines under it, down to the next heading of any level.
#[derive(Debug)]
struct Section {
    heading: String,
    /// 2 for `##`, 3 for `###` (the document's title, `#`, is level 1).
    level: usize,
    lines: Vec<String>,
}

fn sections(text: &str) -> Vec<Section> {
    let mut out = vec![Section {
        heading: "(top)".into(),
        level: 1,
        lines: Vec::new(),
    }];
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !fenced && hashes > 0 && line[hashes..].starts_with(' ') {
            out.push(Section {
                heading: line.to_owned(),
                level: hashes,
                lines: Vec::new(),
            });
        } else if let Some(s) = out.last_mut() {
            s.lines.push(line.to_owned());
        }
    }
    out
}

/// What a section says its figures came from: recorded files under `img/` and commits
/// (a hex word of 7 to 40 digits after the word "commit").
#[derive(Debug, Default, Clone)]
struct Provenance {
    files: Vec<String>,
    commits: Vec<String>,
}

impl Provenance {
    fn of(lines: &[String]) -> Self {
        let text = lines.join(" ");
        let mut p = Provenance::default();
        for (i, _) in text.match_indices("img/") {
            let name: String = text[i + 4..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || ['-', '_', '.'].contains(c))
                .collect();
            let name = name.trim_end_matches('.').to_owned();
            if (name.ends_with(".json") || name.ends_with(".folded")) && !p.files.contains(&name) {
                p.files.push(name);
            }
        }
        let words: Vec<&str> = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for w in words.windows(2) {
            let hex = w[1].len() >= 7 && w[1].chars().all(|c| c.is_ascii_hexdigit());
            if w[0].eq_ignore_ascii_case("commit") && hex {
                p.commits.push(w[1].to_lowercase());
            }
        }
        p
    }

    fn is_named(&self) -> bool {
        !self.files.is_empty() && !self.commits.is_empty()
    }
}

/// A Markdown table row holding a number in a cell (not a header's separator row).
fn is_figure_row(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|')
        && !t.chars().all(|c| "|-: ".contains(c))
        && t.split('|')
            .skip(2)
            .any(|cell| cell.chars().any(|c| c.is_ascii_digit()))
}

/// Headings of sections with a figure table but no source named, in it or in the `##`
/// section above it.
fn unsourced(text: &str) -> Vec<String> {
    let mut parent = Provenance::default();
    let mut out = Vec::new();
    for s in sections(text) {
        let own = Provenance::of(&s.lines);
        if s.level <= 2 {
            parent = own.clone();
        }
        let named = own.is_named() || parent.is_named();
        if !named && s.lines.iter().any(|l| is_figure_row(l)) {
            out.push(s.heading.clone());
        }
    }
    out
}

#[test]
fn every_figure_table_names_its_recording_and_commit() {
    let text = std::fs::read_to_string(repo().join("docs/performance.md"))
        .expect("reading docs/performance.md");
    let missing = unsourced(&text);
    assert!(
        missing.is_empty(),
        "sections of docs/performance.md with figures but no `img/…` recording and commit: {missing:?}"
    );
}

/// A bench report records the commit it was built from; the section quoting it must name
/// that commit, and a report from uncommitted code (`-dirty`) is not a source.
#[test]
fn every_quoted_bench_report_was_measured_at_the_commit_named() {
    let text = std::fs::read_to_string(repo().join("docs/performance.md"))
        .expect("reading docs/performance.md");
    let mut parent = Provenance::default();
    let mut wrong = Vec::new();
    for s in sections(&text) {
        let own = Provenance::of(&s.lines);
        if s.level <= 2 {
            parent = own.clone();
        }
        let commits: Vec<&String> = own.commits.iter().chain(&parent.commits).collect();
        for file in own.files.iter().filter(|f| f.ends_with(".json")) {
            let path = repo().join("docs/img").join(file);
            let json: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            )
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let Some(recorded) = json.get("commit").and_then(|c| c.as_str()) else {
                wrong.push(format!(
                    "{file}: no commit recorded (quoted in {})",
                    s.heading
                ));
                continue;
            };
            let clean = !recorded.ends_with("-dirty");
            let named = commits
                .iter()
                .any(|c| recorded.starts_with(c.as_str()) || c.starts_with(recorded));
            if !(clean && named) {
                wrong.push(format!(
                    "{file} was measured at {recorded}; {} names {commits:?}",
                    s.heading
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_checker_finds_a_table_without_its_source() {
    let doc = "# P\n\n## A\n\nCommit abc1234, JSON [x](img/a.json).\n\n### 1\n\n| a | b |\n|---|---:|\n| x | 12 |\n\n## B\n\n### 2\n\n| a | b |\n|---|---:|\n| x | 12 |\n\n### 3\n\nCommit 1234567: img/c.folded\n\n| a | b |\n|---|---:|\n| y | 3 |\n\n### 4\n\n| a | b |\n|---|---|\n| no | figure |\n";
    assert_eq!(unsourced(doc), vec!["### 2".to_owned()]);
    let p = Provenance::of(&["measured at commit 4857f04, JSON img/worker-cpu.json.".into()]);
    assert_eq!(p.files, vec!["worker-cpu.json".to_owned()]);
    assert_eq!(p.commits, vec!["4857f04".to_owned()]);
}
