//! Reads a spec and its `extends` chain into the source map, parsed, base first.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::source::SourceMap;
use canc_grammar::ast::{ItemKind, SpecFile};
use canc_grammar::{FileId, Span};
use std::path::{Path, PathBuf};

/// Most files an `extends` chain may hold.
const MAX_CHAIN: usize = 64;

/// A parsed file of the chain.
pub struct Loaded {
    /// Its id in the source map.
    pub file: FileId,
    /// Its syntax tree.
    pub ast: SpecFile,
}

/// Turns a syntax error into a diagnostic.
pub fn syntax_diagnostic(e: canc_grammar::SyntaxError) -> Diagnostic {
    let label = if e.expected.is_empty() {
        "here".to_string()
    } else {
        format!("expected {}", e.expected.join(" or "))
    };
    Diagnostic::error(codes::SYNTAX, e.span, e.message).label(label)
}

/// Most syntax errors reported for one file.
const MAX_SYNTAX_ERRORS: usize = 20;

/// The first syntax error and those after it: pest stops at the first error, so parsing resumes
/// at the next line that starts a top-level item (no indentation), with everything before it
/// blanked out so that spans stay right.
pub fn syntax_errors(
    text: &str,
    file: FileId,
    first: canc_grammar::SyntaxError,
) -> Vec<Diagnostic> {
    let mut out = vec![unclosed_hint(syntax_diagnostic(first.clone()), text, 0)];
    let mut at = first.span.end as usize;
    while out.len() < MAX_SYNTAX_ERRORS {
        let Some(start) = next_item_start(text, at) else {
            break;
        };
        let blanked: String = text
            .char_indices()
            .map(|(i, c)| if i < start && c != '\n' { ' ' } else { c })
            .collect();
        match canc_grammar::parse_file(&blanked, file) {
            Ok(_) => break,
            Err(e) => {
                if (e.span.start as usize) < start {
                    break;
                }
                at = (e.span.end as usize).max(start + 1);
                out.push(unclosed_hint(syntax_diagnostic(e), text, start));
            }
        }
    }
    out
}

/// Adds "a `{` above is not closed" when an error at the start of a line follows an open brace.
fn unclosed_hint(d: Diagnostic, text: &str, from: usize) -> Diagnostic {
    let pos = d.span.start as usize;
    let at_line_start = pos == 0 || text.as_bytes().get(pos - 1) == Some(&b'\n');
    let depth: i64 = text[from..pos.min(text.len())]
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .map(|l| l.matches('{').count() as i64 - l.matches('}').count() as i64)
        .sum();
    if at_line_start && depth > 0 {
        d.help("a `{` above is not closed")
    } else {
        d
    }
}

/// Byte offset of the first line after `from` that starts at column 0 with an identifier.
fn next_item_start(text: &str, from: usize) -> Option<usize> {
    let mut offset = text[..from.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    for line in text[offset..].split_inclusive('\n') {
        let starts_item = line.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if offset > from && starts_item {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// Reads the file at `path` and every base it extends. Returns the chain base first, or `None`
/// (with diagnostics) if a file is missing, unparsable, or the chain loops.
pub fn load_chain(
    path: &Path,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Loaded>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let file = sources.add_file(
                path.display().to_string(),
                Some(path.to_path_buf()),
                String::new(),
            );
            diags.push(
                Diagnostic::error(
                    codes::MISSING_FILE,
                    Span::new(file, 0, 0),
                    format!("cannot read `{}`: {e}", path.display()),
                )
                .label("no such spec"),
            );
            return None;
        }
    };
    let file = sources.add_file(path.display().to_string(), Some(path.to_path_buf()), text);
    load_from(file, sources, diags)
}

/// Like [`load_chain`] for a source already in the map (the root may be an in-memory text).
pub fn load_from(
    root: FileId,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Loaded>> {
    let mut chain: Vec<Loaded> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut current = root;
    loop {
        if let Some(p) = sources.path(current) {
            seen.push(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        }
        let ast = match canc_grammar::parse_file(sources.text(current), current) {
            Ok(ast) => ast,
            Err(e) => {
                diags.extend(syntax_errors(sources.text(current), current, e));
                return None;
            }
        };
        let base = extends_of(&ast, diags);
        chain.push(Loaded { file: current, ast });
        let Some((rel, span)) = base else { break };
        if chain.len() >= MAX_CHAIN {
            diags.push(Diagnostic::error(
                codes::INHERITANCE_CYCLE,
                span,
                format!("`extends` chain longer than {MAX_CHAIN} files"),
            ));
            return None;
        }
        let dir = sources
            .path(current)
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let base_path = normalize(&dir.join(&rel));
        let canonical = std::fs::canonicalize(&base_path).unwrap_or_else(|_| base_path.clone());
        if let Some(pos) = seen.iter().position(|s| *s == canonical) {
            let loop_desc: Vec<String> = seen[pos..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| {
                    p.file_name().map_or_else(
                        || p.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            diags.push(
                Diagnostic::error(
                    codes::INHERITANCE_CYCLE,
                    span,
                    format!("`extends` forms a cycle: {}", loop_desc.join(" -> ")),
                )
                .label("this leads back to a file already in the chain")
                .help("remove one `extends` so the chain ends"),
            );
            return None;
        }
        match std::fs::read_to_string(&base_path) {
            Ok(text) => {
                current = sources.add_file(
                    base_path.display().to_string(),
                    Some(base_path.clone()),
                    text,
                );
            }
            Err(e) => {
                let mut d = Diagnostic::error(
                    codes::MISSING_FILE,
                    span,
                    format!("cannot read base spec `{}`: {e}", base_path.display()),
                )
                .label("extended here")
                .note("`extends` paths are relative to the file that contains them");
                if let Some(hint) = sibling_hint(&base_path) {
                    d = d.help(hint);
                }
                diags.push(d);
                return None;
            }
        }
    }
    chain.reverse();
    Some(chain)
}

fn sibling_hint(missing: &Path) -> Option<String> {
    let dir = missing.parent()?;
    let name = missing.file_name()?.to_str()?;
    let names: Vec<String> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .ok()?
    .filter_map(|e| e.ok()?.file_name().into_string().ok())
    .filter(|n| n.ends_with(".canspec"))
    .collect();
    crate::suggest::did_you_mean(name, names.iter().map(String::as_str))
        .map(|s| format!("did you mean `{s}`?"))
}

/// The base named by the file's `extends`, checking it is first and unique.
fn extends_of(ast: &SpecFile, diags: &mut Vec<Diagnostic>) -> Option<(String, Span)> {
    let mut found = None;
    for (i, item) in ast.items.iter().enumerate() {
        if let ItemKind::Extends(s) = &item.kind {
            if i == 0 {
                found = Some((s.value.clone(), s.span));
            } else if found.is_some() {
                diags.push(
                    Diagnostic::error(
                        codes::MISPLACED_EXTENDS,
                        item.span,
                        "a spec extends at most one base",
                    )
                    .label("second `extends`"),
                );
            } else {
                diags.push(
                    Diagnostic::error(
                        codes::MISPLACED_EXTENDS,
                        item.span,
                        "`extends` must be the first item of the file",
                    )
                    .label("not first")
                    .help("move it to the top, before any block or `let`"),
                );
            }
        }
    }
    found
}

/// Removes `.` and `name/..` components without touching the file system, so diagnostics show
/// `specs/can.canspec` rather than `specs/ablations/../can.canspec`.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last = out.components().next_back();
                match last {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    Some(Component::RootDir) => {}
                    _ => out.push(".."),
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
