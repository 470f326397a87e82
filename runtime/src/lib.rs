//! canc runtime: executes a compiled, validated plan with Burn. The only crate of the workspace
//! that depends on Burn; the grammar and compiler crates never depend on it.
//!
//! ```text
//!  Plan ─nn::build─▶ networks (ViT, decoder, MLP; EMA copies) ─exec─▶ per-term losses ─backward─▶
//!      optimizer step (AdamW groups, warm-up + cosine) ─▶ EMA update ─▶ metrics
//! ```

pub mod adamw;
pub mod backend;
pub mod checkpoint;
pub mod cubecl_config;
pub mod data;
pub mod eval;
pub mod exec;
pub mod loss;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod profile;
pub mod schedule;
pub mod train;
