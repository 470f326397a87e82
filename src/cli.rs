//! The command line: one subcommand per stage, exit codes 0 (ok), 1 (spec errors), 2 (usage).

use canc_compiler::diagnostic::{self, Style};
use canc_compiler::{Resolution, codes};
use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// canc: a compiler and runner for declarative self-supervised learning experiments.
#[derive(Parser)]
#[command(name = "canc", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 success, 1 errors in a spec, 2 command-line usage error.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When to use colours (also honours NO_COLOR).
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum MessageFormat {
    /// rustc-style with source excerpts.
    Human,
    /// One line per diagnostic.
    Short,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, resolve and check specs; report every problem.
    Check {
        /// Spec files.
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Override a value: `--set train.lr=3e-4`, `--set mask_ratio=0.25`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Diagnostic format.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
        /// Fail on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the resolved spec (every value, defaults filled, sweeps expanded) as RON.
    Resolve {
        /// Spec file.
        spec: PathBuf,
        /// Override a value.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Only this sweep variant (its name, as `canc check` lists it).
        #[arg(long)]
        variant: Option<String>,
        /// Diagnostic format.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Format specs canonically (in place, or check with --check).
    Fmt {
        /// Spec files.
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Do not write; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
        /// Print the formatted text instead of writing it.
        #[arg(long, conflicts_with = "check")]
        stdout: bool,
    },
    /// Explain a diagnostic code (`canc explain E0011`), or list them all.
    Explain {
        /// A code such as E0011.
        code: Option<String>,
        /// Print every code with its explanation as Markdown (docs/errors.md).
        #[arg(long, conflicts_with = "code")]
        markdown: bool,
    },
    /// Print the language reference (every block, key, augmentation and op) as Markdown.
    Schema,
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Always => ColorChoice::Always,
        Color::Never => ColorChoice::Never,
        Color::Auto
            if std::env::var_os("NO_COLOR").is_some() || !std::io::stderr().is_terminal() =>
        {
            ColorChoice::Never
        }
        Color::Auto => ColorChoice::Auto,
    };
    match cli.command {
        Command::Check {
            specs,
            overrides,
            message_format,
            deny_warnings,
        } => check(&specs, &overrides, message_format, deny_warnings, color),
        Command::Resolve {
            spec,
            overrides,
            variant,
            message_format,
        } => resolve(&spec, &overrides, variant.as_deref(), message_format, color),
        Command::Fmt {
            specs,
            check,
            stdout,
        } => fmt(&specs, check, stdout, color),
        Command::Explain { markdown: true, .. } => {
            print!("{}", canc_compiler::docs::errors());
            ExitCode::SUCCESS
        }
        Command::Explain { code, .. } => explain(code.as_deref()),
        Command::Schema => {
            print!("{}", canc_compiler::docs::reference());
            ExitCode::SUCCESS
        }
    }
}

fn report(res: &Resolution, format: MessageFormat, color: ColorChoice) {
    match format {
        MessageFormat::Json => {
            let mut out = std::io::stdout().lock();
            for d in &res.diagnostics {
                if let Ok(line) = serde_json::to_string(&d.to_json(&res.sources)) {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        MessageFormat::Human | MessageFormat::Short => {
            let style = if format == MessageFormat::Short {
                Style::Short
            } else {
                Style::Human
            };
            let mut err = StandardStream::stderr(color);
            diagnostic::emit(&mut err, &res.diagnostics, &res.sources, style);
        }
    }
}

fn check(
    specs: &[PathBuf],
    overrides: &[String],
    format: MessageFormat,
    deny_warnings: bool,
    color: ColorChoice,
) -> ExitCode {
    let mut failed = false;
    let (mut errors, mut warnings) = (0usize, 0usize);
    for path in specs {
        let res = canc_compiler::resolve_path(path, overrides);
        report(&res, format, color);
        let e = res.diagnostics.iter().filter(|d| d.is_error()).count();
        let w = res.diagnostics.len() - e;
        errors += e;
        warnings += w;
        failed |= e > 0 || (deny_warnings && w > 0);
        if format != MessageFormat::Json && e == 0 {
            let n = res.variants.len();
            let what = if n > 1 {
                format!(" ({n} variants)")
            } else {
                String::new()
            };
            eprintln!("    Checked {}{what}", path.display());
        }
    }
    if format != MessageFormat::Json && (errors > 0 || warnings > 0) {
        eprintln!("{errors} error(s), {warnings} warning(s)");
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn resolve(
    spec: &std::path::Path,
    overrides: &[String],
    variant: Option<&str>,
    format: MessageFormat,
    color: ColorChoice,
) -> ExitCode {
    let res = canc_compiler::resolve_path(spec, overrides);
    report(&res, format, color);
    if res.has_errors() {
        return ExitCode::from(1);
    }
    let chosen: Vec<_> = res
        .variants
        .iter()
        .filter(|v| variant.is_none() || v.variant.as_deref() == variant)
        .collect();
    if chosen.is_empty() {
        let names = res.variant_names();
        eprintln!(
            "error: no variant `{}`; variants: {}",
            variant.unwrap_or(""),
            names.join(" | ")
        );
        return ExitCode::from(1);
    }
    let mut out = std::io::stdout().lock();
    for v in chosen {
        let _ = writeln!(out, "{}", v.to_ron());
    }
    ExitCode::SUCCESS
}

fn fmt(specs: &[PathBuf], check: bool, stdout: bool, color: ColorChoice) -> ExitCode {
    let mut failed = false;
    for path in specs {
        let mut sources = canc_compiler::SourceMap::new();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!(
                    "error[{}]: cannot read `{}`: {e}",
                    codes::MISSING_FILE.id,
                    path.display()
                );
                failed = true;
                continue;
            }
        };
        let id = sources.add_file(path.display().to_string(), Some(path.clone()), text.clone());
        let ast = match canc_grammar::parse_file(&text, id) {
            Ok(a) => a,
            Err(e) => {
                let d = canc_compiler::load::syntax_diagnostic(e);
                let mut err = StandardStream::stderr(color);
                diagnostic::emit(&mut err, &[d], &sources, Style::Human);
                failed = true;
                continue;
            }
        };
        let formatted = canc_grammar::print_file(&ast);
        if stdout {
            print!("{formatted}");
        } else if check {
            if formatted != text {
                eprintln!(
                    "Diff in {}: not canonically formatted (run `canc fmt {}`)",
                    path.display(),
                    path.display()
                );
                failed = true;
            }
        } else if formatted != text {
            let tmp = path.with_extension("canspec.fmt-tmp");
            if let Err(e) =
                std::fs::write(&tmp, &formatted).and_then(|_| std::fs::rename(&tmp, path))
            {
                eprintln!("error: cannot write `{}`: {e}", path.display());
                let _ = std::fs::remove_file(&tmp);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn explain(code: Option<&str>) -> ExitCode {
    match code {
        None => {
            for c in codes::ALL {
                println!("{}  {}", c.id, c.title);
            }
            ExitCode::SUCCESS
        }
        Some(id) => match codes::lookup(id) {
            Some(c) => {
                println!("{}: {}\n\n{}", c.id, c.title, c.explanation);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: no diagnostic code `{id}` (run `canc explain` for the list)");
                ExitCode::from(1)
            }
        },
    }
}
