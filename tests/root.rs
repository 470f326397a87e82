//! The one integration-test binary of the `canc` package (one link instead of many).

mod bad;
mod cli;
mod diff;
mod docs;
mod dot;
mod explain;
mod overrides;
mod plans;
mod robustness;
mod runs;
mod specs;
