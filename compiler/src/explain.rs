//! `canc explain SPEC`: every resolved value with where it came from (a default, a file and
//! line, `--set`, or derived with its formula).

use crate::plan::Plan;
use crate::resolved::ResolvedSpec;

/// The explanation of one compiled variant.
pub fn explain(spec: &ResolvedSpec, plan: &Plan) -> String {
    // TODO(explain helper)
    let _ = plan;
    spec.provenance
        .iter()
        .map(|(k, p)| format!("{k} = {p:?}\n"))
        .collect()
}
