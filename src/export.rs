//! `canc export RUN_DIR --format safetensors`: one network's weights from the run's latest
//! checkpoint as a safetensors file, with a JSON description of its architecture beside it (and
//! inside it, as the file's metadata), for use outside canc.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use canc_compiler::Plan;
use canc_compiler::ir::NetKind;
use canc_compiler::resolved::RValue;
use canc_runtime::backend::CpuTrain;
use canc_runtime::checkpoint::{self, write_atomic};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The network exported by default: the eval block's encoder, else the first ViT.
pub fn default_network(plan: &Plan) -> Option<String> {
    let named = plan
        .eval
        .as_ref()
        .and_then(|e| e.get("encoder"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    named.or_else(|| {
        plan.networks
            .iter()
            .find(|n| n.kind == NetKind::Vit)
            .map(|n| n.name.clone())
    })
}

/// A setting as plain JSON: numbers, booleans, strings, lists; anything else as spec text.
fn plain(v: &RValue) -> serde_json::Value {
    match v {
        RValue::Int(i) => (*i).into(),
        RValue::Float(f) => (*f).into(),
        RValue::Bool(b) => (*b).into(),
        RValue::Str(s) | RValue::Ident(s) => s.clone().into(),
        RValue::List(xs) => xs.iter().map(plain).collect(),
        RValue::None => serde_json::Value::Null,
        other => canc_compiler::diff::format_value(other).into(),
    }
}

/// Every float parameter of a module: dotted path, shape, values.
#[derive(Default)]
struct Collect {
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>();
        let values = data
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .unwrap_or_default();
        // The first component is the `Network` variant (`Vit`): not part of the weights' names.
        let name = self.path.get(1..).unwrap_or_default().join(".");
        self.out.push((name, shape, values));
    }
}

/// Exports `network` (default: [`default_network`]) of the run in `dir`; returns the exit code.
pub fn export(dir: &Path, network: Option<String>, out: Option<PathBuf>) -> ExitCode {
    match export_inner(dir, network, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn export_inner(dir: &Path, network: Option<String>, out: Option<PathBuf>) -> Result<(), String> {
    let device = Default::default();
    let (program, step) =
        checkpoint::load_latest::<CpuTrain>(dir, &device).map_err(|e| e.to_string())?;
    let plan = &program.plan;
    let name = match network.or_else(|| default_network(plan)) {
        Some(n) => n,
        None => return Err("the plan has no ViT encoder; name one with --network".into()),
    };
    let Some(net_plan) = plan.network(&name) else {
        let names: Vec<&str> = plan.networks.iter().map(|n| n.name.as_str()).collect();
        return Err(format!(
            "the run has no network `{name}` (networks: {})",
            names.join(", ")
        ));
    };
    let mut c = Collect::default();
    if let Some(&i) = program.index.get(&name) {
        program.model.nets[i].visit(&mut c);
    } else if let Some(t) = program.teachers.iter().find(|t| t.0 == name) {
        t.2.visit(&mut c);
    } else {
        return Err(format!("network `{name}` was not built"));
    }
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = c
        .out
        .into_iter()
        .map(|(path, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (path, shape, bytes)
        })
        .collect();
    let params: usize = tensors.iter().map(|t| t.1.iter().product::<usize>()).sum();
    let meta = serde_json::json!({
        "format": "canc-export-1",
        "network": name,
        "kind": net_plan.kind,
        "config": net_plan.config.iter().map(|(k, v)| (k.clone(), plain(v))).collect::<serde_json::Map<_, _>>(),
        "role": net_plan.role,
        "input": net_plan.input,
        "params": params,
        "spec": plan.spec,
        "variant": plan.variant,
        "checkpoint_step": step,
        "normalize": { "mean": plan.data.mean, "std": plan.data.std },
        "tensors": tensors.iter().map(|t| serde_json::json!({"name": t.0, "shape": t.1})).collect::<Vec<_>>(),
        "canc_version": env!("CARGO_PKG_VERSION"),
    });
    let json = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("tensor `{n}`: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let info = HashMap::from([("canc".to_string(), json.clone())]);
    let bytes = safetensors::serialize(views, Some(info)).map_err(|e| e.to_string())?;
    let path = out.unwrap_or_else(|| dir.join("export").join(format!("{name}.safetensors")));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
    }
    write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    let json_path = path.with_extension("json");
    write_atomic(&json_path, json.as_bytes()).map_err(|e| e.to_string())?;
    eprintln!(
        "    Exported `{name}` ({params} parameters, {} tensors, step {step}) to {} and {}",
        tensors.len(),
        path.display(),
        json_path.display()
    );
    Ok(())
}
