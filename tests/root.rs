//! The one integration-test binary of the `canc` package (one link instead of many).

mod bad;
mod cli;
mod docs;
mod overrides;
mod robustness;
mod specs;
