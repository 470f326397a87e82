//! The command line: one subcommand per stage, exit codes 0 (ok), 1 (spec errors), 2 (usage).

use canc_compiler::diagnostic::{self, Style};
use canc_compiler::{Plan, Resolution, ResolvedSpec, codes, cost};
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
    /// Compile a spec to its execution plan (RON): every sweep variant is compiled and checked.
    Compile {
        #[command(flatten)]
        input: SpecArgs,
        /// Write the plan here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Train a spec: compile it, load its data, run the plan, write metrics into a run directory.
    Run {
        #[command(flatten)]
        input: SpecArgs,
        /// Run directory (default: runs/<spec>[-<variant>][-smoke]-<run key>). An existing
        /// directory of the same run is resumed; one of another run is refused with the diff.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Data location, overriding the spec's `data.path`.
        #[arg(long, value_name = "PATH")]
        data: Option<PathBuf>,
        /// `cpu`, `cuda[:N]` or `wgpu[:N]` (builds with `--features cuda` / `--features wgpu`).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Optimizer steps to run (default: the spec's epochs).
        #[arg(long, conflicts_with = "epochs")]
        steps: Option<u64>,
        /// Epochs to run.
        #[arg(long)]
        epochs: Option<u64>,
        /// A quick end-to-end check: 256 images, batch 32, 30 steps, 3 warm-up steps, a
        /// checkpoint every 10 steps, then a reload of the checkpoint at step 20 that must
        /// reproduce the last 10 steps exactly.
        #[arg(long)]
        smoke: bool,
    },
    /// Continue a run from its latest checkpoint (exactly: same data order, augmentations,
    /// masks and noise as an uninterrupted run).
    Resume {
        /// The run directory.
        run_dir: PathBuf,
        /// `cpu`, `cuda[:N]` or `wgpu[:N]`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Resume from the checkpoint after this many steps instead of the newest (later
        /// checkpoints are removed).
        #[arg(long, value_name = "STEP")]
        from: Option<u64>,
    },
    /// Write a trained network's weights (latest checkpoint) for use outside canc.
    Export {
        /// The run directory.
        run_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Safetensors)]
        format: ExportFormat,
        /// The network (default: the eval block's encoder, else the first ViT).
        #[arg(long)]
        network: Option<String>,
        /// Output file (default: RUN_DIR/export/<network>.safetensors; the architecture JSON
        /// goes beside it).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Evaluate a run's encoder (latest checkpoint), or a baseline of a spec, with the pinned
    /// kNN and linear-probe protocols; writes DIR/eval/<protocol>.json.
    Eval {
        /// The run directory; with --baseline, the spec file.
        target: PathBuf,
        /// Protocols to run.
        #[arg(long, value_enum, default_value_t = crate::eval::Protocol::All)]
        protocol: crate::eval::Protocol,
        /// Evaluate a baseline of the spec TARGET instead of a run: raw pixels, or the
        /// randomly initialised encoder.
        #[arg(long, value_enum)]
        baseline: Option<crate::eval::BaselineArg>,
        /// Override a value of the baseline's spec.
        #[arg(long = "set", value_name = "KEY=VALUE", requires = "baseline")]
        overrides: Vec<String>,
        /// The baseline spec's sweep variant.
        #[arg(long, requires = "baseline")]
        variant: Option<String>,
        /// `cpu`, `cuda[:N]` or `wgpu[:N]` (feature extraction).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Keep the first N images of each split (quick checks).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Data location, overriding the plan's `data.path`.
        #[arg(long, value_name = "PATH")]
        data: Option<PathBuf>,
        /// Results directory (default: the run directory; runs/baseline-<kind>-<spec> for a
        /// baseline).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Time training steps: images/s, ms per step by phase, achieved FLOP/s.
    Bench {
        #[command(flatten)]
        input: SpecArgs,
        /// `cpu`, `cuda[:N]` or `wgpu[:N]`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Images per step (default: the spec's batch).
        #[arg(long)]
        batch: Option<u64>,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// The device's peak TFLOP/s for MFU (default: the nominal f32 peak of the CPU's cores,
        /// or the GPU model's datasheet figure).
        #[arg(long, value_name = "TFLOPS")]
        peak_tflops: Option<f64>,
        /// GPUs (CUDA, wgpu) only: have CubeCL time every kernel on the device and write, at each wait for
        /// the device (each phase's end), a table of the kernels run (name, device time,
        /// count) to FILE. Each launch then waits for its kernel: that run's step times are
        /// not throughput.
        #[arg(long, value_name = "FILE")]
        kernel_profile: Option<PathBuf>,
    },
    /// Draw the loss graph: stop-gradient edges dashed, EMA edges labelled, loss weights shown.
    Graph {
        #[command(flatten)]
        input: SpecArgs,
        /// Output format (`svg` runs Graphviz's `dot`).
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Write here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Semantic diff of two specs: values, wiring, losses, parameters and FLOPs that changed.
    Diff {
        /// The first spec.
        a: PathBuf,
        /// The second spec.
        b: PathBuf,
        /// Override a value in both.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Diagnostic format.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Parameters, FLOPs per image and per step, and a memory estimate.
    Cost {
        #[command(flatten)]
        input: SpecArgs,
        /// Images per step (default: the spec's batch).
        #[arg(long)]
        batch: Option<u64>,
        /// Number format of activations for the memory estimate (default: the spec's
        /// `train.precision`).
        #[arg(long, value_enum)]
        dtype: Option<DtypeArg>,
    },
    /// Explain a spec (every value and where it came from) or a diagnostic code (`E0011`).
    Explain {
        /// A spec file, or a code such as E0011; without it, every code is listed.
        target: Option<String>,
        /// Print every code with its explanation as Markdown (docs/errors.md).
        #[arg(long, conflicts_with = "target")]
        markdown: bool,
        /// Override a value (when explaining a spec).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Only this sweep variant.
        #[arg(long)]
        variant: Option<String>,
    },
    /// Print the language reference (every block, key, augmentation and op) as Markdown.
    Schema,
}

/// A spec with overrides and an optional sweep variant.
#[derive(clap::Args)]
struct SpecArgs {
    /// Spec file.
    spec: PathBuf,
    /// Override a value: `--set train.batch=128`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Only this sweep variant (its name, as `canc check` lists it).
    #[arg(long)]
    variant: Option<String>,
    /// Diagnostic format.
    #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
    message_format: MessageFormat,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// SVG, rendered by Graphviz's `dot` (must be installed).
    Svg,
}

/// `canc export` formats.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ExportFormat {
    /// safetensors (f32), with the architecture as JSON metadata and in a `.json` beside it.
    Safetensors,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum DtypeArg {
    F32,
    Bf16,
    F16,
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
        Command::Compile { input, output } => compile(&input, output.as_deref(), color),
        Command::Bench {
            mut input,
            device,
            batch,
            steps,
            warmup,
            json,
            peak_tflops,
            kernel_profile,
        } => {
            let device = match device_arg(&device) {
                Ok(d) => d,
                Err(code) => return code,
            };
            if let Some(b) = batch {
                input.overrides.push(format!("train.batch={b}"));
            }
            let (res, chosen) = match load(&input, color) {
                Ok(x) => x,
                Err(code) => return code,
            };
            crate::bench::bench(crate::bench::BenchArgs {
                plan: res.plans[chosen[0]].clone(),
                device,
                steps,
                warmup,
                json,
                peak_tflops,
                kernel_profile,
            })
        }
        Command::Run {
            mut input,
            out,
            data,
            device,
            steps,
            epochs,
            smoke,
        } => {
            let device = match device_arg(&device) {
                Ok(d) => d,
                Err(code) => return code,
            };
            if smoke {
                // Applied before the spec's own --set values so those still win.
                let mut sets: Vec<String> = crate::run::SMOKE_SETTINGS
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                sets.append(&mut input.overrides);
                input.overrides = sets;
            }
            let (res, chosen) = match load(&input, color) {
                Ok(x) => x,
                Err(code) => return code,
            };
            if chosen.len() > 1 {
                eprintln!(
                    "error: `{}` is a sweep; run one variant with --variant ({})",
                    input.spec.display(),
                    res.variant_names().join(" | ")
                );
                return ExitCode::from(2);
            }
            let i = chosen[0];
            let spec = &res.variants[i];
            let mut name = spec.name.clone();
            if let Some(v) = &spec.variant {
                name = format!("{name}-{v}");
            }
            if smoke {
                name.push_str("-smoke");
            }
            crate::run::run(crate::run::RunArgs {
                spec: input.spec.clone(),
                plan: res.plans[i].clone(),
                resolved: spec.clone(),
                name,
                out,
                data,
                device,
                steps,
                epochs,
                smoke,
            })
        }
        Command::Resume {
            run_dir,
            device,
            from,
        } => match device_arg(&device) {
            Ok(d) => crate::run::resume(run_dir, d, from),
            Err(code) => code,
        },
        Command::Export {
            run_dir,
            format: ExportFormat::Safetensors,
            network,
            output,
        } => crate::export::export(&run_dir, network, output),
        Command::Eval {
            target,
            protocol,
            baseline,
            overrides,
            variant,
            device,
            limit,
            data,
            out,
        } => {
            let device = match device_arg(&device) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let source = match baseline {
                None => crate::eval::Source::Run(target),
                Some(kind) => {
                    let input = SpecArgs {
                        spec: target,
                        overrides,
                        variant,
                        message_format: MessageFormat::Human,
                    };
                    let (res, chosen) = match load(&input, color) {
                        Ok(x) => x,
                        Err(code) => return code,
                    };
                    let plan = Box::new(res.plans[chosen[0]].clone());
                    crate::eval::Source::Baseline(kind, plan)
                }
            };
            crate::eval::eval(crate::eval::EvalArgs {
                source,
                protocol,
                device,
                limit,
                data,
                out,
            })
        }
        Command::Graph {
            input,
            format,
            output,
        } => graph(&input, format, output.as_deref(), color),
        Command::Diff {
            a,
            b,
            overrides,
            message_format,
        } => diff(&a, &b, &overrides, message_format, color),
        Command::Cost {
            input,
            batch,
            dtype,
        } => with_plans(&input, color, |_, plan| {
            let precision = plan.train.get("precision").and_then(|v| v.as_str());
            let dtype = match (dtype, precision) {
                (Some(DtypeArg::Bf16), _) | (None, Some("bf16")) => cost::Dtype::Bf16,
                (Some(DtypeArg::F16), _) | (None, Some("f16")) => cost::Dtype::F16,
                _ => cost::Dtype::F32,
            };
            cost::report(plan, batch, dtype)
        }),
        Command::Explain { markdown: true, .. } => {
            print!("{}", canc_compiler::docs::errors());
            ExitCode::SUCCESS
        }
        Command::Explain {
            target: Some(t),
            overrides,
            variant,
            ..
        } if t.ends_with(".canspec") || std::path::Path::new(&t).is_file() => {
            let input = SpecArgs {
                spec: PathBuf::from(t),
                overrides,
                variant,
                message_format: MessageFormat::Human,
            };
            with_plans(&input, color, |spec, plan| {
                canc_compiler::explain::explain(spec, plan)
            })
        }
        Command::Explain { target, .. } => explain(target.as_deref()),
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

/// Parses `--device`; an unknown device, or CUDA in a build without it, is a usage error (2).
fn device_arg(s: &str) -> Result<canc_runtime::backend::DeviceSpec, ExitCode> {
    canc_runtime::backend::DeviceSpec::parse(s)
        .and_then(|d| d.available())
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })
}

/// Resolves and compiles `input`; reports diagnostics; returns the chosen variants' indices.
fn load(input: &SpecArgs, color: ColorChoice) -> Result<(Resolution, Vec<usize>), ExitCode> {
    let res = canc_compiler::resolve_path(&input.spec, &input.overrides);
    report(&res, input.message_format, color);
    if res.has_errors() {
        return Err(ExitCode::from(1));
    }
    let chosen: Vec<usize> = (0..res.plans.len())
        .filter(|&i| {
            input.variant.is_none()
                || res.variants[i].variant.as_deref() == input.variant.as_deref()
        })
        .collect();
    if chosen.is_empty() {
        eprintln!(
            "error: no variant `{}`; variants: {}",
            input.variant.as_deref().unwrap_or(""),
            res.variant_names().join(" | ")
        );
        return Err(ExitCode::from(1));
    }
    Ok((res, chosen))
}

/// Prints `f(spec, plan)` for each chosen variant, with a header line per variant of a sweep.
fn with_plans(
    input: &SpecArgs,
    color: ColorChoice,
    f: impl Fn(&ResolvedSpec, &Plan) -> String,
) -> ExitCode {
    let (res, chosen) = match load(input, color) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    for i in chosen {
        if let Some(v) = &res.variants[i].variant {
            let _ = writeln!(out, "== variant {v}");
        }
        let _ = write!(out, "{}", f(&res.variants[i], &res.plans[i]));
    }
    ExitCode::SUCCESS
}

/// Writes `text` to `path` atomically (temp file + rename), or to stdout.
fn emit_text(text: &str, path: Option<&std::path::Path>) -> ExitCode {
    let Some(path) = path else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    let tmp = path.with_extension("canc-tmp");
    match std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("error: cannot write `{}`: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

fn compile(input: &SpecArgs, output: Option<&std::path::Path>, color: ColorChoice) -> ExitCode {
    let (res, chosen) = match load(input, color) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut text = String::new();
    for &i in &chosen {
        if let Some(v) = &res.variants[i].variant {
            text.push_str(&format!("// variant {v}\n"));
        }
        text.push_str(&res.plans[i].to_ron());
        text.push('\n');
    }
    if input.message_format != MessageFormat::Json {
        let n = chosen.len();
        eprintln!(
            "    Compiled {}{}",
            input.spec.display(),
            if n > 1 {
                format!(" ({n} variants)")
            } else {
                String::new()
            }
        );
    }
    emit_text(&text, output)
}

fn graph(
    input: &SpecArgs,
    format: GraphFormat,
    output: Option<&std::path::Path>,
    color: ColorChoice,
) -> ExitCode {
    let (res, chosen) = match load(input, color) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if chosen.len() > 1 {
        eprintln!(
            "error: `{}` is a sweep; pick one with --variant ({})",
            input.spec.display(),
            res.variant_names().join(" | ")
        );
        return ExitCode::from(2);
    }
    let plan = &res.plans[chosen[0]];
    let text = match format {
        GraphFormat::Dot => canc_compiler::dot::to_dot(plan),
        GraphFormat::Mermaid => canc_compiler::dot::to_mermaid(plan),
        GraphFormat::Svg => match render_svg(&canc_compiler::dot::to_dot(plan)) {
            Ok(svg) => svg,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    emit_text(&text, output)
}

/// Runs Graphviz's `dot -Tsvg` on `dot`.
fn render_svg(dot: &str) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run Graphviz `dot` ({e}); install it (`apt-get install graphviz`) or use --format dot")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| format!("writing to `dot`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for `dot`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`dot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("`dot` wrote invalid UTF-8: {e}"))
}

fn diff(
    a: &std::path::Path,
    b: &std::path::Path,
    overrides: &[String],
    format: MessageFormat,
    color: ColorChoice,
) -> ExitCode {
    let mut sides = Vec::new();
    for path in [a, b] {
        let input = SpecArgs {
            spec: path.to_path_buf(),
            overrides: overrides.to_vec(),
            variant: None,
            message_format: format,
        };
        match load(&input, color) {
            Ok((res, chosen)) => {
                if chosen.len() > 1 {
                    eprintln!(
                        "note: `{}` is a sweep; comparing its first variant ({})",
                        path.display(),
                        res.variant_names().first().copied().unwrap_or("")
                    );
                }
                sides.push(res)
            }
            Err(code) => return code,
        }
    }
    let (ra, rb) = (&sides[0], &sides[1]);
    let text = canc_compiler::diff::diff(
        (&ra.variants[0], &ra.plans[0]),
        (&rb.variants[0], &rb.plans[0]),
    );
    if text.is_empty() {
        println!("no semantic difference: both compile to the same plan");
    } else {
        print!("{text}");
    }
    ExitCode::SUCCESS
}
