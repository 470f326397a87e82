//! Augmentations: the blocks allowed inside a `view`, applied in the order written.

use super::Default::{Data, Lit};
use super::*;

const SIZE: Field = field(
    "size",
    int(1, 4096),
    Data(DataAttr::ImageSize),
    "output side in pixels",
);
/// Every augmentation.
pub const AUGMENTATIONS: &[TypeSchema] = &[
    aug(
        "random_resized_crop",
        "crop a random area and aspect ratio, resize to `size`",
        &[
            SIZE,
            field(
                "scale",
                Ty::Range { lo: 0.0, hi: 1.0 },
                Lit("0.08..1.0"),
                "area fraction of the crop",
            ),
            field(
                "ratio",
                Ty::Range {
                    lo: 0.01,
                    hi: 100.0,
                },
                Lit("0.75..1.3333"),
                "aspect ratio of the crop",
            ),
        ],
    ),
    aug("resize", "resize to `size`", &[SIZE]),
    aug("center_crop", "central crop of `size`", &[SIZE]),
    aug(
        "shift_crop",
        "crop of `size` at a random integer offset in 0..=max_shift (CMAE's pixel shift)",
        &[
            SIZE,
            field(
                "max_shift",
                int(0, 4096),
                Lit("0"),
                "largest offset in pixels",
            ),
        ],
    ),
    aug(
        "hflip",
        "horizontal flip",
        &[field("p", PROB, Lit("0.5"), "probability of flipping")],
    ),
    aug(
        "color_jitter",
        "random brightness, contrast, saturation and hue, in random order",
        &[
            field(
                "brightness",
                NONNEG_FLOAT,
                Lit("0.4"),
                "factor drawn from [1-b, 1+b]",
            ),
            field(
                "contrast",
                NONNEG_FLOAT,
                Lit("0.4"),
                "factor drawn from [1-c, 1+c]",
            ),
            field(
                "saturation",
                NONNEG_FLOAT,
                Lit("0.4"),
                "factor drawn from [1-s, 1+s]",
            ),
            field(
                "hue",
                float(0.0, 0.5),
                Lit("0.1"),
                "shift drawn from [-h, h]",
            ),
            field("p", PROB, Lit("0.8"), "probability of applying it"),
        ],
    ),
    aug(
        "grayscale",
        "convert to grey (channels kept)",
        &[field("p", PROB, Lit("0.2"), "probability of applying it")],
    ),
    aug(
        "gaussian_blur",
        "Gaussian blur with sigma drawn from a range",
        &[
            field(
                "sigma",
                Ty::Range { lo: 0.0, hi: 100.0 },
                Lit("0.1..2.0"),
                "blur sigma in pixels",
            ),
            field("p", PROB, Lit("0.5"), "probability of applying it"),
        ],
    ),
    aug(
        "solarize",
        "invert pixels above a threshold",
        &[
            field(
                "threshold",
                PROB,
                Lit("0.5"),
                "threshold on the [0, 1] scale",
            ),
            field("p", PROB, Lit("0.2"), "probability of applying it"),
        ],
    ),
    aug(
        "normalize",
        "subtract the mean and divide by the std, per channel (defaults: the data set's)",
        &[
            field(
                "mean",
                Ty::Floats {
                    len: None,
                    lo: 0.0,
                    hi: 1.0,
                },
                Data(DataAttr::Mean),
                "per-channel mean",
            ),
            field(
                "std",
                Ty::Floats {
                    len: None,
                    lo: 0.0,
                    hi: 1.0,
                },
                Data(DataAttr::Std),
                "per-channel std",
            ),
        ],
    ),
];

const fn aug(name: &'static str, doc: &'static str, fields: &'static [Field]) -> TypeSchema {
    TypeSchema {
        name,
        doc,
        fields,
        children: &[],
        child_noun: "",
    }
}
