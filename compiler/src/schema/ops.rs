//! Graph operations: the built-in functions of `graph { ... }` expressions, and the call
//! signature of each network type.

use super::Default::{Lit, Required, Unset};
use super::*;

/// A positional input of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A tensor: a node name, `node.output`, or a nested expression.
    Tensor(&'static str),
    /// The name of a `view` block.
    View,
    /// The name of a `network` block.
    Network,
}

impl Input {
    /// How the input is written in signatures: its name, `VIEW` or `NETWORK`.
    pub fn placeholder(self) -> &'static str {
        match self {
            Input::Tensor(n) => n,
            Input::View => "VIEW",
            Input::Network => "NETWORK",
        }
    }
}

/// What an operation produces, as far as the objective is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A tensor.
    Tensor,
    /// A scalar loss, usable as an objective term.
    Loss,
}

/// A built-in operation.
#[derive(Debug, Clone, Copy)]
pub struct OpSchema {
    /// Name used in calls.
    pub name: &'static str,
    /// One line for docs.
    pub doc: &'static str,
    /// Positional inputs.
    pub inputs: &'static [Input],
    /// Takes one or more positional inputs of the first kind.
    pub variadic: bool,
    /// Keyword arguments.
    pub kwargs: &'static [Field],
    /// Named extra outputs (`node.output`).
    pub outputs: &'static [&'static str],
    /// Tensor or loss.
    pub kind: OpKind,
}

const fn op(
    name: &'static str,
    doc: &'static str,
    inputs: &'static [Input],
    kwargs: &'static [Field],
    kind: OpKind,
) -> OpSchema {
    OpSchema {
        name,
        doc,
        inputs,
        variadic: false,
        kwargs,
        outputs: &[],
        kind,
    }
}

use Input::Tensor as T;
use OpKind::{Loss, Tensor};

const fn temp(default: &'static str) -> Field {
    field(
        "temperature",
        POS_FLOAT,
        Lit(default),
        "softmax temperature (> 0)",
    )
}
const ON: Field = field(
    "on",
    Ty::Selection,
    Lit("all"),
    "which patches count: all, masked(m) or visible(m)",
);

/// Every built-in operation.
pub const OPS: &[OpSchema] = &[
    op(
        "view",
        "one augmented view of the batch's images (each call draws its own randomness)",
        &[Input::View],
        &[field(
            "from",
            Ty::Optional(&Ty::Node),
            Unset,
            "augment this view's output instead of the raw image (shared base crop)",
        )],
        Tensor,
    ),
    op("labels", "the batch's class labels", &[], &[], Tensor),
    OpSchema {
        outputs: &["noise", "sigma"],
        ..op(
            "add_noise",
            "x + sigma*eps with sigma drawn per image; outputs .noise (sigma*eps) and .sigma",
            &[T("image")],
            &[field(
                "sigma",
                Ty::Dist,
                Required,
                "noise level distribution, per image",
            )],
            Tensor,
        )
    },
    op(
        "patchify",
        "image -> patches (B, N, patch*patch*C), row-major, (p1 p2 c) order",
        &[T("image")],
        &[field("patch", int(1, 64), Required, "patch side")],
        Tensor,
    ),
    op(
        "patch_norm",
        "per-patch normalisation of targets (MAE's norm_pix, unbiased variance)",
        &[T("patches")],
        &[field(
            "eps",
            POS_FLOAT,
            Lit("1e-6"),
            "added to the variance",
        )],
        Tensor,
    ),
    op(
        "mask",
        "a random mask over a ViT's patch grid, drawn per image (1 = masked)",
        &[Input::Network],
        &[
            field(
                "ratio",
                Ty::Float {
                    lo: 0.0,
                    hi: 1.0,
                    lo_open: false,
                    hi_open: true,
                },
                Required,
                "fraction of patches masked, in [0, 1)",
            ),
            field(
                "strategy",
                Ty::Enum(&["random", "block"]),
                Lit("random"),
                "random patches, or square blocks of patches (CMAE)",
            ),
            field(
                "block",
                int(1, 64),
                Lit("2"),
                "block side in patches, for strategy = block",
            ),
        ],
        Tensor,
    ),
    op(
        "pool",
        "tokens -> one embedding per image",
        &[T("tokens")],
        &[field(
            "mode",
            Ty::Enum(&["mean", "mean_all", "cls"]),
            Lit("mean"),
            "mean of patch tokens, mean including CLS, or the CLS token",
        )],
        Tensor,
    ),
    op(
        "stop_grad",
        "the same tensor, with no gradient flowing back",
        &[T("x")],
        &[],
        Tensor,
    ),
    op(
        "l2norm",
        "L2-normalise the last dimension",
        &[T("x")],
        &[],
        Tensor,
    ),
    op(
        "infonce",
        "NT-Xent over 2N embeddings of two views; negatives from both views of the batch",
        &[T("a"), T("b")],
        &[
            temp("0.1"),
            field(
                "reduction",
                Ty::Enum(&["mean", "sum_views"]),
                Lit("mean"),
                "mean over 2N anchors, or SimCLR's sum over the two views",
            ),
        ],
        Loss,
    ),
    op(
        "infonce_qk",
        "query/key InfoNCE (MoCo v3, CMAE): keys are targets, negatives are other images' keys",
        &[T("q"), T("k")],
        &[
            temp("0.2"),
            field(
                "scale_2tau",
                Ty::Bool,
                Lit("true"),
                "multiply the loss by 2*temperature (MoCo v3)",
            ),
        ],
        Loss,
    ),
    op(
        "supcon",
        "supervised contrastive loss: positives share a label",
        &[T("a"), T("b")],
        &[
            field("labels", Ty::Node, Required, "the labels node (`labels()`)"),
            temp("0.07"),
            field(
                "base_temperature",
                POS_FLOAT,
                Lit("0.07"),
                "loss scaled by temperature / base_temperature",
            ),
        ],
        Loss,
    ),
    op(
        "mse",
        "mean squared error per patch, averaged over the selected patches",
        &[T("pred"), T("target")],
        &[ON],
        Loss,
    ),
    op(
        "l1",
        "mean absolute error per patch, averaged over the selected patches",
        &[T("pred"), T("target")],
        &[ON],
        Loss,
    ),
    op(
        "cosine",
        "negative cosine similarity, averaged over the batch",
        &[T("a"), T("b")],
        &[],
        Loss,
    ),
    OpSchema {
        variadic: true,
        ..op("mean", "mean of losses", &[T("loss")], &[], Loss)
    },
    OpSchema {
        variadic: true,
        ..op("sum", "sum of losses", &[T("loss")], &[], Loss)
    },
];

const VIT_CALL: OpSchema = op(
    "vit",
    "encode an image; with `mask`, only visible patches enter the encoder",
    &[T("image")],
    &[field(
        "mask",
        Ty::Optional(&Ty::Node),
        Unset,
        "mask node; masked patches are dropped",
    )],
    Tensor,
);
const DECODER_CALL: OpSchema = op(
    "vit_decoder",
    "decode encoder tokens to one output per patch position",
    &[T("tokens")],
    &[
        field(
            "mask",
            Ty::Optional(&Ty::Node),
            Unset,
            "the mask the encoder used (mask tokens fill its holes)",
        ),
        field(
            "cond",
            Ty::Optional(&Ty::Node),
            Unset,
            "per-image noise level (`node.sigma`), for cond = sigma",
        ),
    ],
    Tensor,
);
const MLP_CALL: OpSchema = op("mlp", "apply the MLP", &[T("x")], &[], Tensor);

/// The call signature of a network of type `ty` (an `ema` network takes its source's).
pub fn network_signature(ty: &str) -> Option<&'static OpSchema> {
    match ty {
        "vit" => Some(&VIT_CALL),
        "vit_decoder" => Some(&DECODER_CALL),
        "mlp" => Some(&MLP_CALL),
        _ => None,
    }
}

/// Finds a built-in operation.
pub fn find(name: &str) -> Option<&'static OpSchema> {
    OPS.iter().find(|o| o.name == name)
}
