//! Graph pictures of a plan: Graphviz DOT and Mermaid.

use crate::plan::Plan;

/// The plan as a Graphviz digraph.
pub fn to_dot(plan: &Plan) -> String {
    // TODO(graph helper)
    format!("digraph \"{}\" {{}}\n", plan.spec)
}

/// The plan as a Mermaid flowchart.
pub fn to_mermaid(plan: &Plan) -> String {
    // TODO(graph helper)
    format!("flowchart TD\n  %% {}\n", plan.spec)
}
