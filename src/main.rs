//! `canc`: compile, check and run declarative self-supervised learning experiments.

mod bench;
mod cli;
mod run;

fn main() -> std::process::ExitCode {
    cli::main()
}
