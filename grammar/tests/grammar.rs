//! Unit tests of single grammar rules: what parses, into what, and what a broken input reports.

use canc_grammar::ast::*;
use canc_grammar::{
    Span, SyntaxError, parse_file, parse_override, print_file, print_value, strip_spans,
};

// ---- helpers ------------------------------------------------------------------------------------

fn parse(src: &str) -> SpecFile {
    parse_file(src, 0).unwrap_or_else(|e| panic!("{src:?} should parse: {e:?}"))
}

fn error(src: &str) -> SyntaxError {
    match parse_file(src, 0) {
        Ok(f) => panic!("{src:?} should not parse, got {f:#?}"),
        Err(e) => e,
    }
}

/// Asserts the error of `src`: its message and the byte range of its span.
fn assert_error(src: &str, message: &str, range: std::ops::Range<usize>) {
    let e = error(src);
    assert_eq!(e.message, message, "message for {src:?}");
    assert_eq!(e.span.range(), range, "span for {src:?}: {e:?}");
    assert!(
        !e.expected.iter().any(|x| x == "valid syntax"),
        "{src:?}: unnamed rule in {:?}",
        e.expected
    );
}

/// The value of `let x = <src>`.
fn value(src: &str) -> ValueKind {
    let f = parse(&format!("let x = {src}"));
    assert_eq!(f.items.len(), 1, "{src:?}");
    match &f.items[0].kind {
        ItemKind::Let(name, v) => {
            assert_eq!(name.name, "x");
            v.kind.clone()
        }
        other => panic!("{src:?}: expected a let, got {other:?}"),
    }
}

fn value_fails(src: &str) {
    let text = format!("let x = {src}");
    assert!(parse_file(&text, 0).is_err(), "{text:?} should not parse");
}

fn num(src: &str) -> Number {
    match value(src) {
        ValueKind::Number(n) => n,
        other => panic!("{src:?}: expected a number, got {other:?}"),
    }
}

fn entries(f: &SpecFile) -> &[Entry] {
    match &f.items[0].kind {
        ItemKind::Block(b) => &b.entries,
        other => panic!("expected a block, got {other:?}"),
    }
}

fn block(f: &SpecFile) -> &Block {
    match &f.items[0].kind {
        ItemKind::Block(b) => b,
        other => panic!("expected a block, got {other:?}"),
    }
}

fn texts(cs: &[Comment]) -> Vec<&str> {
    cs.iter().map(|c| c.text.as_str()).collect()
}

// ---- numbers ------------------------------------------------------------------------------------

#[test]
fn integers() {
    assert_eq!(num("3").value, NumberValue::Int(3));
    assert_eq!(num("-3").value, NumberValue::Int(-3));
    assert_eq!(num("0").value, NumberValue::Int(0));
    assert_eq!(num("007").value, NumberValue::Int(7));
    assert_eq!(num("007").text, "007", "the text is kept as written");
    assert_eq!(num("9223372036854775807").value, NumberValue::Int(i64::MAX));
    assert_eq!(
        num("-9223372036854775808").value,
        NumberValue::Int(i64::MIN)
    );
    // Out of i64 range: kept as a float so that the schema can report the range.
    assert_eq!(
        num("9223372036854775808").value,
        NumberValue::Float(9223372036854775808.0)
    );
}

#[test]
fn floats() {
    let n = num("1.5e-4");
    assert_eq!(n.text, "1.5e-4");
    assert_eq!(n.value, NumberValue::Float(1.5e-4));
    assert_eq!(num("-0.25").value, NumberValue::Float(-0.25));
    assert_eq!(num("2.5E+3").value, NumberValue::Float(2500.0));
    assert_eq!(
        num("3e4").value,
        NumberValue::Float(3e4),
        "an exponent makes a float"
    );
    assert_eq!(num("1e999").value, NumberValue::Float(f64::INFINITY));
    assert_eq!(num("1.0").value.as_f64(), 1.0);
    assert_eq!(num("-7").value.as_f64(), -7.0);
}

#[test]
fn malformed_numbers() {
    for bad in [
        "1.", ".5", "1.5e", "1e+", "--1", "- 1", "1x", "1e5x", "0x10", "1_000", "+1",
    ] {
        value_fails(bad);
    }
}

// ---- ranges and quantities ----------------------------------------------------------------------

#[test]
fn ranges() {
    let ValueKind::Range(a, b) = value("0.2..1.0") else {
        panic!("range")
    };
    assert_eq!((a.text.as_str(), b.text.as_str()), ("0.2", "1.0"));
    assert_eq!(
        (a.value, b.value),
        (NumberValue::Float(0.2), NumberValue::Float(1.0))
    );
    let ValueKind::Range(a, b) = value("-1 .. 3") else {
        panic!("range with spaces")
    };
    assert_eq!(
        (a.value, b.value),
        (NumberValue::Int(-1), NumberValue::Int(3))
    );
    assert!(matches!(value("1e-3..-2"), ValueKind::Range(..)));
    for bad in ["1...2", "1..", "..2", "a..b", "1..2..3", "1 epochs..2"] {
        value_fails(bad);
    }
}

#[test]
fn quantities_every_unit_spelling() {
    let cases = [
        ("10 epochs", Unit::Epochs),
        ("1 epoch", Unit::Epochs),
        ("500 steps", Unit::Steps),
        ("1 step", Unit::Steps),
        ("1e6 images", Unit::Images),
        ("100 ms", Unit::Millis),
        ("30 s", Unit::Seconds),
        ("3 min", Unit::Minutes),
        ("2 h", Unit::Hours),
        ("50%", Unit::Percent),
        ("50 %", Unit::Percent),
        ("2.5\tsteps", Unit::Steps),
        ("-1 h", Unit::Hours),
    ];
    for (src, unit) in cases {
        match value(src) {
            ValueKind::Quantity(_, u) => assert_eq!(u, unit, "{src:?}"),
            other => panic!("{src:?}: expected a quantity, got {other:?}"),
        }
    }
    let ValueKind::Quantity(n, Unit::Epochs) = value("10 epochs") else {
        panic!("quantity")
    };
    assert_eq!((n.text.as_str(), n.value), ("10", NumberValue::Int(10)));
}

#[test]
fn quantity_unit_boundaries() {
    // A unit must end at a word boundary, and may not be on the next line.
    let bad = [
        "10 parsecs",
        "10 sec",
        "10 epochsx",
        "10 hours",
        "10 mins",
        "10 %%",
        "10epochs",
    ];
    for bad in bad {
        value_fails(bad);
    }
    let f = parse("k {\n  a = 10\n  s = 1\n}");
    assert_eq!(
        entries(&f).len(),
        2,
        "a newline ends the number: `s` is the next key"
    );
    assert!(matches!(
        &entries(&f)[0].kind,
        EntryKind::Assign(
            _,
            Value {
                kind: ValueKind::Number(_),
                ..
            }
        )
    ));
    // Printing puts the unit back: `%` glued, the others after one space.
    assert_eq!(print_value(&parse_value("50 %")), "50%");
    assert_eq!(print_value(&parse_value("5\t\tepoch")), "5 epochs");
}

fn parse_value(src: &str) -> Value {
    let f = parse(&format!("let x = {src}"));
    match &f.items[0].kind {
        ItemKind::Let(_, v) => v.clone(),
        _ => unreachable!(),
    }
}

// ---- strings, booleans, none, vars, paths, idents -----------------------------------------------

#[test]
fn strings_and_escapes() {
    assert_eq!(value(r#""plain""#), ValueKind::Str("plain".into()));
    assert_eq!(value(r#""""#), ValueKind::Str(String::new()));
    assert_eq!(
        value(r#""q\"b\\n\nt\t""#),
        ValueKind::Str("q\"b\\n\nt\t".into())
    );
    assert_eq!(
        value("\"# not a comment {[(\""),
        ValueKind::Str("# not a comment {[(".into())
    );
    assert_eq!(value("\"ünï €\""), ValueKind::Str("ünï €".into()));
    // Printing escapes exactly the four escapable characters.
    let v = parse_value(r#""q\"b\\n\nt\t""#);
    assert_eq!(print_value(&v), r#""q\"b\\n\nt\t""#);
    for bad in [
        "\"unterminated",
        "\"a\nb\"",
        r#""\q""#,
        r#""\""#,
        "'single'",
    ] {
        value_fails(bad);
    }
}

#[test]
fn keyword_values_and_idents() {
    assert_eq!(value("true"), ValueKind::Bool(true));
    assert_eq!(value("false"), ValueKind::Bool(false));
    assert_eq!(value("none"), ValueKind::None);
    // Keywords only at a word boundary: these are identifiers.
    for id in [
        "trueish",
        "false_",
        "nonesuch",
        "none1",
        "sweeper",
        "letter",
        "extends_x",
        "_",
    ] {
        assert_eq!(value(id), ValueKind::Ident(id.into()), "{id}");
    }
}

#[test]
fn vars_and_paths() {
    let ValueKind::Var(v) = value("$mask_ratio") else {
        panic!("var")
    };
    assert_eq!(v.name, "mask_ratio");
    assert_eq!(
        v.span,
        Span::new(0, 9, 19),
        "the var's ident span excludes `$`"
    );
    let ValueKind::Path(p) = value("n1.sigma.mean") else {
        panic!("path")
    };
    let names: Vec<_> = p.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["n1", "sigma", "mean"]);
    for bad in ["$ x", "$true", "$1", "a. b", "a .b", "a.", "a.true", "a..b"] {
        value_fails(bad);
    }
}

// ---- lists, sweeps, calls -----------------------------------------------------------------------

#[test]
fn lists_and_sweeps() {
    assert_eq!(value("[]"), ValueKind::List(vec![]));
    let ValueKind::List(xs) = value("[1, [2, 3],\n \"x\",]") else {
        panic!("list")
    };
    assert_eq!(xs.len(), 3, "a trailing comma and newlines are allowed");
    assert!(matches!(&xs[1].kind, ValueKind::List(inner) if inner.len() == 2));
    let ValueKind::Sweep(xs) = value("sweep [0.25, 0.5, 0.75]") else {
        panic!("sweep")
    };
    assert_eq!(xs.len(), 3);
    assert_eq!(value("sweep []"), ValueKind::Sweep(vec![]));
    for bad in [
        "[1 2]", "[1,,2]", "[,]", "[1", "sweep", "sweep 1", "sweep(1)",
    ] {
        value_fails(bad);
    }
}

#[test]
fn calls_with_positional_and_keyword_args() {
    let ValueKind::Call(name, args) = value("add_noise(x1, sigma = uniform(0, $s), 3 epochs,)")
    else {
        panic!("call")
    };
    assert_eq!(name.name, "add_noise");
    assert_eq!(args.len(), 3);
    assert!(args[0].name.is_none());
    assert!(matches!(&args[0].value.kind, ValueKind::Ident(s) if s == "x1"));
    assert_eq!(
        args[1].name.as_ref().map(|n| n.name.as_str()),
        Some("sigma")
    );
    assert!(
        matches!(&args[1].value.kind, ValueKind::Call(n, a) if n.name == "uniform" && a.len() == 2)
    );
    assert!(matches!(
        &args[2].value.kind,
        ValueKind::Quantity(_, Unit::Epochs)
    ));
    assert!(matches!(value("f()"), ValueKind::Call(_, a) if a.is_empty()));
    // A keyword argument may come before a positional one: the schema decides.
    assert!(matches!(value("f(a = 1, 2)"), ValueKind::Call(_, a) if a.len() == 2));
    for bad in ["f(", "f(1 2)", "f(a =)", "f(,)", "true(1)", "f(1)(2)"] {
        value_fails(bad);
    }
}

// ---- items and keyword boundaries ---------------------------------------------------------------

#[test]
fn items() {
    let f = parse(
        "extends \"base.canspec\"\nlet lr = 3e-4\ntrain.lr = $lr\nnetwork encoder: vit { dim = 192 }",
    );
    assert!(matches!(&f.items[0].kind, ItemKind::Extends(s) if s.value == "base.canspec"));
    assert!(matches!(&f.items[1].kind, ItemKind::Let(n, _) if n.name == "lr"));
    assert!(matches!(&f.items[2].kind, ItemKind::Set(p, _) if p.len() == 2));
    let b = match &f.items[3].kind {
        ItemKind::Block(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(b.kind.name, "network");
    assert_eq!(b.name.as_ref().unwrap().name, "encoder");
    assert_eq!(b.ty.as_ref().unwrap().name, "vit");
    // The spans of each part.
    assert_eq!(f.items[1].span, Span::new(0, 23, 36));
    assert_eq!(b.kind.span, Span::new(0, 52, 59));
    assert_eq!(b.span.end, 86);

    // Optional name and type.
    let f = parse("train {}\ndata: fashion_mnist {}\nview simclr {}");
    let b: Vec<_> = f
        .items
        .iter()
        .map(|i| match &i.kind {
            ItemKind::Block(b) => (b.name.is_some(), b.ty.is_some()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(b, [(false, false), (false, true), (true, false)]);
    // Commas between entries are optional; nested blocks.
    let f = parse("eval { a = 1, b = 2 c = 3, knn { k = 20 }, }");
    assert_eq!(entries(&f).len(), 4);
    assert!(matches!(&entries(&f)[3].kind, EntryKind::Block(b) if b.kind.name == "knn"));
    assert!(parse("").items.is_empty());
    assert!(parse(" \n\t\r\n").items.is_empty());
}

#[test]
fn keyword_boundaries() {
    // `letter` is not `let ter`: inside a block it is an assignment, dotted at the top a set.
    let f = parse("let letter = 1");
    assert!(matches!(&f.items[0].kind, ItemKind::Let(n, _) if n.name == "letter"));
    let f = parse("k { letter = 1 }");
    assert!(matches!(&entries(&f)[0].kind, EntryKind::Assign(k, _) if k.name == "letter"));
    let f = parse("letter.x = 1");
    assert!(matches!(&f.items[0].kind, ItemKind::Set(p, _) if p[0].name == "letter"));
    let f = parse("extends_dir.x = \"a\"");
    assert!(matches!(&f.items[0].kind, ItemKind::Set(..)));
    let f = parse("extendsx {}");
    assert!(matches!(&f.items[0].kind, ItemKind::Block(b) if b.kind.name == "extendsx"));
    let f = parse("sweeps { nonex = truex }");
    assert!(matches!(&entries(&f)[0].kind, EntryKind::Assign(k, _) if k.name == "nonex"));
    // A top-level assignment needs a dotted path (a `let` or an override).
    assert_error(
        "letter = 1",
        "expected `:` and a type or a name, found `=`",
        7..8,
    );
    // Keywords are not names.
    assert_error("let true = 1", "expected a name, found `true`", 4..5);
    assert_error("let let = 1", "expected a name, found `let`", 4..5);
    assert_error("k { none = 1 }", "expected a name, found `none`", 4..5);
    // pest reports only the `file` rule when nothing can start: it is spelled out.
    let top = "expected `extends`, `let`, a name or end of file";
    assert_error("sweep {}", &format!("{top}, found `sweep`"), 0..1);
    assert_error("true", &format!("{top}, found `true`"), 0..1);
    assert_error("k {}\nnone.x = 1", &format!("{top}, found `none`"), 5..6);
    assert!(parse_file("letx = 1", 0).is_err());
    assert!(
        parse_file("extends\"a\"", 0).is_ok(),
        "a string may follow `extends` directly"
    );
    assert!(parse_file("extendsfoo", 0).is_err());
}

// ---- comments and blank lines -------------------------------------------------------------------

#[test]
fn comments_are_kept_as_trivia() {
    let src = "\
# header

# about a
let a = 1  # trailing a   
let b = 2


# detached

k {
  # about x
  x = 1  # after x

  y = 2
  # closing
}  # after k

# end 1
# end 2
";
    let f = parse(src);
    assert_eq!(f.items.len(), 3);
    let t = &f.items[0].trivia;
    assert_eq!(texts(&t.leading), ["# header", "# about a"]);
    assert!(!t.blank_before && !t.blank_after_leading);
    assert_eq!(
        t.trailing.as_ref().unwrap().text,
        "# trailing a",
        "trailing whitespace trimmed"
    );
    assert_eq!(t.trailing.as_ref().unwrap().span, Span::new(0, 31, 46)); // the span keeps the trailing blanks
    let t = &f.items[1].trivia;
    assert!(!t.blank_before && t.leading.is_empty() && t.trailing.is_none());
    let t = &f.items[2].trivia;
    assert_eq!(texts(&t.leading), ["# detached"]);
    assert!(t.blank_before && t.blank_after_leading);
    assert_eq!(t.trailing.as_ref().unwrap().text, "# after k");
    let k = match &f.items[2].kind {
        ItemKind::Block(b) => b,
        _ => unreachable!(),
    };
    assert_eq!(texts(&k.entries[0].trivia.leading), ["# about x"]);
    assert_eq!(
        k.entries[0].trivia.trailing.as_ref().unwrap().text,
        "# after x"
    );
    assert!(k.entries[1].trivia.blank_before);
    assert_eq!(texts(&k.closing_comments), ["# closing"]);
    assert_eq!(texts(&f.trailing_comments), ["# end 1", "# end 2"]);
    // The canonical print keeps all of it (two blank lines become one), except a blank line
    // between two leading comments: `Trivia` has no place for it (only `blank_after_leading`).
    assert_eq!(
        print_file(&f),
        src.replace("a   \n", "a\n")
            .replace("\n\n\n", "\n\n")
            .replace("# header\n\n", "# header\n")
    );
}

#[test]
fn comment_only_files_and_blocks() {
    let f = parse("# only\n# comments");
    assert!(f.items.is_empty());
    assert_eq!(texts(&f.trailing_comments), ["# only", "# comments"]);
    let f = parse("k { # c1\n  # c2\n}");
    assert!(block(&f).entries.is_empty());
    assert_eq!(texts(&block(&f).closing_comments), ["# c1", "# c2"]);
    assert_eq!(print_file(&f), "k {\n  # c1\n  # c2\n}\n");
    let f = parse("#\n#\t\u{3000}\nlet x = 1");
    assert_eq!(texts(&f.items[0].trivia.leading), ["#", "#"]);
}

#[test]
fn comments_inside_values_move_before_the_entry() {
    let f = parse("k {\n  a = f(1, # one\n    2)  # after\n}");
    let e = &entries(&f)[0];
    assert_eq!(texts(&e.trivia.leading), ["# one"]);
    assert_eq!(e.trivia.trailing.as_ref().unwrap().text, "# after");
    let f = parse("let x = [ # in list\n 1 ]");
    assert_eq!(texts(&f.items[0].trivia.leading), ["# in list"]);
}

#[test]
fn header_comments_attach_the_same_wherever_the_block_is() {
    // A comment between a block's header and its `{` is a leading comment of the block, whether
    // or not an earlier block (an earlier `{`) exists in the file.
    let alone = parse("b # c\n{ x = 1 }");
    assert_eq!(texts(&alone.items[0].trivia.leading), ["# c"]);
    assert!(block(&alone).closing_comments.is_empty());

    let after = parse("a {}\n\nb # c\n{ x = 1 }");
    assert_eq!(texts(&after.items[1].trivia.leading), ["# c"]);
    let ItemKind::Block(b) = &after.items[1].kind else {
        panic!()
    };
    assert!(b.closing_comments.is_empty() && b.entries[0].trivia.leading.is_empty());

    let nested = parse("o {\n  i: t # c\n  {\n    y = 2\n  }\n}");
    let e = &entries(&nested)[0];
    assert_eq!(texts(&e.trivia.leading), ["# c"]);
    let f = parse("k: # between\n t { x = 1 }");
    assert_eq!(texts(&f.items[0].trivia.leading), ["# between"]);
    // After the `{`, a comment is in the body.
    let f = parse("a {}\nb { # c\n}");
    let ItemKind::Block(b) = &f.items[1].kind else {
        panic!()
    };
    assert_eq!(texts(&b.closing_comments), ["# c"]);
}

#[test]
fn blank_lines() {
    let f = parse("\n\nlet a = 1\n\n\n\nlet b = 2\nlet c = 3\n");
    let blanks: Vec<_> = f.items.iter().map(|i| i.trivia.blank_before).collect();
    assert_eq!(
        blanks,
        [false, true, false],
        "a first item never has a blank before it"
    );
    let f = parse("k {\n\n  a = 1\n\n  b = 2\n}");
    let blanks: Vec<_> = entries(&f).iter().map(|e| e.trivia.blank_before).collect();
    assert_eq!(blanks, [false, true]);
    // Lines with only spaces or `\r` count as blank.
    let f = parse("let a = 1\r\n  \t\r\nlet b = 2");
    assert!(f.items[1].trivia.blank_before);
}

// ---- syntax errors ------------------------------------------------------------------------------

#[test]
fn syntax_error_messages_and_spans() {
    assert_error("a.b = ", "expected a value, found end of file", 6..6);
    assert_error("k { a = }", "expected a value, found `}`", 8..9);
    assert_error("let = 3", "expected a name, found `=`", 4..5);
    assert_error("extends foo", "expected a string, found `foo`", 8..9);
    assert_error("k { a = 1..}", "expected a number, found `}`", 11..12);
    assert_error("k { a = f(1,,2) }", "expected a value, found `,`", 12..13);
    assert_error("a.b = @", "expected a value, found `@`", 6..7);
    assert_error("let x = $true", "expected a name, found `true`", 9..10);
    assert_error(
        "k {\n  a = 1\n}}",
        "expected `extends`, `let`, a name or end of file, found `}`",
        13..14,
    );
    assert_error(
        "k { a = 1",
        "expected a name or a unit (epochs, steps, images, ms, s, min, h, %), found end of file",
        9..9,
    );
    // A string may not span lines: the error is at its opening quote.
    assert_error("k { a = \"abc\n\" }", "expected a value, found `\"`", 8..9);
    // Spans are byte offsets: a multi-byte character is one error character.
    let e = error("let x = é");
    assert_eq!(e.message, "expected a value, found `é`");
    assert_eq!(e.span.range(), 8..10);
    let e = error("let x = 1\n€");
    assert_eq!(e.span.range(), 10..13);
    // The file id is carried into the error.
    let e = parse_file("let", 7).unwrap_err();
    assert_eq!(e.span.file, 7);
    assert_eq!(e.message, "expected a name, found end of file");
}

#[test]
fn nesting_limit() {
    // 64 levels parse (and print) on a test thread's default stack; the 65th is refused.
    for (open, close) in [("[", "]"), ("f(", ")"), ("g(a = [", "])"), ("sweep [", "]")] {
        let depth = 64 / open.matches(['[', '(']).count();
        let src = format!("let x = {}1{}", open.repeat(depth), close.repeat(depth));
        let f = parse(&src);
        assert_eq!(print_file(&parse(&print_file(&f))), print_file(&f));
        let src = format!(
            "let x = {}1{}",
            open.repeat(depth + 1),
            close.repeat(depth + 1)
        );
        let e = error(&src);
        assert_eq!(e.message, "nesting deeper than 64 levels");
        assert_eq!(e.span.end - e.span.start, 1);
    }
    let deep_blocks = format!("{}{}", "k {\n".repeat(64), "}\n".repeat(64));
    let f = parse(&deep_blocks);
    assert_eq!(print_file(&parse(&print_file(&f))), print_file(&f));
    let e = error(&format!("{}{}", "k {".repeat(65), "}".repeat(65)));
    assert_eq!(e.span, Span::new(0, 194, 195));
    // Brackets in strings and comments do not count.
    let src = format!("let x = \"{}\"  # {}\n", "[".repeat(100), "(".repeat(100));
    parse(&src);
}

// ---- command-line overrides ---------------------------------------------------------------------

#[test]
fn overrides() {
    let (path, v) = parse_override("train.lr=3e-4", 0).unwrap();
    assert_eq!(
        path.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["train", "lr"]
    );
    assert_eq!(
        v.kind,
        ValueKind::Number(Number {
            text: "3e-4".into(),
            value: NumberValue::Float(3e-4)
        })
    );
    let (path, v) = parse_override("mask_ratio=0.25", 0).unwrap();
    assert_eq!(path.len(), 1);
    assert!(matches!(v.kind, ValueKind::Number(_)));
    let (_, v) = parse_override("train.epochs = 10 epochs", 0).unwrap();
    assert!(matches!(v.kind, ValueKind::Quantity(_, Unit::Epochs)));
    // A value that is not valid syntax is a bare string.
    let (path, v) = parse_override("data.path=/tmp/x y", 0).unwrap();
    assert_eq!(path[1].span, Span::new(0, 5, 9));
    assert_eq!(v.kind, ValueKind::Str("/tmp/x y".into()));
    assert_eq!(v.span, Span::new(0, 10, 18));
    // Comments between the tokens are dropped (this used to panic: found by the fuzzer).
    let (path, v) = parse_override("# why\ntrain.lr # key\n= # value\n0.1 # end", 0).unwrap();
    assert_eq!(
        path.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["train", "lr"]
    );
    assert!(matches!(v.kind, ValueKind::Number(_)));
    let (path, _) = parse_override("# c\nx=1", 0).unwrap();
    assert_eq!(path[0].name, "x");
    let e = parse_override("noequals", 0).unwrap_err();
    assert_eq!(e.message, "expected `path=value`");
    assert_eq!(e.span, Span::new(0, 0, 8));
    let e = parse_override("bad key=1", 0).unwrap_err();
    assert_eq!(
        (e.message.as_str(), e.span.range()),
        ("unexpected `key`", 4..5)
    );
    let e = parse_override("let=1", 0).unwrap_err();
    assert_eq!(
        e.message,
        "expected a dotted path (`a.b`) or a name, found `let`"
    );
    let e = parse_override("a.=1", 0).unwrap_err();
    assert_eq!(
        (e.message.as_str(), e.span.range()),
        ("expected a name, found `=`", 2..3)
    );
}

// ---- canonical printing -------------------------------------------------------------------------

#[test]
fn canonical_layout() {
    let f = parse("let a=1\nk{x=1,inner{y=[1,2,],z=f(a=1)}}\nlet b = 2");
    assert_eq!(
        print_file(&f),
        "let a = 1\n\nk {\n  x = 1\n  inner { y = [1, 2], z = f(a = 1) }\n}\n\nlet b = 2\n"
    );
    // A value too long for the line is broken one element per line, with trailing commas.
    let long = format!("let x = f({})", ["argument_number"; 8].join(", "));
    let printed = print_file(&parse(&long));
    assert!(
        printed.starts_with("let x = f(\n  argument_number,\n"),
        "{printed}"
    );
    assert!(printed.ends_with(",\n)\n"), "{printed}");
    assert!(printed.lines().all(|l| l.len() <= 100));
    // A nested block that would not fit on one line is expanded.
    let entries: Vec<String> = (0..12).map(|i| format!("key_{i} = {i}")).collect();
    let src = format!("outer {{ inner {{ {} }} }}", entries.join(", "));
    let printed = print_file(&parse(&src));
    assert!(
        printed.starts_with("outer {\n  inner {\n    key_0 = 0\n"),
        "{printed}"
    );
    assert!(printed.lines().all(|l| l.len() <= 100));
}

#[test]
fn strip_spans_clears_every_span() {
    let src = "\
# lead
extends \"b\"  # t
let v = f(a, k = [1, $v, n.x, 0.1..2, 5 min, sweep [none]])
a.b = \"s\"
k n: t {
  # c
  x = g(y = h(z))
  inner { q = $v }
  # closing
}
# end
";
    let mut f = parse_file(src, 5).unwrap();
    assert!(format!("{f:?}").contains("file: 5"));
    strip_spans(&mut f);
    let debug = format!("{f:?}");
    assert!(
        !debug.contains("file: 5"),
        "a span was not stripped: {debug}"
    );
}
