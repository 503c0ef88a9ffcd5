//! `when:` conditions on policy rules: CEL expressions over the request, its
//! body and the live object, as Kubernetes' ValidatingAdmissionPolicy writes
//! them.
//!
//! A condition is compiled once, when the policy loads ([`Condition::compile`]),
//! with the `cel` crate (cel-rust); nothing here interprets CEL itself.
//! Variables:
//!
//! - `request`: `verb`, `resource`, `subresource`, `apiGroup`, `apiVersion`,
//!   `namespace`, `name`, `user`, `groups`, `dryRun` (strings, a list of
//!   strings and a bool; empty strings where the request has no such part).
//! - `object`: the request body as JSON (protobuf and YAML bodies decoded by
//!   [`crate::body`]) for `create`, `update` and `patch` (for `patch`, the
//!   patch document as sent); `null` for every other verb and when the body
//!   is not available.
//! - `oldObject`: the live object, which the caller fetches only when a rule
//!   whose attributes match uses it, on `update`, `patch` and `delete`;
//!   `null` otherwise.
//!
//! Any other identifier is a compile error (a typo must not make a rule
//! silently never match).
//!
//! Cost limit. The crate has no evaluation budget of its own, so the work is
//! bounded in two steps:
//!
//! - at compile time: at most [`MAX_SOURCE_BYTES`] bytes of source, parser
//!   nesting of at most [`MAX_NESTING`], at most [`MAX_NODES`] expression
//!   nodes after macro expansion, and macros (`all`, `exists`,
//!   `exists_one`, `map`, `filter`) nested at most [`MAX_LOOP_DEPTH`] deep;
//! - at run time, before evaluating: the cost estimate
//!   `nodes × max(1, L)^loops`, where `L` is the largest list or map (in
//!   elements) in `object`/`oldObject` and `loops` the macro nesting, must
//!   not exceed [`MAX_COST`], and the inputs must be nested at most
//!   [`MAX_INPUT_DEPTH`] deep; otherwise the evaluation is an error
//!   ([`EvalError::CostLimit`], [`EvalError::TooDeep`]) without running.
//!
//! Every loop of a CEL program iterates over a list or map it reads from its
//! inputs or builds from its own (bounded) literals, so the estimate bounds
//! the evaluation steps. Strings are not counted: every string function
//! (regular expressions included, the `regex` crate is linear-time) is linear
//! in its input, which the request body limit bounds.
//!
//! Pure: values in, a boolean or an error out.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, Env};

use crate::attrs::RequestAttributes;

/// Longest accepted expression, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4096;
/// Deepest parser nesting (parentheses, calls, member chains).
pub const MAX_NESTING: u16 = 32;
/// Most expression nodes after macro expansion.
pub const MAX_NODES: usize = 1000;
/// Deepest nesting of the loop macros (`all`, `exists`, `map`, ...).
pub const MAX_LOOP_DEPTH: u32 = 2;
/// Largest run-time cost estimate (see the module docs) evaluated.
pub const MAX_COST: u64 = 1_000_000;
/// Deepest nesting of `object`/`oldObject` evaluated (JSON parsers stop at
/// 128; YAML and protobuf bodies are held to the same kind of bound here).
pub const MAX_INPUT_DEPTH: usize = 200;

/// The variables a condition may name.
pub const VARIABLES: &[&str] = &["request", "object", "oldObject"];

/// Type names CEL lets an expression mention (`type(x) == string`).
const TYPE_IDENTS: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
];

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}column {column}: {message}", if *.line > 1 { format!("line {line}, ") } else { String::new() })]
pub struct CompileError {
    /// 1-based line inside the expression (1 for one-line expressions).
    pub line: u64,
    /// 1-based column inside the expression's line.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

/// Why an evaluation gave no boolean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The run-time cost estimate is over [`MAX_COST`].
    #[error(
        "cost estimate {estimate} is over the limit {MAX_COST} (a list or map of {largest} in the input, loops nested {loops} deep)"
    )]
    CostLimit {
        /// The estimate.
        estimate: u64,
        /// The largest list or map of the input.
        largest: u64,
        /// Loop nesting of the expression.
        loops: u32,
    },
    /// An input is nested deeper than [`MAX_INPUT_DEPTH`].
    #[error("the input is nested more than {MAX_INPUT_DEPTH} levels deep")]
    TooDeep,
    /// CEL reported an error (a missing field, a type mismatch, ...).
    #[error("{0}")]
    Cel(String),
    /// The expression gave a value that is not a boolean.
    #[error("the expression gave {0}, not a boolean")]
    NotBool(String),
}

/// A compiled `when:` condition.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The expression as written.
    pub source: String,
    expr: Arc<IdedExpr>,
    nodes: usize,
    loops: u32,
    uses: BTreeSet<&'static str>,
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The request.
    pub attrs: &'a RequestAttributes,
    /// Who makes it (`request.user`).
    pub user: &'a str,
    /// Their groups (`request.groups`).
    pub groups: &'a [String],
    /// The request body as JSON (`object`); `None` is `null`.
    pub object: Option<&'a serde_json::Value>,
    /// The live object (`oldObject`); `None` is `null`.
    pub old_object: Option<&'a serde_json::Value>,
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

impl Condition {
    /// Compile an expression, checking the limits and the variables it names.
    pub fn compile(source: &str) -> Result<Condition, CompileError> {
        let at = |line: u64, column: u64, message: String| CompileError {
            line,
            column,
            message,
        };
        if source.trim().is_empty() {
            return Err(at(1, 1, "the expression is empty".into()));
        }
        if source.len() > MAX_SOURCE_BYTES {
            return Err(at(
                1,
                1,
                format!(
                    "the expression is {} bytes long, more than the limit of {MAX_SOURCE_BYTES}",
                    source.len()
                ),
            ));
        }
        let parsed = parse_on_big_stack(source).map_err(|m| at(1, 1, m))?;
        let (expr, info) = match parsed {
            Ok(p) => p,
            Err(errs) => {
                let first = errs.errors.first();
                let (line, column) = first
                    .map(|e| (e.pos.0.max(1) as u64, e.pos.1.max(1) as u64))
                    .unwrap_or((1, 1));
                let message = match first {
                    Some(e) if e.msg.contains("Recursion limit") => {
                        format!("the expression is nested more than {MAX_NESTING} levels deep")
                    }
                    Some(e) => e.msg.clone(),
                    None => "does not parse".into(),
                };
                return Err(at(line, column, message));
            }
        };
        let position = |id: u64| -> (u64, u64) {
            let Some((start, _)) = info.offset_for(id) else {
                return (1, 1);
            };
            let before = &source.as_bytes()[..(start as usize).min(source.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() as u64 + 1;
            (line, column)
        };
        let mut walk = Walk::default();
        walk.expr(&expr, 0, &mut Vec::new());
        if let Some((id, name)) = walk.unknown.first() {
            let (line, column) = position(*id);
            return Err(at(
                line,
                column,
                format!(
                    "unknown variable {name:?} (the variables are {})",
                    VARIABLES.join(", ")
                ),
            ));
        }
        if walk.nodes > MAX_NODES {
            return Err(at(
                1,
                1,
                format!(
                    "the expression has {} nodes, more than the limit of {MAX_NODES}",
                    walk.nodes
                ),
            ));
        }
        if walk.loops > MAX_LOOP_DEPTH {
            let (line, column) = walk.deepest.map(position).unwrap_or((1, 1));
            return Err(at(
                line,
                column,
                format!(
                    "loop macros (all, exists, exists_one, map, filter) are nested {} deep, more than the limit of {MAX_LOOP_DEPTH}",
                    walk.loops
                ),
            ));
        }
        Ok(Condition {
            source: source.to_string(),
            expr: Arc::new(expr),
            nodes: walk.nodes,
            loops: walk.loops,
            uses: walk.uses,
        })
    }

    /// Whether the expression names `object`.
    pub fn uses_object(&self) -> bool {
        self.uses.contains("object")
    }

    /// Whether the expression names `oldObject`.
    pub fn uses_old_object(&self) -> bool {
        self.uses.contains("oldObject")
    }

    /// The run-time cost estimate for inputs whose largest list or map has
    /// `largest` elements (see the module docs).
    pub fn cost(&self, largest: u64) -> u64 {
        (self.nodes as u64).saturating_mul(largest.max(1).saturating_pow(self.loops))
    }

    /// Evaluate: `Ok(true)` when the condition holds. To evaluate several
    /// conditions over the same request, prepare [`Vars`] once and use
    /// [`Condition::eval_vars`].
    pub fn eval(&self, input: &Input<'_>) -> Result<bool, EvalError> {
        self.eval_vars(&Vars::new(input)?)
    }

    /// Evaluate over prepared variables.
    pub fn eval_vars(&self, vars: &Vars) -> Result<bool, EvalError> {
        let estimate = self.cost(vars.largest);
        if estimate > MAX_COST {
            return Err(EvalError::CostLimit {
                estimate,
                largest: vars.largest,
                loops: self.loops,
            });
        }
        let mut ctx = Context::with_env(env());
        ctx.add_variable_from_value("request", vars.request.clone());
        if self.uses_object() {
            ctx.add_variable_from_value("object", vars.object.clone());
        }
        if self.uses_old_object() {
            ctx.add_variable_from_value("oldObject", vars.old_object.clone());
        }
        match cel::Value::resolve(&self.expr, &ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError::NotBool(describe(&other))),
            Err(e) => Err(EvalError::Cel(e.to_string())),
        }
    }
}

/// The variables of one request, converted to CEL values once (lists and
/// maps are shared, so each evaluation only clones handles).
#[derive(Debug, Clone)]
pub struct Vars {
    request: cel::Value,
    object: cel::Value,
    old_object: cel::Value,
    largest: u64,
}

impl Vars {
    /// Measure and convert the inputs; [`EvalError::TooDeep`] for inputs
    /// nested deeper than [`MAX_INPUT_DEPTH`].
    pub fn new(input: &Input<'_>) -> Result<Vars, EvalError> {
        let mut largest = 0;
        for v in [input.object, input.old_object].into_iter().flatten() {
            largest = largest.max(shape(v)?);
        }
        Ok(Vars {
            request: request_value(input),
            object: input.object.map(to_cel).unwrap_or(cel::Value::Null),
            old_object: input.old_object.map(to_cel).unwrap_or(cel::Value::Null),
            largest,
        })
    }
}

/// Stack for the parser's thread. The crate's ANTLR parser recurses through
/// about ten grammar rules per nesting level with large frames (a 2 MiB
/// thread overflows near 20 levels in a debug build); parsing runs on its own
/// thread so that [`MAX_NESTING`], which the parser enforces, is what limits
/// an expression, whichever thread loads the policy.
const PARSER_STACK_BYTES: usize = 64 << 20;

type Parsed = Result<(IdedExpr, cel::common::ast::SourceInfo), cel::ParseErrors>;

fn parse_on_big_stack(source: &str) -> Result<Parsed, String> {
    let src = source.to_string();
    let handle = std::thread::Builder::new()
        .name("cel-parse".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || {
            env()
                .parser()
                .max_recursion_depth(MAX_NESTING)
                .parse_with_source_info(&src)
        })
        .map_err(|e| format!("cannot start the CEL parser: {e}"))?;
    handle
        .join()
        .map_err(|_| "the CEL parser failed on this expression".to_string())
}

/// Walks the AST: counts nodes, measures loop nesting, finds the variables.
#[derive(Default)]
struct Walk {
    nodes: usize,
    loops: u32,
    deepest: Option<u64>,
    uses: BTreeSet<&'static str>,
    unknown: Vec<(u64, String)>,
}

impl Walk {
    fn expr(&mut self, e: &IdedExpr, depth: u32, scope: &mut Vec<String>) {
        self.nodes += 1;
        // The walk recurses as deep as the parser allowed (MAX_NESTING,
        // plus what macro expansion adds); stop counting far past the limit.
        if self.nodes > MAX_NODES * 4 {
            return;
        }
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => {
                if let Some(v) = VARIABLES.iter().find(|v| **v == name.as_str()) {
                    if !scope.iter().any(|s| s == name) {
                        self.uses.insert(v);
                    }
                } else if !scope.iter().any(|s| s == name) && !TYPE_IDENTS.contains(&name.as_str())
                {
                    self.unknown.push((e.id, name.clone()));
                }
            }
            Expr::Call(c) => {
                if let Some(t) = &c.target {
                    self.expr(t, depth, scope);
                }
                for a in &c.args {
                    self.expr(a, depth, scope);
                }
            }
            Expr::Select(s) => self.expr(&s.operand, depth, scope),
            Expr::List(l) => {
                for x in &l.elements {
                    self.expr(x, depth, scope);
                }
            }
            Expr::Map(m) => self.entries(&m.entries, depth, scope),
            Expr::Struct(s) => self.entries(&s.entries, depth, scope),
            Expr::Comprehension(c) => {
                let depth = depth + 1;
                if depth > self.loops {
                    self.loops = depth;
                    self.deepest = Some(e.id);
                }
                self.expr(&c.iter_range, depth - 1, scope);
                let before = scope.len();
                scope.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    scope.push(v2.clone());
                }
                scope.push(c.accu_var.clone());
                self.expr(&c.accu_init, depth - 1, scope);
                self.expr(&c.loop_cond, depth, scope);
                self.expr(&c.loop_step, depth, scope);
                self.expr(&c.result, depth - 1, scope);
                scope.truncate(before);
            }
        }
    }

    fn entries(
        &mut self,
        entries: &[cel::common::ast::IdedEntryExpr],
        depth: u32,
        scope: &mut Vec<String>,
    ) {
        for en in entries {
            match &en.expr {
                EntryExpr::StructField(f) => self.expr(&f.value, depth, scope),
                EntryExpr::MapEntry(m) => {
                    self.expr(&m.key, depth, scope);
                    self.expr(&m.value, depth, scope);
                }
            }
        }
    }
}

/// The largest list or map (in elements) of a JSON value, walked without
/// recursion; [`EvalError::TooDeep`] past [`MAX_INPUT_DEPTH`].
fn shape(v: &serde_json::Value) -> Result<u64, EvalError> {
    let mut largest = 0u64;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_INPUT_DEPTH {
            return Err(EvalError::TooDeep);
        }
        match v {
            serde_json::Value::Array(a) => {
                largest = largest.max(a.len() as u64);
                stack.extend(a.iter().map(|x| (x, depth + 1)));
            }
            serde_json::Value::Object(m) => {
                largest = largest.max(m.len() as u64);
                stack.extend(m.values().map(|x| (x, depth + 1)));
            }
            _ => {}
        }
    }
    Ok(largest)
}

/// JSON as a CEL value: integers that fit are `int` (what `== 0` compares
/// with), larger ones `uint`, the rest `double`.
fn to_cel(v: &serde_json::Value) -> cel::Value {
    use serde_json::Value as J;
    match v {
        J::Null => cel::Value::Null,
        J::Bool(b) => cel::Value::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => cel::Value::String(Arc::new(s.clone())),
        J::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        J::Object(m) => {
            let map: std::collections::HashMap<cel::objects::Key, cel::Value> = m
                .iter()
                .map(|(k, v)| (cel::objects::Key::from(k.as_str()), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

fn request_value(input: &Input<'_>) -> cel::Value {
    let a = input.attrs;
    let s = |x: &str| cel::Value::String(Arc::new(x.to_string()));
    let mut m = std::collections::HashMap::new();
    for (k, v) in [
        ("verb", a.verb.as_str()),
        ("resource", a.resource.as_str()),
        ("subresource", a.subresource.as_str()),
        ("apiGroup", a.api_group.as_str()),
        ("apiVersion", a.api_version.as_str()),
        ("namespace", a.namespace.as_str()),
        ("name", a.name.as_str()),
        ("user", input.user),
    ] {
        m.insert(cel::objects::Key::from(k), s(v));
    }
    m.insert(
        cel::objects::Key::from("groups"),
        cel::Value::List(Arc::new(input.groups.iter().map(|g| s(g)).collect())),
    );
    m.insert(
        cel::objects::Key::from("dryRun"),
        cel::Value::Bool(a.dry_run),
    );
    cel::Value::Map(cel::objects::Map { map: Arc::new(m) })
}

fn describe(v: &cel::Value) -> String {
    match v {
        cel::Value::Null => "null".into(),
        cel::Value::Int(i) => format!("the int {i}"),
        cel::Value::UInt(u) => format!("the uint {u}"),
        cel::Value::Float(f) => format!("the double {f}"),
        cel::Value::String(s) => format!("the string {s:?}"),
        cel::Value::List(_) => "a list".into(),
        cel::Value::Map(_) => "a map".into(),
        _ => "a value of another type".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str) -> RequestAttributes {
        RequestAttributes {
            is_resource_request: true,
            verb: verb.into(),
            resource: "pods".into(),
            namespace: "prod-1".into(),
            api_version: "v1".into(),
            ..RequestAttributes::default()
        }
    }

    fn eval(src: &str, object: Option<&serde_json::Value>) -> Result<bool, EvalError> {
        let a = attrs("create");
        let c = Condition::compile(src).unwrap();
        c.eval(&Input {
            attrs: &a,
            user: "system:serviceaccount:agents:mcp",
            groups: &["system:serviceaccounts".to_string()],
            object,
            old_object: None,
        })
    }

    #[test]
    fn request_and_object_variables() {
        let o = json!({"spec": {"replicas": 0, "big": 18446744073709551615u64}});
        assert_eq!(
            eval(
                "request.verb == 'create' && request.namespace.startsWith('prod-')",
                None
            ),
            Ok(true)
        );
        assert_eq!(
            eval(
                "'system:serviceaccounts' in request.groups && !request.dryRun",
                None
            ),
            Ok(true)
        );
        assert_eq!(eval("object.spec.replicas == 0", Some(&o)), Ok(true));
        assert_eq!(eval("object.spec.big > 5u", Some(&o)), Ok(true));
        assert_eq!(eval("has(object.spec.template)", Some(&o)), Ok(false));
        assert!(matches!(
            eval("object.spec.nope == 1", Some(&o)),
            Err(EvalError::Cel(_))
        ));
        assert!(matches!(
            eval("object.spec", Some(&o)),
            Err(EvalError::NotBool(_))
        ));
        // No body: object is null, and reading into it is an error.
        assert_eq!(eval("object == null", None), Ok(true));
        assert!(eval("object.spec.replicas == 0", None).is_err());
    }

    #[test]
    fn compile_errors_name_the_column() {
        let e = Condition::compile("object.spec.replicas ==").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.column >= 20, "{e:?}");
        let e = Condition::compile("objetc.spec.replicas == 0").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
        assert!(e.message.contains("unknown variable \"objetc\""), "{e}");
        let e = Condition::compile("request.verb == 'get' && reqest.name == ''").unwrap_err();
        assert_eq!(e.column, 26, "{e}");
        assert!(Condition::compile("  ").is_err());
        // Comprehension variables are in scope only inside their macro.
        assert!(Condition::compile("object.items.all(x, x.a == 1)").is_ok());
        assert!(Condition::compile("object.items.all(x, x.a == 1) && x == 1").is_err());
        assert!(Condition::compile("type(object) == map").is_ok());
    }

    #[test]
    fn limits() {
        let long = format!("request.name == '{}'", "a".repeat(MAX_SOURCE_BYTES));
        assert!(
            Condition::compile(&long)
                .unwrap_err()
                .message
                .contains("bytes long")
        );
        let three = "object.a.all(x, x.all(y, y.all(z, z == 1)))";
        let e = Condition::compile(three).unwrap_err();
        assert!(e.message.contains("nested 3 deep"), "{e}");
        let two = Condition::compile("object.a.all(x, object.a.all(y, x == y))").unwrap();
        assert_eq!(two.loops, 2);
        // 2000 × 2000 items checked pairwise: refused before running.
        let a = attrs("create");
        let big = json!({"a": (0..2000).collect::<Vec<_>>()});
        let r = two.eval(&Input {
            attrs: &a,
            user: "",
            groups: &[],
            object: Some(&big),
            old_object: None,
        });
        assert!(
            matches!(r, Err(EvalError::CostLimit { largest: 2000, .. })),
            "{r:?}"
        );
        let small = json!({"a": [1, 2, 3]});
        let r = two.eval(&Input {
            attrs: &a,
            user: "",
            groups: &[],
            object: Some(&small),
            old_object: None,
        });
        assert_eq!(r, Ok(false));
        // Long strings do not count; deep nesting is refused.
        let long = json!({"a": [1], "note": "x".repeat(1 << 20)});
        let one = Condition::compile("object.a.exists(x, x == 1)").unwrap();
        let input = |o| Input {
            attrs: &a,
            user: "",
            groups: &[],
            object: Some(o),
            old_object: None,
        };
        assert_eq!(one.eval(&input(&long)), Ok(true));
        let mut deep = json!(1);
        for _ in 0..MAX_INPUT_DEPTH {
            deep = json!([deep]);
        }
        assert_eq!(one.eval(&input(&deep)), Err(EvalError::TooDeep));
    }

    #[test]
    fn nesting_limit_and_deep_evaluation_on_a_small_stack() {
        let nested =
            |n: usize| format!("{}request.dryRun == false{}", "(".repeat(n), ")".repeat(n));
        let e = Condition::compile(&nested(40)).unwrap_err();
        assert!(e.message.contains("nested more than 32"), "{e}");
        // As deep as allowed, evaluated on this (2 MiB) test thread.
        let c = Condition::compile(&nested(30)).unwrap();
        assert_eq!(
            c.eval(&Input {
                attrs: &attrs("get"),
                user: "",
                groups: &[],
                object: None,
                old_object: None,
            }),
            Ok(true)
        );
    }

    #[test]
    fn uses() {
        let c = Condition::compile("oldObject.metadata.labels['x'] == 'y'").unwrap();
        assert!(c.uses_old_object() && !c.uses_object());
        let c = Condition::compile("object.items.exists(oldObject, oldObject == 1)").unwrap();
        assert!(c.uses_object() && !c.uses_old_object());
    }
}
