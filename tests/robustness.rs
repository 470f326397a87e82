//! Bad input never panics: the library specs, corrupted at random (lines dropped, duplicated or
//! swapped, tokens replaced), go through the whole resolver and the diagnostic renderers.

use canc_compiler::diagnostic::{Style, render};
use proptest::prelude::*;

fn corpus() -> Vec<String> {
    let mut texts = Vec::new();
    for dir in ["specs", "specs/ablations"] {
        for e in std::fs::read_dir(dir).expect("spec dir").flatten() {
            if e.path().extension().is_some_and(|x| x == "canspec") {
                let text = std::fs::read_to_string(e.path()).expect("readable");
                // Resolve `extends` from the package root, where the test runs.
                texts.push(text.replace("extends \"../", "extends \"specs/"));
            }
        }
    }
    texts.sort();
    texts
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "=",
    ",",
    ".",
    "..",
    "$",
    "none",
    "sweep [",
    "0",
    "-1",
    "1e999",
    "1.5",
    "\"s\"",
    "encoder",
    "x1",
    "mask",
    "view",
    "network",
    "graph",
    "objective",
    "10 epochs",
    "50%",
    "extends \"specs/can.canspec\"",
    "let",
    "#",
    "\n",
    "true",
    "pool",
    "nce",
    "99999999999999999999",
];

#[derive(Debug, Clone)]
enum Mutation {
    DropLine(usize),
    DupLine(usize),
    SwapLines(usize, usize),
    Insert(usize, usize),
    ReplaceWord(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::DupLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::ReplaceWord(a, b)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let n = lines.len();
    match *m {
        Mutation::DropLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DupLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        Mutation::Insert(pos, t) => {
            let mut s = lines.join("\n");
            let mut at = pos % (s.len() + 1);
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            s.insert_str(at, TOKENS[t % TOKENS.len()]);
            return s;
        }
        Mutation::ReplaceWord(w, t) => {
            let l = &mut lines[w % n];
            let words: Vec<&str> = l.split(' ').collect();
            let k = (w / n) % words.len().max(1);
            let mut words: Vec<String> = words.iter().map(|s| s.to_string()).collect();
            if let Some(word) = words.get_mut(k) {
                *word = TOKENS[t % TOKENS.len()].to_string();
            }
            *l = words.join(" ");
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_specs_give_diagnostics_not_panics(which in any::<usize>(), muts in prop::collection::vec(mutation(), 1..4)) {
        let texts = corpus();
        let mut text = texts[which % texts.len()].clone();
        for m in &muts {
            text = apply(&text, m);
        }
        let res = canc_compiler::resolve_source("mutant.canspec", &text, &[]);
        let human = render(&res.diagnostics, &res.sources, Style::Human);
        let _ = render(&res.diagnostics, &res.sources, Style::Short);
        for d in &res.diagnostics {
            let _ = d.to_json(&res.sources);
        }
        prop_assert!(res.has_errors() || !res.variants.is_empty(), "no error yet nothing resolved:\n{human}");
        if res.has_errors() {
            prop_assert!(human.contains("error["), "errors are rendered with a code:\n{human}");
        }
    }
}
