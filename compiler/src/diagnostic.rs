//! Diagnostics: a coded, spanned message with labels, notes and a hint, rendered rustc-style by
//! codespan-reporting or written as JSON.

use crate::codes::Code;
use crate::source::SourceMap;
use canc_grammar::Span;
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term::{self, termcolor};
use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Makes the spec unusable: exit code 1.
    Error,
    /// Worth fixing, does not block.
    Warning,
}

/// A secondary location with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What about it.
    pub message: String,
}

/// One problem found in a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code.
    pub code: Code,
    /// One-line message.
    pub message: String,
    /// Primary location.
    pub span: Span,
    /// Text under the primary caret.
    pub label: String,
    /// Further locations.
    pub secondary: Vec<Label>,
    /// Extra facts.
    pub notes: Vec<String>,
    /// How to fix it ("did you mean ...").
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with `code` at `span`.
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Self {
        Self {
            severity: if code.id.starts_with('W') {
                Severity::Warning
            } else {
                Severity::Error
            },
            code,
            message: message.into(),
            span,
            label: String::new(),
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Sets the text under the primary caret.
    pub fn label(mut self, text: impl Into<String>) -> Self {
        self.label = text.into();
        self
    }

    /// Adds a secondary location.
    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: text.into(),
        });
        self
    }

    /// Adds a note.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }

    /// Sets the hint.
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help = Some(text.into());
        self
    }

    /// Sets the hint if there is one.
    pub fn maybe_help(mut self, text: Option<String>) -> Self {
        if text.is_some() {
            self.help = text;
        }
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn to_codespan(&self) -> cs::Diagnostic<usize> {
        let d = match self.severity {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
        };
        let mut labels = vec![
            cs::Label::primary(self.span.file as usize, self.span.range())
                .with_message(&self.label),
        ];
        labels.extend(self.secondary.iter().map(|l| {
            cs::Label::secondary(l.span.file as usize, l.span.range()).with_message(&l.message)
        }));
        let mut notes = self.notes.clone();
        if let Some(h) = &self.help {
            notes.push(format!("help: {h}"));
        }
        d.with_code(self.code.id)
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(notes)
    }
}

/// Output style for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// rustc-style with source excerpt and caret.
    Human,
    /// One line each: `file:line:col: error[E0011]: message`.
    Short,
}

/// Renders diagnostics to a string without colour (for tests and pipes).
pub fn render(diags: &[Diagnostic], sources: &SourceMap, style: Style) -> String {
    let mut buf = termcolor::NoColor::new(Vec::new());
    emit(&mut buf, diags, sources, style);
    String::from_utf8_lossy(&buf.into_inner()).into_owned()
}

/// Writes diagnostics to a colour-capable writer.
pub fn emit(
    w: &mut dyn termcolor::WriteColor,
    diags: &[Diagnostic],
    sources: &SourceMap,
    style: Style,
) {
    let mut config = term::Config::default();
    if style == Style::Short {
        config.display_style = term::DisplayStyle::Short;
    }
    for d in diags {
        // Rendering only fails on a span outside its file, a compiler bug; fall back to text.
        if term::emit_to_write_style(w, &config, sources.files(), &d.to_codespan()).is_err() {
            let _ = writeln!(
                w,
                "{}[{}]: {} ({})",
                if d.is_error() { "error" } else { "warning" },
                d.code.id,
                d.message,
                sources.location(d.span)
            );
        }
    }
}

/// The JSON form of one diagnostic (`--message-format json`, one object per line).
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    /// "error" or "warning".
    pub severity: Severity,
    /// Stable code.
    pub code: &'static str,
    /// One-line message.
    pub message: String,
    /// File name as shown to the user.
    pub file: String,
    /// 1-based line of the start.
    pub line: usize,
    /// 1-based column of the start.
    pub column: usize,
    /// 1-based line of the end.
    pub end_line: usize,
    /// 1-based column of the end.
    pub end_column: usize,
    /// Byte offsets of the primary span.
    pub byte_start: u32,
    /// End byte offset.
    pub byte_end: u32,
    /// Caret text.
    pub label: String,
    /// The hint, if any.
    pub help: Option<String>,
    /// Notes.
    pub notes: Vec<String>,
    /// The human rendering, for tools that show it verbatim.
    pub rendered: String,
}

impl Diagnostic {
    /// The JSON form, with positions resolved.
    pub fn to_json(&self, sources: &SourceMap) -> JsonDiagnostic {
        let (line, column) = sources.line_col(self.span.file, self.span.start as usize);
        let (end_line, end_column) = sources.line_col(self.span.file, self.span.end as usize);
        JsonDiagnostic {
            severity: self.severity,
            code: self.code.id,
            message: self.message.clone(),
            file: sources.name(self.span.file).to_string(),
            line,
            column,
            end_line,
            end_column,
            byte_start: self.span.start,
            byte_end: self.span.end,
            label: self.label.clone(),
            help: self.help.clone(),
            notes: self.notes.clone(),
            rendered: render(std::slice::from_ref(self), sources, Style::Human),
        }
    }
}

/// Sorts by file and position and drops exact duplicates (sweep variants re-check shared parts).
pub fn normalize(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (a.span.file, a.span.start, a.code.id, &a.message).cmp(&(
            b.span.file,
            b.span.start,
            b.code.id,
            &b.message,
        ))
    });
    diags.dedup();
}
