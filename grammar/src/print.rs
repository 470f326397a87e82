//! The canonical printer behind `canc fmt`: two-space indentation, one entry per line, short
//! blocks of plain assignments on one line, comments and single blank lines kept.
//! Printing then parsing gives the same tree (spans aside), and printing is idempotent.

use crate::ast::*;
use std::fmt::Write;

/// Line width: longer one-line blocks are expanded, longer calls and lists are broken.
const WIDTH: usize = 100;

/// Prints a file in canonical form.
pub fn print_file(file: &SpecFile) -> String {
    let mut out = String::new();
    for (i, item) in file.items.iter().enumerate() {
        let is_block = matches!(item.kind, ItemKind::Block(_));
        let prev_block = i > 0 && matches!(file.items[i - 1].kind, ItemKind::Block(_));
        if i > 0 && (item.trivia.blank_before || is_block || prev_block) {
            out.push('\n');
        }
        leading(&mut out, &item.trivia, 0);
        match &item.kind {
            ItemKind::Extends(s) => {
                let _ = write!(out, "extends {}", quote(&s.value));
            }
            ItemKind::Let(name, v) => {
                let prefix = format!("let {} = ", name.name);
                let _ = write!(out, "{prefix}{}", value_at(v, 0, prefix.len()));
            }
            ItemKind::Set(path, v) => {
                let prefix = format!("{} = ", dotted(path));
                let _ = write!(out, "{prefix}{}", value_at(v, 0, prefix.len()));
            }
            ItemKind::Block(b) => block(&mut out, b, 0),
        }
        trailing(&mut out, &item.trivia);
        out.push('\n');
    }
    if !file.trailing_comments.is_empty() {
        if !file.items.is_empty() {
            out.push('\n');
        }
        for c in &file.trailing_comments {
            out.push_str(&c.text);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn leading(out: &mut String, t: &Trivia, level: usize) {
    for c in &t.leading {
        out.push_str(&c.text);
        out.push('\n');
        indent(out, level);
    }
    if t.blank_after_leading && !t.leading.is_empty() {
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
        indent(out, level);
    }
}

fn trailing(out: &mut String, t: &Trivia) {
    if let Some(c) = &t.trailing {
        out.push_str("  ");
        out.push_str(&c.text);
    }
}

fn header(b: &Block) -> String {
    let mut h = b.kind.name.clone();
    if let Some(n) = &b.name {
        h.push(' ');
        h.push_str(&n.name);
    }
    if let Some(t) = &b.ty {
        h.push_str(": ");
        h.push_str(&t.name);
    }
    h
}

/// The one-line form `kind { a = 1, b = 2 }`, if the block qualifies for it.
fn one_line(b: &Block, level: usize) -> Option<String> {
    if !b.closing_comments.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for e in &b.entries {
        let t = &e.trivia;
        if t.blank_before || !t.leading.is_empty() || t.trailing.is_some() {
            return None;
        }
        match &e.kind {
            EntryKind::Assign(k, v) => parts.push(format!("{} = {}", k.name, value(v))),
            EntryKind::Block(_) => return None,
        }
    }
    let line = if parts.is_empty() {
        format!("{} {{}}", header(b))
    } else {
        format!("{} {{ {} }}", header(b), parts.join(", "))
    };
    (level * 2 + line.len() <= WIDTH && !line.contains('\n')).then_some(line)
}

fn block(out: &mut String, b: &Block, level: usize) {
    // Top-level blocks with content are always multi-line; nested ones collapse when short.
    if (level > 0 || b.entries.is_empty())
        && let Some(line) = one_line(b, level)
    {
        out.push_str(&line);
        return;
    }
    out.push_str(&header(b));
    out.push_str(" {\n");
    for e in &b.entries {
        if e.trivia.blank_before {
            out.push('\n');
        }
        indent(out, level + 1);
        leading(out, &e.trivia, level + 1);
        match &e.kind {
            EntryKind::Assign(k, v) => {
                let prefix = format!("{} = ", k.name);
                let col = (level + 1) * 2 + prefix.len();
                let _ = write!(out, "{prefix}{}", value_at(v, level + 1, col));
            }
            EntryKind::Block(inner) => block(out, inner, level + 1),
        }
        trailing(out, &e.trivia);
        out.push('\n');
    }
    for c in &b.closing_comments {
        indent(out, level + 1);
        out.push_str(&c.text);
        out.push('\n');
    }
    indent(out, level);
    out.push('}');
}

fn dotted(path: &[Ident]) -> String {
    path.iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Prints a value in canonical form.
pub fn value(v: &Value) -> String {
    match &v.kind {
        ValueKind::Number(n) => n.text.clone(),
        ValueKind::Quantity(n, Unit::Percent) => format!("{}%", n.text),
        ValueKind::Quantity(n, u) => format!("{} {}", n.text, u.as_str()),
        ValueKind::Str(s) => quote(s),
        ValueKind::Bool(b) => b.to_string(),
        ValueKind::None => "none".into(),
        ValueKind::Range(a, b) => format!("{}..{}", a.text, b.text),
        ValueKind::List(xs) => format!("[{}]", list(xs)),
        ValueKind::Sweep(xs) => format!("sweep [{}]", list(xs)),
        ValueKind::Call(name, args) => {
            let args: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(k) => format!("{} = {}", k.name, value(&a.value)),
                    None => value(&a.value),
                })
                .collect();
            format!("{}({})", name.name, args.join(", "))
        }
        ValueKind::Var(i) => format!("${}", i.name),
        ValueKind::Path(p) => dotted(p),
        ValueKind::Ident(s) => s.clone(),
    }
}

/// Prints a value starting at column `col` of a line indented `level` times: on one line if it
/// fits in [`WIDTH`], otherwise with each argument or element on its own line.
fn value_at(v: &Value, level: usize, col: usize) -> String {
    let flat = value(v);
    if col + flat.len() <= WIDTH {
        return flat;
    }
    let (open, close, parts): (String, &str, Vec<(String, &Value)>) = match &v.kind {
        ValueKind::Call(name, args) if !args.is_empty() => (
            format!("{}(", name.name),
            ")",
            args.iter()
                .map(|a| {
                    let k = a
                        .name
                        .as_ref()
                        .map_or(String::new(), |k| format!("{} = ", k.name));
                    (k, &a.value)
                })
                .collect(),
        ),
        ValueKind::List(xs) if !xs.is_empty() => (
            "[".into(),
            "]",
            xs.iter().map(|x| (String::new(), x)).collect(),
        ),
        ValueKind::Sweep(xs) if !xs.is_empty() => (
            "sweep [".into(),
            "]",
            xs.iter().map(|x| (String::new(), x)).collect(),
        ),
        _ => return flat,
    };
    let mut s = open;
    s.push('\n');
    for (prefix, x) in parts {
        let mut line = String::new();
        indent(&mut line, level + 1);
        line.push_str(&prefix);
        let c = line.len();
        line.push_str(&value_at(x, level + 1, c));
        s.push_str(&line);
        s.push_str(",\n");
    }
    indent(&mut s, level);
    s.push_str(close);
    s
}

fn list(xs: &[Value]) -> String {
    xs.iter().map(value).collect::<Vec<_>>().join(", ")
}
