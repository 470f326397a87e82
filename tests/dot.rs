//! `canc graph`: the DOT and Mermaid pictures of the compiled loss graph. Every library spec's
//! DOT is snapshotted (every sweep variant, one digraph each) and checked for validity (rendered
//! by Graphviz when `dot` is installed, structurally otherwise); targeted checks cover gradient
//! edges, EMA edges, shared weights and objective weights.

use crate::specs::{snapshot_name, spec_files};
use canc_compiler::Plan;
use canc_compiler::dot::{to_dot, to_mermaid};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The plans of a library spec, which must compile without diagnostics.
fn plans(path: &str) -> Vec<Plan> {
    let res = canc_compiler::resolve_path(Path::new(path), &[]);
    assert!(
        res.diagnostics.is_empty(),
        "{path} has diagnostics: {:?}",
        res.diagnostics
    );
    assert!(!res.plans.is_empty(), "{path} has no plan");
    res.plans
}

/// A parsed DOT graph: node labels by id (declaration order) and edges with their attributes.
#[derive(Debug)]
struct Dot {
    nodes: Vec<(String, String)>,
    edges: Vec<Edge>,
}

#[derive(Debug)]
struct Edge {
    from: String,
    to: String,
    label: Option<String>,
    dashed: bool,
}

impl Dot {
    /// The id of the node whose label's first line is `first`.
    fn id(&self, first: &str) -> &str {
        self.nodes
            .iter()
            .find(|(_, l)| l.lines().next() == Some(first))
            .map(|(id, _)| id.as_str())
            .unwrap_or_else(|| panic!("no node labelled {first:?} in {:#?}", self.nodes))
    }

    /// The edges from `from` to `to` (node ids).
    fn edges(&self, from: &str, to: &str) -> Vec<&Edge> {
        self.edges
            .iter()
            .filter(|e| e.from == from && e.to == to)
            .collect()
    }

    /// The one edge from `from` to `to`.
    fn edge(&self, from: &str, to: &str) -> &Edge {
        let e = self.edges(from, to);
        assert_eq!(e.len(), 1, "edges {from} -> {to}: {e:?}");
        e[0]
    }
}

/// The quoted value of `key=` in `attrs`, unescaped (`\n` becomes a newline).
fn attr(attrs: &str, key: &str) -> Option<String> {
    let start = attrs.find(&format!("{key}=\""))? + key.len() + 2;
    let mut out = String::new();
    let mut chars = attrs[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Checks that `text` is a well-formed digraph (strings closed, braces and brackets balanced,
/// node ids plain identifiers declared once, every edge endpoint declared) and parses it.
fn parse_dot(text: &str) -> Dot {
    let (mut in_str, mut esc, mut braces, mut brackets) = (false, false, 0i32, 0i32);
    for c in text.chars() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ => {}
        }
        assert!(braces >= 0 && brackets >= 0, "unbalanced:\n{text}");
    }
    assert!(
        !in_str && braces == 0 && brackets == 0,
        "unbalanced:\n{text}"
    );
    assert!(text.starts_with("digraph \""), "{text}");
    assert!(text.ends_with("}\n"), "{text}");

    let mut dot = Dot {
        nodes: vec![],
        edges: vec![],
    };
    let body = text.lines().skip(1).map(str::trim).filter(|l| {
        !l.is_empty()
            && *l != "}"
            && !l.starts_with("//")
            && !l.starts_with("graph [")
            && !l.starts_with("node [")
            && !l.starts_with("edge [")
    });
    for line in body {
        assert!(line.ends_with(';'), "statement without `;`: {line}");
        let (head, attrs) = line
            .split_once(" [")
            .unwrap_or((line.trim_end_matches(';'), ""));
        if let Some((from, to)) = head.split_once(" -> ") {
            dot.edges.push(Edge {
                from: from.to_string(),
                to: to.to_string(),
                label: attr(attrs, "label"),
                dashed: attrs.contains("style=dashed"),
            });
        } else {
            assert!(is_ident(head), "node id {head:?} is not an identifier");
            assert!(
                !dot.nodes.iter().any(|(id, _)| id == head),
                "node {head} declared twice"
            );
            let label = attr(attrs, "label").unwrap_or_else(|| panic!("{head} has no label"));
            dot.nodes.push((head.to_string(), label));
        }
    }
    let ids: HashSet<&str> = dot.nodes.iter().map(|(id, _)| id.as_str()).collect();
    for e in &dot.edges {
        assert!(
            ids.contains(e.from.as_str()) && ids.contains(e.to.as_str()),
            "edge {} -> {} has an undeclared endpoint",
            e.from,
            e.to
        );
    }
    dot
}

/// Renders DOT with Graphviz, if installed: `None` without `dot`, else whether it rendered.
fn render(text: &str) -> Option<Result<String, String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let written = child.stdin.take().map(|mut s| s.write_all(text.as_bytes()));
    let out = child.wait_with_output();
    Some(match (written, out) {
        (Some(Ok(())), Ok(o)) if o.status.success() => {
            // Graphviz warns on stderr about things it still renders (unknown attributes).
            if o.stderr.is_empty() {
                Ok(String::from_utf8_lossy(&o.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        }
        (_, Ok(o)) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
        (_, Err(e)) => Err(e.to_string()),
    })
}

#[test]
fn every_spec_dot_is_valid_and_matches_snapshot() {
    let files = spec_files();
    assert!(files.len() >= 12, "found only {} specs", files.len());
    let mut rendered = 0;
    for path in files {
        let plans = plans(&path.to_string_lossy());
        let mut dots = Vec::new();
        for plan in &plans {
            let text = to_dot(plan);
            let dot = parse_dot(&text);
            // One node per step, one per network's weights, and the loss.
            assert_eq!(
                dot.nodes.len(),
                plan.steps.len() + plan.networks.len() + 1,
                "{}",
                path.display()
            );
            assert_eq!(to_dot(plan), text, "output is deterministic");
            if let Some(svg) = render(&text) {
                let svg = svg.unwrap_or_else(|e| panic!("{}: dot failed: {e}", path.display()));
                assert!(svg.contains("<svg"), "{}", path.display());
                rendered += 1;
            }
            dots.push(text);
        }
        insta::with_settings!({ snapshot_path => "snapshots/dot", prepend_module_to_snapshot => false, description => path.display().to_string() }, {
            insta::assert_snapshot!(snapshot_name(&path), dots.join("\n"));
        });
    }
    if rendered == 0 {
        eprintln!("Graphviz `dot` not installed: checked the DOT structurally only");
    }
}

#[test]
fn mocov3_keys_carry_no_gradient_and_teacher_follows_encoder() {
    let plan = &plans("specs/mocov3.canspec")[0];
    let dot = parse_dot(&to_dot(plan));

    // stop_grad: its input (the key) and its output edge carry no gradient back.
    let (k2, sg, qk) = (
        dot.id("k2"),
        dot.id("nce/stop_grad"),
        dot.id("nce/infonce_qk"),
    );
    assert!(dot.edge(k2, sg).dashed);
    assert!(dot.edge(sg, qk).dashed);
    // The query side of the same loss does.
    assert!(!dot.edge(dot.id("q1"), qk).dashed);
    assert!(!dot.edge(dot.id("q1/encoder"), dot.id("q1/pool")).dashed);

    // Every edge into or out of a teacher call is dashed.
    for call in ["k1/teacher", "k2/teacher", "k1", "k2"] {
        let id = dot.id(call);
        let touching: Vec<&Edge> = dot
            .edges
            .iter()
            .filter(|e| e.from == id || e.to == id)
            .collect();
        assert!(touching.len() >= 3, "{call}: {touching:?}"); // weights, input, output
        assert!(touching.iter().all(|e| e.dashed), "{call}: {touching:?}");
    }

    // The EMA update: encoder's weights → teacher's, momentum 0.99 rising to the default 1.0.
    let enc = dot.id("encoder (weights, 2.67M params)"); // 2657280 + 15744 = 2673024
    let teacher = dot.id("teacher (EMA weights, 2.67M params)");
    let ema = dot.edge(enc, teacher);
    assert_eq!(ema.label.as_deref(), Some("EMA m=0.99→1.0 cosine"));
    assert!(ema.dashed);
    // The teacher's weights feed both teacher calls, the encoder's only the online ones.
    assert_eq!(dot.edges(teacher, dot.id("k1/teacher")).len(), 1);
    assert_eq!(dot.edges(teacher, dot.id("k2/teacher")).len(), 1);
    assert!(dot.edges(enc, dot.id("k1/teacher")).is_empty());
    assert!(!dot.edge(enc, dot.id("q1/encoder")).dashed);
}

#[test]
fn can_shares_encoder_weights_and_weights_its_terms() {
    let plan = &plans("specs/can.canspec")[0];
    let dot = parse_dot(&to_dot(plan));

    // One encoder weights node feeding both views' calls, and nothing else.
    let enc = dot.id("encoder (weights, 2.67M params)");
    let mut targets: Vec<&str> = dot
        .edges
        .iter()
        .filter(|e| e.from == enc)
        .map(|e| e.to.as_str())
        .collect();
    targets.sort();
    let mut expected = vec![dot.id("h1"), dot.id("h2")];
    expected.sort();
    assert_eq!(targets, expected);
    assert_eq!(
        dot.nodes
            .iter()
            .filter(|(_, l)| l.starts_with("encoder ("))
            .count(),
        1
    );

    // The objective: 0.03 nce + 0.67 mae + 0.3 denoise, summing to 0.03 + 0.67 + 0.3 = 1.0.
    for (term, w) in [("nce", "×0.03"), ("mae", "×0.67"), ("denoise", "×0.3")] {
        let e = dot.edge(dot.id(term), "loss");
        assert_eq!(e.label.as_deref(), Some(w), "{term}");
        assert!(!e.dashed, "{term}");
    }
    let loss = &dot
        .nodes
        .iter()
        .find(|(id, _)| id == "loss")
        .expect("loss")
        .1;
    assert!(loss.contains("weight sum 1.0"), "{loss}");

    // σ conditions the decoder through a keyword port: labelled with port and output, dashed.
    let cond = dot.edge(dot.id("n1"), dot.id("y1"));
    assert_eq!(cond.label.as_deref(), Some("cond: sigma"));
    assert!(cond.dashed);
    let mask = dot.edge(dot.id("m1"), dot.id("h1"));
    assert_eq!(mask.label.as_deref(), Some("mask"));
    assert!(mask.dashed);
    // The noise target reads `n1.noise`: the edge comes from n1, labelled with the output.
    let noise = dot.edge(dot.id("n1"), dot.id("denoise/patchify"));
    assert_eq!(noise.label.as_deref(), Some("noise"));
    // The type of the masked encoder's output: 49 patches at ratio 0.5 keep floor(24.5) = 24.
    let h1 = &dot
        .nodes
        .iter()
        .find(|(id, _)| id == dot.id("h1"))
        .expect("h1")
        .1;
    assert_eq!(
        h1,
        "h1\nencoder (vit)\n[B, 1+24, 192] (24 of 49 patches visible)"
    );
}

#[test]
fn mermaid_has_the_same_graph() {
    let plan = &plans("specs/can.canspec")[0];
    let dot = parse_dot(&to_dot(plan));
    let text = to_mermaid(plan);
    assert!(text.starts_with("flowchart TD\n"), "{text}");

    // Nodes: `id<shape>"label"<shape>:::class`, ids plain identifiers, labels quoted.
    let mut ids = Vec::new();
    let mut arrows = Vec::new();
    for line in text.lines().skip(1).map(str::trim) {
        if line.starts_with("%%") || line.starts_with("classDef ") {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        if parts.len() >= 3 && is_ident(parts[0]) && is_ident(parts[parts.len() - 1]) {
            arrows.push((
                parts[0].to_string(),
                parts[parts.len() - 1].to_string(),
                line,
            ));
            continue;
        }
        let id: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(is_ident(&id), "{line}");
        assert_eq!(
            line.matches('"').count(),
            2,
            "label not quoted once: {line}"
        );
        assert!(line.contains(":::"), "{line}");
        ids.push(id);
    }
    let dot_ids: Vec<&str> = dot.nodes.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, dot_ids);
    assert_eq!(arrows.len(), dot.edges.len());
    for (a, b, line) in &arrows {
        assert!(ids.contains(a) && ids.contains(b), "{line}");
    }

    let n1 = dot.id("n1");
    let y1 = dot.id("y1");
    assert!(
        text.contains(&format!("  {n1} -. \"cond: sigma\" .-> {y1}\n")),
        "{text}"
    );
    let nce = dot.id("nce");
    assert!(
        text.contains(&format!("  {nce} == \"×0.03\" ==> loss\n")),
        "{text}"
    );
    let h1 = dot.id("h1");
    let pool = dot.id("z1/pool");
    assert!(text.contains(&format!("  {h1} --> {pool}\n")), "{text}");
    assert!(
        text.contains(
            "(\"h1<br>encoder (vit)<br>[B, 1+24, 192] (24 of 49 patches visible)\"):::net"
        )
    );
}

#[test]
fn names_with_quotes_and_backslashes_are_escaped() {
    let text = std::fs::read_to_string("specs/mae.canspec").expect("readable");
    let res = canc_compiler::resolve_source("we\"ird\\name.canspec", &text, &[]);
    assert!(res.diagnostics.is_empty(), "{:?}", res.diagnostics);
    let plan = &res.plans[0];
    assert_eq!(plan.spec, "we\"ird\\name");
    let dot = to_dot(plan);
    assert!(
        dot.starts_with("digraph \"we\\\"ird\\\\name\" {\n"),
        "{dot}"
    );
    parse_dot(&dot);
    if let Some(r) = render(&dot) {
        r.unwrap_or_else(|e| panic!("dot failed: {e}"));
    }
    let mermaid = to_mermaid(plan);
    assert!(mermaid.contains("%% we\"ird\\name\n"), "{mermaid}");
}

#[test]
fn every_weights_node_feeds_only_calls_of_its_network() {
    // Over all specs: a weights edge goes from `wN` to a call of network N.
    for path in spec_files() {
        for plan in plans(&path.to_string_lossy()) {
            let dot = parse_dot(&to_dot(&plan));
            let labels: HashMap<&str, &str> = dot
                .nodes
                .iter()
                .map(|(id, l)| (id.as_str(), l.as_str()))
                .collect();
            for e in dot.edges.iter().filter(|e| e.from.starts_with('w')) {
                let net = labels[e.from.as_str()]
                    .split(' ')
                    .next()
                    .unwrap_or_default();
                let target = labels[e.to.as_str()];
                let op = target.lines().nth(1).unwrap_or_default();
                let is_call = op.starts_with(&format!("{net} ("));
                let is_ema = e.label.as_deref().is_some_and(|l| l.starts_with("EMA m="));
                assert!(
                    is_call || is_ema,
                    "{}: {} -> {target:?}",
                    path.display(),
                    labels[e.from.as_str()]
                );
            }
        }
    }
}

#[test]
fn stop_grad_cuts_gradient_from_a_trained_branch() {
    // SimCLR with one view behind stop_grad: z2 depends on trained weights, yet the edge into
    // stop_grad carries no gradient back, while z1's edge into the loss does.
    let text = std::fs::read_to_string("specs/simclr.canspec").expect("readable");
    let from = "nce = infonce(z1, z2,";
    assert!(text.contains(from));
    let text = text.replace(from, "nce = infonce(z1, stop_grad(z2),");
    let res = canc_compiler::resolve_source("simclr_sg.canspec", &text, &[]);
    assert!(!res.has_errors(), "{:?}", res.diagnostics);
    let plan = &res.plans[0];
    assert!(plan.step("z2").is_some_and(|s| s.grad));
    let dot = parse_dot(&to_dot(plan));
    let (z1, z2, sg, nce) = (
        dot.id("z1"),
        dot.id("z2"),
        dot.id("nce/stop_grad"),
        dot.id("nce"),
    );
    assert!(dot.edge(z2, sg).dashed);
    assert!(dot.edge(sg, nce).dashed);
    assert!(!dot.edge(z1, nce).dashed);
    assert!(!dot.edge(dot.id("z2/pool"), z2).dashed);
}
