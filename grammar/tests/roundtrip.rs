//! Round trips between the parser and the canonical printer.
//!
//! * A: for a generated syntax tree, `strip(parse(print(ast))) == strip(ast)`: the printer loses
//!   nothing the tree holds, and the parser reads back exactly what was printed.
//! * B: printing is idempotent: `print(parse(print(ast))) == print(ast)`.
//! * C: for text that parses (a token soup, or printed trees with comments, blank lines and
//!   commas stirred in), `print(parse(text))` is a fixed point of print∘parse and keeps every
//!   comment.
//! * Every `specs/**/*.canspec` file round-trips.
//!
//! The generator only builds trees the text can represent; see [`normalize`] for the rules.

use canc_grammar::ast::*;
use canc_grammar::{CanspecParser, Rule, Span, parse_file, print_file, strip_spans};
use pest::Parser;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use std::path::{Path, PathBuf};

const KEYWORDS: [&str; 6] = ["true", "false", "none", "sweep", "let", "extends"];

// ---- generators ---------------------------------------------------------------------------------

fn ident(name: String) -> Ident {
    Ident {
        name,
        span: Span::default(),
    }
}

/// Names, biased to the tricky ones: unit spellings, keyword prefixes, exponent look-alikes.
fn name() -> impl Strategy<Value = String> + Clone {
    let tricky: &'static [&'static str] = &[
        "lr",
        "s",
        "h",
        "min",
        "ms",
        "epochs",
        "step",
        "images",
        "e",
        "e5",
        "E1",
        "letter",
        "nonesuch",
        "trueish",
        "false_",
        "sweeper",
        "extends_x",
        "let_",
        "_",
        "_0",
        "x1",
        "network",
        "view",
    ];
    prop_oneof![
        3 => select(tricky).prop_map(String::from),
        4 => "[a-zA-Z_][a-zA-Z0-9_]{0,10}",
        1 => "[a-z_]{25,40}",
    ]
    .prop_filter("a keyword is not a name", |s| {
        !KEYWORDS.contains(&s.as_str())
    })
}

/// The number a literal denotes, exactly as the parser computes it.
fn number_of_text(text: String) -> Number {
    let float = |t: &str| NumberValue::Float(t.parse().expect("a float literal"));
    let value = if text.contains(['.', 'e', 'E']) {
        float(&text)
    } else {
        text.parse::<i64>()
            .map_or_else(|_| float(&text), NumberValue::Int)
    };
    Number { text, value }
}

fn number() -> impl Strategy<Value = Number> + Clone {
    prop_oneof![
        any::<i64>().prop_map(|i| Number {
            text: i.to_string(),
            value: NumberValue::Int(i),
        }),
        (
            "-?[0-9]{1,4}",
            option::of("[0-9]{1,4}"),
            option::of("[eE][+-]?[0-9]{1,3}")
        )
            .prop_map(|(int, frac, exp)| {
                let mut text = int;
                if let Some(f) = frac {
                    text.push('.');
                    text.push_str(&f);
                }
                text.push_str(&exp.unwrap_or_default());
                number_of_text(text)
            }),
        // Beyond i64: a float written without `.` or exponent.
        "-?[1-9][0-9]{19,24}".prop_map(number_of_text),
    ]
}

fn unit() -> impl Strategy<Value = Unit> + Clone {
    select(&Unit::ALL[..])
}

/// Any string: escapes (`"`, `\`, newline, tab), other control characters, non-ASCII.
fn string() -> impl Strategy<Value = String> + Clone {
    let special: &'static [char] = &[
        '"', '\\', '\n', '\t', '\r', ' ', '#', '{', '[', '(', '$', 'é', '€', '\0', '\u{2028}', '😀',
    ];
    vec(
        prop_oneof![3 => prop::char::range('a', 'z'), 2 => select(special), 1 => any::<char>()],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// A comment as the parser stores it: `#`, no newline, no trailing whitespace.
fn comment() -> impl Strategy<Value = Comment> + Clone {
    let special: &'static [char] = &[
        ' ', '\t', '\r', '#', '"', '{', '}', '[', '\\', 'é', '\u{85}', '\u{2028}', '\u{3000}',
    ];
    vec(
        prop_oneof![
            3 => prop::char::range('a', 'z'),
            2 => select(special),
            1 => any::<char>().prop_filter("a comment ends at a newline", |c| *c != '\n'),
        ],
        0..16,
    )
    .prop_map(|cs| Comment {
        text: format!("#{}", cs.into_iter().collect::<String>())
            .trim_end()
            .to_string(),
        span: Span::default(),
    })
}

fn comments(max: usize) -> impl Strategy<Value = Vec<Comment>> + Clone {
    prop_oneof![3 => Just(vec![]), 1 => vec(comment(), 1..=max)]
}

fn trivia() -> impl Strategy<Value = Trivia> + Clone {
    prop_oneof![
        3 => Just(Trivia::default()),
        2 => (any::<bool>(), comments(3), any::<bool>(), option::weighted(0.4, comment())).prop_map(
            |(blank_before, leading, blank_after_leading, trailing)| Trivia {
                blank_before,
                leading,
                blank_after_leading,
                trailing,
            },
        ),
    ]
}

fn val(kind: ValueKind) -> Value {
    Value {
        kind,
        span: Span::default(),
    }
}

fn leaf_value() -> impl Strategy<Value = ValueKind> + Clone {
    prop_oneof![
        3 => number().prop_map(ValueKind::Number),
        2 => (number(), unit()).prop_map(|(n, u)| ValueKind::Quantity(n, u)),
        2 => string().prop_map(ValueKind::Str),
        1 => any::<bool>().prop_map(ValueKind::Bool),
        1 => Just(ValueKind::None),
        1 => (number(), number()).prop_map(|(a, b)| ValueKind::Range(a, b)),
        1 => name().prop_map(|n| ValueKind::Var(ident(n))),
        1 => vec(name(), 2..4).prop_map(|p| ValueKind::Path(p.into_iter().map(ident).collect())),
        2 => name().prop_map(ValueKind::Ident),
    ]
}

fn value() -> impl Strategy<Value = Value> + Clone {
    leaf_value()
        .prop_recursive(4, 40, 6, |inner| {
            let items = vec(inner.clone().prop_map(val), 0..6);
            let arg = (option::of(name()), inner.prop_map(val)).prop_map(|(name, value)| Arg {
                name: name.map(ident),
                value,
            });
            prop_oneof![
                items.clone().prop_map(ValueKind::List),
                items.prop_map(ValueKind::Sweep),
                (name(), vec(arg, 0..6)).prop_map(|(n, args)| ValueKind::Call(ident(n), args)),
            ]
        })
        .prop_map(val)
}

fn assign_entry() -> impl Strategy<Value = Entry> + Clone {
    (trivia(), name(), value()).prop_map(|(trivia, k, v)| Entry {
        trivia,
        kind: EntryKind::Assign(ident(k), v),
        span: Span::default(),
    })
}

fn block_of(entries: impl Strategy<Value = Vec<Entry>>) -> impl Strategy<Value = Block> {
    (
        name(),
        option::of(name()),
        option::of(name()),
        entries,
        comments(2),
    )
        .prop_map(|(kind, name, ty, entries, closing_comments)| Block {
            kind: ident(kind),
            name: name.map(ident),
            ty: ty.map(ident),
            entries,
            closing_comments,
            span: Span::default(),
        })
}

fn block() -> impl Strategy<Value = Block> + Clone {
    // Short plain blocks (no trivia) are common, so that nested ones print on one line.
    let plain = (name(), value()).prop_map(|(k, v)| Entry {
        trivia: Trivia::default(),
        kind: EntryKind::Assign(ident(k), v),
        span: Span::default(),
    });
    let leaf = block_of(vec(prop_oneof![2 => plain, 1 => assign_entry()], 0..4)).boxed();
    leaf.prop_recursive(3, 24, 5, |inner| {
        let nested = (trivia(), inner).prop_map(|(trivia, b)| Entry {
            trivia,
            kind: EntryKind::Block(b),
            span: Span::default(),
        });
        block_of(vec(prop_oneof![assign_entry(), nested], 0..5)).boxed()
    })
}

fn item() -> impl Strategy<Value = Item> {
    let kind = prop_oneof![
        1 => string().prop_map(|value| ItemKind::Extends(StrLit {
            value,
            span: Span::default(),
        })),
        3 => (name(), value()).prop_map(|(n, v)| ItemKind::Let(ident(n), v)),
        2 => (vec(name(), 2..4), value())
            .prop_map(|(p, v)| ItemKind::Set(p.into_iter().map(ident).collect(), v)),
        3 => block().prop_map(ItemKind::Block),
    ];
    (trivia(), kind).prop_map(|(trivia, kind)| Item {
        trivia,
        kind,
        span: Span::default(),
    })
}

fn spec_file() -> impl Strategy<Value = SpecFile> {
    (vec(item(), 0..7), comments(3)).prop_map(|(items, trailing_comments)| {
        let mut f = SpecFile {
            items,
            trailing_comments,
        };
        normalize(&mut f);
        f
    })
}

/// Makes a generated tree representable as text:
/// * the first item (entry) of a file (block) has no blank line before it;
/// * a blank line always separates a top-level block from its neighbours;
/// * `blank_after_leading` needs leading comments.
fn normalize(f: &mut SpecFile) {
    fn trivia(t: &mut Trivia, first: bool) {
        t.blank_before &= !first;
        t.blank_after_leading &= !t.leading.is_empty();
    }
    fn block(b: &mut Block) {
        for (i, e) in b.entries.iter_mut().enumerate() {
            trivia(&mut e.trivia, i == 0);
            if let EntryKind::Block(inner) = &mut e.kind {
                block(inner);
            }
        }
    }
    let is_block: Vec<bool> = f
        .items
        .iter()
        .map(|i| matches!(i.kind, ItemKind::Block(_)))
        .collect();
    for (i, item) in f.items.iter_mut().enumerate() {
        trivia(&mut item.trivia, i == 0);
        if i > 0 && (is_block[i] || is_block[i - 1]) {
            item.trivia.blank_before = true;
        }
        if let ItemKind::Block(b) = &mut item.kind {
            block(b);
        }
    }
}

// ---- helpers ------------------------------------------------------------------------------------

fn stripped(mut f: SpecFile) -> SpecFile {
    strip_spans(&mut f);
    f
}

/// Every comment text in a tree, sorted.
fn tree_comments(f: &SpecFile) -> Vec<String> {
    fn trivia(t: &Trivia, out: &mut Vec<String>) {
        out.extend(t.leading.iter().map(|c| c.text.clone()));
        out.extend(t.trailing.iter().map(|c| c.text.clone()));
    }
    fn block(b: &Block, out: &mut Vec<String>) {
        out.extend(b.closing_comments.iter().map(|c| c.text.clone()));
        for e in &b.entries {
            trivia(&e.trivia, out);
            if let EntryKind::Block(inner) = &e.kind {
                block(inner, out);
            }
        }
    }
    let mut out: Vec<String> = f.trailing_comments.iter().map(|c| c.text.clone()).collect();
    for item in &f.items {
        trivia(&item.trivia, &mut out);
        if let ItemKind::Block(b) = &item.kind {
            block(b, &mut out);
        }
    }
    out.sort();
    out
}

/// Every comment token pest finds in `text`, trimmed like the parser does, sorted.
fn token_comments(text: &str) -> Vec<String> {
    let pairs = CanspecParser::parse(Rule::file, text).expect("text parses");
    let mut out: Vec<String> = pairs
        .flatten()
        .filter(|p| p.as_rule() == Rule::COMMENT)
        .map(|p| p.as_str().trim_end().to_string())
        .collect();
    out.sort();
    out
}

/// Property C: if `text` parses, its canonical print is a fixed point and keeps every comment.
fn check_fixed_point(text: &str) -> Result<(), TestCaseError> {
    let Ok(f1) = parse_file(text, 0) else {
        return Ok(());
    };
    prop_assert_eq!(
        tree_comments(&f1),
        token_comments(text),
        "a comment was lost"
    );
    let p1 = print_file(&f1);
    let f2 = parse_file(&p1, 0)
        .map_err(|e| TestCaseError::fail(format!("printed text fails: {e:?}\n{p1}")))?;
    prop_assert_eq!(
        tree_comments(&f2),
        tree_comments(&f1),
        "printing lost a comment"
    );
    let p2 = print_file(&f2);
    prop_assert_eq!(&p2, &p1, "print is not a fixed point; input {:?}", text);
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---- properties ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// A: print → parse gives back the tree; B: printing that again gives the same text.
    #[test]
    fn generated_trees_round_trip(ast in spec_file()) {
        let printed = print_file(&ast);
        let parsed = parse_file(&printed, 0)
            .map_err(|e| TestCaseError::fail(format!("printed text fails: {e:?}\n{printed}")))?;
        prop_assert_eq!(stripped(parsed.clone()), stripped(ast), "printed:\n{}", printed);
        prop_assert_eq!(print_file(&parsed), printed);
    }

    /// C on a token soup: statement-shaped token sequences glued by random separators (comments
    /// anywhere, no space, blank lines, `\r\n`), with a few tokens swapped for random ones.
    /// Much of it does not parse, which must fail cleanly; what parses is stable.
    #[test]
    fn token_soup_is_stable(
        tokens in vec(soup_statement(), 0..6),
        seps in vec(select(SEPARATORS), 64),
        noise in vec((any::<prop::sample::Index>(), select(SOUP)), 0..3),
    ) {
        let mut tokens: Vec<&str> = tokens.concat();
        if !tokens.is_empty() {
            for (i, t) in noise {
                let i = i.index(tokens.len());
                tokens[i] = t;
            }
        }
        let mut text = String::new();
        for (i, t) in tokens.iter().enumerate() {
            text.push_str(t);
            text.push_str(seps[i % seps.len()]);
        }
        check_fixed_point(&text)?;
    }

    /// C on printed trees with trivia stirred in between tokens: comments inside values and
    /// block headers, blank lines, commas, tabs, `\r\n`.
    #[test]
    fn stirred_trivia_is_stable(
        ast in spec_file(),
        inserts in vec((any::<prop::sample::Index>(), select(STIR)), 1..6),
    ) {
        let mut text = print_file(&ast);
        let gaps: Vec<usize> = text
            .char_indices()
            .filter(|(_, c)| matches!(c, ' ' | '\n'))
            .map(|(i, _)| i)
            .collect();
        if gaps.is_empty() {
            return Ok(());
        }
        let mut at: Vec<(usize, &str)> =
            inserts.iter().map(|(i, s)| (gaps[i.index(gaps.len())], *s)).collect();
        at.sort_by_key(|a| std::cmp::Reverse(a.0));
        for (i, s) in at {
            text.insert_str(i, s);
        }
        check_fixed_point(&text)?;
    }
}

/// Tokens of a value.
fn soup_value() -> impl Strategy<Value = Vec<&'static str>> + Clone {
    let leaf = select(SOUP_VALUES).prop_map(|t| vec![t]);
    leaf.prop_recursive(3, 24, 4, |inner| {
        let items = vec(inner.clone(), 0..4);
        let arg = (option::of(select(SOUP_NAMES)), inner);
        prop_oneof![
            (items.clone(), any::<bool>()).prop_map(|(xs, t)| delimited(&["["], xs, t, "]")),
            (items, any::<bool>()).prop_map(|(xs, t)| delimited(&["sweep", "["], xs, t, "]")),
            (select(SOUP_NAMES), vec(arg, 0..4), any::<bool>()).prop_map(|(f, args, t)| {
                let args = args
                    .into_iter()
                    .map(|(k, mut v)| {
                        if let Some(k) = k {
                            v.splice(0..0, [k, "="]);
                        }
                        v
                    })
                    .collect();
                delimited(&[f, "("], args, t, ")")
            }),
        ]
    })
}

/// `open`, the items separated by `,` (and one after the last if `trailing`), `close`.
fn delimited(
    open: &[&'static str],
    items: Vec<Vec<&'static str>>,
    trailing: bool,
    close: &'static str,
) -> Vec<&'static str> {
    let mut out = open.to_vec();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        out.extend(item);
        if i + 1 < n || trailing {
            out.push(",");
        }
    }
    out.push(close);
    out
}

/// Tokens of a block.
fn soup_block() -> impl Strategy<Value = Vec<&'static str>> {
    let assign = (select(SOUP_NAMES), soup_value(), any::<bool>()).prop_map(|(k, v, comma)| {
        let mut out = vec![k, "="];
        out.extend(v);
        if comma {
            out.push(",");
        }
        out
    });
    let header = (
        select(SOUP_NAMES),
        option::of(select(SOUP_NAMES)),
        option::of(select(SOUP_NAMES)),
    );
    let leaf = (header.clone(), vec(assign.clone(), 0..4))
        .prop_map(|(h, entries)| block_tokens(h, entries));
    leaf.prop_recursive(2, 12, 4, move |inner| {
        (
            header.clone(),
            vec(prop_oneof![assign.clone(), inner], 0..4),
        )
            .prop_map(|(h, entries)| block_tokens(h, entries))
    })
}

type Header = (&'static str, Option<&'static str>, Option<&'static str>);

fn block_tokens((kind, name, ty): Header, entries: Vec<Vec<&'static str>>) -> Vec<&'static str> {
    let mut out = vec![kind];
    out.extend(name);
    if let Some(ty) = ty {
        out.extend([":", ty]);
    }
    out.push("{");
    out.extend(entries.concat());
    out.push("}");
    out
}

/// Tokens of a top-level item.
fn soup_statement() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        (select(SOUP_NAMES), soup_value()).prop_map(|(n, v)| [vec!["let", n, "="], v].concat()),
        (select(SOUP_PATHS), soup_value()).prop_map(|(p, v)| [vec![p, "="], v].concat()),
        Just(vec!["extends", "\"base.canspec\""]),
        soup_block(),
    ]
}

const SOUP_NAMES: &[&str] = &[
    "x", "lr", "s", "h", "min", "e5", "letter", "nonex", "k", "_",
];
const SOUP_PATHS: &[&str] = &["a.b", "train.lr", "s.h.min"];
const SOUP_VALUES: &[&str] = &[
    "1",
    "-3",
    "1.5e-4",
    "2E+3",
    "99999999999999999999",
    "10 epochs",
    "1 step",
    "50%",
    "3\tmin",
    "2 h",
    "0.2..1.0",
    "-1 .. 2",
    "\"s\\n\"",
    "\"#{[(\"",
    "\"\"",
    "true",
    "false",
    "none",
    "$v",
    "a.b",
    "n1.sigma",
    "x",
    "mean_all",
];
/// Anything, for the noise.
const SOUP: &[&str] = &[
    "let", "extends", "sweep", "true", "none", "x", "a.b", "=", "{", "}", "[", "]", "(", ")", ",",
    ":", "..", ".", "1", "1e", "epochs", "%", "\"", "$", "#", "# c\n", "\n", "",
];
const SEPARATORS: &[&str] = &[
    " ",
    " ",
    " ",
    " ",
    " ",
    "\n",
    "\n",
    "",
    "\n\n",
    "\t",
    "\r\n",
    " # c\n",
    "\n# c\n\n",
    "#\n",
];
const STIR: &[&str] = &[
    "# stirred\n",
    " # stirred\n",
    "\n# stirred\n\n",
    "\n\n",
    "\n\n\n",
    ",",
    "\t",
    "\r\n",
];

// ---- plain examples -----------------------------------------------------------------------------

fn specs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            specs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "canspec") {
            out.push(path);
        }
    }
}

/// Every `specs/**/*.canspec` parses, prints, parses back to the same tree, and prints the same.
#[test]
fn spec_files_round_trip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut files = Vec::new();
    specs_files(&root, &mut files);
    files.sort();
    if files.is_empty() {
        eprintln!(
            "no .canspec files under {}: nothing to check",
            root.display()
        );
        return;
    }
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable spec");
        let f1 = parse_file(&text, 0)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e:?}", path.display()));
        let p1 = print_file(&f1);
        let f2 = parse_file(&p1, 0)
            .unwrap_or_else(|e| panic!("{}: printed form does not parse: {e:?}", path.display()));
        assert_eq!(
            tree_comments(&f1),
            token_comments(&text),
            "{}",
            path.display()
        );
        assert_eq!(
            stripped(f2.clone()),
            stripped(f1),
            "{}: print → parse changed the tree",
            path.display()
        );
        assert_eq!(
            print_file(&f2),
            p1,
            "{}: print is not idempotent",
            path.display()
        );
    }
}

/// The generator's output is representable by construction; check a hand-built corner case too:
/// every value kind, every unit, and all trivia in one tree.
#[test]
fn hand_built_tree_round_trips() {
    let n = |t: &str| number_of_text(t.to_string());
    let c = |t: &str| Comment {
        text: t.to_string(),
        span: Span::default(),
    };
    let mut values: Vec<Value> = [
        ValueKind::Number(n("1.5e-4")),
        ValueKind::Number(n("-3")),
        ValueKind::Str("q\"b\\n\nt\t".into()),
        ValueKind::Bool(false),
        ValueKind::None,
        ValueKind::Range(n("0.2"), n("-1")),
        ValueKind::Var(ident("v".into())),
        ValueKind::Path(vec![ident("n1".into()), ident("sigma".into())]),
        ValueKind::Ident("mean_all".into()),
        ValueKind::Sweep(vec![val(ValueKind::Number(n("1")))]),
        ValueKind::Call(
            ident("f".into()),
            vec![
                Arg {
                    name: None,
                    value: val(ValueKind::List(vec![])),
                },
                Arg {
                    name: Some(ident("k".into())),
                    value: val(ValueKind::Number(n("2"))),
                },
            ],
        ),
    ]
    .into_iter()
    .map(val)
    .collect();
    for u in Unit::ALL {
        values.push(val(ValueKind::Quantity(n("10"), u)));
    }
    let entries = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Entry {
            trivia: Trivia {
                blank_before: i % 3 == 1,
                leading: if i % 4 == 2 {
                    vec![c("# lead")]
                } else {
                    vec![]
                },
                blank_after_leading: i % 8 == 2,
                trailing: (i % 5 == 0).then(|| c("#trail")),
            },
            kind: EntryKind::Assign(ident(format!("k{i}")), v),
            span: Span::default(),
        })
        .collect();
    let mut ast = SpecFile {
        items: vec![Item {
            trivia: Trivia {
                leading: vec![c("# head")],
                blank_after_leading: true,
                ..Trivia::default()
            },
            kind: ItemKind::Block(Block {
                kind: ident("k".into()),
                name: Some(ident("n".into())),
                ty: Some(ident("t".into())),
                entries,
                closing_comments: vec![c("# closing")],
                span: Span::default(),
            }),
            span: Span::default(),
        }],
        trailing_comments: vec![c("# end")],
    };
    normalize(&mut ast);
    let printed = print_file(&ast);
    let parsed = parse_file(&printed, 0).expect("printed text parses");
    assert_eq!(stripped(parsed), ast, "printed:\n{printed}");
}
