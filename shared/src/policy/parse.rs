//! Strict parsing and validation of policy files.
//!
//! The YAML is first read into a generic tree in which every key and value
//! carries its line and column (serde-saphyr's `Spanned`), then validated by
//! hand. Doing it in two steps, rather than with `#[serde(deny_unknown_fields)]`
//! on the types, lets one run report every mistake in the file with its line,
//! not just the first one serde trips over.

use std::collections::HashMap;
use std::fmt;

use super::glob::Glob;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::validate::{
    check_api_group, check_name_pattern, check_namespace_pattern, check_non_resource_url,
    check_non_resource_verb, check_resource, check_resource_verb, check_service_account_pattern,
};
use super::{API_VERSION, Action, Approval, KIND, Mode, Policy, Recording, Rule, sha256_hex};
use crate::audit::Level;
use crate::mask::{MaskConfigError, MaskingConfig};

/// One mistake in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// Path of the offending field, e.g. `rules[2].verbs[0]`; empty for
    /// syntax errors.
    pub field: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl Problem {
    fn new(loc: Location, field: impl Into<String>, message: impl Into<String>) -> Problem {
        // One line per problem: multi-line texts (regex errors) are joined.
        let message: String = message.into();
        let message = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Problem {
            line: loc.line(),
            column: loc.column(),
            field: field.into(),
            message,
        }
    }

    /// A problem at a byte offset of the source (for encoding errors).
    pub(crate) fn at_offset(src: &[u8], offset: usize, field: &str, message: &str) -> Problem {
        let before = &src[..offset.min(src.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() as u64 + 1;
        Problem {
            line,
            column,
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: ", self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every mistake found in one policy file. Displayed one per line as
/// `FILE:LINE:COLUMN: FIELD: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    /// The file (or other source) the policy came from.
    pub source_name: String,
    /// The mistakes, in file order.
    pub problems: Vec<Problem>,
}

impl PolicyErrors {
    pub(crate) fn single(source_name: &str, problem: Problem) -> PolicyErrors {
        PolicyErrors {
            source_name: source_name.to_string(),
            problems: vec![problem],
        }
    }

    /// Each problem as `FILE:LINE:COLUMN: FIELD: MESSAGE`.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| {
                let field = if p.field.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", p.field)
                };
                format!(
                    "{}:{}:{}: {field}{}",
                    self.source_name, p.line, p.column, p.message
                )
            })
            .collect()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid policy {}: {n} error{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        let lines = self.lines();
        for (i, l) in lines.iter().enumerate() {
            if i + 1 < lines.len() {
                writeln!(f, "  {l}")?;
            } else {
                write!(f, "  {l}")?;
            }
        }
        Ok(())
    }
}

/// A YAML node with positions.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int,
    Float,
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    fn describe(&self) -> &'static str {
        match self {
            Node::Null => "nothing (null)",
            Node::Bool(_) => "a boolean",
            Node::Int | Node::Float => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
                Ok(Node::Bool(b))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Int)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Int)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Int)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Int)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Float)
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element::<Spanned<Node>>()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    let val = m.next_value::<Spanned<Node>>()?;
                    v.push((k, val));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Deserializes only the `masking` section, with the masking module's own
/// types, so its errors come with serde-saphyr's positions.
#[derive(Deserialize)]
struct MaskingProbe {
    #[serde(default)]
    masking: Option<MaskingConfig>,
}

const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "mode",
    "defaultAction",
    "rules",
    "masking",
    "recording",
    "approval",
];
const RULE_FIELDS: &[&str] = &[
    "name",
    "action",
    "verbs",
    "apiGroups",
    "resources",
    "resourceNames",
    "namespaces",
    "nonResourceURLs",
    "serviceAccounts",
    "message",
    "when",
    "users",
    "groups",
    "grant",
    "tools",
];
/// Collects problems while walking the tree.
struct Ctx {
    problems: Vec<Problem>,
}

impl Ctx {
    fn err(&mut self, loc: Location, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(loc, field, message));
    }

    /// The string value of a scalar node, or an error naming what was found.
    fn string(&mut self, node: &Spanned<Node>, field: &str) -> Option<String> {
        match &node.value {
            Node::Str(s) => Some(s.clone()),
            Node::Bool(_) => {
                self.err(
                    node.referenced,
                    field,
                    "must be a string, found a boolean (YAML reads yes/no/on/off/true/false as booleans: quote the value)",
                );
                None
            }
            other => {
                self.err(
                    node.referenced,
                    field,
                    format!("must be a string, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// The value of a boolean node, or an error naming what was found.
    fn boolean(&mut self, node: &Spanned<Node>, field: &str) -> Option<bool> {
        match &node.value {
            Node::Bool(b) => Some(*b),
            other => {
                self.err(
                    node.referenced,
                    field,
                    format!("must be true or false, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// A non-empty list of strings, each with its location.
    fn string_list(
        &mut self,
        node: &Spanned<Node>,
        field: &str,
    ) -> Option<Vec<(String, Location)>> {
        match &node.value {
            Node::Seq(items) => {
                if items.is_empty() {
                    self.err(
                        node.referenced,
                        field,
                        "must not be an empty list (an empty list matches nothing; omit the field to match everything)",
                    );
                    return None;
                }
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.string(item, &format!("{field}[{i}]")) {
                        Some(s) => out.push((s, item.referenced)),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            Node::Str(s) => {
                self.err(
                    node.referenced,
                    field,
                    format!("must be a list, found a string: write [{s:?}]"),
                );
                None
            }
            other => {
                self.err(
                    node.referenced,
                    field,
                    format!("must be a list of strings, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// Report unknown keys of a mapping and return the known ones by name.
    /// Duplicate keys are already refused by the YAML reader.
    fn fields<'n>(
        &mut self,
        entries: &'n [(Spanned<String>, Spanned<Node>)],
        known: &[&str],
        prefix: &str,
    ) -> HashMap<&'n str, &'n Spanned<Node>> {
        let mut out = HashMap::new();
        for (k, v) in entries {
            if known.contains(&k.value.as_str()) {
                out.insert(k.value.as_str(), v);
            } else {
                let hint = suggest(&k.value, known)
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_else(|| format!(" (known fields: {})", known.join(", ")));
                self.err(
                    k.referenced,
                    format!("{prefix}{}", k.value),
                    format!("unknown field {:?}{hint}", k.value),
                );
            }
        }
        out
    }
}

/// The closest known name, for "did you mean" hints.
fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = unknown.to_ascii_lowercase().replace(['_', '-'], "");
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// serde-saphyr's message without its position prefix and source snippet.
fn saphyr_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 2 column 1: message"
    if let Some((_, msg)) = first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        return msg.to_string();
    }
    first.to_string()
}

pub(super) fn parse(source_name: &str, yaml: &str) -> Result<Policy, PolicyErrors> {
    let fail = |problems: Vec<Problem>| PolicyErrors {
        source_name: source_name.to_string(),
        problems,
    };
    let root: Spanned<Node> = match serde_saphyr::from_str(yaml) {
        Ok(r) => r,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            return Err(fail(vec![Problem {
                line,
                column,
                field: String::new(),
                message: format!("invalid YAML: {}", saphyr_message(&e)),
            }]));
        }
    };
    let mut ctx = Ctx {
        problems: Vec::new(),
    };
    let entries = match &root.value {
        Node::Map(entries) => entries,
        Node::Null => {
            ctx.err(root.referenced, "", "the policy is empty");
            return Err(fail(ctx.problems));
        }
        other => {
            ctx.err(
                root.referenced,
                "",
                format!(
                    "a policy is a YAML mapping (apiVersion, kind, rules, ...), found {}",
                    other.describe()
                ),
            );
            return Err(fail(ctx.problems));
        }
    };
    let top = ctx.fields(entries, TOP_FIELDS, "");

    for (key, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match top.get(key) {
            None => ctx.err(
                root.referenced,
                key,
                format!("missing; write `{key}: {want}`"),
            ),
            Some(n) => {
                if let Some(v) = ctx.string(n, key).filter(|v| v != want) {
                    ctx.err(n.referenced, key, format!("must be {want:?}, found {v:?}"));
                }
            }
        }
    }
    let mode = match top.get("mode") {
        None => Mode::Enforce,
        Some(n) => match ctx.string(n, "mode").as_deref() {
            Some("enforce") => Mode::Enforce,
            Some("audit") => Mode::Audit,
            Some(other) => {
                ctx.err(
                    n.referenced,
                    "mode",
                    format!("unknown mode {other:?} (use enforce or audit)"),
                );
                Mode::Enforce
            }
            None => Mode::Enforce,
        },
    };
    let default_action = match top.get("defaultAction") {
        None => Action::Deny,
        Some(n) => action(&mut ctx, n, "defaultAction").unwrap_or(Action::Deny),
    };

    let mut rules = Vec::new();
    if let Some(n) = top.get("rules") {
        match &n.value {
            Node::Seq(items) if items.is_empty() => ctx.err(
                n.referenced,
                "rules",
                "is an empty list; omit `rules` if the policy is only its defaultAction",
            ),
            Node::Seq(items) => {
                let mut seen: HashMap<String, u64> = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(rule) = parse_rule(&mut ctx, i, item) {
                        if let Some(first) = seen.get(&rule.name) {
                            ctx.err(
                                item.referenced,
                                format!("rules[{i}].name"),
                                format!(
                                    "duplicate rule name {:?} (first used on line {first}); rule names must be unique",
                                    rule.name
                                ),
                            );
                        } else {
                            seen.insert(rule.name.clone(), rule.line);
                        }
                        rules.push(rule);
                    }
                }
            }
            other => ctx.err(
                n.referenced,
                "rules",
                format!("must be a list of rules, found {}", other.describe()),
            ),
        }
    }

    let masking = match top.get("masking") {
        None => MaskingConfig::embedded_default(),
        Some(n) => parse_masking(&mut ctx, yaml, n).unwrap_or_default(),
    };
    let recording = match top.get("recording") {
        None => Recording::default(),
        Some(n) => parse_recording(&mut ctx, n),
    };
    let approval = match top.get("approval") {
        None => Approval::default(),
        Some(n) => parse_approval(&mut ctx, n),
    };

    if !ctx.problems.is_empty() {
        ctx.problems.sort_by_key(|p| (p.line, p.column));
        return Err(fail(ctx.problems));
    }
    Ok(Policy {
        mode,
        default_action,
        rules,
        masking,
        recording,
        approval,
        source_name: source_name.to_string(),
        hash: sha256_hex(yaml.as_bytes()),
    })
}

fn action(ctx: &mut Ctx, n: &Spanned<Node>, field: &str) -> Option<Action> {
    let s = ctx.string(n, field)?;
    let a = Action::from_name(&s);
    if a.is_none() {
        ctx.err(
            n.referenced,
            field,
            format!("unknown action {s:?} (use allow, deny or approve)"),
        );
    }
    a
}

fn parse_rule(ctx: &mut Ctx, i: usize, node: &Spanned<Node>) -> Option<Rule> {
    let p = format!("rules[{i}]");
    let Node::Map(entries) = &node.value else {
        ctx.err(
            node.referenced,
            p,
            format!(
                "a rule is a mapping (name, action, verbs, ...), found {}",
                node.value.describe()
            ),
        );
        return None;
    };
    let before = ctx.problems.len();
    let f = ctx.fields(entries, RULE_FIELDS, &format!("{p}."));
    let loc = node.referenced;

    let name = match f.get("name") {
        None => {
            ctx.err(
                loc,
                format!("{p}.name"),
                "missing; every rule needs a unique name",
            );
            None
        }
        Some(n) => {
            let s = ctx.string(n, &format!("{p}.name"));
            match s {
                Some(s) if s.trim().is_empty() || s.chars().any(char::is_control) => {
                    ctx.err(
                        n.referenced,
                        format!("{p}.name"),
                        "must be a non-empty name without control characters",
                    );
                    None
                }
                other => other,
            }
        }
    };
    let action = match f.get("action") {
        None => {
            ctx.err(
                loc,
                format!("{p}.action"),
                "missing; use allow, deny or approve",
            );
            None
        }
        Some(n) => action(ctx, n, &format!("{p}.action")),
    };
    let message = f
        .get("message")
        .and_then(|n| ctx.string(n, &format!("{p}.message")));

    let non_resource = f.contains_key("nonResourceURLs");
    let resource = f.contains_key("resources");
    // A `tools:` rule judges MCP tool calls, not API requests: none of the
    // API request fields apply to it.
    let tool_rule = f.contains_key("tools");
    if tool_rule {
        for other in [
            "verbs",
            "apiGroups",
            "resources",
            "resourceNames",
            "namespaces",
            "nonResourceURLs",
            "when",
            "grant",
        ] {
            if let Some(n) = f.get(other) {
                ctx.err(
                    n.referenced,
                    format!("{p}.{other}"),
                    "does not apply to a tools rule (it judges MCP tool calls, not API requests): split it into two rules",
                );
            }
        }
    } else if non_resource && resource {
        if let Some(n) = f.get("nonResourceURLs") {
            ctx.err(
                n.referenced,
                format!("{p}.nonResourceURLs"),
                "a rule has either resources or nonResourceURLs, not both: split it into two rules",
            );
        }
    } else if !non_resource && !resource {
        ctx.err(
            loc,
            format!("{p}.resources"),
            "missing; a rule needs resources (e.g. [pods], [\"*\"]) or nonResourceURLs (e.g. [/healthz])",
        );
    }
    if non_resource {
        for other in ["apiGroups", "resourceNames", "namespaces"] {
            if let Some(n) = f.get(other) {
                ctx.err(
                    n.referenced,
                    format!("{p}.{other}"),
                    "does not apply to nonResourceURLs rules (paths have no group, name or namespace)",
                );
            }
        }
    }

    let verbs = match f.get("verbs") {
        None if tool_rule => Vec::new(),
        None => {
            ctx.err(
                loc,
                format!("{p}.verbs"),
                "missing; e.g. [get, list, watch] or [\"*\"]",
            );
            Vec::new()
        }
        Some(n) => check_verbs(ctx, n, &format!("{p}.verbs"), non_resource),
    };
    let api_groups = match f.get("apiGroups") {
        None => vec!["*".to_string()],
        Some(n) => check_each(ctx, n, &format!("{p}.apiGroups"), check_api_group),
    };
    let resources = match f.get("resources") {
        None => Vec::new(),
        Some(n) => check_each(ctx, n, &format!("{p}.resources"), check_resource),
    };
    let non_resource_urls = match f.get("nonResourceURLs") {
        None => Vec::new(),
        Some(n) => check_each(
            ctx,
            n,
            &format!("{p}.nonResourceURLs"),
            check_non_resource_url,
        ),
    };
    let (resource_names, resource_name_globs) = match f.get("resourceNames") {
        None => (Vec::new(), Vec::new()),
        Some(n) => globs(ctx, n, &format!("{p}.resourceNames"), check_name_pattern),
    };
    let (namespaces, namespace_globs) = match f.get("namespaces") {
        None => (Vec::new(), Vec::new()),
        Some(n) => globs(ctx, n, &format!("{p}.namespaces"), check_namespace_pattern),
    };
    let (service_accounts, service_account_globs) = match f.get("serviceAccounts") {
        None => (Vec::new(), Vec::new()),
        Some(n) => globs(
            ctx,
            n,
            &format!("{p}.serviceAccounts"),
            check_service_account_pattern,
        ),
    };

    let (users, user_globs) = match f.get("users") {
        None => (Vec::new(), Vec::new()),
        Some(n) => subject_globs(ctx, n, &format!("{p}.users"), "user names"),
    };
    let (groups, group_globs) = match f.get("groups") {
        None => (Vec::new(), Vec::new()),
        Some(n) => subject_globs(ctx, n, &format!("{p}.groups"), "group names"),
    };
    let (tools, tool_globs) = match f.get("tools") {
        None => (Vec::new(), Vec::new()),
        Some(n) => globs(ctx, n, &format!("{p}.tools"), check_tool_pattern),
    };

    let when = f.get("when").and_then(|n| {
        let field = format!("{p}.when");
        let src = ctx.string(n, &field)?;
        super::condition::Condition::compile(&src)
            .map_err(|e| ctx.err(n.referenced, field, format!("invalid CEL expression: {e}")))
            .ok()
    });

    let grant = f
        .get("grant")
        .and_then(|n| ctx.boolean(n, &format!("{p}.grant")))
        .unwrap_or(true);

    if ctx.problems.len() != before {
        return None;
    }
    Some(Rule {
        name: name?,
        action: action?,
        verbs,
        api_groups,
        resources,
        resource_names,
        namespaces: namespaces.clone(),
        non_resource_urls,
        service_accounts,
        message,
        when,
        grant,
        line: loc.line(),
        resource_name_globs,
        namespace_globs: namespaces.into_iter().zip(namespace_globs).collect(),
        service_account_globs,
        users,
        groups,
        user_globs,
        group_globs,
        tools,
        tool_globs,
    })
}

/// A tool name glob: non-empty, no control characters or whitespace.
fn check_tool_pattern(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{s:?} is not a tool name glob (non-empty, no spaces or control characters)"
        ));
    }
    Ok(())
}

fn check_verbs(ctx: &mut Ctx, n: &Spanned<Node>, field: &str, non_resource: bool) -> Vec<String> {
    let check = if non_resource {
        check_non_resource_verb
    } else {
        check_resource_verb
    };
    check_each(ctx, n, field, check)
}

/// Validate each string of a list with `check` (which returns an error text).
fn check_each(
    ctx: &mut Ctx,
    n: &Spanned<Node>,
    field: &str,
    check: fn(&str) -> Result<(), String>,
) -> Vec<String> {
    let Some(items) = ctx.string_list(n, field) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, (v, loc)) in items.into_iter().enumerate() {
        match check(&v) {
            Ok(()) => out.push(v),
            Err(why) => ctx.err(loc, format!("{field}[{i}]"), why),
        }
    }
    out
}

/// Validate and compile a list of glob patterns.
fn globs(
    ctx: &mut Ctx,
    n: &Spanned<Node>,
    field: &str,
    check: fn(&str) -> Result<(), String>,
) -> (Vec<String>, Vec<Glob>) {
    let Some(items) = ctx.string_list(n, field) else {
        return (Vec::new(), Vec::new());
    };
    let mut pats = Vec::new();
    let mut matchers = Vec::new();
    for (i, (v, loc)) in items.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Err(why) = check(&v) {
            ctx.err(loc, f, why);
            continue;
        }
        match Glob::new(&v, true) {
            Ok(g) => {
                pats.push(v);
                matchers.push(g);
            }
            Err(e) => ctx.err(loc, f, format!("invalid glob {v:?}: {}", e.kind())),
        }
    }
    (pats, matchers)
}

/// Globs of end-user names or groups (`users`, `groups`): unlike the other
/// globs, `*` also matches `/` and `:` since such names are often URLs
/// (`https://issuer#sub`) or prefixed (`oidc:`).
fn subject_globs(
    ctx: &mut Ctx,
    n: &Spanned<Node>,
    field: &str,
    what: &str,
) -> (Vec<String>, Vec<Glob>) {
    let Some(items) = ctx.string_list(n, field) else {
        return (Vec::new(), Vec::new());
    };
    let mut pats = Vec::new();
    let mut matchers = Vec::new();
    for (i, (v, loc)) in items.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Err(why) = super::validate::check_subject_pattern(&v, what) {
            ctx.err(loc, f, why);
            continue;
        }
        match Glob::new(&v, false) {
            Ok(g) => {
                pats.push(v);
                matchers.push(g);
            }
            Err(e) => ctx.err(loc, f, format!("invalid glob {v:?}: {}", e.kind())),
        }
    }
    (pats, matchers)
}

fn parse_recording(ctx: &mut Ctx, n: &Spanned<Node>) -> Recording {
    let Node::Map(entries) = &n.value else {
        ctx.err(
            n.referenced,
            "recording",
            format!(
                "must be a mapping like `level: RequestResponse`, found {}",
                n.value.describe()
            ),
        );
        return Recording::default();
    };
    let f = ctx.fields(entries, &["level"], "recording.");
    let mut rec = Recording::default();
    if let Some(l) = f.get("level") {
        match ctx.string(l, "recording.level").as_deref() {
            Some("Metadata") => rec.level = Level::Metadata,
            Some("Request") => rec.level = Level::Request,
            Some("RequestResponse") => rec.level = Level::RequestResponse,
            Some(other) => ctx.err(
                l.referenced,
                "recording.level",
                format!("unknown level {other:?} (use Metadata, Request or RequestResponse)"),
            ),
            None => {}
        }
    }
    rec
}

fn parse_masking(ctx: &mut Ctx, yaml: &str, n: &Spanned<Node>) -> Option<MaskingConfig> {
    if !matches!(n.value, Node::Map(_)) {
        ctx.err(
            n.referenced,
            "masking",
            format!(
                "must be a mapping with rules and detectors, found {}",
                n.value.describe()
            ),
        );
        return None;
    }
    let cfg = match serde_saphyr::from_str::<MaskingProbe>(yaml) {
        Ok(p) => p.masking.unwrap_or_default(),
        Err(e) => {
            let loc = e.location().unwrap_or(n.referenced);
            // Name the offending key as every other error does
            // (`masking.rules[0].fieldz`), not just the section.
            let field = path_at(n, loc, "masking").unwrap_or_else(|| "masking".to_string());
            ctx.err(loc, field, serde_unknown_field(&saphyr_message(&e)));
            return None;
        }
    };
    if let Err(e) = cfg.compile() {
        let (loc, field) = masking_error_location(n, &e);
        let text = e.to_string();
        // The masking error already starts with its field path.
        let msg = text
            .split_once(": ")
            .map(|(_, m)| m.to_string())
            .unwrap_or(text);
        ctx.err(loc, field, msg);
        return None;
    }
    Some(cfg)
}

/// The field path (`masking.rules[0].fieldz`) of the key or value at `loc`.
fn path_at(node: &Spanned<Node>, loc: Location, path: &str) -> Option<String> {
    let at = |l: Location| l.line() == loc.line() && l.column() == loc.column();
    match &node.value {
        Node::Map(entries) => entries.iter().find_map(|(k, v)| {
            let p = format!("{path}.{}", k.value);
            if at(k.referenced) || at(v.referenced) {
                Some(p)
            } else {
                path_at(v, loc, &p)
            }
        }),
        Node::Seq(items) => items.iter().enumerate().find_map(|(i, v)| {
            let p = format!("{path}[{i}]");
            if at(v.referenced) {
                Some(p)
            } else {
                path_at(v, loc, &p)
            }
        }),
        _ => None,
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" in the words the
/// other unknown-field errors use; any other message unchanged.
fn serde_unknown_field(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((name, tail)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let known = tail
        .trim_start_matches(", expected one of ")
        .trim_start_matches(", expected ")
        .replace('`', "");
    format!("unknown field {name:?} (known fields: {known})")
}

fn child<'a>(node: &'a Spanned<Node>, key: &str) -> Option<&'a Spanned<Node>> {
    match &node.value {
        Node::Map(entries) => entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v),
        _ => None,
    }
}

fn element(node: Option<&Spanned<Node>>, index: usize) -> Option<&Spanned<Node>> {
    match node.map(|n| &n.value) {
        Some(Node::Seq(items)) => items.get(index),
        _ => None,
    }
}

/// Where in the file a masking compile error points.
fn masking_error_location(masking: &Spanned<Node>, e: &MaskConfigError) -> (Location, String) {
    let rule = |index: usize| element(child(masking, "rules"), index);
    let at = |n: Option<&Spanned<Node>>| n.map(|n| n.referenced).unwrap_or(masking.referenced);
    match e {
        MaskConfigError::BadRegex { index, field, .. } => {
            let key = if *field == "env_names" {
                "envNames"
            } else {
                field
            };
            (
                at(rule(*index).and_then(|r| child(r, key))),
                format!("masking.rules[{index}].{key}"),
            )
        }
        MaskConfigError::BadFieldPath {
            index, path_index, ..
        } => (
            at(element(
                rule(*index).and_then(|r| child(r, "fields")),
                *path_index,
            )),
            format!("masking.rules[{index}].fields[{path_index}]"),
        ),
        MaskConfigError::BadResource {
            index,
            resource_index,
            ..
        } => (
            at(element(
                rule(*index).and_then(|r| child(r, "resources")),
                *resource_index,
            )),
            format!("masking.rules[{index}].resources[{resource_index}]"),
        ),
        MaskConfigError::NoResources { index } => (
            at(rule(*index)),
            format!("masking.rules[{index}].resources"),
        ),
        MaskConfigError::EmptyRule { index } => {
            (at(rule(*index)), format!("masking.rules[{index}]"))
        }
        MaskConfigError::UnknownDetector { index, .. } => (
            at(element(child(masking, "detectors"), *index)),
            format!("masking.detectors[{index}]"),
        ),
        // Variants the masking module may add later still get the section's line.
        #[allow(unreachable_patterns)]
        _ => (masking.referenced, "masking".to_string()),
    }
}

fn parse_approval(ctx: &mut Ctx, n: &Spanned<Node>) -> Approval {
    let Node::Map(entries) = &n.value else {
        ctx.err(
            n.referenced,
            "approval",
            format!(
                "must be a mapping like `maxGrant: 1h`, found {}",
                n.value.describe()
            ),
        );
        return Approval::default();
    };
    let f = ctx.fields(entries, &["maxGrant"], "approval.");
    let mut a = Approval::default();
    if let Some(m) = f.get("maxGrant")
        && let Some(s) = ctx.string(m, "approval.maxGrant")
    {
        match crate::grant::parse_duration(&s) {
            Ok(d) => a.max_grant = d,
            Err(e) => ctx.err(m.referenced, "approval.maxGrant", e.to_string()),
        }
    }
    a
}
