//! Top-level blocks and their types.

use super::Default::{Data, Lit, Required, Unset};
use super::*;
use canc_grammar::ast::Unit;

const EPOCHS_OR_STEPS: Ty = Ty::Quantity {
    units: &[Unit::Epochs, Unit::Steps],
    bare: None,
};
const EPOCHS_OR_STEPS_OPT: Ty = Ty::Optional(&EPOCHS_OR_STEPS);
const SPLIT: Ty = Ty::Enum(&["train", "test"]);
const LIMIT: Field = field(
    "limit",
    Ty::Optional(&POS_INT),
    Unset,
    "use only the first N images (quick runs)",
);
const LABELS: Field = field(
    "labels",
    Ty::Bool,
    Lit("true"),
    "load class labels (needed by supcon and by evaluation)",
);
const POOL_MODES: &[&str] = &["mean", "mean_all", "cls"];

/// Data sources (`data: TYPE { ... }`).
pub const DATA_SOURCES: &[TypeSchema] = &[
    TypeSchema {
        name: "fashion_mnist",
        doc: "Fashion-MNIST IDX files (Debian package dataset-fashion-mnist): 28x28 grey, 10 classes",
        fields: &[
            field(
                "path",
                Ty::Str,
                Lit("\"/usr/share/datasets/fashion-mnist\""),
                "directory holding the *-idx?-ubyte(.gz) files",
            ),
            field("split", SPLIT, Lit("train"), "which split to pre-train on"),
            LIMIT,
            LABELS,
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "cifar10",
        doc: "CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin): 32x32 RGB, 10 classes",
        fields: &[
            field(
                "path",
                Ty::Str,
                Required,
                "directory holding the .bin batches",
            ),
            field("split", SPLIT, Lit("train"), "which split to pre-train on"),
            LIMIT,
            LABELS,
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "cifar100",
        doc: "CIFAR-100 binary batches (train.bin, test.bin): 32x32 RGB, 100 fine classes",
        fields: &[
            field(
                "path",
                Ty::Str,
                Required,
                "directory holding train.bin and test.bin",
            ),
            field("split", SPLIT, Lit("train"), "which split to pre-train on"),
            LIMIT,
            LABELS,
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "image_folder",
        doc: "an ImageFolder tree (root/class/image.png|jpg), resized to image_size",
        fields: &[
            field("path", Ty::Str, Required, "root directory"),
            field(
                "image_size",
                int(4, 4096),
                Required,
                "side of the square images fed to views",
            ),
            field(
                "channels",
                Ty::Int { min: 1, max: 3 },
                Lit("3"),
                "1 (grey) or 3 (RGB)",
            ),
            field(
                "mean",
                Ty::Optional(&Ty::Floats {
                    len: None,
                    lo: 0.0,
                    hi: 1.0,
                }),
                Unset,
                "per-channel mean for normalize (default: ImageNet's)",
            ),
            field(
                "std",
                Ty::Optional(&Ty::Floats {
                    len: None,
                    lo: 0.0,
                    hi: 1.0,
                }),
                Unset,
                "per-channel std for normalize (default: ImageNet's)",
            ),
            LIMIT,
            field(
                "labels",
                Ty::Bool,
                Lit("true"),
                "class labels from sub-directory names",
            ),
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "synthetic",
        doc: "random images with random labels, for smoke tests and benchmarks",
        fields: &[
            field("images", POS_INT, Lit("512"), "number of images"),
            field(
                "image_size",
                int(4, 4096),
                Lit("32"),
                "side of the square images",
            ),
            field("channels", Ty::Int { min: 1, max: 3 }, Lit("3"), "1 or 3"),
            field("classes", POS_INT, Lit("10"), "number of label classes"),
            LIMIT,
            LABELS,
        ],
        children: &[],
        child_noun: "",
    },
];

/// Network types (`network NAME: TYPE { ... }`).
pub const NETWORKS: &[TypeSchema] = &[
    TypeSchema {
        name: "vit",
        doc: "ViT encoder; masked tokens are dropped before the blocks (MAE-style)",
        fields: &[
            field(
                "image",
                int(4, 4096),
                Data(DataAttr::ImageSize),
                "input image side",
            ),
            field(
                "channels",
                int(1, 3),
                Data(DataAttr::Channels),
                "input channels",
            ),
            field("patch", int(1, 64), Required, "patch side in pixels"),
            field("dim", int(8, 8192), Required, "embedding width"),
            field("depth", int(1, 128), Required, "transformer blocks"),
            field(
                "heads",
                int(1, 128),
                Required,
                "attention heads (must divide dim)",
            ),
            field(
                "mlp_ratio",
                Ty::Float {
                    lo: 0.0,
                    hi: 16.0,
                    lo_open: true,
                    hi_open: false,
                },
                Lit("4.0"),
                "MLP hidden width / dim",
            ),
            field("cls", Ty::Bool, Lit("true"), "prepend a CLS token"),
            field(
                "pos",
                Ty::Enum(&["sincos", "learned"]),
                Lit("sincos"),
                "position embedding: fixed 2-D sin-cos or learned",
            ),
            field(
                "final_norm",
                Ty::Bool,
                Lit("true"),
                "LayerNorm after the last block",
            ),
            field("ln_eps", POS_FLOAT, Lit("1e-6"), "LayerNorm epsilon"),
            field(
                "drop_path",
                Ty::Float {
                    lo: 0.0,
                    hi: 1.0,
                    lo_open: false,
                    hi_open: true,
                },
                Lit("0.0"),
                "stochastic depth rate",
            ),
            field(
                "freeze_patch_embed",
                Ty::Bool,
                Lit("false"),
                "keep the random patch projection fixed (MoCo v3)",
            ),
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "vit_decoder",
        doc: "MAE-style decoder: encoder tokens + mask tokens, transformer blocks, per-patch output",
        fields: &[
            field("dim", int(8, 8192), Required, "decoder width"),
            field("depth", int(1, 128), Required, "transformer blocks"),
            field(
                "heads",
                int(1, 128),
                Required,
                "attention heads (must divide dim)",
            ),
            field(
                "mlp_ratio",
                Ty::Float {
                    lo: 0.0,
                    hi: 16.0,
                    lo_open: true,
                    hi_open: false,
                },
                Lit("4.0"),
                "MLP hidden width / dim",
            ),
            field(
                "pos",
                Ty::Enum(&["sincos", "learned"]),
                Lit("sincos"),
                "position embedding",
            ),
            field(
                "out",
                Ty::Either(&[Ty::Enum(&["pixels"]), int(1, 1 << 20)]),
                Lit("pixels"),
                "output per patch: `pixels` (patch*patch*channels) or a feature width",
            ),
            field(
                "cond",
                Ty::Enum(&["none", "sigma"]),
                Lit("none"),
                "condition on the noise level (CAN): sin-cos embedding + MLP added to the input tokens",
            ),
            field(
                "cond_dim",
                int(2, 8192),
                Lit("128"),
                "width of the sigma embedding",
            ),
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "mlp",
        doc: "MLP projector or predictor",
        fields: &[
            field("layers", int(1, 16), Lit("2"), "linear layers"),
            field("hidden", int(1, 1 << 20), Required, "hidden width"),
            field("out", int(1, 1 << 20), Required, "output width"),
            field(
                "norm",
                Ty::Enum(&["none", "bn", "ln"]),
                Lit("none"),
                "normalisation after hidden layers",
            ),
            field(
                "last_norm",
                Ty::Enum(&["none", "bn", "bn_no_affine"]),
                Lit("none"),
                "normalisation after the last layer",
            ),
            field(
                "act",
                Ty::Enum(&["relu", "gelu"]),
                Lit("relu"),
                "activation",
            ),
            field("bias", Ty::Bool, Lit("true"), "bias in hidden layers"),
            field("last_bias", Ty::Bool, Lit("true"), "bias in the last layer"),
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "ema",
        doc: "EMA (momentum) copy of another network; never receives gradients",
        fields: &[
            field("source", Ty::Network, Required, "the network it follows"),
            field(
                "momentum",
                PROB,
                Lit("0.996"),
                "m in xi <- m xi + (1-m) theta",
            ),
            field(
                "schedule",
                Ty::Enum(&["constant", "cosine"]),
                Lit("constant"),
                "cosine: m rises from `momentum` to `momentum_end`",
            ),
            field(
                "momentum_end",
                PROB,
                Lit("1.0"),
                "final momentum of the cosine schedule",
            ),
        ],
        children: &[],
        child_noun: "",
    },
];

const NO_DECAY: &[&str] = &["bias", "norm", "pos_embed", "cls_token", "mask_token"];

/// Optimizers (`optimizer: TYPE { ... }`).
pub const OPTIMIZERS: &[TypeSchema] = &[
    TypeSchema {
        name: "adamw",
        doc: "AdamW with decoupled weight decay",
        fields: &[
            field(
                "lr",
                POS_FLOAT,
                Required,
                "base learning rate (scaled by lr_scaling)",
            ),
            field(
                "lr_scaling",
                Ty::Enum(&["none", "linear", "sqrt"]),
                Lit("linear"),
                "lr = base * batch/256 (linear) or * sqrt(batch/256)",
            ),
            field(
                "betas",
                Ty::Floats {
                    len: Some(2),
                    lo: 0.0,
                    hi: 1.0,
                },
                Lit("[0.9, 0.95]"),
                "Adam betas",
            ),
            field("eps", POS_FLOAT, Lit("1e-8"), "Adam epsilon"),
            field(
                "weight_decay",
                NONNEG_FLOAT,
                Lit("0.05"),
                "decoupled weight decay",
            ),
            field(
                "no_decay",
                Ty::Idents(NO_DECAY),
                Lit("[bias, norm, pos_embed, cls_token, mask_token]"),
                "parameter groups without weight decay",
            ),
            field(
                "clip_grad",
                Ty::Optional(&POS_FLOAT),
                Unset,
                "clip the global gradient norm",
            ),
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "sgd",
        doc: "SGD with momentum",
        fields: &[
            field(
                "lr",
                POS_FLOAT,
                Required,
                "base learning rate (scaled by lr_scaling)",
            ),
            field(
                "lr_scaling",
                Ty::Enum(&["none", "linear", "sqrt"]),
                Lit("linear"),
                "lr = base * batch/256 (linear) or * sqrt(batch/256)",
            ),
            field("momentum", float(0.0, 1.0), Lit("0.9"), "momentum"),
            field("nesterov", Ty::Bool, Lit("false"), "Nesterov momentum"),
            field("weight_decay", NONNEG_FLOAT, Lit("1e-4"), "L2 weight decay"),
            field(
                "no_decay",
                Ty::Idents(NO_DECAY),
                Lit("[bias, norm]"),
                "parameter groups without weight decay",
            ),
            field(
                "clip_grad",
                Ty::Optional(&POS_FLOAT),
                Unset,
                "clip the global gradient norm",
            ),
        ],
        children: &[],
        child_noun: "",
    },
];

/// Learning-rate schedules (`schedule: TYPE { ... }`).
pub const SCHEDULES: &[TypeSchema] = &[
    TypeSchema {
        name: "cosine",
        doc: "linear warm-up, then half-cycle cosine decay to min_lr (per step)",
        fields: &[
            field("warmup", EPOCHS_OR_STEPS, Lit("0 epochs"), "warm-up length"),
            field(
                "warmup_start",
                float(0.0, 1.0),
                Lit("0.0"),
                "lr at step 0, as a fraction of the peak",
            ),
            field("min_lr", NONNEG_FLOAT, Lit("0.0"), "final learning rate"),
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "constant",
        doc: "linear warm-up, then constant",
        fields: &[
            field("warmup", EPOCHS_OR_STEPS, Lit("0 epochs"), "warm-up length"),
            field(
                "warmup_start",
                float(0.0, 1.0),
                Lit("0.0"),
                "lr at step 0, as a fraction of the peak",
            ),
        ],
        children: &[],
        child_noun: "",
    },
];

/// Evaluation protocols (blocks nested in `eval`).
pub const EVAL_PROTOCOLS: &[TypeSchema] = &[
    TypeSchema {
        name: "knn",
        doc: "weighted kNN on L2-normalised frozen features (cosine similarity)",
        fields: &[
            field("k", int(1, 10_000), Lit("20"), "neighbours"),
            field(
                "temperature",
                POS_FLOAT,
                Lit("0.07"),
                "weights exp(sim / T)",
            ),
            field(
                "every",
                EPOCHS_OR_STEPS_OPT,
                Unset,
                "also monitor during training",
            ),
        ],
        children: &[],
        child_noun: "",
    },
    TypeSchema {
        name: "linear",
        doc: "linear probe on standardised frozen features",
        fields: &[
            field("epochs", POS_INT, Lit("100"), "probe training epochs"),
            field("batch", POS_INT, Lit("256"), "probe batch size"),
            field("lr", POS_FLOAT, Lit("0.1"), "probe learning rate"),
            field(
                "weight_decay",
                NONNEG_FLOAT,
                Lit("0.0"),
                "probe weight decay",
            ),
        ],
        children: &[],
        child_noun: "",
    },
];

/// Every top-level block kind, in canonical order.
pub const BLOCKS: &[BlockSchema] = &[
    BlockSchema {
        kind: "data",
        doc: "where images (and labels) come from",
        named: false,
        required: true,
        body: Body::Typed(DATA_SOURCES),
    },
    BlockSchema {
        kind: "view",
        doc: "a named augmentation pipeline, applied in order",
        named: true,
        required: false,
        body: Body::Plain(TypeSchema {
            name: "view",
            doc: "augmentations applied in the order written",
            fields: &[],
            children: super::AUGMENTATIONS,
            child_noun: "augmentation",
        }),
    },
    BlockSchema {
        kind: "network",
        doc: "a named network: vit, vit_decoder, mlp or ema",
        named: true,
        required: false,
        body: Body::Typed(NETWORKS),
    },
    BlockSchema {
        kind: "graph",
        doc: "named tensor expressions: views, noise, masks, networks, pooling, losses",
        named: false,
        required: true,
        body: Body::Graph,
    },
    BlockSchema {
        kind: "objective",
        doc: "weights of the loss nodes summed into the training loss",
        named: false,
        required: true,
        body: Body::Objective,
    },
    BlockSchema {
        kind: "optimizer",
        doc: "optimizer and learning rate",
        named: false,
        required: true,
        body: Body::Typed(OPTIMIZERS),
    },
    BlockSchema {
        kind: "schedule",
        doc: "learning-rate schedule",
        named: false,
        required: false,
        body: Body::Typed(SCHEDULES),
    },
    BlockSchema {
        kind: "train",
        doc: "run settings",
        named: false,
        required: true,
        body: Body::Plain(TypeSchema {
            name: "train",
            doc: "run settings",
            fields: &[
                field("seed", NONNEG_INT, Lit("0"), "seed of every random draw"),
                field("epochs", POS_INT, Required, "passes over the training set"),
                field(
                    "batch",
                    POS_INT,
                    Required,
                    "images per optimizer step (all devices, all accumulation steps)",
                ),
                field(
                    "accum",
                    POS_INT,
                    Lit("1"),
                    "gradient-accumulation steps per optimizer step",
                ),
                field(
                    "precision",
                    Ty::Enum(&["f32", "bf16"]),
                    Lit("f32"),
                    "precision of the transformer blocks' matrix products: bf16 = autocast \
                     with f32 master weights (f16 would need loss scaling: not supported)",
                ),
                field(
                    "log_every",
                    Ty::Quantity {
                        units: &[Unit::Steps],
                        bare: Some(Unit::Steps),
                    },
                    Lit("10 steps"),
                    "metrics line interval",
                ),
                field(
                    "checkpoint_every",
                    EPOCHS_OR_STEPS,
                    Lit("1 epochs"),
                    "checkpoint interval",
                ),
                field(
                    "keep_checkpoints",
                    POS_INT,
                    Lit("3"),
                    "checkpoints kept (the latest N)",
                ),
                field(
                    "time_limit",
                    Ty::Optional(&Ty::Quantity {
                        units: &[Unit::Seconds, Unit::Minutes, Unit::Hours],
                        bare: None,
                    }),
                    Unset,
                    "stop (with a checkpoint) after this wall time",
                ),
            ],
            children: &[],
            child_noun: "",
        }),
    },
    BlockSchema {
        kind: "eval",
        doc: "evaluation of the frozen encoder: pinned protocols",
        named: false,
        required: false,
        body: Body::Plain(TypeSchema {
            name: "eval",
            doc: "evaluation settings and protocols",
            fields: &[
                field(
                    "split",
                    SPLIT,
                    Lit("test"),
                    "split evaluated on (features of the other split are the training set)",
                ),
                field(
                    "encoder",
                    Ty::Optional(&Ty::Network),
                    Unset,
                    "network evaluated (default: the first vit)",
                ),
                field(
                    "features",
                    Ty::Enum(POOL_MODES),
                    Lit("mean"),
                    "pooling of the encoder tokens",
                ),
            ],
            children: EVAL_PROTOCOLS,
            child_noun: "protocol",
        }),
    },
];
