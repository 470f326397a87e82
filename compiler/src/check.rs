//! Schema checking of a merged document: every block, key and value against the closed schema,
//! defaults filled in, cross-field rules. Collects every problem; returns the resolved spec.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::doc::{Doc, DocBlock, DocEntry, Origin};
use crate::graph;
use crate::resolved::{Provenance, RBlock, RValue, ResolvedSpec};
use crate::schema::{self, Body, DataAttr, Default, Field, TypeSchema};
use crate::source::SourceMap;
use crate::suggest;
use crate::value::{self, Names};
use canc_grammar::Span;
use indexmap::IndexMap;

/// What other defaults derive from the data source.
#[derive(Debug, Clone)]
pub struct DataInfo {
    /// Image side.
    pub image_size: i64,
    /// Channels.
    pub channels: i64,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel std.
    pub std: Vec<f64>,
    /// Labels are loaded.
    pub labels: bool,
}

impl DataInfo {
    /// What the data block (or the default, Fashion-MNIST) implies.
    pub fn of(block: Option<&RBlock>) -> Self {
        let mut d = DataInfo {
            image_size: 28,
            channels: 1,
            mean: vec![0.2860],
            std: vec![0.3530],
            labels: true,
        };
        let Some(b) = block else { return d };
        d.labels = b.get("labels") == Some(&RValue::Bool(true));
        let floats = |k: &str| match b.get(k) {
            Some(RValue::List(xs)) => {
                Some(xs.iter().filter_map(RValue::as_f64).collect::<Vec<_>>())
            }
            _ => None,
        };
        match b.ty.as_deref() {
            Some("cifar10") => {
                (d.image_size, d.channels) = (32, 3);
                d.mean = vec![0.4914, 0.4822, 0.4465];
                d.std = vec![0.2470, 0.2435, 0.2616];
            }
            Some("cifar100") => {
                (d.image_size, d.channels) = (32, 3);
                d.mean = vec![0.5071, 0.4865, 0.4409];
                d.std = vec![0.2673, 0.2564, 0.2762];
            }
            Some("image_folder") | Some("synthetic") => {
                d.image_size = b.get("image_size").and_then(RValue::as_i64).unwrap_or(32);
                d.channels = b.get("channels").and_then(RValue::as_i64).unwrap_or(3);
                let n = d.channels as usize;
                let (mean, std) = if b.ty.as_deref() == Some("synthetic") {
                    (vec![0.5; n], vec![0.25; n])
                } else if n == 1 {
                    (vec![0.449], vec![0.226])
                } else {
                    (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
                };
                d.mean = floats("mean").unwrap_or(mean);
                d.std = floats("std").unwrap_or(std);
            }
            _ => {}
        }
        d
    }

    fn attr(&self, a: DataAttr) -> RValue {
        match a {
            DataAttr::ImageSize => RValue::Int(self.image_size),
            DataAttr::Channels => RValue::Int(self.channels),
            DataAttr::Mean => RValue::List(self.mean.iter().map(|x| RValue::Float(*x)).collect()),
            DataAttr::Std => RValue::List(self.std.iter().map(|x| RValue::Float(*x)).collect()),
        }
    }
}

/// Shared state of one check.
pub(crate) struct Cx<'a> {
    pub sources: &'a SourceMap,
    pub diags: Vec<Diagnostic>,
    pub provenance: IndexMap<String, Provenance>,
    pub spans: IndexMap<String, Span>,
    pub names: Names,
    pub data: DataInfo,
    /// Names of named blocks that failed their own checks (calls to them are not re-reported).
    pub broken: Vec<String>,
}

impl Cx<'_> {
    pub(crate) fn record(&mut self, path: String, origin: Origin, span: Span) {
        let p = match origin {
            Origin::Spec => Provenance::Spec(self.sources.location(span)),
            Origin::Cli(file) => Provenance::Cli(self.sources.name(file).to_string()),
        };
        self.spans.insert(path.clone(), span);
        self.provenance.insert(path, p);
    }
}

/// The value a literal default stands for.
pub(crate) fn literal_default(lit: &str, f: &Field, names: &Names) -> RValue {
    let parsed = canc_grammar::parse_override(&format!("x={lit}"), u32::MAX);
    match parsed.map(|(_, v)| value::check(&v, &f.ty, f.name, names)) {
        Ok(Ok(v)) => v,
        // The schema's own literals are tested to check; reaching here is a schema bug.
        _ => RValue::Str(format!("<bad default {lit}>")),
    }
}

/// Checks the keys and nested blocks of `b` against `ts`, filling defaults.
pub(crate) fn check_fields(ts: &TypeSchema, b: &DocBlock, prefix: &str, cx: &mut Cx) -> RBlock {
    let mut given: IndexMap<&str, RValue> = IndexMap::new();
    let mut invalid: Vec<&str> = Vec::new();
    let mut children = Vec::new();
    for (key, entry) in &b.entries {
        match entry {
            DocEntry::Field(s) => {
                let Some(f) = ts.field(key) else {
                    let mut d = if ts.child(key).is_some() {
                        Diagnostic::error(
                            codes::TYPE_MISMATCH,
                            s.key.span,
                            format!(
                                "`{key}` is a{} {}, not a key",
                                if ts.child_noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
                                    "n"
                                } else {
                                    ""
                                },
                                ts.child_noun
                            ),
                        )
                        .label("written as `key = value`")
                        .help(format!("write `{key} {{ ... }}`"))
                    } else {
                        let cands: Vec<&str> = ts
                            .fields
                            .iter()
                            .map(|f| f.name)
                            .chain(ts.children.iter().map(|c| c.name))
                            .collect();
                        Diagnostic::error(
                            codes::UNKNOWN_KEY,
                            s.key.span,
                            format!("unknown key `{key}` in `{}`", ts.name),
                        )
                        .label("unknown key")
                        .maybe_help(suggest::hint(key, &cands))
                    };
                    if ts.fields.is_empty() && !ts.children.is_empty() {
                        d = d.note(format!("`{}` holds only {}s", ts.name, ts.child_noun));
                    }
                    cx.diags.push(d);
                    continue;
                };
                match value::check(&s.value, &f.ty, &format!("`{}`", f.name), &cx.names) {
                    Ok(v) => {
                        cx.record(format!("{prefix}.{key}"), s.origin, s.value.span);
                        given.insert(f.name, v);
                    }
                    Err(d) => {
                        invalid.push(f.name);
                        cx.diags.push(d)
                    }
                }
            }
            DocEntry::Block(child) => {
                let Some(cs) = ts.child(key) else {
                    let d = if ts.field(key).is_some() {
                        Diagnostic::error(
                            codes::TYPE_MISMATCH,
                            child.kind.span,
                            format!("`{key}` is a key, not a block"),
                        )
                        .label("written as a block")
                        .help(format!("write `{key} = ...`"))
                    } else {
                        let noun = if ts.child_noun.is_empty() {
                            "block"
                        } else {
                            ts.child_noun
                        };
                        let cands: Vec<&str> = ts.children.iter().map(|c| c.name).collect();
                        let mut d = Diagnostic::error(
                            codes::UNKNOWN_BLOCK,
                            child.kind.span,
                            format!("unknown {noun} `{key}` in `{}`", ts.name),
                        )
                        .label(format!("unknown {noun}"))
                        .maybe_help(suggest::hint(key, &cands));
                        if cands.is_empty() {
                            d = d.note(format!("`{}` has no nested blocks", ts.name));
                        }
                        d
                    };
                    cx.diags.push(d);
                    continue;
                };
                if let Some(n) = &child.name {
                    cx.diags.push(
                        Diagnostic::error(
                            codes::BLOCK_NAME,
                            n.span,
                            format!("`{key}` takes no name"),
                        )
                        .label("unexpected name"),
                    );
                }
                children.push(check_fields(cs, child, &format!("{prefix}.{key}"), cx));
            }
        }
    }
    let mut fields = IndexMap::new();
    for f in ts.fields {
        let path = format!("{prefix}.{}", f.name);
        let v = match given.shift_remove(f.name) {
            Some(v) => v,
            None => match f.default {
                Default::Required if invalid.contains(&f.name) => continue,
                Default::Required => {
                    cx.diags.push(
                        Diagnostic::error(
                            codes::MISSING_REQUIRED,
                            b.header_span(),
                            format!("`{}` needs `{}`", ts.name, f.name),
                        )
                        .label(format!("`{}` missing", f.name))
                        .help(format!(
                            "add `{} = ...` ({}: {})",
                            f.name,
                            f.doc,
                            schema::describe(&f.ty)
                        )),
                    );
                    continue;
                }
                Default::Unset => {
                    cx.provenance.insert(path, Provenance::Default);
                    RValue::None
                }
                Default::Lit(lit) => {
                    cx.provenance.insert(path, Provenance::Default);
                    literal_default(lit, f, &cx.names)
                }
                Default::Data(a) => {
                    cx.provenance
                        .insert(path, Provenance::Derived(a.formula().into()));
                    cx.data.attr(a)
                }
            },
        };
        fields.insert(f.name.to_string(), v);
    }
    RBlock {
        kind: b.kind.name.clone(),
        name: b.name.as_ref().map(|n| n.name.clone()),
        ty: b.ty.as_ref().map(|t| t.name.clone()),
        fields,
        children,
    }
}

fn check_typed(types: &[TypeSchema], b: &DocBlock, prefix: &str, cx: &mut Cx) -> Option<RBlock> {
    let names: Vec<&str> = types.iter().map(|t| t.name).collect();
    let Some(ty) = &b.ty else {
        cx.diags.push(
            Diagnostic::error(
                codes::MISSING_TYPE,
                b.header_span(),
                format!("`{}` needs a type", b.kind.name),
            )
            .label("type missing")
            .help(format!(
                "write `{}: TYPE {{ ... }}` with TYPE one of: {}",
                b.header_text(),
                names.join(", ")
            )),
        );
        return None;
    };
    let Some(ts) = types.iter().find(|t| t.name == ty.name) else {
        cx.diags.push(
            Diagnostic::error(
                codes::UNKNOWN_TYPE,
                ty.span,
                format!("unknown {} type `{}`", b.kind.name, ty.name),
            )
            .label("unknown type")
            .maybe_help(suggest::hint(&ty.name, &names)),
        );
        return None;
    };
    Some(check_fields(ts, b, prefix, cx))
}

impl DocBlock {
    fn header_text(&self) -> String {
        match &self.name {
            Some(n) => format!("{} {}", self.kind.name, n.name),
            None => self.kind.name.clone(),
        }
    }
}

/// Checks a merged, swept, substituted document.
pub fn check(
    doc: &Doc,
    name: &str,
    variant: Option<String>,
    sources: &SourceMap,
    chain: &[canc_grammar::FileId],
    root_span: Span,
) -> (Option<ResolvedSpec>, Vec<Diagnostic>) {
    let mut cx = Cx {
        sources,
        diags: Vec::new(),
        provenance: IndexMap::new(),
        spans: IndexMap::new(),
        names: Names::default(),
        data: DataInfo::of(None),
        broken: Vec::new(),
    };

    // Block kinds and names.
    let mut known: Vec<&DocBlock> = Vec::new();
    for b in doc.blocks.values() {
        let Some(bs) = schema::block(&b.kind.name) else {
            let cands: Vec<&str> = schema::BLOCKS.iter().map(|s| s.kind).collect();
            let mut d = Diagnostic::error(
                codes::UNKNOWN_BLOCK,
                b.kind.span,
                format!("unknown block `{}`", b.kind.name),
            )
            .label("unknown block")
            .maybe_help(suggest::hint(&b.kind.name, &cands));
            if schema::AUGMENTATIONS.iter().any(|a| a.name == b.kind.name) {
                d = d.note("augmentations go inside a `view NAME { ... }` block");
            }
            cx.diags.push(d);
            continue;
        };
        match (&b.name, bs.named) {
            (None, true) => {
                cx.diags.push(
                    Diagnostic::error(
                        codes::BLOCK_NAME,
                        b.kind.span,
                        format!("a `{}` block needs a name", bs.kind),
                    )
                    .label("name missing")
                    .help(format!(
                        "write `{} NAME{} {{ ... }}`",
                        bs.kind,
                        if matches!(bs.body, Body::Typed(_)) {
                            ": TYPE"
                        } else {
                            ""
                        }
                    )),
                );
                continue;
            }
            (Some(n), false) => {
                cx.diags.push(
                    Diagnostic::error(
                        codes::BLOCK_NAME,
                        n.span,
                        format!("`{}` is unique and takes no name", bs.kind),
                    )
                    .label("unexpected name")
                    .help(format!(
                        "write `{}{} {{ ... }}`",
                        bs.kind,
                        if matches!(bs.body, Body::Typed(_)) {
                            ": TYPE"
                        } else {
                            ""
                        }
                    )),
                );
                continue;
            }
            _ => {}
        }
        if !matches!(bs.body, Body::Typed(_))
            && let Some(t) = &b.ty
        {
            cx.diags.push(
                Diagnostic::error(
                    codes::UNKNOWN_TYPE,
                    t.span,
                    format!("`{}` takes no type", bs.kind),
                )
                .label("unexpected type"),
            );
        }
        known.push(b);
    }
    for bs in schema::BLOCKS.iter().filter(|b| b.required) {
        if !known.iter().any(|b| b.kind.name == bs.kind)
            && !doc.blocks.values().any(|b| b.kind.name == bs.kind)
        {
            cx.diags.push(
                Diagnostic::error(
                    codes::MISSING_BLOCK,
                    root_span,
                    format!("the spec has no `{}` block", bs.kind),
                )
                .label("in this spec or its bases")
                .help(format!("add `{}` ({})", bs.kind, bs.doc)),
            );
        }
    }
    for b in &known {
        let (path, span) = match &b.name {
            Some(n) => (format!("{}.{}", b.kind.name, n.name), n.span),
            None => (b.kind.name.clone(), b.kind.span),
        };
        cx.spans.insert(path, span);
        if let Some(n) = &b.name {
            match b.kind.name.as_str() {
                "network" => cx.names.networks.push(n.name.clone()),
                "view" => cx.names.views.push(n.name.clone()),
                _ => {}
            }
        }
    }

    for b in doc.blocks.values() {
        if let Some(n) = &b.name
            && !known.iter().any(|k| std::ptr::eq(*k, b))
        {
            cx.broken.push(n.name.clone());
        }
        if b.kind.name == "network"
            && b.name.is_none()
            && let Some(t) = &b.ty
        {
            cx.broken.push(t.name.clone());
        }
    }

    // Data first: other defaults derive from it.
    let mut out: Vec<RBlock> = Vec::new();
    if let Some(b) = known.iter().find(|b| b.kind.name == "data")
        && let Some(r) = check_typed(schema::DATA_SOURCES, b, "data", &mut cx)
    {
        cx.data = DataInfo::of(Some(&r));
        out.push(r);
    }
    let mut networks: IndexMap<String, RBlock> = IndexMap::new();
    for b in known.iter().filter(|b| b.kind.name == "network") {
        let n = b.name.as_ref().map(|n| n.name.clone()).unwrap_or_default();
        if let Some(op) = schema::find_op(&n) {
            let span = b.name.as_ref().map_or(b.kind.span, |x| x.span);
            cx.diags.push(
                Diagnostic::error(
                    codes::NAME_CLASH,
                    span,
                    format!("network `{n}` has the name of a built-in operation"),
                )
                .label("calls to it would be ambiguous")
                .note(format!("`{}`: {}", op.name, op.doc))
                .help(format!("rename the network, e.g. `{n}_net`")),
            );
        }
        let before = cx.diags.iter().filter(|d| d.is_error()).count();
        match check_typed(schema::NETWORKS, b, &format!("network.{n}"), &mut cx) {
            Some(r) => {
                check_network(&r, b, &networks_src(&known), &mut cx);
                if cx.diags.iter().filter(|d| d.is_error()).count() > before {
                    cx.broken.push(n.clone());
                }
                networks.insert(n, r);
            }
            None => cx.broken.push(n),
        }
    }
    let mut node_kinds = IndexMap::new();
    for bs in schema::BLOCKS {
        for b in known.iter().filter(|b| b.kind.name == bs.kind) {
            let prefix = match &b.name {
                Some(n) => format!("{}.{}", bs.kind, n.name),
                None => bs.kind.to_string(),
            };
            let r = match (bs.kind, bs.body) {
                ("data", _) | ("network", _) => continue,
                (_, Body::Typed(types)) => check_typed(types, b, &prefix, &mut cx),
                (_, Body::Plain(ts)) => Some(check_fields(&ts, b, &prefix, &mut cx)),
                (_, Body::Graph) => {
                    let (r, kinds) = graph::check_graph(b, &networks, &mut cx);
                    node_kinds = kinds;
                    Some(r)
                }
                (_, Body::Objective) => Some(graph::check_objective(b, &node_kinds, &mut cx)),
            };
            out.extend(r);
        }
    }
    // Canonical order: schema order, declaration order within a kind.
    let mut blocks: Vec<RBlock> = Vec::new();
    for bs in schema::BLOCKS {
        if bs.kind == "network" {
            blocks.extend(networks.values().cloned());
        }
        blocks.extend(out.iter().filter(|b| b.kind == bs.kind).cloned());
    }
    check_eval(&blocks, doc, &mut cx);

    let errors = cx.diags.iter().any(Diagnostic::is_error);
    let lets = doc
        .lets
        .iter()
        .map(|(k, s)| (k.clone(), lossy(&s.value)))
        .collect();
    let spec = ResolvedSpec {
        name: name.to_string(),
        variant,
        sources: chain.iter().map(|f| sources.name(*f).to_string()).collect(),
        lets,
        blocks,
        provenance: cx.provenance,
        spans: cx.spans,
    };
    (if errors { None } else { Some(spec) }, cx.diags)
}

/// Network name → (type, source for ema) of every declared network.
fn networks_src(known: &[&DocBlock]) -> IndexMap<String, (String, Option<String>)> {
    known
        .iter()
        .filter(|b| b.kind.name == "network")
        .filter_map(|b| {
            let src = b.entries.get("source").and_then(|e| match e {
                DocEntry::Field(s) => match &s.value.kind {
                    canc_grammar::ast::ValueKind::Ident(i) => Some(i.clone()),
                    _ => None,
                },
                _ => None,
            });
            Some((
                b.name.as_ref()?.name.clone(),
                (b.ty.as_ref()?.name.clone(), src),
            ))
        })
        .collect()
}

fn check_network(
    r: &RBlock,
    b: &DocBlock,
    all: &IndexMap<String, (String, Option<String>)>,
    cx: &mut Cx,
) {
    let int = |k: &str| r.get(k).and_then(RValue::as_i64);
    let span_of = |k: &str| match b.entries.get(k) {
        Some(DocEntry::Field(s)) => s.value.span,
        _ => b.header_span(),
    };
    if let (Some(dim), Some(heads)) = (int("dim"), int("heads"))
        && dim % heads != 0
    {
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                span_of("heads"),
                format!("{heads} heads do not divide dim {dim}"),
            )
            .label("must divide `dim`")
            .with_label(span_of("dim"), "dim set here")
            .help(format!(
                "use a number of heads that divides {dim}, e.g. {}",
                divisor_near(dim, heads)
            )),
        );
    }
    if let (Some(img), Some(patch)) = (int("image"), int("patch"))
        && img % patch != 0
    {
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                span_of("patch"),
                format!("patch {patch} does not divide image size {img}"),
            )
            .label("must divide the image size")
            .help(format!(
                "use a patch that divides {img}, e.g. {}",
                divisor_near(img, patch)
            )),
        );
    }
    if r.ty.as_deref() == Some("vit")
        && let Some(ch) = int("channels")
        && ch != cx.data.channels
    {
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                span_of("channels"),
                format!(
                    "the encoder takes {ch} channels but the data has {}",
                    cx.data.channels
                ),
            )
            .label("channel mismatch")
            .help("remove `channels` to take the data's"),
        );
    }
    if r.ty.as_deref() == Some("ema")
        && let Some(src) = r.get("source").and_then(RValue::as_str)
    {
        if let Some((ty, _)) = all.get(src)
            && ty == "ema"
            && Some(src) != r.name.as_deref()
        {
            cx.diags.push(
                Diagnostic::error(
                    codes::BAD_EMA,
                    span_of("source"),
                    format!("`{src}` is itself an EMA network"),
                )
                .label("EMA of an EMA")
                .help("point `source` at the trainable network"),
            );
        }
        if Some(src) == r.name.as_deref() {
            cx.diags.push(
                Diagnostic::error(
                    codes::BAD_EMA,
                    span_of("source"),
                    "an EMA network cannot follow itself",
                )
                .label("self reference"),
            );
        }
    }
}

fn divisor_near(n: i64, near: i64) -> i64 {
    (1..=n)
        .filter(|d| n % d == 0)
        .min_by_key(|d| (d - near).abs())
        .unwrap_or(1)
}

/// The span of a value in the document by block key and key path (`["hflip", "p"]`), or of the
/// block header if the key is not written.
fn doc_span(doc: &Doc, block: &str, path: &[&str]) -> Span {
    let Some(mut b) = doc.blocks.get(block) else {
        return Span::default();
    };
    for (i, k) in path.iter().enumerate() {
        match b.entries.get(*k) {
            Some(DocEntry::Block(inner)) => b = inner,
            Some(DocEntry::Field(s)) if i + 1 == path.len() => return s.value.span,
            _ => return b.header_span(),
        }
    }
    b.header_span()
}

/// Cross-block rules that need several resolved blocks: normalisation vs channels, batch vs
/// accumulation, evaluation vs labels and the encoder's CLS token.
fn check_cross(blocks: &[RBlock], doc: &Doc, cx: &mut Cx) {
    let channels = cx.data.channels as usize;
    for view in blocks.iter().filter(|b| b.kind == "view") {
        let key = crate::doc::block_key("view", view.name.as_deref());
        for aug in view.children.iter().filter(|c| c.kind == "normalize") {
            for k in ["mean", "std"] {
                if let Some(RValue::List(xs)) = aug.get(k)
                    && xs.len() != channels
                {
                    cx.diags.push(
                        Diagnostic::error(
                            codes::INCONSISTENT,
                            doc_span(doc, &key, &["normalize", k]),
                            format!(
                                "`{k}` has {} values but the data has {channels} channel(s)",
                                xs.len()
                            ),
                        )
                        .label(format!("expected {channels} value(s)"))
                        .help("give one value per channel, or leave it out to use the data set's"),
                    );
                }
            }
        }
    }
    if let Some(train) = blocks.iter().find(|b| b.kind == "train")
        && let (Some(batch), Some(accum)) = (
            train.get("batch").and_then(RValue::as_i64),
            train.get("accum").and_then(RValue::as_i64),
        )
        && batch % accum != 0
    {
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                doc_span(doc, "train", &["accum"]),
                format!("{accum} accumulation steps do not divide the batch of {batch}"),
            )
            .label("must divide `batch`")
            .help(format!(
                "use a divisor of {batch}, e.g. {}",
                divisor_near(batch, accum)
            )),
        );
    }
}

fn check_eval(blocks: &[RBlock], doc: &Doc, cx: &mut Cx) {
    check_cross(blocks, doc, cx);
    let Some(eval) = blocks.iter().find(|b| b.kind == "eval") else {
        return;
    };
    if !cx.data.labels && !eval.children.is_empty() {
        cx.diags.push(
            Diagnostic::error(
                codes::NEEDS_LABELS,
                doc_span(doc, "eval", &[]),
                "evaluation protocols need labels but the data loads none",
            )
            .label("knn and linear classify with labels")
            .help("set `labels = true` in `data`, or remove the protocols"),
        );
    }
    let encoder = eval
        .get("encoder")
        .and_then(RValue::as_str)
        .map(str::to_string)
        .or_else(|| {
            blocks
                .iter()
                .find(|b| b.kind == "network" && b.ty.as_deref() == Some("vit"))
                .and_then(|b| b.name.clone())
        });
    if eval.get("features").and_then(RValue::as_str) == Some("cls")
        && let Some(enc) = encoder.as_deref()
        && let Some(net) = blocks
            .iter()
            .find(|b| b.kind == "network" && b.name.as_deref() == Some(enc))
        && net.get("cls") == Some(&RValue::Bool(false))
    {
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                doc_span(doc, "eval", &["features"]),
                format!("`features = cls` but encoder `{enc}` has no CLS token"),
            )
            .label("no CLS token to read")
            .help(format!(
                "use `features = mean`, or set `cls = true` in `network {enc}`"
            )),
        );
    }
    let Some(enc) = eval.get("encoder").and_then(RValue::as_str) else {
        return;
    };
    let is_vit = blocks.iter().any(|b| {
        b.kind == "network"
            && b.name.as_deref() == Some(enc)
            && matches!(b.ty.as_deref(), Some("vit") | Some("ema"))
    });
    if !is_vit {
        let span = doc
            .blocks
            .get("eval")
            .and_then(|b| b.entries.get("encoder"))
            .map(|e| match e {
                DocEntry::Field(s) => s.value.span,
                DocEntry::Block(b) => b.span,
            })
            .unwrap_or_default();
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                span,
                format!("`{enc}` is not an encoder (vit)"),
            )
            .label("evaluation needs a vit network"),
        );
    }
}

/// A value for the `lets` table of the resolved spec (after substitution, for reference only).
pub(crate) fn lossy(v: &canc_grammar::ast::Value) -> RValue {
    use canc_grammar::ast::ValueKind as K;
    match &v.kind {
        K::Number(n) => match n.value {
            canc_grammar::ast::NumberValue::Int(i) => RValue::Int(i),
            canc_grammar::ast::NumberValue::Float(f) => RValue::Float(f),
        },
        K::Quantity(n, u) => RValue::Quantity(n.value.as_f64(), *u),
        K::Str(s) => RValue::Str(s.clone()),
        K::Bool(b) => RValue::Bool(*b),
        K::None => RValue::None,
        K::Range(a, b) => RValue::Range(a.value.as_f64(), b.value.as_f64()),
        K::List(xs) | K::Sweep(xs) => RValue::List(xs.iter().map(lossy).collect()),
        K::Call(n, args) => RValue::Call(
            n.name.clone(),
            args.iter()
                .map(|a| (a.name.as_ref().map(|k| k.name.clone()), lossy(&a.value)))
                .collect(),
        ),
        K::Var(i) => RValue::Ident(format!("${}", i.name)),
        K::Path(p) => RValue::Output(
            p[0].name.clone(),
            p[1..]
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join("."),
        ),
        K::Ident(s) => RValue::Ident(s.clone()),
    }
}
