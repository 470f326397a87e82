//! Call batching: calls of one network on inputs of equal shape, none depending on another, are
//! marked to run as one call on their inputs stacked along the batch dimension (CAN's two views
//! through one encoder pass: half the kernel launches, twice the rows per matrix product).
//!
//! The plan's steps are reordered so that each group's calls are adjacent, keeping every
//! dependency and the order of the random draws (masks, noise). A network whose output for one
//! image depends on the other images of its call (BatchNorm) is never batched, so batching
//! changes no value, only how the work is split into calls.

use crate::ir::{NetKind, Op, Port};
use crate::plan::{NetworkPlan, Step, producer};
use crate::resolved::RValue;
use crate::shape::Fact;
use indexmap::IndexMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// The steps of `steps` (a topological order) with call batching applied: batched calls share a
/// [`Step::batch`] number and stand next to each other. With no batchable calls the order is
/// unchanged.
pub fn batch_calls(steps: Vec<Step>, networks: &[NetworkPlan]) -> Vec<Step> {
    let n = steps.len();
    let index: IndexMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let sources: Vec<Vec<Option<Source>>> = steps
        .iter()
        .map(|s| {
            s.inputs
                .iter()
                .map(|i| producer(&index, &i.value))
                .collect()
        })
        .collect();
    let deps: Vec<Vec<usize>> = sources
        .iter()
        .map(|src| src.iter().flatten().map(|(p, _)| *p).collect())
        .collect();
    // Steps that draw from the step RNG keep their relative order (views come from the data
    // pipeline and draw nothing here).
    let draws: Vec<usize> = (0..n)
        .filter(|&i| matches!(steps[i].op, Op::Mask { .. } | Op::AddNoise { .. }))
        .collect();
    let keys: Vec<Option<CallKey>> = steps
        .iter()
        .zip(&sources)
        .map(|(s, src)| call_key(s, src, networks, &steps))
        .collect();

    // Greedy grouping: each call joins the first earlier group with its key whose contraction
    // keeps the step graph acyclic.
    let mut group: Vec<usize> = (0..n).collect();
    for j in 0..n {
        let Some(key) = &keys[j] else { continue };
        let leaders: Vec<usize> = (0..j)
            .filter(|&i| group[i] == i && keys[i].as_ref() == Some(key))
            .collect();
        for i in leaders {
            group[j] = i;
            if order(&group, &deps, &draws).is_some() {
                break;
            }
            group[j] = j;
        }
    }
    let Some(order) = order(&group, &deps, &draws) else {
        return steps; // unreachable: every accepted contraction was checked
    };

    let mut numbers: HashMap<usize, u32> = HashMap::new();
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(n);
    for i in order {
        let Some(mut step) = slots[i].take() else {
            continue;
        };
        let g = group[i];
        let size = group.iter().filter(|&&x| x == g).count();
        step.batch = (size > 1).then(|| {
            let next = numbers.len() as u32;
            *numbers.entry(g).or_insert(next)
        });
        out.push(step);
    }
    out
}

/// A value's producing step (index) and its named output, if any.
type Source<'a> = (usize, Option<&'a str>);

/// What must be equal for two calls to share one: the network (and whether it is an EMA copy),
/// and each input's port, producer output and shape.
#[derive(Debug, Clone, PartialEq)]
struct CallKey {
    network: String,
    ema: bool,
    inputs: Vec<(Port, Option<String>, Fact)>,
}

fn call_key(
    step: &Step,
    sources: &[Option<Source>],
    networks: &[NetworkPlan],
    steps: &[Step],
) -> Option<CallKey> {
    let Op::Call { network, ema, .. } = &step.op else {
        return None;
    };
    let net = networks.iter().find(|n| &n.name == network)?;
    if couples_batch(net) {
        return None;
    }
    let inputs = step
        .inputs
        .iter()
        .zip(sources)
        .map(|(i, src)| {
            let (p, output) = (*src)?;
            Some((
                i.port.clone(),
                output.map(str::to_string),
                shape(&steps[p].out),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(CallKey {
        network: network.clone(),
        ema: *ema,
        inputs,
    })
}

/// True when a network's output for one image depends on the other images of its call: an MLP
/// with BatchNorm (its batch statistics would mix the calls).
fn couples_batch(net: &NetworkPlan) -> bool {
    let setting = |k: &str| net.config.get(k).and_then(RValue::as_str).unwrap_or("none");
    net.kind == NetKind::Mlp
        && (setting("norm").starts_with("bn") || setting("last_norm").starts_with("bn"))
}

/// A fact without its provenance (which mask's visible positions): only the shape matters.
fn shape(f: &Fact) -> Fact {
    let mut f = f.clone();
    if let Fact::Tokens { visible_of, .. } = &mut f {
        *visible_of = None;
    }
    f
}

/// A topological order of the steps with each group contracted to one node (members in their
/// original order) and the random draws in theirs; `None` if the contraction has a cycle. Among
/// ready groups the one with the earliest step goes first, so with no groups this is the
/// original order.
fn order(group: &[usize], deps: &[Vec<usize>], draws: &[usize]) -> Option<Vec<usize>> {
    let n = group.len();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indeg = vec![0usize; n];
    let mut edge = |a: usize, b: usize, indeg: &mut Vec<usize>| {
        succ[a].push(b);
        indeg[b] += 1;
    };
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            edge(group[d], group[i], &mut indeg);
        }
    }
    for w in draws.windows(2) {
        edge(group[w[0]], group[w[1]], &mut indeg);
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&g| group[g] == g && indeg[g] == 0)
        .map(Reverse)
        .collect();
    let mut out = Vec::with_capacity(n);
    while let Some(Reverse(g)) = ready.pop() {
        out.extend((0..n).filter(|&i| group[i] == g));
        for &s in &succ[g] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                ready.push(Reverse(s));
            }
        }
    }
    (out.len() == n).then_some(out)
}
