//! The schema tables are self-consistent: every literal default checks against its own type,
//! and names are unique where lookups assume it.

use canc_compiler::schema::{self, Body, Default, Field, TypeSchema};
use canc_compiler::value::{Names, check};
use std::collections::HashSet;

fn check_default(owner: &str, f: &Field) {
    if let Default::Lit(lit) = f.default {
        let (_, v) = canc_grammar::parse_override(&format!("x={lit}"), 0).unwrap_or_else(|e| {
            panic!("{owner}.{}: default `{lit}` does not parse: {e:?}", f.name)
        });
        check(&v, &f.ty, f.name, &Names::default()).unwrap_or_else(|d| {
            panic!(
                "{owner}.{}: default `{lit}` fails its type: {}",
                f.name, d.message
            )
        });
    }
}

fn walk(ts: &TypeSchema) {
    let mut names = HashSet::new();
    for f in ts.fields {
        assert!(names.insert(f.name), "{}: key `{}` twice", ts.name, f.name);
        check_default(ts.name, f);
    }
    for c in ts.children {
        assert!(
            names.insert(c.name),
            "{}: `{}` is both a key and a nested block",
            ts.name,
            c.name
        );
        walk(c);
    }
}

#[test]
fn every_literal_default_checks() {
    for b in schema::BLOCKS {
        match b.body {
            Body::Typed(types) => types.iter().for_each(walk),
            Body::Plain(ts) => walk(&ts),
            Body::Graph | Body::Objective => {}
        }
    }
    for op in schema::OPS {
        for f in op.kwargs {
            check_default(op.name, f);
        }
    }
}

#[test]
fn names_are_unique() {
    let mut seen = HashSet::new();
    for b in schema::BLOCKS {
        assert!(seen.insert(b.kind), "block {} twice", b.kind);
    }
    let mut ops = HashSet::new();
    for op in schema::OPS {
        assert!(ops.insert(op.name), "op {} twice", op.name);
    }
}

#[test]
fn codes_are_unique_and_explained() {
    let mut ids = HashSet::new();
    for c in canc_compiler::codes::ALL {
        assert!(ids.insert(c.id), "code {} twice", c.id);
        assert!(c.explanation.len() > 20, "{} needs an explanation", c.id);
    }
}
