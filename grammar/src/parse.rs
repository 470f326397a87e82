//! pest pairs → [`ast::SpecFile`], one `x_of_pair` function per rule.

use crate::ast::*;
use crate::span::{FileId, Span};
use crate::{CanspecParser, Rule};
use pest::Parser;
use pest::iterators::Pair;

/// Deepest nesting of `(`, `[` and `{` accepted; deeper input is refused before pest recurses.
const MAX_NESTING: usize = 64;

/// A syntax error: where, and what was expected there.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Where parsing stopped (an empty or one-character span).
    pub span: Span,
    /// Human message: "expected a value, found `}`".
    pub message: String,
    /// Human names of what would have been accepted.
    pub expected: Vec<String>,
}

/// Parses a whole `.canspec` file. `file` tags every span.
pub fn parse_file(text: &str, file: FileId) -> Result<SpecFile, SyntaxError> {
    check_nesting(text, file)?;
    let mut pairs =
        CanspecParser::parse(Rule::file, text).map_err(|e| syntax_error(e, text, file))?;
    let root = pairs
        .next()
        .expect("pest returns the `file` pair on success");
    let b = Builder { text, file };
    let (items, trailing_comments) = b.collect_trivia(root.into_inner(), |b, p, stray| {
        (p.as_rule() != Rule::EOI).then(|| b.item_of_pair(p, stray))
    });
    Ok(SpecFile {
        items: items
            .into_iter()
            .map(|(trivia, (kind, span))| Item { trivia, kind, span })
            .collect(),
        trailing_comments,
    })
}

/// Parses a command-line override `path=value` into its path and value.
/// A value that is not valid syntax is taken as a bare string (`--set data.path=/tmp/x`).
pub fn parse_override(text: &str, file: FileId) -> Result<(Vec<Ident>, Value), SyntaxError> {
    check_nesting(text, file)?;
    let b = Builder { text, file };
    match CanspecParser::parse(Rule::override_arg, text) {
        Ok(mut pairs) => {
            let root = pairs.next().expect("override_arg pair");
            // Comments are allowed between tokens (`a=1 # why`) and dropped.
            let mut stray = Vec::new();
            let mut inner = b.non_comments(root, &mut stray);
            let target = inner.next().expect("path or ident");
            let path = b.path_of_pair(target);
            let value = b.value_of_pair(inner.next().expect("value"), &mut stray);
            Ok((path, value))
        }
        Err(err) => {
            let Some(eq) = text.find('=') else {
                return Err(SyntaxError {
                    span: Span::new(file, 0, text.len()),
                    message: "expected `path=value`".into(),
                    expected: vec!["`=`".into()],
                });
            };
            let key = text[..eq].trim();
            let key_ok = CanspecParser::parse(Rule::path, key).is_ok_and(|p| p.as_str() == key)
                || CanspecParser::parse(Rule::ident, key).is_ok_and(|p| p.as_str() == key);
            if !key_ok {
                return Err(syntax_error(err, text, file));
            }
            let path = key
                .split('.')
                .scan(0usize, |off, seg| {
                    let start = *off;
                    *off += seg.len() + 1;
                    Some(Ident {
                        name: seg.to_string(),
                        span: Span::new(file, start, start + seg.len()),
                    })
                })
                .collect();
            let raw = &text[eq + 1..];
            Ok((
                path,
                Value {
                    kind: ValueKind::Str(raw.to_string()),
                    span: Span::new(file, eq + 1, text.len()),
                },
            ))
        }
    }
}

/// Resets every span in the tree to the default, so two parses can be compared by structure.
pub fn strip_spans(file: &mut SpecFile) {
    fn comment(c: &mut Comment) {
        c.span = Span::default();
    }
    fn trivia(t: &mut Trivia) {
        t.leading.iter_mut().for_each(comment);
        t.trailing.iter_mut().for_each(comment);
    }
    fn ident(i: &mut Ident) {
        i.span = Span::default();
    }
    fn value(v: &mut Value) {
        v.span = Span::default();
        match &mut v.kind {
            ValueKind::List(xs) | ValueKind::Sweep(xs) => xs.iter_mut().for_each(value),
            ValueKind::Call(name, args) => {
                ident(name);
                for a in args {
                    a.name.iter_mut().for_each(ident);
                    value(&mut a.value);
                }
            }
            ValueKind::Var(i) => ident(i),
            ValueKind::Path(p) => p.iter_mut().for_each(ident),
            _ => {}
        }
    }
    fn block(b: &mut Block) {
        b.span = Span::default();
        ident(&mut b.kind);
        b.name.iter_mut().for_each(ident);
        b.ty.iter_mut().for_each(ident);
        b.closing_comments.iter_mut().for_each(comment);
        for e in &mut b.entries {
            e.span = Span::default();
            trivia(&mut e.trivia);
            match &mut e.kind {
                EntryKind::Assign(k, v) => {
                    ident(k);
                    value(v);
                }
                EntryKind::Block(inner) => block(inner),
            }
        }
    }
    file.trailing_comments.iter_mut().for_each(comment);
    for item in &mut file.items {
        item.span = Span::default();
        trivia(&mut item.trivia);
        match &mut item.kind {
            ItemKind::Extends(s) => s.span = Span::default(),
            ItemKind::Let(name, v) => {
                ident(name);
                value(v);
            }
            ItemKind::Set(path, v) => {
                path.iter_mut().for_each(ident);
                value(v);
            }
            ItemKind::Block(b) => block(b),
        }
    }
}

fn check_nesting(text: &str, file: FileId) -> Result<(), SyntaxError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' | '\n' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '#' => in_comment = true,
            '"' => in_string = true,
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(SyntaxError {
                        span: Span::new(file, i, i + 1),
                        message: format!("nesting deeper than {MAX_NESTING} levels"),
                        expected: vec![],
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Human names for the rules pest reports as expected.
fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::ident | Rule::block_name => "a name",
        Rule::block_type => "`:` and a type",
        Rule::block => "a block (`name { ... }`)",
        Rule::assign => "`key = value`",
        Rule::extends => "`extends \"file\"`",
        Rule::let_stmt => "`let name = value`",
        Rule::set_stmt => "an override (`a.b = value`)",
        Rule::path => "a dotted path (`a.b`)",
        Rule::value | Rule::arg => "a value",
        Rule::kwarg => "`name = value`",
        Rule::sweep | Rule::kw_sweep => "`sweep [...]`",
        Rule::range => "a range (`0.2..1.0`)",
        Rule::quantity => "a quantity (`10 epochs`)",
        Rule::unit => "a unit (epochs, steps, images, ms, s, min, h, %)",
        Rule::number => "a number",
        Rule::string | Rule::string_inner => "a string",
        Rule::boolean => "`true` or `false`",
        Rule::none => "`none`",
        Rule::list => "a list (`[...]`)",
        Rule::call => "a call (`name(...)`)",
        Rule::var => "a variable (`$name`)",
        Rule::keyword => "a keyword",
        Rule::kw_extends => "`extends`",
        Rule::kw_let => "`let`",
        _ => "valid syntax",
    }
}

fn syntax_error(e: pest::error::Error<Rule>, text: &str, file: FileId) -> SyntaxError {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let end = text[pos..]
        .chars()
        .next()
        .map_or(pos, |c| pos + c.len_utf8());
    let found = match text[pos..].chars().next() {
        None => "end of file".to_string(),
        Some('\n') => "end of line".to_string(),
        Some(_) => {
            let tok: String = text[pos..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if tok.is_empty() {
                format!("`{}`", &text[pos..end])
            } else {
                format!("`{tok}`")
            }
        }
    };
    let mut expected: Vec<String> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives
            .iter()
            .flat_map(|r| match r {
                // A comment may appear between any two tokens, so pest lists it in nearly every
                // error; it is never what the user meant to write.
                Rule::COMMENT => vec![],
                // pest names the entry rule when nothing could start at all (a keyword first).
                Rule::file => vec!["`extends`", "`let`", "a name", "end of file"],
                Rule::override_arg => vec![rule_name(Rule::path), rule_name(Rule::ident)],
                r => vec![rule_name(*r)],
            })
            .map(String::from)
            .collect(),
        ErrorVariant::CustomError { message } => vec![message.clone()],
    };
    expected.sort();
    expected.dedup();
    let message = match expected.len() {
        0 => format!("unexpected {found}"),
        1 => format!("expected {}, found {found}", expected[0]),
        _ => {
            let (last, rest) = expected.split_last().expect("len > 1");
            format!("expected {} or {last}, found {found}", rest.join(", "))
        }
    };
    SyntaxError {
        span: Span::new(file, pos, end),
        message,
        expected,
    }
}

/// Elements with their trivia, and the comments after the last element.
type Collected<T> = (Vec<(Trivia, (T, Span))>, Vec<Comment>);

struct Builder<'a> {
    text: &'a str,
    file: FileId,
}

impl<'a> Builder<'a> {
    fn span(&self, p: &Pair<'a, Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn comment(&self, p: &Pair<'a, Rule>) -> Comment {
        Comment {
            text: p.as_str().trim_end().to_string(),
            span: self.span(p),
        }
    }

    fn newlines_between(&self, a: u32, b: u32) -> usize {
        self.text[a as usize..b as usize].matches('\n').count()
    }

    /// Walks children that are either comments or elements built by `build`, attaching comments
    /// as leading or trailing trivia. Returns the elements and the comments after the last one.
    fn collect_trivia<T>(
        &self,
        pairs: impl IntoIterator<Item = Pair<'a, Rule>>,
        mut build: impl FnMut(&Self, Pair<'a, Rule>, &mut Vec<Comment>) -> Option<(T, Span)>,
    ) -> Collected<T> {
        let mut out: Vec<(Trivia, (T, Span))> = Vec::new();
        let mut pending: Vec<Comment> = Vec::new();
        let mut pending_blank = false;
        let mut last_end: Option<u32> = None;
        for p in pairs {
            let span = self.span(&p);
            let blank = last_end.is_some_and(|e| self.newlines_between(e, span.start) >= 2);
            if p.as_rule() == Rule::COMMENT {
                let c = self.comment(&p);
                let same_line = last_end.is_some_and(|e| self.newlines_between(e, span.start) == 0);
                match out.last_mut() {
                    Some((t, _)) if pending.is_empty() && same_line && t.trailing.is_none() => {
                        t.trailing = Some(c)
                    }
                    _ => {
                        if pending.is_empty() {
                            pending_blank = blank;
                        }
                        pending.push(c);
                    }
                }
                last_end = Some(span.end);
                continue;
            }
            let mut stray = Vec::new();
            let Some(elem) = build(self, p, &mut stray) else {
                continue;
            };
            let blank_before = if pending.is_empty() {
                blank
            } else {
                pending_blank
            };
            let blank_after_leading = !pending.is_empty()
                && last_end.is_some_and(|e| self.newlines_between(e, elem.1.start) >= 2);
            let mut leading = std::mem::take(&mut pending);
            leading.extend(stray);
            last_end = Some(elem.1.end);
            out.push((
                Trivia {
                    blank_before: blank_before && !out.is_empty(),
                    leading,
                    blank_after_leading,
                    trailing: None,
                },
                elem,
            ));
        }
        (out, pending)
    }

    fn item_of_pair(&self, p: Pair<'a, Rule>, stray: &mut Vec<Comment>) -> (ItemKind, Span) {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::extends => {
                let s = self
                    .non_comments(p, stray)
                    .find(|q| q.as_rule() == Rule::string)
                    .expect("extends has a string");
                ItemKind::Extends(self.str_lit(s))
            }
            Rule::let_stmt => {
                let mut it = self.non_comments(p, stray).skip(1);
                let name = self.ident(it.next().expect("let name"));
                let value = self.value_of_pair(it.next().expect("let value"), stray);
                ItemKind::Let(name, value)
            }
            Rule::set_stmt => {
                let mut it = self.non_comments(p, stray);
                let path = self.path_of_pair(it.next().expect("set path"));
                let value = self.value_of_pair(it.next().expect("set value"), stray);
                ItemKind::Set(path, value)
            }
            Rule::block => ItemKind::Block(self.block_of_pair(p, stray)),
            r => unreachable!("unexpected rule {r:?} (item_of_pair)"),
        };
        (kind, span)
    }

    fn non_comments(
        &self,
        p: Pair<'a, Rule>,
        stray: &mut Vec<Comment>,
    ) -> std::vec::IntoIter<Pair<'a, Rule>> {
        let mut out = Vec::new();
        for q in p.into_inner() {
            if q.as_rule() == Rule::COMMENT {
                stray.push(self.comment(&q));
            } else {
                out.push(q);
            }
        }
        out.into_iter()
    }

    fn block_of_pair(&self, p: Pair<'a, Rule>, stray: &mut Vec<Comment>) -> Block {
        let span = self.span(&p);
        let mut kind = None;
        let mut name = None;
        let mut ty = None;
        let mut body = Vec::new();
        // End of the previous child: only whitespace, comments and the `{` lie between the
        // header's children, so a comment is in the body once a `{` precedes it.
        let mut prev_end = p.as_span().start();
        for q in p.into_inner() {
            let (start, end) = (q.as_span().start(), q.as_span().end());
            let after_brace = !body.is_empty() || self.text[prev_end..start].contains('{');
            prev_end = end;
            match q.as_rule() {
                Rule::ident if kind.is_none() => kind = Some(self.ident(q)),
                Rule::block_name => {
                    name = Some(self.ident(q.into_inner().next().expect("block name ident")))
                }
                Rule::block_type => {
                    let mut inner = self.non_comments(q, stray);
                    ty = Some(self.ident(inner.next().expect("block type ident")));
                }
                Rule::COMMENT if !after_brace => stray.push(self.comment(&q)),
                _ => body.push(q),
            }
        }
        let (entries, closing_comments) = self.collect_trivia_vec(body);
        Block {
            kind: kind.expect("block kind"),
            name,
            ty,
            entries,
            closing_comments,
            span,
        }
    }

    fn collect_trivia_vec(&self, body: Vec<Pair<'a, Rule>>) -> (Vec<Entry>, Vec<Comment>) {
        let (entries, closing) = self.collect_trivia(body, |b, p, stray| {
            let span = b.span(&p);
            let kind = match p.as_rule() {
                Rule::assign => {
                    let mut it = b.non_comments(p, stray);
                    let key = b.ident(it.next().expect("assign key"));
                    let value = b.value_of_pair(it.next().expect("assign value"), stray);
                    EntryKind::Assign(key, value)
                }
                Rule::block => EntryKind::Block(b.block_of_pair(p, stray)),
                r => unreachable!("unexpected rule {r:?} (collect_trivia_vec)"),
            };
            Some((kind, span))
        });
        let entries = entries
            .into_iter()
            .map(|(trivia, (kind, span))| Entry { trivia, kind, span })
            .collect();
        (entries, closing)
    }

    fn ident(&self, p: Pair<'a, Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn path_of_pair(&self, p: Pair<'a, Rule>) -> Vec<Ident> {
        match p.as_rule() {
            Rule::ident => vec![self.ident(p)],
            Rule::path => p.into_inner().map(|q| self.ident(q)).collect(),
            r => unreachable!("unexpected rule {r:?} (path_of_pair)"),
        }
    }

    fn str_lit(&self, p: Pair<'a, Rule>) -> StrLit {
        let span = self.span(&p);
        let inner = p.into_inner().next().expect("string_inner");
        StrLit {
            value: unescape(inner.as_str()),
            span,
        }
    }

    fn number(&self, p: Pair<'a, Rule>) -> Number {
        let text = p.as_str().to_string();
        let is_float = text.contains(['.', 'e', 'E']);
        let value = if is_float {
            NumberValue::Float(text.parse().unwrap_or(f64::INFINITY))
        } else {
            match text.parse::<i64>() {
                Ok(i) => NumberValue::Int(i),
                // Out of i64 range: keep it as a float so the schema reports the range error.
                Err(_) => NumberValue::Float(text.parse().unwrap_or(f64::INFINITY)),
            }
        };
        Number { text, value }
    }

    fn value_of_pair(&self, p: Pair<'a, Rule>, stray: &mut Vec<Comment>) -> Value {
        let p = if p.as_rule() == Rule::value {
            let span = self.span(&p);
            let inner = self
                .non_comments(p, stray)
                .next()
                .expect("value has one child");
            let mut v = self.value_of_pair(inner, stray);
            v.span = span;
            return v;
        } else {
            p
        };
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::number => ValueKind::Number(self.number(p)),
            Rule::quantity => {
                let mut it = p.into_inner();
                let n = self.number(it.next().expect("quantity number"));
                let unit = Unit::parse(it.next().expect("unit").as_str()).expect("grammar units");
                ValueKind::Quantity(n, unit)
            }
            Rule::range => {
                let mut it = self.non_comments(p, stray);
                let a = self.number(it.next().expect("range lo"));
                let b = self.number(it.next().expect("range hi"));
                ValueKind::Range(a, b)
            }
            Rule::string => ValueKind::Str(self.str_lit(p).value),
            Rule::boolean => ValueKind::Bool(p.as_str() == "true"),
            Rule::none => ValueKind::None,
            Rule::list => ValueKind::List(
                self.non_comments(p, stray)
                    .map(|q| self.value_of_pair(q, stray))
                    .collect(),
            ),
            Rule::sweep => {
                let list = self
                    .non_comments(p, stray)
                    .find(|q| q.as_rule() == Rule::list)
                    .expect("sweep list");
                ValueKind::Sweep(
                    self.non_comments(list, stray)
                        .map(|q| self.value_of_pair(q, stray))
                        .collect(),
                )
            }
            Rule::call => {
                let mut it = self.non_comments(p, stray);
                let name = self.ident(it.next().expect("call name"));
                let args = it
                    .map(|arg| {
                        let inner = self.non_comments(arg, stray).next().expect("arg child");
                        match inner.as_rule() {
                            Rule::kwarg => {
                                let mut kv = self.non_comments(inner, stray);
                                let k = self.ident(kv.next().expect("kwarg name"));
                                let v = self.value_of_pair(kv.next().expect("kwarg value"), stray);
                                Arg {
                                    name: Some(k),
                                    value: v,
                                }
                            }
                            _ => Arg {
                                name: None,
                                value: self.value_of_pair(inner, stray),
                            },
                        }
                    })
                    .collect();
                ValueKind::Call(name, args)
            }
            Rule::var => ValueKind::Var(self.ident(p.into_inner().next().expect("var ident"))),
            Rule::path => ValueKind::Path(p.into_inner().map(|q| self.ident(q)).collect()),
            Rule::ident => ValueKind::Ident(p.as_str().to_string()),
            r => unreachable!("unexpected rule {r:?} (value_of_pair)"),
        };
        Value { kind, span }
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}
