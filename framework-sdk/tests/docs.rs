//! The Rust a reader finds in the documentation compiles, and says what the code does.
//!
//! - `README.md` is compiled as doctests of this crate (`ReadmeDoctests` in
//!   `src/lib.rs`): `cargo test -p strata-framework-sdk --doc`.
//! - `docs/*.md` walk through the examples piece by piece, and a piece of a program
//!   does not compile alone. So every Rust block there is marked
//!   `<!-- excerpt: examples/NAME.rs -->` on the line before it and must be a verbatim
//!   excerpt of that example (indentation aside; a `// ...` line stands for lines left
//!   out). The examples themselves are compiled with the workspace (`cargo build
//!   --examples`, `cargo test`), so a quoted piece cannot drift from code that builds.
//!   A docs page may instead be compiled as doctests like the README, by naming it
//!   with `include_str!` in `src/lib.rs`.

use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the SDK lives in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A fenced code block of a markdown file.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// What follows the opening fence, e.g. `rust,no_run`.
    info: String,
    /// The path in `<!-- excerpt: PATH -->` on the last non-blank line before the fence.
    excerpt_of: Option<String>,
    lines: Vec<String>,
}

impl Block {
    fn is_rust(&self) -> bool {
        self.info.split(',').next().map(str::trim) == Some("rust")
    }
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut last_text = "";
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        match open.as_mut() {
            Some(_) if trimmed == "```" => out.extend(open.take()),
            Some(block) => block.lines.push(line.to_string()),
            None if trimmed.starts_with("```") => {
                let excerpt_of = last_text
                    .strip_prefix("<!-- excerpt:")
                    .and_then(|rest| rest.strip_suffix("-->"))
                    .map(|path| path.trim().to_string());
                open = Some(Block {
                    line: i + 1,
                    info: trimmed.trim_start_matches('`').trim().to_string(),
                    excerpt_of,
                    lines: Vec::new(),
                });
            }
            None if !trimmed.is_empty() => last_text = trimmed,
            None => {}
        }
    }
    assert!(open.is_none(), "a code block is never closed: {open:?}");
    out
}

/// Whether `snippet` appears in `source`, line by line with indentation ignored, where
/// a snippet line starting with `// ...` stands for any number of source lines.
fn is_excerpt(snippet: &[String], source: &str) -> Result<(), String> {
    let source: Vec<&str> = source.lines().map(str::trim).collect();
    let mut segments: Vec<Vec<&str>> = vec![Vec::new()];
    for line in snippet {
        let line = line.trim();
        if line.starts_with("// ...") {
            segments.push(Vec::new());
        } else {
            segments
                .last_mut()
                .expect("one segment at least")
                .push(line);
        }
    }
    let first = &segments[0];
    let found_at = |segment: &[&str], from: usize| {
        (from..source.len()).find(|&at| source[at..].starts_with(segment))
    };
    let starts: Vec<usize> = if first.is_empty() {
        vec![0]
    } else {
        (0..source.len())
            .filter(|&at| source[at..].starts_with(first))
            .collect()
    };
    if starts.is_empty() {
        return Err(format!(
            "its first lines are not in the example: {first:#?}"
        ));
    }
    let mut best_failure = String::new();
    'start: for start in starts {
        let mut at = start + first.len();
        for segment in segments.iter().skip(1).filter(|s| !s.is_empty()) {
            match found_at(segment, at) {
                Some(found) => at = found + segment.len(),
                None => {
                    best_failure = format!(
                        "these lines (after a `// ...`) are not in the example after the ones before them: {segment:#?}"
                    );
                    continue 'start;
                }
            }
        }
        return Ok(());
    }
    Err(best_failure)
}

/// The markdown files a reader of the repository finds.
fn documentation() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let docs = std::fs::read_dir(root().join("docs")).expect("docs/ exists");
    let mut pages: Vec<PathBuf> = docs
        .map(|entry| entry.expect("a readable docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// Whether `src/lib.rs` compiles `file` (relative to the workspace root) as doctests.
fn compiled_as_doctests(file: &str) -> bool {
    let lib = read(&root().join("framework-sdk/src/lib.rs"));
    lib.contains(&format!("#[doc = include_str!(\"../../{file}\")]"))
}

#[test]
fn the_readme_is_compiled_as_doctests() {
    assert!(
        compiled_as_doctests("README.md"),
        "src/lib.rs no longer includes README.md as doctests: its Rust would go unchecked"
    );
    let readme = read(&root().join("README.md"));
    let rust = blocks(&readme).into_iter().filter(Block::is_rust).count();
    assert!(rust >= 1, "the README shows a scheduler in Rust");
}

#[test]
fn every_rust_block_of_the_docs_is_compiled_or_quotes_an_example() {
    let mut problems = Vec::new();
    let mut quoted = 0;
    for path in documentation() {
        let name = path
            .strip_prefix(root())
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        if compiled_as_doctests(&name) {
            continue;
        }
        for block in blocks(&read(&path)).into_iter().filter(Block::is_rust) {
            let at = format!("{name}:{}", block.line);
            let Some(example) = &block.excerpt_of else {
                problems.push(format!(
                    "{at}: a Rust block nothing compiles: put `<!-- excerpt: examples/NAME.rs -->` \
                     before it and quote that example verbatim, or compile {name} as doctests"
                ));
                continue;
            };
            let source = root().join(example);
            if !source.is_file() {
                problems.push(format!("{at}: quotes {example}, which does not exist"));
                continue;
            }
            match is_excerpt(&block.lines, &read(&source)) {
                Ok(()) => quoted += 1,
                Err(why) => problems.push(format!("{at}: not an excerpt of {example}: {why}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(
        quoted >= 10,
        "the walkthrough quotes the examples ({quoted} blocks)"
    );
}

#[test]
fn the_excerpt_check_catches_code_that_is_not_in_the_example() {
    let source = "fn main() {\n    let a = 1;\n    let b = 2;\n    println!(\"{}\", a + b);\n}\n";
    let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert_eq!(
        is_excerpt(&lines(&["let a = 1;", "let b = 2;"]), source),
        Ok(())
    );
    assert_eq!(
        is_excerpt(
            &lines(&["fn main() {", "// ...", "println!(\"{}\", a + b);"]),
            source
        ),
        Ok(())
    );
    assert!(is_excerpt(&lines(&["let a = 1;", "println!(\"{}\", a + b);"]), source).is_err());
    assert!(is_excerpt(&lines(&["let b = 2;", "// ...", "let a = 1;"]), source).is_err());
    assert!(is_excerpt(&lines(&["let unused = 3;"]), source).is_err());
}
