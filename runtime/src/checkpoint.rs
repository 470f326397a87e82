//! Checkpoints: the whole state a run needs to continue exactly, written atomically.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` holding the trainable networks
//! (`model.bin`), the EMA teachers (`teachers.bin`), both optimizer parameter groups
//! (`optimizer.bin`) and `state.json` (the step, the run key and a SHA-256 of every file).
//! Nothing else is needed: data order derives from (seed, epoch), augmentation, masks and noise
//! from (seed, step), so a resumed run draws exactly what the uninterrupted one would have.
//!
//! Writing goes to a hidden temporary directory, every file is synced, and only then is it
//! renamed into place and `checkpoints/latest` (a one-line file naming it) replaced by rename.
//! A kill at any moment leaves the previous checkpoint and `latest` intact. Older checkpoints are
//! removed only after the new one is in place.

use crate::exec::{Nets, Program};
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Checkpoint format version; bumped when the layout changes.
pub const FORMAT: u32 = 1;

/// The recorder of every checkpoint file: bincode, full precision (f32 stays f32, exact).
type Rec = BinBytesRecorder<FullPrecisionSettings>;

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's contents do not match its recorded checksum, or it is missing.
    #[error(
        "checkpoint `{dir}` is corrupt: {why}; resume from an earlier checkpoint (`canc resume --from`)"
    )]
    Corrupt {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The checkpoint belongs to another run (plan, data or canc version differ).
    #[error("checkpoint `{dir}` was written for run key {found}, not this run's {expected}")]
    OtherRun {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Its run key.
        found: String,
        /// This run's key.
        expected: String,
    },
    /// The run directory has no checkpoint.
    #[error("`{0}` has no checkpoint")]
    None(PathBuf),
    /// Burn could not encode or decode a record.
    #[error("checkpoint `{dir}`: cannot {what} the {part}: {why}")]
    Record {
        /// The checkpoint directory.
        dir: PathBuf,
        /// `encode` or `decode`.
        what: &'static str,
        /// `model`, `teachers` or `optimizer`.
        part: &'static str,
        /// Burn's message.
        why: String,
    },
    /// The plan stored in the run directory cannot be read or executed.
    #[error("run `{dir}`: {why}")]
    Plan {
        /// The run directory.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// `state.json`: what a checkpoint holds and how to verify it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`FORMAT`].
    pub format: u32,
    /// Optimizer steps completed: the next step to run.
    pub step: u64,
    /// Total steps of the run.
    pub total: u64,
    /// The run key (hash of plan, data and canc version) it was written for.
    pub run_key: String,
    /// The weighted loss of the last completed step.
    pub loss: Option<f64>,
    /// canc's version.
    pub canc_version: String,
    /// Seconds since the Unix epoch.
    pub written_unix: u64,
    /// SHA-256 (hex) of each file, by name.
    pub files: BTreeMap<String, String>,
}

/// A checkpoint on disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// Its verified state.
    pub state: CheckpointState,
    files: BTreeMap<String, Vec<u8>>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { what, path, source }
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The directory name of the checkpoint after `step` steps.
pub fn dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes `bytes` to `path` durably: a temporary sibling, synced, renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename into", path))?;
    sync_dir(path.parent());
    Ok(())
}

/// Syncs a directory so a rename in it is durable (best effort: not every platform allows it).
fn sync_dir(dir: Option<&Path>) {
    if let Some(d) = dir
        && let Ok(f) = std::fs::File::open(d)
    {
        let _ = f.sync_all();
    }
}

/// Encodes the trainable networks, the EMA teachers and the optimizer `state` of `program` as the
/// files of a checkpoint.
pub fn encode<B: AutodiffBackend, R: burn::record::Record<B>>(
    program: &Program<B>,
    optimizer: R,
) -> Result<Vec<(&'static str, Vec<u8>)>, CheckpointError> {
    let rec = Rec::default();
    let err = |part: &'static str| {
        move |e: burn::record::RecorderError| CheckpointError::Record {
            dir: PathBuf::new(),
            what: "encode",
            part,
            why: e.to_string(),
        }
    };
    let model = Recorder::<B>::record(&rec, program.model.clone().into_record(), ())
        .map_err(err("model"))?;
    let teachers = Nets::<B::InnerBackend> {
        nets: program.teachers.iter().map(|t| t.2.clone()).collect(),
    };
    let teachers = Recorder::<B::InnerBackend>::record(&rec, teachers.into_record(), ())
        .map_err(err("teachers"))?;
    let optimizer = Recorder::<B>::record(&rec, optimizer, ()).map_err(err("optimizer"))?;
    Ok(vec![
        ("model.bin", model),
        ("teachers.bin", teachers),
        ("optimizer.bin", optimizer),
    ])
}

/// Writes a checkpoint of `files` after `step` steps under `run_dir/checkpoints/`, points
/// `latest` at it and removes all but the newest `keep`. Returns its directory.
pub fn save(
    run_dir: &Path,
    step: u64,
    total: u64,
    run_key: &str,
    loss: Option<f64>,
    files: Vec<(&'static str, Vec<u8>)>,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    let root = run_dir.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io("create", &root))?;
    let name = dir_name(step);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    let mut sums = BTreeMap::new();
    for (file, bytes) in &files {
        let p = tmp.join(file);
        let mut f = std::fs::File::create(&p).map_err(io("create", &p))?;
        f.write_all(bytes).map_err(io("write", &p))?;
        f.sync_all().map_err(io("sync", &p))?;
        sums.insert((*file).to_string(), sha256_hex(bytes));
    }
    let state = CheckpointState {
        format: FORMAT,
        step,
        total,
        run_key: run_key.to_string(),
        loss,
        canc_version: env!("CARGO_PKG_VERSION").to_string(),
        written_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        files: sums,
    };
    let json = serde_json::to_vec_pretty(&state).unwrap_or_default();
    write_atomic(&tmp.join("state.json"), &json)?;
    sync_dir(Some(&tmp));
    let dest = root.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(io("replace", &dest))?;
    }
    std::fs::rename(&tmp, &dest).map_err(io("rename into", &dest))?;
    sync_dir(Some(&root));
    write_atomic(&root.join("latest"), format!("{name}\n").as_bytes())?;
    prune(&root, keep.max(1))?;
    Ok(dest)
}

/// The checkpoints under `checkpoints_dir`, oldest first, as (step, directory).
pub fn list(checkpoints_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(checkpoints_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Removes the checkpoints of `run_dir` taken after `step` (before resuming from an earlier one,
/// so the newest checkpoint is again the run's own); returns how many were removed.
pub fn remove_after(run_dir: &Path, step: u64) -> Result<usize, CheckpointError> {
    let mut n = 0;
    for (s, dir) in list(&run_dir.join("checkpoints")) {
        if s > step {
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
            n += 1;
        }
    }
    Ok(n)
}

fn prune(root: &Path, keep: usize) -> Result<(), CheckpointError> {
    let all = list(root);
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(dir).map_err(io("remove", dir))?;
    }
    Ok(())
}

/// The newest checkpoint of `run_dir`. Checkpoint directories only appear complete (renamed
/// into place), so the newest one listed is authoritative; `checkpoints/latest` names it for
/// people and scripts, and may lag by one if a run was killed between the two renames.
pub fn latest(run_dir: &Path) -> Result<PathBuf, CheckpointError> {
    list(&run_dir.join("checkpoints"))
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| CheckpointError::None(run_dir.to_path_buf()))
}

/// The checkpoint of `run_dir` taken after `step` steps.
pub fn at_step(run_dir: &Path, step: u64) -> Result<PathBuf, CheckpointError> {
    let all = list(&run_dir.join("checkpoints"));
    match all.iter().find(|(s, _)| *s == step) {
        Some((_, d)) => Ok(d.clone()),
        None => Err(CheckpointError::Plan {
            dir: run_dir.to_path_buf(),
            why: format!(
                "no checkpoint at step {step} (kept: {})",
                all.iter()
                    .map(|(s, _)| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

impl Checkpoint {
    /// Reads the checkpoint in `dir` and verifies every file against its checksum.
    pub fn read(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |why: String| CheckpointError::Corrupt {
            dir: dir.to_path_buf(),
            why,
        };
        let sp = dir.join("state.json");
        let text = match std::fs::read(&sp) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt("`state.json` is missing".into()));
            }
            Err(e) => return Err(io("read", &sp)(e)),
        };
        let state: CheckpointState = serde_json::from_slice(&text)
            .map_err(|e| corrupt(format!("`state.json` does not parse: {e}")))?;
        if state.format != FORMAT {
            return Err(corrupt(format!(
                "checkpoint format {} is not this canc's ({FORMAT})",
                state.format
            )));
        }
        let mut files = BTreeMap::new();
        for (name, sum) in &state.files {
            let p = dir.join(name);
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(corrupt(format!("`{name}` is missing")));
                }
                Err(e) => return Err(io("read", &p)(e)),
            };
            if &sha256_hex(&bytes) != sum {
                return Err(corrupt(format!("`{name}` does not match its SHA-256")));
            }
            files.insert(name.clone(), bytes);
        }
        for need in ["model.bin", "teachers.bin", "optimizer.bin"] {
            if !files.contains_key(need) {
                return Err(corrupt(format!("`{need}` is not listed")));
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            state,
            files,
        })
    }

    /// Fails unless the checkpoint was written for `run_key`.
    pub fn check_key(&self, run_key: &str) -> Result<(), CheckpointError> {
        if self.state.run_key == run_key {
            Ok(())
        } else {
            Err(CheckpointError::OtherRun {
                dir: self.dir.clone(),
                found: self.state.run_key.clone(),
                expected: run_key.to_string(),
            })
        }
    }

    fn decode<BB: Backend, R: burn::record::Record<BB>>(
        &self,
        file: &str,
        part: &'static str,
        device: &BB::Device,
    ) -> Result<R, CheckpointError> {
        let bytes = self.files.get(file).cloned().unwrap_or_default();
        // Burn's bincode recorder panics on bytes it cannot decode; the checksum has already
        // ruled out corruption, so this only guards a record of another shape.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Recorder::<BB>::load::<R>(&Rec::default(), bytes, device)
        }));
        let why = match out {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the record does not fit this model".to_string(),
        };
        Err(CheckpointError::Record {
            dir: self.dir.clone(),
            what: "decode",
            part,
            why,
        })
    }

    /// Loads the networks and EMA teachers into `program` (which must be built from the same
    /// plan); returns the optimizer record. Training resumes through `Trainer::restore`, which
    /// also re-derives its parameter groups.
    pub(crate) fn restore<B: AutodiffBackend, R: burn::record::Record<B>>(
        &self,
        program: &mut Program<B>,
    ) -> Result<R, CheckpointError> {
        let device = program.device.clone();
        self.restore_networks(program)?;
        self.decode::<B, R>("optimizer.bin", "optimizer", &device)
    }

    /// Loads only the networks and EMA teachers into `program` (evaluation, export).
    pub fn restore_networks<B: AutodiffBackend>(
        &self,
        program: &mut Program<B>,
    ) -> Result<(), CheckpointError> {
        let device = program.device.clone();
        let model =
            self.decode::<B, <Nets<B> as Module<B>>::Record>("model.bin", "model", &device)?;
        program.model = program.model.clone().load_record(model);
        let inner = Nets::<B::InnerBackend> {
            nets: program.teachers.iter().map(|t| t.2.clone()).collect(),
        };
        let rec = self
            .decode::<B::InnerBackend, <Nets<B::InnerBackend> as Module<B::InnerBackend>>::Record>(
                "teachers.bin",
                "teachers",
                &device,
            )?;
        let loaded = inner.load_record(rec);
        for (t, net) in program.teachers.iter_mut().zip(loaded.nets) {
            t.2 = net;
        }
        Ok(())
    }
}

/// Builds the program of the run in `run_dir` (its `plan.ron`) and loads its latest checkpoint's
/// networks; returns it with the checkpoint's step. For evaluation and export.
pub fn load_latest<B: AutodiffBackend>(
    run_dir: &Path,
    device: &B::Device,
) -> Result<(Program<B>, u64), CheckpointError> {
    let plan = read_plan(run_dir)?;
    let ckpt = Checkpoint::read(&latest(run_dir)?)?;
    let mut program = Program::<B>::new(plan, device).map_err(|e| CheckpointError::Plan {
        dir: run_dir.to_path_buf(),
        why: e.to_string(),
    })?;
    ckpt.restore_networks(&mut program)?;
    Ok((program, ckpt.state.step))
}

/// The compiled plan a run directory holds (`plan.ron`).
pub fn read_plan(run_dir: &Path) -> Result<canc_compiler::Plan, CheckpointError> {
    let p = run_dir.join("plan.ron");
    let text = std::fs::read_to_string(&p).map_err(io("read", &p))?;
    canc_compiler::Plan::from_ron(&text).map_err(|why| CheckpointError::Plan {
        dir: run_dir.to_path_buf(),
        why: format!("`plan.ron`: {why}"),
    })
}
