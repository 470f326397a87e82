//! Checks a value against a schema type and converts it to its resolved form.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::resolved::RValue;
use crate::schema::{Ty, describe};
use crate::suggest;
use canc_grammar::ast::{Number, NumberValue, Unit, Value, ValueKind};

/// Names a value may refer to.
#[derive(Debug, Default)]
pub struct Names {
    /// Network names.
    pub networks: Vec<String>,
    /// View names.
    pub views: Vec<String>,
}

fn kind_name(v: &ValueKind) -> &'static str {
    match v {
        ValueKind::Number(n) if matches!(n.value, NumberValue::Int(_)) => "an integer",
        ValueKind::Number(_) => "a float",
        ValueKind::Quantity(..) => "a quantity",
        ValueKind::Str(_) => "a string",
        ValueKind::Bool(_) => "a boolean",
        ValueKind::None => "`none`",
        ValueKind::Range(..) => "a range",
        ValueKind::List(_) => "a list",
        ValueKind::Call(..) => "a call",
        ValueKind::Var(_) => "a variable",
        ValueKind::Path(_) => "a dotted path",
        ValueKind::Ident(_) => "a name",
        ValueKind::Sweep(_) => "a sweep",
    }
}

fn mismatch(v: &Value, ty: &Ty, what: &str) -> Diagnostic {
    Diagnostic::error(
        codes::TYPE_MISMATCH,
        v.span,
        format!(
            "{what} expects {}, found {}",
            describe(ty),
            kind_name(&v.kind)
        ),
    )
    .label(format!("expected {}", short(ty)))
}

fn short(ty: &Ty) -> &'static str {
    match ty {
        Ty::Int { .. } => "an integer",
        Ty::Float { .. } => "a number",
        Ty::Bool => "true or false",
        Ty::Str => "a string",
        Ty::Enum(_) => "one of the options",
        Ty::Range { .. } => "a range",
        Ty::Floats { .. } | Ty::Idents(_) => "a list",
        Ty::Quantity { .. } => "a count with a unit",
        Ty::Dist => "a number or distribution",
        Ty::Network => "a network name",
        Ty::View => "a view name",
        Ty::Node => "a graph node",
        Ty::Selection => "a selection",
        Ty::Optional(inner) => short(inner),
        Ty::Either(_) => "one of the accepted forms",
    }
}

fn finite(n: &Number, span: canc_grammar::Span) -> Result<f64, Diagnostic> {
    let x = n.value.as_f64();
    if x.is_finite() {
        Ok(x)
    } else {
        Err(Diagnostic::error(
            codes::BAD_NUMBER,
            span,
            format!("`{}` is not a representable number", n.text),
        )
        .label("overflows"))
    }
}

fn in_float_range(x: f64, lo: f64, hi: f64, lo_open: bool, hi_open: bool) -> bool {
    let above = if lo_open { x > lo } else { x >= lo };
    let below = if hi_open { x < hi } else { x <= hi };
    above && below
}

fn out_of_range(v: &Value, ty: &Ty, what: &str, shown: String) -> Diagnostic {
    Diagnostic::error(
        codes::OUT_OF_RANGE,
        v.span,
        format!("{what} must be {}, got {shown}", describe(ty)),
    )
    .label("out of range")
}

/// Checks `v` against `ty`. `what` names the key in messages ("`temperature`").
pub fn check(v: &Value, ty: &Ty, what: &str, names: &Names) -> Result<RValue, Diagnostic> {
    match (ty, &v.kind) {
        // A variable left after substitution is undefined or cyclic, already reported (E0030/E0031).
        (_, ValueKind::Var(_)) => Ok(RValue::None),
        (Ty::Optional(_), ValueKind::None) => Ok(RValue::None),
        (Ty::Optional(inner), _) => check(v, inner, what, names),
        (Ty::Either(alts), _) => {
            let mut first_err = None;
            for alt in alts.iter() {
                match check(v, alt, what, names) {
                    Ok(r) => return Ok(r),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            Err(
                if alts.iter().any(|a| matches!(a, Ty::Enum(_)))
                    && matches!(v.kind, ValueKind::Ident(_))
                {
                    first_err.expect("at least one alternative")
                } else {
                    mismatch(v, ty, what)
                },
            )
        }
        (Ty::Int { min, max }, ValueKind::Number(n)) => match n.value {
            NumberValue::Int(i) if i >= *min && i <= *max => Ok(RValue::Int(i)),
            NumberValue::Int(i) => Err(out_of_range(v, ty, what, i.to_string())),
            NumberValue::Float(_) if !n.text.contains(['.', 'e', 'E']) => Err(Diagnostic::error(
                codes::BAD_NUMBER,
                v.span,
                format!("`{}` does not fit in a 64-bit integer", n.text),
            )
            .label("too large")),
            NumberValue::Float(_) => Err(mismatch(v, ty, what).help(format!(
                "write a whole number, e.g. `{}`",
                n.value.as_f64().round()
            ))),
        },
        (
            Ty::Float {
                lo,
                hi,
                lo_open,
                hi_open,
            },
            ValueKind::Number(n),
        ) => {
            let x = finite(n, v.span)?;
            if in_float_range(x, *lo, *hi, *lo_open, *hi_open) {
                Ok(RValue::Float(x))
            } else {
                Err(out_of_range(v, ty, what, n.text.clone()))
            }
        }
        (
            Ty::Float {
                lo,
                hi,
                lo_open,
                hi_open,
            },
            ValueKind::Quantity(n, Unit::Percent),
        ) => {
            let x = finite(n, v.span)? / 100.0;
            if in_float_range(x, *lo, *hi, *lo_open, *hi_open) {
                Ok(RValue::Float(x))
            } else {
                Err(out_of_range(v, ty, what, format!("{}%", n.text)))
            }
        }
        (Ty::Bool, ValueKind::Bool(b)) => Ok(RValue::Bool(*b)),
        (Ty::Str, ValueKind::Str(s)) => Ok(RValue::Str(s.clone())),
        (Ty::Enum(opts), ValueKind::Ident(s) | ValueKind::Str(s)) => {
            if opts.contains(&s.as_str()) {
                Ok(RValue::Ident(s.clone()))
            } else {
                Err(Diagnostic::error(
                    codes::UNKNOWN_VARIANT,
                    v.span,
                    format!("`{s}` is not an option of {what}"),
                )
                .label("unknown option")
                .maybe_help(suggest::hint(s, opts)))
            }
        }
        (Ty::Enum(opts), ValueKind::None) if opts.contains(&"none") => {
            Ok(RValue::Ident("none".into()))
        }
        (Ty::Range { lo, hi }, ValueKind::Range(a, b)) => {
            let (x, y) = (finite(a, v.span)?, finite(b, v.span)?);
            if x > y {
                return Err(Diagnostic::error(
                    codes::BAD_RANGE,
                    v.span,
                    format!("range `{}..{}` is empty", a.text, b.text),
                )
                .label("lo > hi")
                .help(format!("write `{}..{}`", b.text, a.text)));
            }
            if x < *lo || y > *hi {
                return Err(out_of_range(v, ty, what, format!("{}..{}", a.text, b.text)));
            }
            Ok(RValue::Range(x, y))
        }
        (Ty::Floats { len, lo, hi }, ValueKind::List(xs)) => {
            if let Some(n) = len
                && xs.len() != *n
            {
                return Err(Diagnostic::error(
                    codes::TYPE_MISMATCH,
                    v.span,
                    format!("{what} expects {n} numbers, found {}", xs.len()),
                )
                .label(format!("expected {n} values")));
            }
            let elem = Ty::Float {
                lo: *lo,
                hi: *hi,
                lo_open: false,
                hi_open: false,
            };
            xs.iter()
                .map(|x| check(x, &elem, what, names))
                .collect::<Result<_, _>>()
                .map(RValue::List)
        }
        (Ty::Idents(opts), ValueKind::List(xs)) => xs
            .iter()
            .map(|x| check(x, &Ty::Enum(opts), what, names))
            .collect::<Result<_, _>>()
            .map(RValue::List),
        (Ty::Quantity { units, .. }, ValueKind::Quantity(n, u)) => {
            if units.contains(u) {
                let x = finite(n, v.span)?;
                if x < 0.0 {
                    return Err(Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        v.span,
                        format!("{what} cannot be negative"),
                    )
                    .label("negative"));
                }
                Ok(RValue::Quantity(x, *u))
            } else {
                let accepted: Vec<&str> = units.iter().map(|u| u.as_str()).collect();
                Err(Diagnostic::error(
                    codes::BAD_UNIT,
                    v.span,
                    format!("{what} is not measured in `{}`", u.as_str()),
                )
                .label("wrong unit")
                .help(format!("use {}", accepted.join(" or "))))
            }
        }
        (Ty::Quantity { units, bare }, ValueKind::Number(n)) => match bare {
            Some(u) => {
                let x = finite(n, v.span)?;
                if x < 0.0 {
                    return Err(Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        v.span,
                        format!("{what} cannot be negative"),
                    )
                    .label("negative"));
                }
                Ok(RValue::Quantity(x, *u))
            }
            None => Err(
                Diagnostic::error(codes::BAD_UNIT, v.span, format!("{what} needs a unit"))
                    .label("unit missing")
                    .help(format!("write e.g. `{} {}`", n.text, units[0].as_str())),
            ),
        },
        (Ty::Dist, _) => check_dist(v, what),
        // `masked(m)` / `visible(m)` name graph nodes and are checked with the graph.
        (Ty::Selection, ValueKind::Ident(s)) if s == "all" => Ok(RValue::Ident("all".into())),
        (Ty::Network, ValueKind::Ident(s)) => refers(v, s, &names.networks, "network"),
        (Ty::View, ValueKind::Ident(s)) => refers(v, s, &names.views, "view"),
        _ => Err(mismatch(v, ty, what)),
    }
}

fn refers(v: &Value, s: &str, defined: &[String], noun: &str) -> Result<RValue, Diagnostic> {
    if defined.iter().any(|d| d == s) {
        Ok(RValue::Ident(s.to_string()))
    } else {
        let cands: Vec<&str> = defined.iter().map(String::as_str).collect();
        Err(Diagnostic::error(
            codes::UNDEFINED_REF,
            v.span,
            format!("no {noun} named `{s}`"),
        )
        .label(format!("not a {noun} of this spec"))
        .maybe_help(suggest::hint(s, &cands)))
    }
}

/// Distributions: a constant, `uniform(a, b)`, `loguniform(a, b)` (0 < a), `normal(mean, std)`.
fn check_dist(v: &Value, what: &str) -> Result<RValue, Diagnostic> {
    const DISTS: &[&str] = &["uniform", "loguniform", "normal"];
    match &v.kind {
        ValueKind::Number(n) => {
            let x = finite(n, v.span)?;
            if what.contains("sigma") && x < 0.0 {
                return Err(Diagnostic::error(
                    codes::OUT_OF_RANGE,
                    v.span,
                    "a noise level cannot be negative",
                )
                .label("negative sigma"));
            }
            Ok(RValue::Float(x))
        }
        ValueKind::Call(name, args) => {
            if !DISTS.contains(&name.name.as_str()) {
                return Err(Diagnostic::error(
                    codes::UNKNOWN_VARIANT,
                    name.span,
                    format!("`{}` is not a distribution", name.name),
                )
                .label("unknown distribution")
                .maybe_help(suggest::hint(&name.name, DISTS)));
            }
            if args.len() != 2 || args.iter().any(|a| a.name.is_some()) {
                return Err(Diagnostic::error(
                    codes::ARITY,
                    v.span,
                    format!("`{}` takes two positional numbers", name.name),
                )
                .label(format!("expected `{}(a, b)`", name.name)));
            }
            let mut xs = [0.0; 2];
            for (i, a) in args.iter().enumerate() {
                match &a.value.kind {
                    ValueKind::Number(n) => xs[i] = finite(n, a.value.span)?,
                    // Undefined variable, already reported.
                    ValueKind::Var(_) => return Ok(RValue::None),
                    _ => {
                        return Err(mismatch(
                            &a.value,
                            &Ty::Float {
                                lo: f64::NEG_INFINITY,
                                hi: f64::INFINITY,
                                lo_open: false,
                                hi_open: false,
                            },
                            &format!("`{}`", name.name),
                        ));
                    }
                }
            }
            let [a, b] = xs;
            let ok = match name.name.as_str() {
                "uniform" => a <= b,
                "loguniform" => a > 0.0 && a <= b,
                _ => b >= 0.0,
            };
            if !ok {
                let need = match name.name.as_str() {
                    "uniform" => "a <= b",
                    "loguniform" => "0 < a <= b",
                    _ => "std >= 0",
                };
                return Err(Diagnostic::error(
                    codes::OUT_OF_RANGE,
                    v.span,
                    format!("invalid {}: needs {need}", name.name),
                )
                .label("invalid parameters"));
            }
            if what.contains("sigma") && name.name != "normal" && a < 0.0 {
                return Err(Diagnostic::error(
                    codes::OUT_OF_RANGE,
                    v.span,
                    "a noise level cannot be negative",
                )
                .label("negative sigma"));
            }
            Ok(RValue::Call(
                name.name.clone(),
                vec![(None, RValue::Float(a)), (None, RValue::Float(b))],
            ))
        }
        _ => Err(mismatch(v, &Ty::Dist, what)),
    }
}
