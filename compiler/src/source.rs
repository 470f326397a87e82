//! The source map: every file (and every `--set` override) the compiler read, by [`FileId`].

use canc_grammar::{FileId, Span};
use codespan_reporting::files::SimpleFiles;
use std::path::{Path, PathBuf};

/// All sources of one compilation. Command-line overrides are sources too, so their
/// diagnostics get a caret like any file's.
#[derive(Default)]
pub struct SourceMap {
    files: SimpleFiles<String, String>,
    paths: Vec<Option<PathBuf>>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file read from `path`; `name` is how diagnostics show it.
    pub fn add_file(&mut self, name: String, path: Option<PathBuf>, text: String) -> FileId {
        self.paths.push(path);
        self.files.add(name, text) as FileId
    }

    /// The text of a source.
    pub fn text(&self, id: FileId) -> &str {
        self.files
            .get(id as usize)
            .map(|f| f.source().as_str())
            .unwrap_or("")
    }

    /// The display name of a source.
    pub fn name(&self, id: FileId) -> &str {
        self.files
            .get(id as usize)
            .map(|f| f.name().as_str())
            .unwrap_or("<unknown>")
    }

    /// The path a source was read from (none for `--set` overrides).
    pub fn path(&self, id: FileId) -> Option<&Path> {
        self.paths.get(id as usize).and_then(|p| p.as_deref())
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        let text = self.text(id);
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    /// `file:line:col` of a span's start.
    pub fn location(&self, span: Span) -> String {
        let (l, c) = self.line_col(span.file, span.start as usize);
        format!("{}:{l}:{c}", self.name(span.file))
    }

    /// The codespan file database (for rendering).
    pub fn files(&self) -> &SimpleFiles<String, String> {
        &self.files
    }
}
