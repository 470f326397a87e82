//! `canc`: compile, check and run declarative self-supervised learning experiments.

mod alloc;
mod bench;
mod cli;
mod eval;
mod export;
mod kernel_profile;
mod monitor;
mod peak;
mod plot;
mod progress;
mod run;

fn main() -> std::process::ExitCode {
    alloc::tune();
    cli::main()
}
