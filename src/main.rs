//! `canc`: compile, check and run declarative self-supervised learning experiments.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
