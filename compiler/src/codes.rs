//! Stable diagnostic codes. A code, once published, keeps its meaning; new problems get new codes.
//! `canc explain E0011` prints the explanation; docs/errors.md is generated from this table.

/// One diagnostic code with its title and a longer explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Code {
    /// `E0011`, `W0001`.
    pub id: &'static str,
    /// One-line title.
    pub title: &'static str,
    /// What it means and how to fix it.
    pub explanation: &'static str,
}

macro_rules! codes {
    ($($name:ident = $id:literal, $title:literal, $expl:literal;)*) => {
        $(
            #[doc = $title]
            pub const $name: Code = Code { id: $id, title: $title, explanation: $expl };
        )*
        /// Every code, in order.
        pub const ALL: &[Code] = &[$($name),*];
    };
}

codes! {
    SYNTAX = "E0001", "syntax error",
        "The file does not follow the .canspec grammar. The caret shows where parsing stopped and the \
         message lists what would have been accepted there. Parsing stops at the first syntax error; \
         all other checks report every problem at once.";
    BAD_NUMBER = "E0002", "invalid number literal",
        "The number cannot be represented (for example an integer beyond 64 bits or a float that \
         overflows to infinity).";
    MISSING_FILE = "E0003", "file not found",
        "A spec file, or the base file named by `extends`, cannot be read. Paths in `extends` are \
         relative to the file that contains them.";
    INHERITANCE_CYCLE = "E0004", "inheritance cycle",
        "Following `extends` leads back to a file already in the chain. Each spec may extend one base, \
         and the chain must end.";
    MISPLACED_EXTENDS = "E0005", "misplaced `extends`",
        "`extends` must be the first item of a file, and a file extends at most one base.";
    UNKNOWN_BLOCK = "E0010", "unknown block",
        "Top-level blocks are: data, view, network, graph, objective, optimizer, schedule, train, eval. \
         Blocks nested in a view are augmentations; blocks nested in eval are protocols.";
    UNKNOWN_KEY = "E0011", "unknown key",
        "The key is not part of this block's schema. Keys are never ignored silently: a misspelled key \
         would otherwise leave the default in place without telling you.";
    UNKNOWN_TYPE = "E0012", "unknown type",
        "The type after `:` names no known kind of this block (for example `network enc: vit` or \
         `optimizer: adamw`).";
    MISSING_TYPE = "E0013", "missing type",
        "This block needs a type after a colon, for example `network encoder: vit { ... }` or \
         `data: fashion_mnist { ... }`.";
    BLOCK_NAME = "E0014", "block name missing or not allowed",
        "`view` and `network` blocks are named (`view strong { ... }`); the other blocks are unique \
         and take no name.";
    DUPLICATE = "E0015", "duplicate definition",
        "The same block, key, node or variable is defined twice in one file. To change a value from a \
         base file, write it once in the extending file: it overrides the base.";
    MISSING_REQUIRED = "E0016", "missing required key",
        "This key has no default and must be given.";
    MISSING_BLOCK = "E0017", "missing required block",
        "Every spec needs `data`, `graph`, `objective`, `optimizer` and `train` (possibly inherited).";
    TYPE_MISMATCH = "E0020", "wrong type",
        "The value has the wrong type for this key, for example a string where a number is expected, \
         or a float where an integer is expected.";
    OUT_OF_RANGE = "E0021", "value out of range",
        "The value is outside the range this key accepts, for example a mask ratio outside [0, 1), a \
         negative loss weight, or a temperature that is not positive.";
    UNKNOWN_VARIANT = "E0022", "unknown option",
        "The identifier is not one of the options this key accepts.";
    BAD_UNIT = "E0023", "wrong unit",
        "The quantity's unit is not accepted here (for example `warmup = 10 min`: warm-up is counted \
         in epochs or steps).";
    BAD_RANGE = "E0024", "empty range",
        "A range `lo..hi` needs lo <= hi.";
    UNDEFINED_VAR = "E0030", "undefined variable",
        "`$name` refers to a `let` that is not defined in this file or its bases.";
    VAR_CYCLE = "E0031", "variable defined in terms of itself",
        "A `let` refers, directly or through other lets, to itself.";
    UNKNOWN_OP = "E0032", "unknown operation",
        "A graph expression calls something that is neither a built-in operation nor a network.";
    UNDEFINED_NODE = "E0033", "undefined node",
        "The graph refers to a node name that is not defined in the graph.";
    ARITY = "E0034", "wrong number of inputs",
        "The operation takes a different number of positional inputs.";
    UNKNOWN_ARG = "E0035", "unknown argument",
        "The operation has no keyword argument of this name.";
    UNDEFINED_REF = "E0036", "undefined view or network",
        "The name should refer to a `view` or `network` block that is not defined.";
    NOT_A_LOSS = "E0037", "objective term is not a loss",
        "Each key of `objective` must name a graph node that computes a loss (infonce, infonce_qk, \
         supcon, mse, l1, cosine, or a mean/sum of losses).";
    UNKNOWN_OUTPUT = "E0038", "unknown output",
        "`node.output` names an output the operation does not have (add_noise has `noise` and `sigma`).";
    MISSING_ARG = "E0039", "missing argument",
        "The operation requires this keyword argument.";
    BAD_SWEEP = "E0040", "invalid sweep",
        "A sweep needs at least one value, cannot be nested in another sweep, and a spec expands to at \
         most 1024 variants.";
    BAD_OVERRIDE = "E0041", "invalid override",
        "An override (`a.b = v` in a file or `--set a.b=v`) must name something that exists: a block, \
         a key, a graph node's argument, or a `let`.";
    NOTHING_TO_REMOVE = "E0042", "nothing to remove",
        "`name = none` removes a graph node, objective term, augmentation or protocol inherited from a \
         base file; here there is nothing of that name to remove.";
    NAME_CLASH = "E0050", "name clash",
        "A network or graph node has the name of a built-in operation or of another network, so calls \
         to it would be ambiguous.";
    INCONSISTENT = "E0051", "inconsistent settings",
        "Two settings contradict each other, for example an embedding dim not divisible by the number \
         of heads, or an image size not divisible by the patch size.";
    NEEDS_LABELS = "E0052", "labels required",
        "The graph uses labels (`labels()`, supervised contrastive) but the data source has none or \
         loads none (`labels = false`).";
    NO_OBJECTIVE = "E0053", "empty objective",
        "The objective has no terms (all removed?): there is nothing to train.";
    BAD_EMA = "E0054", "invalid EMA source",
        "An `ema` network must copy a trainable network defined in the spec, not another EMA network.";
    SHAPE_MISMATCH = "E0055", "shape mismatch",
        "Two values that must have the same shape do not: the two embeddings a contrastive loss \
         compares, a reconstruction and its target, an image and the encoder it is fed to, or the \
         inputs of two calls of one network (its weights fix one input width, and an EMA copy \
         takes what its source takes). The message gives both shapes, `B` standing for the batch; \
         secondary labels show where each value is defined. Usual fixes: the same `out` on both \
         projectors, `patchify(x, patch = P)` with the encoder's patch, a view crop `size` equal \
         to the encoder's `image`.";
    GRAPH_CYCLE = "E0056", "cycle in the graph",
        "A node is computed, directly or through other nodes, from itself. Each node is computed \
         from nodes computed before it, so the graph's references must not loop. The message \
         lists the cycle and labels each reference in it; one of them should name another node.";
    NO_GRADIENT = "E0057", "loss without gradient",
        "An objective term, or a loss inside its `mean` or `sum`, depends on no trainable \
         parameter: every path from it to a network passes through `stop_grad`, reaches only EMA \
         networks (updated by averaging, not by gradient), or there is no network at all. Its \
         gradient is zero, so it only adds a constant. Gradient does flow through an EMA network \
         into its input: `teacher(encoder(x))` still trains `encoder`. Keep `stop_grad` on the \
         target branch only, or drop the term.";
    WRONG_TENSOR = "E0058", "wrong kind of tensor",
        "An operation received a different kind of value than it takes: tokens `[B, 1+N, d]` \
         where an embedding `[B, d]` is expected (pool them first), an image where patches are \
         expected (patchify it), tensors where `mean` or `sum` expect losses, or, in the keyword \
         inputs, something other than a `mask(...)` node for `mask` and `on = masked(...)`, other \
         than `node.sigma` for `cond`, or other than `labels()` for `labels`.";
    NO_VISIBLE = "E0059", "mask leaves no visible patch",
        "At this ratio the mask hides every patch: a ViT with `image` S and `patch` P has \
         N = (S/P)² patches, and the encoder keeps floor(N·(1−ratio)) of them, as MAE does. With \
         none left it has nothing to encode. Use a ratio of at most (N−1)/N, or smaller patches.";
    MASK_MISMATCH = "E0060", "mask mismatch",
        "A mask is used with tokens it was not drawn for. The decoder must put the encoder's \
         visible tokens back where they came from, so it needs exactly the mask the encoder used: \
         not another mask, not none when the encoder dropped patches, and none when the encoder \
         saw every patch. A mask also belongs to one grid: `mask(net, ...)` draws over `net`'s \
         patches and cannot mask a network with another grid.";
    UNUSED_VAR = "W0001", "unused variable",
        "A `let` is defined but never used.";
    ZERO_WEIGHT = "W0002", "zero-weight objective term",
        "A term with weight 0 is computed but does not train anything; remove it with `name = none`.";
    UNUSED_NODE = "W0003", "unused graph node",
        "A graph node does not contribute to any objective term, so it is never computed (the \
         plan leaves it out). Use it in a loss, or remove it (`name = none` in an extending \
         spec). Named nodes that only the unused node needs are listed with it.";
    UNUSED_DECL = "W0004", "unused network or view",
        "A network or view is declared, but no node that an objective term uses calls or draws \
         it, so it is not built. Use it in the graph, or remove it (`network.NAME = none` or \
         `view.NAME = none` in an extending spec). A network used only in `mask(NAME, ...)` is \
         reported too: the mask reads its patch grid, but its weights are never used.";
    UNTRAINED = "W0005", "network receives no gradient",
        "A trainable network is used, but no weighted objective term sends gradient into it: its \
         outputs reach the losses only through `stop_grad`, or only terms of weight 0 use it. Its \
         weights stay at initialisation, and an EMA network following it stays constant too. \
         Remove the `stop_grad`; for a slowly updated copy of another network, declare it \
         `ema { source = ... }` instead.";
}

/// Looks up a code by id (case-insensitive).
pub fn lookup(id: &str) -> Option<Code> {
    ALL.iter().copied().find(|c| c.id.eq_ignore_ascii_case(id))
}
