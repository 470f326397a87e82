//! Tensor types of the loss graph: what each value is (image, tokens, embedding, mask, …) and
//! its shape, with the batch `B` symbolic and every other dimension known at compile time.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The type of one value of the loss graph. Every value has a leading batch dimension `B`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fact {
    /// `[B, C, H, W]` images.
    Image {
        /// Channels.
        c: u32,
        /// Side (images are square).
        size: u32,
    },
    /// `[B, cls + n, dim]` tokens on a patch grid of `grid` positions: all of them (`n == grid`)
    /// or only the positions a mask keeps.
    Tokens {
        /// Patch positions present.
        n: u32,
        /// Positions of the full grid.
        grid: u32,
        /// A CLS token leads the sequence.
        cls: bool,
        /// Width.
        dim: u32,
        /// Patch side in pixels of the grid's image, and its channels (a decoder's `out = pixels`
        /// and reconstruction targets depend on them).
        patch: u32,
        /// Channels of the image the grid covers.
        channels: u32,
        /// The mask node whose visible positions these are (`None`: every position).
        visible_of: Option<String>,
    },
    /// `[B, dim]`: one embedding per image.
    Embedding {
        /// Width.
        dim: u32,
    },
    /// `[B, grid]` boolean mask, `masked` of the `grid` positions set.
    Mask {
        /// Grid positions.
        grid: u32,
        /// Positions masked per image.
        masked: u32,
    },
    /// `[B]` per-image noise level.
    Sigma,
    /// `[B]` class labels.
    Labels {
        /// Number of classes.
        classes: u32,
    },
    /// `[]` a loss.
    Scalar,
}

impl Fact {
    /// Elements per image (0 for a scalar).
    pub fn numel_per_image(&self) -> u64 {
        match self {
            Fact::Image { c, size } => u64::from(*c) * u64::from(*size) * u64::from(*size),
            Fact::Tokens { n, cls, dim, .. } => (u64::from(*n) + u64::from(*cls)) * u64::from(*dim),
            Fact::Embedding { dim } => u64::from(*dim),
            Fact::Mask { grid, .. } => u64::from(*grid),
            Fact::Sigma | Fact::Labels { .. } => 1,
            Fact::Scalar => 0,
        }
    }

    /// What kind of value it is, in words.
    pub fn noun(&self) -> &'static str {
        match self {
            Fact::Image { .. } => "an image batch",
            Fact::Tokens { .. } => "tokens",
            Fact::Embedding { .. } => "an embedding",
            Fact::Mask { .. } => "a mask",
            Fact::Sigma => "a noise level",
            Fact::Labels { .. } => "labels",
            Fact::Scalar => "a loss",
        }
    }

    /// The tensor rank (batch included).
    pub fn rank(&self) -> u32 {
        match self {
            Fact::Image { .. } => 4,
            Fact::Tokens { .. } => 3,
            Fact::Embedding { .. } | Fact::Mask { .. } => 2,
            Fact::Sigma | Fact::Labels { .. } => 1,
            Fact::Scalar => 0,
        }
    }
}

impl fmt::Display for Fact {
    /// `[B, 1, 28, 28]`, `[B, 1+25, 192]`, `[B, 128]`, `[B, 49] mask (24 masked)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Image { c, size } => write!(f, "[B, {c}, {size}, {size}]"),
            Fact::Tokens {
                n,
                grid,
                cls,
                dim,
                visible_of,
                ..
            } => {
                let cls = if *cls { "1+" } else { "" };
                write!(f, "[B, {cls}{n}, {dim}]")?;
                if visible_of.is_some() {
                    write!(f, " ({n} of {grid} patches visible)")
                } else {
                    Ok(())
                }
            }
            Fact::Embedding { dim } => write!(f, "[B, {dim}]"),
            Fact::Mask { grid, masked } => write!(f, "[B, {grid}] mask ({masked} masked)"),
            Fact::Sigma => write!(f, "[B] sigma"),
            Fact::Labels { classes } => write!(f, "[B] labels ({classes} classes)"),
            Fact::Scalar => write!(f, "[] loss"),
        }
    }
}

/// Patches a mask keeps visible on a grid of `grid` positions at `ratio`:
/// `floor(grid · (1 − ratio))`, as MAE's `int(L * (1 - mask_ratio))` (a 1e-9 guard absorbs
/// float error such as 10 · 0.3 = 2.9999…). The runtime reads the count from the plan.
pub fn kept_count(grid: u32, ratio: f64) -> u32 {
    (f64::from(grid) * (1.0 - ratio) + 1e-9).floor() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_counts() {
        assert_eq!(kept_count(49, 0.5), 24); // int(24.5)
        assert_eq!(kept_count(196, 0.75), 49);
        assert_eq!(kept_count(49, 0.0), 49);
        assert_eq!(kept_count(49, 0.99), 0);
        assert_eq!(kept_count(10, 0.7), 3); // 10 * 0.30000000000000004
        assert_eq!(kept_count(10, 0.3), 7); // 10 * 0.7 = 7.000000000000001
    }

    #[test]
    fn display() {
        let t = Fact::Tokens {
            n: 24,
            grid: 49,
            cls: true,
            dim: 192,
            patch: 4,
            channels: 1,
            visible_of: Some("m1".into()),
        };
        assert_eq!(t.to_string(), "[B, 1+24, 192] (24 of 49 patches visible)");
        assert_eq!(t.numel_per_image(), 25 * 192);
        assert_eq!(Fact::Image { c: 1, size: 28 }.to_string(), "[B, 1, 28, 28]");
    }
}
