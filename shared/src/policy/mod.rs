//! The policy: which Kubernetes requests an MCP server may make, which it may
//! not, and which wait for a human.
//!
//! A policy is a YAML document (`apiVersion: mcp-warden.io/v1alpha1`,
//! `kind: Policy`, ConfigMap key `policy.yaml`) parsed strictly by
//! [`Policy::parse`]: every mistake is reported with its file, line and field,
//! all at once. [`evaluate`] is a pure function from (policy, request
//! attributes, impersonation, identity) to a [`Decision`].
//!
//! Rule matching follows RBAC (verbs, apiGroups, resources with
//! `resource/subresource` and `*/subresource`, resourceNames,
//! nonResourceURLs with a trailing `*`), plus globs for namespaces,
//! resourceNames and service accounts. Among the rules that match, deny beats
//! approve beats allow, whatever their order; no match means `defaultAction`,
//! except for discovery, which is allowed unless a rule says otherwise.
//!
//! Namespaces: a request without a namespace (a cluster-scoped object, or a
//! list/watch/deletecollection across all namespaces — the path does not tell
//! them apart) matches an allow rule only if its `namespaces` include `""` or
//! `"*"`, but matches every deny or approve rule that names namespaces, since
//! it can reach objects in them.
//!
//! Impersonation (`Impersonate-*` headers) is judged like RBAC judges it: one
//! extra check per header, verb `impersonate` on `users`, `groups`,
//! `serviceaccounts`, `uids` or `userextras/KEY`. The request goes through
//! only if every impersonation check and the request itself are allowed; the
//! most restrictive outcome decides. The request itself is judged with the
//! pod's own identity (the policy governs what the pod may do, whoever it
//! claims to be).
//!
//! Conditions: a rule may carry `when:`, a CEL expression over `request`,
//! `object` (the request body) and `oldObject` (the live object); see
//! [`condition`]. A rule matches only when its attributes match and `when`
//! is true. A condition that fails at run time (an error, a non-boolean, the
//! cost limit) counts as matching for deny and approve rules and as not
//! matching for allow rules, so a broken condition never lets more through;
//! such failures are listed in [`Decision::condition_errors`] for metrics
//! and logs. [`Policy::body_needed`] tells the caller which bodies a request
//! needs before [`evaluate_with`] decides it.

pub mod condition;
mod glob;
pub mod learn;
pub mod lint;
mod parse;
pub mod recorded;
pub mod replay;
mod validate;

use glob::Glob;
use sha2::{Digest, Sha256};

use crate::attrs::{Impersonation, RequestAttributes};
use crate::audit::Level;
use crate::identity::{Identity, SERVICE_ACCOUNT_PREFIX};
use crate::mask::MaskingConfig;

pub use condition::Condition;
pub use parse::{PolicyErrors, Problem};

/// The only `apiVersion` this build understands (in
/// [`crate::contract::API_GROUP`]; a test checks that they agree).
pub const API_VERSION: &str = "mcp-warden.io/v1alpha1";
/// The `kind` of a policy document.
pub const KIND: &str = "Policy";
/// The embedded default policy (used when no policy file exists).
pub const EMBEDDED_DEFAULT_YAML: &str = include_str!("default.yaml");
/// Source name used in errors and logs for the embedded default.
pub const EMBEDDED_DEFAULT_NAME: &str = "<embedded default policy>";

/// What a rule (or the policy's default) does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward the request.
    Allow,
    /// Hold the request until a human approves it.
    Approve,
    /// Refuse the request (403 Forbidden).
    Deny,
}

impl Action {
    /// `allow`, `deny` or `approve`, as recorded and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Approve => "approve",
        }
    }

    /// Parse `allow`, `deny` or `approve`.
    pub fn from_name(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "deny" => Some(Action::Deny),
            "approve" => Some(Action::Approve),
            _ => None,
        }
    }

    /// Precedence among matching rules: deny (2) > approve (1) > allow (0).
    /// The derived `Ord` encodes the same order.
    fn severity(self) -> u8 {
        match self {
            Action::Allow => 0,
            Action::Approve => 1,
            Action::Deny => 2,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether decisions are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny and approve decisions block requests.
    Enforce,
    /// Decide and record, block nothing.
    Audit,
}

impl Mode {
    /// `enforce` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// The `recording` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recording {
    /// How much of each request is recorded: `Metadata`, `Request` or
    /// `RequestResponse` (the default). Bodies are always masked first.
    pub level: Level,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            level: Level::RequestResponse,
        }
    }
}

/// The `approval` section: limits on just-in-time access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    /// The longest window a time-bounded grant may have here (`maxGrant`,
    /// default 1h); a longer grant is not honoured.
    pub max_grant: std::time::Duration,
}

impl Default for Approval {
    fn default() -> Self {
        Approval {
            max_grant: crate::grant::DEFAULT_MAX_GRANT,
        }
    }
}

/// One rule of a policy, validated and compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name; reported with every decision the rule makes.
    pub name: String,
    /// What the rule does with the requests it matches.
    pub action: Action,
    /// Verbs (`get`, `list`, ..., `impersonate`, or HTTP verbs for
    /// nonResourceURLs); `*` for all.
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group); `*` for all (the default).
    pub api_groups: Vec<String>,
    /// `resource`, `resource/subresource`, `*/subresource`, `resource/*`, `*`.
    pub resources: Vec<String>,
    /// Object name globs; empty means any (including none).
    pub resource_names: Vec<String>,
    /// Namespace globs; `""` means cluster-scoped; empty list means any.
    pub namespaces: Vec<String>,
    /// Non-resource paths, exact or with a trailing `*`.
    pub non_resource_urls: Vec<String>,
    /// `NS/NAME` globs of the pod's service account; empty means any.
    pub service_accounts: Vec<String>,
    /// Globs of the end user's name; empty means any. A rule with users
    /// never matches a request without an end user.
    pub users: Vec<String>,
    /// Globs of the end user's groups (any group matching is enough); empty
    /// means any. A rule with groups never matches a request without an
    /// end user.
    pub groups: Vec<String>,
    /// Shown to the client with the decision.
    pub message: Option<String>,
    /// The `when:` condition, compiled; `None` means always.
    pub when: Option<Condition>,
    /// Whether a time-bounded grant may let this rule's requests pass
    /// without a hold (`grant: false` forbids it; default true).
    pub grant: bool,
    /// Line of the rule in its file (for `policy eval` and logs).
    pub line: u64,
    resource_name_globs: Vec<Glob>,
    namespace_globs: Vec<(String, Glob)>,
    service_account_globs: Vec<Glob>,
    user_globs: Vec<Glob>,
    group_globs: Vec<Glob>,
    /// MCP tool name globs: a rule with `tools` judges tool calls
    /// ([`evaluate_tool`]) and never an API request; empty: an API rule.
    pub tools: Vec<String>,
    tool_globs: Vec<Glob>,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `enforce` or `audit`.
    pub mode: Mode,
    /// Decision when no rule matches.
    pub default_action: Action,
    /// Rules, in file order.
    pub rules: Vec<Rule>,
    /// The masking section, as written; the built-in masking
    /// ([`MaskingConfig::embedded_default`]) when the policy has none.
    pub masking: MaskingConfig,
    /// The recording section (defaults when absent).
    pub recording: Recording,
    /// The approval section (defaults when absent).
    pub approval: Approval,
    /// File name the policy was read from (for messages).
    pub source_name: String,
    hash: String,
}

/// Number of hex digits in [`Policy::short_hash`].
pub const SHORT_HASH_LEN: usize = 12;

impl Policy {
    /// Parse and validate a policy. `source_name` (usually the file path)
    /// prefixes every error; all errors are reported, not just the first.
    pub fn parse(source_name: &str, yaml: &str) -> Result<Policy, PolicyErrors> {
        parse::parse(source_name, yaml)
    }

    /// Like [`Policy::parse`] for raw file bytes (non-UTF-8 is an error).
    pub fn parse_bytes(source_name: &str, bytes: &[u8]) -> Result<Policy, PolicyErrors> {
        match std::str::from_utf8(bytes) {
            Ok(s) => parse::parse(source_name, s),
            Err(e) => Err(PolicyErrors::single(
                source_name,
                Problem::at_offset(bytes, e.valid_up_to(), "", "the file is not valid UTF-8"),
            )),
        }
    }

    /// The embedded default policy: read-only (get, list, watch on
    /// everything, discovery and health endpoints, self access reviews),
    /// exec/attach/port-forward/proxy and service-account token requests
    /// denied, secrets masked, everything else denied.
    pub fn embedded_default() -> Policy {
        Policy::parse(EMBEDDED_DEFAULT_NAME, EMBEDDED_DEFAULT_YAML)
            .unwrap_or_else(|_| Policy::deny_all())
    }

    /// A policy with no rules that denies everything but discovery. Only a
    /// fallback should the embedded default ever fail to parse (a unit test
    /// makes sure it does not).
    fn deny_all() -> Policy {
        Policy {
            mode: Mode::Enforce,
            default_action: Action::Deny,
            rules: Vec::new(),
            masking: MaskingConfig::embedded_default(),
            recording: Recording::default(),
            approval: Approval::default(),
            source_name: EMBEDDED_DEFAULT_NAME.to_string(),
            hash: sha256_hex(b""),
        }
    }

    /// SHA-256 of the policy's source bytes, 64 hex digits.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The first [`SHORT_HASH_LEN`] hex digits of [`Policy::hash`], for
    /// annotations, metrics and logs.
    pub fn short_hash(&self) -> &str {
        &self.hash[..SHORT_HASH_LEN.min(self.hash.len())]
    }

    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Which bodies deciding this request needs: `object` when a rule whose
    /// attributes match has a `when` that reads it and the verb carries a
    /// body (create, update, patch); `old_object` likewise for `oldObject`
    /// on update, patch and delete. The caller reads the body or fetches the
    /// live object only then, and passes them to [`evaluate_with`].
    pub fn body_needed(&self, attrs: &RequestAttributes, who: &Identity) -> BodyNeed {
        let mut need = BodyNeed::default();
        for rule in &self.rules {
            let Some(c) = &rule.when else { continue };
            if !rule.matches(attrs, who) {
                continue;
            }
            need.object |= c.uses_object() && has_object(&attrs.verb);
            need.old_object |= c.uses_old_object() && has_old_object(&attrs.verb);
        }
        need
    }

    /// Whether any rule has a `when` condition.
    pub fn has_conditions(&self) -> bool {
        self.rules.iter().any(|r| r.when.is_some())
    }
}

/// The bodies a decision needs ([`Policy::body_needed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BodyNeed {
    /// The request body, decoded to JSON (`object`).
    pub object: bool,
    /// The live object (`oldObject`).
    pub old_object: bool,
}

/// The bodies given to [`evaluate_with`]; `None` is CEL `null`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bodies<'a> {
    /// The request body as JSON; used for create, update and patch only.
    pub object: Option<&'a serde_json::Value>,
    /// The live object; used for update, patch and delete only.
    pub old_object: Option<&'a serde_json::Value>,
}

/// Verbs whose request carries the object (`object` is not null).
pub fn has_object(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch")
}

/// Verbs that act on an existing object (`oldObject` can be fetched).
pub fn has_old_object(verb: &str) -> bool {
    matches!(verb, "update" | "patch" | "delete")
}

/// The hash [`Policy::hash`] gives a policy with these source bytes
/// (SHA-256, hex), e.g. to skip re-parsing an unchanged file.
pub fn source_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    source_hash(bytes)
}

/// The outcome of evaluating a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// What happens (in audit mode: what enforcement would have done).
    pub action: Action,
    /// The deciding rule; `None` when the default action or the discovery
    /// default decided.
    pub rule: Option<String>,
    /// The deciding rule's `message`, if it has one.
    pub message: Option<String>,
    /// False in `mode: audit`: the decision is recorded but not enforced.
    pub enforced: bool,
    /// One line saying why, for logs, `policy eval` and denial messages,
    /// e.g. `rule "no-secrets-in-prod" (deny)` or
    /// `impersonating user "jane": no rule matched, defaultAction deny`
    /// (its `Display`; serialized as that string).
    pub explanation: Explanation,
    /// `when:` conditions that failed at run time while deciding (each
    /// counted as matching for deny/approve, not matching for allow).
    #[serde(rename = "conditionErrors", skip_serializing_if = "Vec::is_empty")]
    pub condition_errors: Vec<ConditionFailure>,
}

/// A `when:` condition that failed at run time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConditionFailure {
    /// The rule whose condition failed.
    pub rule: String,
    /// Why (a CEL error, a non-boolean result, the cost limit).
    pub error: String,
}

impl Decision {
    /// True when the request must not be forwarded now (deny or approve,
    /// enforced).
    pub fn blocks(&self) -> bool {
        self.enforced && self.action != Action::Allow
    }

    /// The message of the 403 `Status` for a blocked request, in the shape
    /// kube-apiserver uses (`pods "web-0" is forbidden: ...`), naming the
    /// rule and its message so `kubectl` prints them.
    pub fn forbidden_message(&self, attrs: &RequestAttributes) -> String {
        format!(
            "{}: {}",
            crate::status::forbidden_subject(attrs),
            self.refusal_reason()
        )
    }

    /// The deciding rule's `message`, or else the explanation's text: what
    /// an approver is told.
    pub fn message_or_explanation(&self) -> std::borrow::Cow<'_, str> {
        match &self.message {
            Some(m) => std::borrow::Cow::Borrowed(m),
            None => std::borrow::Cow::Owned(self.explanation.to_string()),
        }
    }

    /// Why a blocked request is refused, after the subject of the 403
    /// message: `mcp-warden policy: denied: <explanation>[: <message>]`.
    pub fn refusal_reason(&self) -> String {
        let what = match self.action {
            Action::Approve => "needs a human's approval (approval required)",
            _ => "denied",
        };
        let mut msg = format!("mcp-warden policy: {what}: {}", self.explanation);
        if let Some(m) = &self.message {
            msg.push_str(": ");
            msg.push_str(m);
        }
        msg
    }
}

/// Why a request was decided: the parts of [`Decision::explanation`]'s text,
/// written out only when it is shown. Most requests are allowed, and an
/// allowed request's explanation is neither logged (below debug) nor sent:
/// formatting it for every request cost ~1,500 instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `impersonating user "jane": ` when an impersonation check decided;
    /// empty for the request itself.
    prefix: String,
    why: Why,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    /// `rule "NAME" (ACTION)`.
    Rule { name: String, action: Action },
    /// A discovery request no rule matched: allowed.
    Discovery,
    /// No rule matched: `defaultAction` decided.
    NoRule { default: Action },
    /// Text written when decided (MCP tool calls).
    Text(String),
}

impl Explanation {
    fn text(text: String) -> Self {
        Explanation {
            prefix: String::new(),
            why: Why::Text(text),
        }
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)?;
        match &self.why {
            Why::Rule { name, action } => write!(f, "rule {name:?} ({action})"),
            Why::Discovery => f.write_str("discovery request, no rule matched (allowed)"),
            Why::NoRule { default } => write!(f, "no rule matched, defaultAction {default}"),
            Why::Text(t) => f.write_str(t),
        }
    }
}

impl serde::Serialize for Explanation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One judgement inside an evaluation (the request itself, or one
/// impersonation check).
struct Verdict {
    action: Action,
    rule: Option<String>,
    message: Option<String>,
    explanation: Explanation,
}

/// Decide a request without its bodies (`object` and `oldObject` are null).
/// Pure; see the module docs for the semantics.
pub fn evaluate(
    policy: &Policy,
    attrs: &RequestAttributes,
    imp: &Impersonation,
    who: &Identity,
) -> Decision {
    evaluate_with(policy, attrs, imp, who, Bodies::default())
}

/// Decide a request with the bodies [`Policy::body_needed`] asked for.
/// Impersonation checks carry no bodies.
pub fn evaluate_with(
    policy: &Policy,
    attrs: &RequestAttributes,
    imp: &Impersonation,
    who: &Identity,
    bodies: Bodies<'_>,
) -> Decision {
    let mut errors = Vec::new();
    let mut verdict = judge(policy, attrs, who, bodies, &mut errors, "");
    for (what, check) in impersonation_checks(imp) {
        let v = judge(
            policy,
            &check,
            who,
            Bodies::default(),
            &mut errors,
            &format!("impersonating {what}: "),
        );
        // The most restrictive wins; on a tie the earlier (the request) stays.
        if v.action.severity() > verdict.action.severity() {
            verdict = v;
        }
    }
    Decision {
        action: verdict.action,
        rule: verdict.rule,
        message: verdict.message,
        enforced: policy.mode == Mode::Enforce,
        explanation: verdict.explanation,
        condition_errors: errors,
    }
}

fn judge(
    policy: &Policy,
    attrs: &RequestAttributes,
    who: &Identity,
    bodies: Bodies<'_>,
    errors: &mut Vec<ConditionFailure>,
    prefix: &str,
) -> Verdict {
    let mut best: Option<&Rule> = None;
    let mut vars: Option<Result<condition::Vars, condition::EvalError>> = None;
    for rule in &policy.rules {
        if !rule.matches(attrs, who) {
            continue;
        }
        // A rule that cannot outrank the best so far decides nothing: its
        // condition is not evaluated (nor its failure counted).
        if best.is_some_and(|b| rule.action.severity() <= b.action.severity()) {
            continue;
        }
        if let Some(c) = &rule.when {
            // The bodies become CEL values once per request, at the first
            // condition that runs.
            let prepared = vars.get_or_insert_with(|| {
                condition::Vars::new(&condition::Input {
                    attrs,
                    user: &who.username,
                    groups: &who.groups,
                    object: bodies.object.filter(|_| has_object(&attrs.verb)),
                    old_object: bodies.old_object.filter(|_| has_old_object(&attrs.verb)),
                })
            });
            let result = match prepared {
                Ok(v) => c.eval_vars(v),
                Err(e) => Err(e.clone()),
            };
            let holds = match result {
                Ok(b) => b,
                Err(e) => {
                    errors.push(ConditionFailure {
                        rule: rule.name.clone(),
                        error: e.to_string(),
                    });
                    // Fail closed: a broken condition never widens access.
                    rule.action != Action::Allow
                }
            };
            if !holds {
                continue;
            }
        }
        // Strictly greater (checked above): the first rule of the winning
        // action decides.
        best = Some(rule);
    }
    let explain = |why| Explanation {
        prefix: prefix.to_string(),
        why,
    };
    match best {
        Some(rule) => Verdict {
            action: rule.action,
            rule: Some(rule.name.clone()),
            message: rule.message.clone(),
            explanation: explain(Why::Rule {
                name: rule.name.clone(),
                action: rule.action,
            }),
        },
        None if attrs.is_discovery() => Verdict {
            action: Action::Allow,
            rule: None,
            message: None,
            explanation: explain(Why::Discovery),
        },
        None => Verdict {
            action: policy.default_action,
            rule: None,
            message: None,
            explanation: explain(Why::NoRule {
                default: policy.default_action,
            }),
        },
    }
}

/// Decide an MCP tool call: the `tools:` rules whose globs match `tool`
/// (deny beats approve beats allow, whatever their order). A call no tool
/// rule matches is allowed: tool rules narrow what the agent may call, and
/// what each tool then does with the API is judged by the API rules.
/// `defaultAction` governs API requests only.
pub fn evaluate_tool(policy: &Policy, tool: &str, who: &Identity) -> Decision {
    let mut best: Option<&Rule> = None;
    for rule in policy.rules.iter().filter(|r| r.matches_tool(tool, who)) {
        if best.is_none_or(|b| rule.action.severity() > b.action.severity()) {
            best = Some(rule);
        }
    }
    let (action, rule, message, explanation) = match best {
        Some(r) => (
            r.action,
            Some(r.name.clone()),
            r.message.clone(),
            Explanation::text(format!("tool {tool:?}: rule {:?} ({})", r.name, r.action)),
        ),
        None => (
            Action::Allow,
            None,
            None,
            Explanation::text(format!("tool {tool:?}: no tools rule matched (allowed)")),
        ),
    };
    Decision {
        action,
        rule,
        message,
        enforced: policy.mode == Mode::Enforce,
        explanation,
        condition_errors: Vec::new(),
    }
}

/// The RBAC checks kube-apiserver's impersonation filter makes, as request
/// attributes, each with a description for messages.
pub fn impersonation_checks(imp: &Impersonation) -> Vec<(String, RequestAttributes)> {
    let check = |group: &str, resource: &str, sub: &str, ns: &str, name: &str| RequestAttributes {
        is_resource_request: true,
        verb: "impersonate".to_string(),
        api_prefix: if group.is_empty() { "api" } else { "apis" }.to_string(),
        api_group: group.to_string(),
        api_version: "v1".to_string(),
        namespace: ns.to_string(),
        resource: resource.to_string(),
        subresource: sub.to_string(),
        name: name.to_string(),
        ..RequestAttributes::default()
    };
    let mut out = Vec::new();
    if let Some(user) = &imp.user {
        let sa = user
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'));
        match sa {
            Some((ns, name)) => out.push((
                format!("service account {ns}/{name}"),
                check("", "serviceaccounts", "", ns, name),
            )),
            None => out.push((format!("user {user:?}"), check("", "users", "", "", user))),
        }
    }
    for g in &imp.groups {
        out.push((format!("group {g:?}"), check("", "groups", "", "", g)));
    }
    if let Some(uid) = &imp.uid {
        out.push((
            format!("uid {uid:?}"),
            check("authentication.k8s.io", "uids", "", "", uid),
        ));
    }
    for (k, v) in &imp.extra {
        out.push((
            format!("user extra {k}={v:?}"),
            check("authentication.k8s.io", "userextras", k, "", v),
        ));
    }
    out
}

impl Rule {
    /// Whether this rule's attributes (everything but `when`) match the
    /// request made by `who`.
    pub fn matches(&self, attrs: &RequestAttributes, who: &Identity) -> bool {
        if self.is_tool_rule() {
            return false;
        }
        if !self.verbs.iter().any(|v| v == "*" || *v == attrs.verb) {
            return false;
        }
        if !self.service_accounts.is_empty() {
            let Some(sa) = who.service_account_ref() else {
                return false;
            };
            if !self.service_account_globs.iter().any(|g| g.is_match(&sa)) {
                return false;
            }
        }
        if !self.end_user_matches(who.end_user.as_ref()) {
            return false;
        }
        if attrs.is_resource_request {
            !self.resources.is_empty()
                && self
                    .api_groups
                    .iter()
                    .any(|g| g == "*" || *g == attrs.api_group)
                && self.resources.iter().any(|r| resource_matches(r, attrs))
                && self.namespace_matches(&attrs.namespace)
                && self.resource_name_matches(&attrs.name)
        } else {
            self.non_resource_urls
                .iter()
                .any(|u| non_resource_url_matches(u, &attrs.path))
        }
    }

    /// `users` and `groups`: each, when given, needs an end user it
    /// matches; a request without an end user matches neither.
    fn end_user_matches(&self, end_user: Option<&crate::enduser::EndUser>) -> bool {
        if self.users.is_empty() && self.groups.is_empty() {
            return true;
        }
        let Some(u) = end_user else {
            return false;
        };
        (self.users.is_empty() || self.user_globs.iter().any(|g| g.is_match(&u.username)))
            && (self.groups.is_empty()
                || u.groups
                    .iter()
                    .any(|group| self.group_globs.iter().any(|g| g.is_match(group))))
    }

    /// Whether this is a `tools:` rule (it judges MCP tool calls only).
    pub fn is_tool_rule(&self) -> bool {
        !self.tools.is_empty()
    }

    /// Whether this `tools:` rule matches a call of `tool` made by `who`'s pod
    /// (and, with `users`/`groups`, by a matching end user).
    pub fn matches_tool(&self, tool: &str, who: &Identity) -> bool {
        if !self.is_tool_rule() || !self.tool_globs.iter().any(|g| g.is_match(tool)) {
            return false;
        }
        if !self.end_user_matches(who.end_user.as_ref()) {
            return false;
        }
        if self.service_accounts.is_empty() {
            return true;
        }
        who.service_account_ref()
            .is_some_and(|sa| self.service_account_globs.iter().any(|g| g.is_match(&sa)))
    }

    fn namespace_matches(&self, ns: &str) -> bool {
        if self.namespaces.is_empty() {
            return true;
        }
        if ns.is_empty() {
            // No namespace: a cluster-scoped object, or a list, watch or
            // deletecollection across all namespaces (the path does not say
            // which). Allow rules need "" or "*" to cover it; deny and
            // approve rules for any namespace cover it too, since it can
            // reach objects in theirs (`kubectl get secrets -A` must not get
            // around a rule denying secrets in prod-*).
            return self.namespaces.iter().any(|p| p.is_empty() || p == "*")
                || self.action != Action::Allow;
        }
        self.namespace_globs
            .iter()
            .any(|(p, g)| !p.is_empty() && g.is_match(ns))
    }

    fn resource_name_matches(&self, name: &str) -> bool {
        if self.resource_names.is_empty() {
            return true;
        }
        // As in RBAC, a rule with resourceNames never matches a request
        // without a name (list, create, deletecollection).
        !name.is_empty() && self.resource_name_globs.iter().any(|g| g.is_match(name))
    }
}

/// RBAC's `ResourceMatches`, plus `resource/*` for every subresource of one resource.
fn resource_matches(rule: &str, attrs: &RequestAttributes) -> bool {
    if rule == "*" {
        return true;
    }
    let sub = attrs.subresource.as_str();
    match rule.split_once('/') {
        None => sub.is_empty() && rule == attrs.resource,
        Some((r, s)) => {
            !sub.is_empty() && (r == "*" || r == attrs.resource) && (s == "*" || s == sub)
        }
    }
}

/// RBAC's `NonResourceURLMatches`: `*`, exact, or prefix with a trailing `*`.
fn non_resource_url_matches(rule: &str, path: &str) -> bool {
    if rule == "*" || rule == path {
        return true;
    }
    match rule.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => false,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod examples_tests;
