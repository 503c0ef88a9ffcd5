//! `mcp-warden-sidecar policy ...`: offline policy tools for platform engineers.
//!
//! - `policy check FILE...` validates policy files and prints every error
//!   with its file, line and field (exit 1), or a summary (exit 0) and the
//!   lints ([`policy::lint`]) as warnings, which do not change the exit code.
//! - `policy eval FILE 'METHOD /path?query' [--service-account NS/NAME]
//!   [--as USER] [--as-group GROUP]` prints the decision the sidecar would
//!   make and the rule that made it — what `kubectl auth can-i` is for RBAC.
//!
//! - `policy learn EVENTS... [--rbac]` writes the smallest policy (or, with
//!   `--rbac`, the RBAC) that allows what a recording shows.
//! - `policy replay CANDIDATE EVENTS... [--current POLICY]` lists the recorded
//!   requests whose decision the candidate changes; exit 1 when an allowed
//!   request would be denied or held.
//!
//! All use exactly the parser and evaluator the sidecar runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use mcp_warden_shared::attrs::{Impersonation, RequestAttributes, parse_request};
use mcp_warden_shared::enduser::EndUser;
use mcp_warden_shared::identity::Identity;
use mcp_warden_shared::policy::learn::LearnOptions;
use mcp_warden_shared::policy::recorded::{self, Recorded};
use mcp_warden_shared::policy::{self, Action, Bodies, Mode, Policy, evaluate_with};

/// `mcp-warden-sidecar policy <COMMAND>`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The policy tools.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: print every error with its line and field.
    Check {
        /// Policy files (YAML, as in the ConfigMap key `policy.yaml`).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show the decision for one request, and the rule that makes it.
    Eval {
        /// Policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The request line, e.g. 'DELETE /api/v1/namespaces/prod/pods/web-0'
        /// or 'GET /api/v1/pods?watch=true'.
        #[arg(value_name = "REQUEST")]
        request: String,
        /// The pod's service account, as NAMESPACE/NAME (for rules with
        /// `serviceAccounts`). Without it, no service account is assumed.
        #[arg(long, value_name = "NS/NAME")]
        service_account: Option<String>,
        /// Judge the request as if it carried `Impersonate-User: USER`
        /// (what `kubectl --as=USER` sends).
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        /// Add `Impersonate-Group: GROUP` (repeatable; needs --as).
        #[arg(long = "as-group", value_name = "GROUP", requires = "as_user")]
        as_groups: Vec<String>,
        /// The end user the request is made for, as the sidecar names them
        /// from their token (for rules with `users`/`groups`). Without it,
        /// the request is the app's own and such rules do not match.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// A group of the end user (repeatable; needs --user).
        #[arg(long = "group", value_name = "GROUP", requires = "user")]
        groups: Vec<String>,
        /// The request body for `when:` conditions (`object`): JSON, YAML
        /// (`.yaml`/`.yml`) or Kubernetes protobuf, as the client sends it.
        #[arg(long, value_name = "FILE")]
        object: Option<PathBuf>,
        /// The live object for `when:` conditions (`oldObject`), same formats.
        #[arg(long, value_name = "FILE")]
        old_object: Option<PathBuf>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Write the smallest policy that allows the recorded requests.
    Learn {
        /// Recorded events: EventList (JSON) or NDJSON files, as the
        /// collector stores them.
        #[arg(required = true, value_name = "EVENTS")]
        events: Vec<PathBuf>,
        /// Print the matching Role/ClusterRole and bindings instead of the policy.
        #[arg(long)]
        rbac: bool,
        /// Name of the RBAC objects (with --rbac).
        #[arg(long, value_name = "NAME", default_value = "mcp-warden-learned")]
        rbac_name: String,
        /// Most object names a rule lists in resourceNames.
        #[arg(long, value_name = "N", default_value_t = 5)]
        max_names: usize,
        /// Learn denied requests as allowed too.
        #[arg(long)]
        include_denied: bool,
        /// Write `mode: enforce` (the default is `mode: audit`).
        #[arg(long)]
        enforce: bool,
        /// Write to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show the recorded requests whose decision a candidate policy changes.
    Replay {
        /// The candidate policy.
        #[arg(value_name = "CANDIDATE")]
        candidate: PathBuf,
        /// Recorded events: EventList (JSON) or NDJSON files.
        #[arg(required = true, value_name = "EVENTS")]
        events: Vec<PathBuf>,
        /// Judge "now" with this policy instead of the decisions recorded
        /// in the events.
        #[arg(long, value_name = "POLICY")]
        current: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
        format: ReplayFormat,
    },
}

/// Output format of `policy replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// Human-readable groups.
    Text,
    /// One JSON report.
    Json,
}

/// Output format of `policy eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object (decision, request attributes, policy hash).
    Json,
}

/// Run a policy command, printing to stdout/stderr. Returns the exit code:
/// 0 when the files are valid (check) or a decision was printed (eval),
/// 1 when a policy is invalid or the request line cannot be parsed; for
/// learn 0 or 1 (unreadable events); for replay 0 (no allowed request
/// denied or held), 1 (some would be), 2 (unreadable input).
pub fn run(cmd: PolicyCommand) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(cmd, &mut stdout.lock(), &mut stderr.lock())
}

/// [`run`] with explicit output streams (for tests).
pub fn run_with(
    cmd: PolicyCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    match cmd {
        PolicyCommand::Check { files } => check(&files, out, err),
        PolicyCommand::Eval {
            file,
            request,
            service_account,
            as_user,
            as_groups,
            user,
            groups,
            object,
            old_object,
            output,
        } => eval(
            &file,
            &request,
            service_account.as_deref(),
            user.map(|u| EndUser::named(u, groups)),
            as_user,
            as_groups,
            [object.as_deref(), old_object.as_deref()],
            output,
            out,
            err,
        ),
        PolicyCommand::Learn {
            events,
            rbac,
            rbac_name,
            max_names,
            include_denied,
            enforce,
            out: file,
        } => {
            let opts = LearnOptions {
                max_names,
                include_denied,
                mode: if enforce { Mode::Enforce } else { Mode::Audit },
            };
            learn(
                &events,
                &opts,
                rbac.then_some(rbac_name.as_str()),
                file.as_deref(),
                out,
                err,
            )
        }
        PolicyCommand::Replay {
            candidate,
            events,
            current,
            format,
        } => replay_cmd(&candidate, &events, current.as_deref(), format, out, err),
    }
}

/// Read every events file; on failure print why and return `None`.
fn read_recorded(files: &[PathBuf], err: &mut dyn Write) -> anyhow::Result<Option<Vec<Recorded>>> {
    let mut events = Vec::new();
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                writeln!(err, "{}: cannot read: {e}", f.display())?;
                return Ok(None);
            }
        };
        match recorded::parse_events(&bytes) {
            Ok(mut e) => events.append(&mut e),
            Err(e) => {
                writeln!(err, "{}: {e}", f.display())?;
                return Ok(None);
            }
        }
    }
    let (reqs, skipped) = recorded::requests(&events);
    for s in &skipped {
        writeln!(
            err,
            "skipped {} ({}): {}",
            s.audit_id, s.request_uri, s.reason
        )?;
    }
    Ok(Some(reqs))
}

fn learn(
    files: &[PathBuf],
    opts: &LearnOptions,
    rbac: Option<&str>,
    file: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let Some(reqs) = read_recorded(files, err)? else {
        return Ok(1);
    };
    let learned = policy::learn::learn(&reqs, opts);
    let text = match rbac {
        Some(name) => learned.rbac_yaml(name),
        None => learned.policy_yaml(),
    };
    match file {
        Some(f) => {
            if let Err(e) = std::fs::write(f, &text) {
                writeln!(err, "{}: cannot write: {e}", f.display())?;
                return Ok(1);
            }
        }
        None => out.write_all(text.as_bytes())?,
    }
    writeln!(
        err,
        "learned {} rules from {} requests ({} denied left out, {} discovery)",
        learned.rules.len(),
        learned.learned,
        learned.denied_left_out,
        learned.discovery
    )?;
    Ok(0)
}

fn replay_cmd(
    candidate: &Path,
    files: &[PathBuf],
    current: Option<&Path>,
    format: ReplayFormat,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let Some(cand) = load(candidate, err)? else {
        return Ok(2);
    };
    let cur = match current {
        Some(c) => match load(c, err)? {
            Some(p) => Some(p),
            None => return Ok(2),
        },
        None => None,
    };
    let Some(reqs) = read_recorded(files, err)? else {
        return Ok(2);
    };
    let report = policy::replay::replay(&cand, cur.as_ref(), &reqs);
    let code = i32::from(report.breaks_allowed);
    if format == ReplayFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(code);
    }
    let changed: usize = report.changes.iter().map(|c| c.count).sum();
    writeln!(
        out,
        "replayed {} of {} requests against {} (now: {}): {changed} would change, {} unchanged",
        report.replayed,
        report.requests,
        candidate.display(),
        current
            .map(|c| format!("policy {}", c.display()))
            .unwrap_or_else(|| "the recorded decisions".into()),
        report.unchanged,
    )?;
    let rule = |r: &str| {
        if r.is_empty() {
            "(default)".to_string()
        } else {
            format!("rule {r:?}")
        }
    };
    for c in &report.changes {
        let mut what = format!("{} {}", c.verb, c.resource);
        if !c.api_group.is_empty() {
            what = format!("{} {}.{}", c.verb, c.resource, c.api_group);
        }
        if !c.namespace.is_empty() {
            what.push_str(&format!(" in {}", c.namespace));
        }
        writeln!(
            out,
            "{} -> {}  {:>4}  {what}  (now {}, then {})",
            c.from,
            c.to,
            c.count,
            rule(&c.rule_now),
            rule(&c.rule_then)
        )?;
        for r in &c.requests {
            writeln!(out, "    {} {}", r.audit_id, r.request_uri)?;
        }
    }
    if !report.not_replayable.is_empty() {
        writeln!(out, "not replayable: {}", report.not_replayable.len())?;
        for n in &report.not_replayable {
            writeln!(out, "    {} {}: {}", n.audit_id, n.request_uri, n.reason)?;
        }
    }
    if report.no_decision > 0 {
        writeln!(
            out,
            "{} requests carry no recorded decision (give --current to judge them)",
            report.no_decision
        )?;
    }
    if report.breaks_allowed {
        writeln!(out, "FAIL: requests allowed now would be denied or held")?;
    }
    Ok(code)
}

/// Read and parse; on failure print the errors and return `None`.
fn load(path: &Path, err: &mut dyn Write) -> anyhow::Result<Option<Policy>> {
    let name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            writeln!(err, "{name}: cannot read: {e}")?;
            return Ok(None);
        }
    };
    match Policy::parse_bytes(&name, &bytes) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            for line in e.lines() {
                writeln!(err, "{line}")?;
            }
            let n = e.problems.len();
            writeln!(
                err,
                "{name}: invalid policy: {n} error{}",
                if n == 1 { "" } else { "s" }
            )?;
            Ok(None)
        }
    }
}

fn check(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let mut code = 0;
    for f in files {
        let Some(p) = load(f, err)? else {
            code = 1;
            continue;
        };
        let count = |a: Action| p.rules.iter().filter(|r| r.action == a).count();
        writeln!(
            out,
            "{}: valid policy (sha256 {}): mode {}, defaultAction {}, {} rules ({} allow, {} deny, {} approve), {} masking rules, {} detectors, recording {:?}",
            f.display(),
            p.short_hash(),
            p.mode.as_str(),
            p.default_action,
            p.rules.len(),
            count(Action::Allow),
            count(Action::Deny),
            count(Action::Approve),
            p.masking.rules.len(),
            p.masking.detectors.len(),
            p.recording.level,
        )?;
        // Warnings do not change the exit code: the policy is valid.
        for l in policy::lint::lint(&p) {
            writeln!(
                err,
                "{}:{}: warning: {} ({}): {}",
                f.display(),
                l.line,
                l.path,
                l.rule,
                l.message
            )?;
        }
    }
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
fn eval(
    file: &Path,
    request: &str,
    service_account: Option<&str>,
    end_user: Option<EndUser>,
    as_user: Option<String>,
    as_groups: Vec<String>,
    bodies: [Option<&Path>; 2],
    output: OutputFormat,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut read = Vec::new();
    for (flag, path) in ["--object", "--old-object"].into_iter().zip(bodies) {
        match path.map(read_body).transpose() {
            Ok(v) => read.push(v),
            Err(e) => {
                writeln!(err, "{flag}: {e}")?;
                return Ok(1);
            }
        }
    }
    let (object, old_object) = (read[0].take(), read[1].take());
    let mut who = match service_account {
        Some(sa) => match Identity::from_service_account_ref(sa) {
            Ok(id) => id,
            Err(e) => {
                writeln!(err, "--service-account: {e}")?;
                return Ok(1);
            }
        },
        None => Identity::default(),
    };
    who.end_user = end_user;
    let parts: Vec<&str> = request.split_whitespace().collect();
    let (method, target) = match parts.as_slice() {
        [m, t] => (*m, *t),
        _ => {
            writeln!(
                err,
                "REQUEST must be 'METHOD /path[?query]', e.g. 'DELETE /api/v1/namespaces/prod/pods/web-0'; got {request:?}"
            )?;
            return Ok(1);
        }
    };
    let attrs = match parse_request(method, target) {
        Ok(a) => a,
        Err(e) => {
            writeln!(err, "REQUEST {request:?}: {e} (the sidecar answers 400)")?;
            return Ok(1);
        }
    };
    let Some(policy) = load(file, err)? else {
        return Ok(1);
    };
    let imp = Impersonation {
        user: as_user,
        groups: as_groups,
        ..Impersonation::default()
    };
    let d = evaluate_with(
        &policy,
        &attrs,
        &imp,
        &who,
        Bodies {
            object: object.as_ref(),
            old_object: old_object.as_ref(),
        },
    );

    if output == OutputFormat::Json {
        let v = serde_json::json!({
            "decision": d,
            "blocked": d.blocks(),
            "request": attrs,
            "impersonation": imp,
            "serviceAccount": who.service_account_ref(),
            "endUser": who.end_user.as_ref().map(|u| serde_json::json!({"username": u.username, "groups": u.groups})),
            "policy": {"file": file.display().to_string(), "sha256": policy.hash(), "mode": policy.mode.as_str()},
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(0);
    }

    writeln!(out, "decision: {}", d.action)?;
    match &d.rule {
        Some(r) => {
            let line = policy.rule(r).map(|r| r.line).unwrap_or(0);
            writeln!(out, "rule:     {r} ({}:{line})", file.display())?;
        }
        None => writeln!(out, "rule:     (none)")?,
    }
    if let Some(m) = &d.message {
        writeln!(out, "message:  {m}")?;
    }
    writeln!(out, "why:      {}", d.explanation)?;
    for f in &d.condition_errors {
        writeln!(
            out,
            "error:    when of rule {:?} failed ({}): counted as {}",
            f.rule,
            f.error,
            if policy
                .rule(&f.rule)
                .is_some_and(|r| r.action == Action::Allow)
            {
                "not matching (allow rules fail closed)"
            } else {
                "matching (deny and approve rules fail closed)"
            }
        )?;
    }
    let effect = match (policy.mode, d.action) {
        (Mode::Audit, _) => {
            "not enforced (mode: audit): the request would go through and the decision is recorded"
        }
        (Mode::Enforce, Action::Allow) => "forwarded to the API server",
        (Mode::Enforce, Action::Deny) => "refused with 403 Forbidden",
        (Mode::Enforce, Action::Approve) => "held until a human approves it",
    };
    writeln!(out, "effect:   {effect}")?;
    writeln!(out, "request:  {}", describe(&attrs))?;
    if !imp.is_empty() {
        writeln!(
            out,
            "as:       impersonating user {:?}{}",
            imp.user.as_deref().unwrap_or_default(),
            if imp.groups.is_empty() {
                String::new()
            } else {
                format!(", groups {:?}", imp.groups)
            }
        )?;
    }
    writeln!(
        out,
        "by:       {}",
        who.service_account_ref()
            .map(|s| format!("service account {s}"))
            .unwrap_or_else(|| {
                "(no service account given: rules with serviceAccounts do not match)".to_string()
            })
    )?;
    writeln!(
        out,
        "for:      {}",
        match &who.end_user {
            Some(u) if u.groups.is_empty() => format!("end user {:?}", u.username),
            Some(u) => format!("end user {:?}, groups {:?}", u.username, u.groups),
            None => "(no end user given: rules with users or groups do not match)".to_string(),
        }
    )?;
    writeln!(
        out,
        "policy:   {} (sha256 {})",
        file.display(),
        policy.short_hash()
    )?;
    Ok(0)
}

/// A body file as JSON: YAML by its extension, else JSON or protobuf (by
/// its magic bytes), decoded as the sidecar decodes request bodies.
pub(crate) fn read_body(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let ct = yaml.then_some("application/yaml");
    mcp_warden_shared::body::to_json(ct, &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn describe(a: &RequestAttributes) -> String {
    if !a.is_resource_request {
        return format!("verb={} path={} (non-resource URL)", a.verb, a.path);
    }
    let mut s = format!(
        "verb={} apiGroup={:?} version={} resource={}",
        a.verb,
        a.api_group,
        a.api_version,
        a.resource_with_subresource()
    );
    if !a.namespace.is_empty() {
        s.push_str(&format!(" namespace={}", a.namespace));
    }
    if !a.name.is_empty() {
        s.push_str(&format!(" name={}", a.name));
    }
    if let Some(l) = &a.label_selector {
        s.push_str(&format!(" labelSelector={l:?}"));
    }
    if let Some(f) = &a.field_selector {
        s.push_str(&format!(" fieldSelector={f:?}"));
    }
    if a.dry_run {
        s.push_str(" dryRun=All");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/policies")
            .join(name)
    }

    /// Parse a command line the way the binary does, and run it.
    fn run_args(args: &[&str]) -> (i32, String, String) {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: PolicyCommand,
        }
        let cli =
            Cli::try_parse_from(std::iter::once("policy").chain(args.iter().copied())).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(cli.cmd, &mut out, &mut err).unwrap();
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn check_valid_example() {
        let f = fixture("example.yaml");
        let (code, out, err) = run_args(&["check", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("valid policy"), "{out}");
        assert!(
            out.contains("3 rules (1 allow, 1 deny, 1 approve)"),
            "{out}"
        );
        assert!(err.is_empty());
    }

    #[test]
    fn check_prints_every_error_with_its_line() {
        let f = fixture("bad-many-errors.yaml");
        let (code, out, err) = run_args(&["check", f.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(out.is_empty());
        let name = f.display().to_string();
        for (line, field) in [
            (3, "mode"),
            (7, "rules[0].verbs[1]"),
            (9, "rules[0].namespaces[0]"),
            (11, "rules[1].action"),
            (14, "rules[1].colour"),
            (16, "recording.level"),
        ] {
            let want = format!("{name}:{line}:");
            assert!(
                err.lines()
                    .any(|l| l.starts_with(&want) && l.contains(field)),
                "no line {want} {field} in:\n{err}"
            );
        }
        assert!(err.contains("invalid policy: 6 errors"), "{err}");
    }

    #[test]
    fn check_every_bad_fixture_fails_and_mixed_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policies");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_str().unwrap().starts_with("bad-") {
                n += 1;
                let (code, _, err) = run_args(&["check", p.to_str().unwrap()]);
                assert_eq!(code, 1, "{}", p.display());
                // Every error line names the file and a line number.
                let prefix = format!("{}:", p.display());
                let first = err.lines().next().unwrap();
                assert!(first.starts_with(&prefix), "{first}");
                let line_no = first[prefix.len()..].split(':').next().unwrap();
                assert!(line_no.parse::<u64>().unwrap() >= 1, "{first}");
            }
        }
        assert!(n >= 15);
        let good = fixture("example.yaml");
        let bad = fixture("bad-verb.yaml");
        let (code, out, err) = run_args(&["check", good.to_str().unwrap(), bad.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(out.contains("valid policy") && err.contains("unknown verb"));
        let (code, _, err) = run_args(&["check", "/nonexistent/policy.yaml"]);
        assert_eq!(code, 1);
        assert!(err.contains("cannot read"));
    }

    #[test]
    fn eval_prints_decision_rule_and_message() {
        let f = fixture("example.yaml");
        let f = f.to_str().unwrap();
        let (code, out, _) = run_args(&["eval", f, "DELETE /api/v1/namespaces/prod/pods/web-0"]);
        assert_eq!(code, 0);
        assert!(out.starts_with("decision: approve\n"), "{out}");
        assert!(out.contains("rule:     deletes-need-a-human ("), "{out}");
        assert!(out.contains("example.yaml:19)"), "{out}");
        assert!(out.contains("held until a human approves it"), "{out}");

        let (_, out, _) = run_args(&[
            "eval",
            f,
            "GET /api/v1/namespaces/prod-eu/secrets/db",
            "--service-account",
            "agents/mcp",
        ]);
        assert!(out.starts_with("decision: deny\n"), "{out}");
        assert!(
            out.contains("message:  secrets in production are off limits"),
            "{out}"
        );
        assert!(
            out.contains("by:       service account agents/mcp"),
            "{out}"
        );

        let (_, out, _) = run_args(&["eval", f, "POST /api/v1/namespaces/default/pods"]);
        assert!(
            out.starts_with("decision: deny\nrule:     (none)\n"),
            "{out}"
        );
        assert!(out.contains("no rule matched, defaultAction deny"), "{out}");

        // Impersonation is judged: the example policy allows no impersonate verb.
        let (_, out, _) = run_args(&[
            "eval",
            f,
            "GET /api/v1/pods",
            "--as",
            "jane",
            "--as-group",
            "devs",
        ]);
        assert!(out.starts_with("decision: deny\n"), "{out}");
        assert!(out.contains("impersonating user \"jane\""), "{out}");
    }

    #[test]
    fn eval_judges_for_an_end_user_with_user_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.yaml");
        std::fs::write(
            &f,
            "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n  \
             - {name: sre-secrets, action: allow, verbs: [get], resources: [secrets], groups: [\"oidc:sre\"]}\n",
        )
        .unwrap();
        let f = f.to_str().unwrap();
        let req = "GET /api/v1/namespaces/x/secrets/s";
        let (code, out, _) = run_args(&["eval", f, req, "--user", "bob", "--group", "oidc:sre"]);
        assert_eq!(code, 0);
        assert!(
            out.starts_with("decision: allow\nrule:     sre-secrets"),
            "{out}"
        );
        assert!(
            out.contains("for:      end user \"bob\", groups [\"oidc:sre\"]"),
            "{out}"
        );
        let (_, out, _) = run_args(&["eval", f, req, "--user", "bob"]);
        assert!(out.starts_with("decision: deny\n"), "{out}");
        let (_, out, _) = run_args(&["eval", f, req]);
        assert!(out.starts_with("decision: deny\n"), "{out}");
        assert!(out.contains("(no end user given"), "{out}");
        let (_, out, _) = run_args(&[
            "eval", f, req, "--user", "bob", "--group", "oidc:sre", "-o", "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["endUser"],
            serde_json::json!({"username": "bob", "groups": ["oidc:sre"]})
        );
        // --group needs --user.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            _cmd: PolicyCommand,
        }
        let parsed =
            <Cli as clap::Parser>::try_parse_from(["policy", "eval", f, req, "--group", "g"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn eval_json_and_errors() {
        let f = fixture("example.yaml");
        let f = f.to_str().unwrap();
        let (code, out, _) = run_args(&[
            "eval",
            f,
            "GET /api/v1/namespaces/default/pods?watch=1",
            "-o",
            "json",
        ]);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["decision"]["action"], "allow");
        assert_eq!(v["decision"]["rule"], "read-everything");
        assert_eq!(v["request"]["verb"], "watch");
        assert_eq!(v["blocked"], false);

        let (code, _, err) = run_args(&["eval", f, "GET /api/v1/namespaces/default%2Fpods"]);
        assert_eq!(code, 1);
        assert!(err.contains("not canonical"), "{err}");
        let (code, _, err) = run_args(&["eval", f, "/api/v1/pods"]);
        assert_eq!(code, 1);
        assert!(err.contains("METHOD /path"), "{err}");
        let (code, _, err) =
            run_args(&["eval", f, "GET /api/v1/pods", "--service-account", "nope"]);
        assert_eq!(code, 1);
        assert!(err.contains("--service-account"), "{err}");
        let bad = fixture("bad-kind.yaml");
        let (code, _, err) = run_args(&["eval", bad.to_str().unwrap(), "GET /api/v1/pods"]);
        assert_eq!(code, 1);
        assert!(err.contains(":2:") && err.contains("kind"), "{err}");
    }

    /// The example and the `policy eval` transcript in docs/policy.md are
    /// what the tool really does.
    #[test]
    fn docs_example_and_transcript_are_real() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md"),
        )
        .unwrap();
        let example = doc
            .split("```yaml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, example).unwrap();
        let transcript = doc
            .split("$ mcp-warden-sidecar policy eval policy.yaml 'DELETE")
            .nth(1)
            .unwrap();
        let transcript: Vec<&str> = transcript
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        let (code, out, err) = run_args(&[
            "eval",
            file.to_str().unwrap(),
            "DELETE /api/v1/namespaces/prod/pods/web-0",
        ]);
        assert_eq!(code, 0, "{err}");
        let out = out.replace(&file.display().to_string(), "policy.yaml");
        assert_eq!(out.lines().collect::<Vec<_>>(), transcript);
    }

    /// The policy inside `manifests/examples/policy-conditions.yaml`, as a file.
    fn conditions_example(dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../manifests/examples/policy-conditions.yaml"),
        )
        .unwrap();
        let cm: serde_json::Value = yaml_to_json(&text);
        let file = dir.join("policy.yaml");
        std::fs::write(&file, cm["data"]["policy.yaml"].as_str().unwrap()).unwrap();
        file
    }

    /// The ConfigMap as JSON, through the body decoder the CLI uses.
    fn yaml_to_json(text: &str) -> serde_json::Value {
        mcp_warden_shared::body::to_json(Some("application/yaml"), text.as_bytes()).unwrap()
    }

    #[test]
    fn eval_with_object_and_old_object() {
        let dir = tempfile::tempdir().unwrap();
        let policy = conditions_example(dir.path());
        let policy = policy.to_str().unwrap();
        let pod = dir.path().join("pod.yaml");
        std::fs::write(
            &pod,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: a\n    image: registry.example.com/a:1\n    securityContext: {privileged: true}\n",
        )
        .unwrap();
        let (code, out, err) = run_args(&[
            "eval",
            policy,
            "POST /api/v1/namespaces/shop/pods",
            "--object",
            pod.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with("decision: deny\nrule:     no-privileged-containers"),
            "{out}"
        );

        let live = dir.path().join("live.json");
        std::fs::write(
            &live,
            r#"{"metadata":{"name":"s","labels":{"mcp-warden.io/protected":"yes"}}}"#,
        )
        .unwrap();
        let path = "DELETE /api/v1/namespaces/shop/configmaps/s";
        let (_, out, _) = run_args(&["eval", policy, path, "--old-object", live.to_str().unwrap()]);
        assert!(
            out.starts_with("decision: deny\nrule:     protected-objects-stay"),
            "{out}"
        );
        // Without the live object the condition fails, and fails closed.
        let (_, out, _) = run_args(&["eval", policy, path]);
        assert!(out.starts_with("decision: deny\n"), "{out}");
        assert!(
            out.contains("error:    when of rule \"protected-objects-stay\" failed"),
            "{out}"
        );
        let (_, out, _) = run_args(&["eval", policy, path, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["decision"]["conditionErrors"][0]["rule"],
            "protected-objects-stay"
        );

        let (code, _, err) = run_args(&["eval", policy, path, "--object", "/nonexistent.json"]);
        assert_eq!(code, 1);
        assert!(err.starts_with("--object: cannot read"), "{err}");
    }

    /// NDJSON events of a small session, as the collector stores them.
    fn session_events(dir: &Path) -> PathBuf {
        let ev = |id: &str, verb: &str, uri: &str, decision: &str| {
            serde_json::json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
                "auditID": id, "stage": "ResponseComplete", "requestURI": uri, "verb": verb,
                "user": {"username": "system:serviceaccount:agents:mcp"},
                "responseStatus": {"metadata": {}, "code": 200},
                "requestReceivedTimestamp": "2026-12-06T10:00:00.000000Z",
                "stageTimestamp": "2026-12-06T10:00:00.100000Z",
                "annotations": {"mcp-warden.io/decision": decision, "mcp-warden.io/rule": "r"},
            })
            .to_string()
        };
        let lines = [
            ev("1", "list", "/api/v1/namespaces/shop/pods", "allow"),
            ev(
                "2",
                "get",
                "/api/v1/namespaces/shop/pods/web-0/log",
                "allow",
            ),
            ev("3", "delete", "/api/v1/namespaces/shop/pods/web-0", "allow"),
            ev("4", "get", "/api/v1/namespaces/shop/secrets/db", "deny"),
        ];
        let f = dir.join("events.ndjson");
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
        f
    }

    #[test]
    fn learn_then_replay_then_a_stricter_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let events = session_events(dir.path());
        let events = events.to_str().unwrap();
        let learned = dir.path().join("learned.yaml");
        let (code, out, err) = run_args(&["learn", events, "--out", learned.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.is_empty());
        assert!(
            err.contains("learned 3 rules from 3 requests (1 denied left out"),
            "{err}"
        );
        let text = std::fs::read_to_string(&learned).unwrap();
        assert!(text.contains("mode: audit"), "{text}");
        let (code, _, err) = run_args(&["check", learned.to_str().unwrap()]);
        assert_eq!((code, err.as_str()), (0, ""));

        let (code, out, _) = run_args(&["replay", learned.to_str().unwrap(), events]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("replayed 4 of 4 requests") && out.contains("0 would change, 4 unchanged"),
            "{out}"
        );

        // Stricter: no deletes.
        let strict = dir.path().join("strict.yaml");
        std::fs::write(&strict, text.replace("[\"delete\"]", "[\"get\"]")).unwrap();
        let (code, out, _) = run_args(&["replay", strict.to_str().unwrap(), events]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("allow -> deny     1  delete pods in shop"),
            "{out}"
        );
        assert!(
            out.contains("    3 /api/v1/namespaces/shop/pods/web-0\n"),
            "{out}"
        );
        let (code, out, _) = run_args(&[
            "replay",
            strict.to_str().unwrap(),
            events,
            "--format",
            "json",
        ]);
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["changes"][0]["requests"][0]["auditID"], "3");
        assert_eq!(v["breaksAllowed"], true);
        // --current: now judged by a policy.
        let (code, out, _) = run_args(&[
            "replay",
            strict.to_str().unwrap(),
            events,
            "--current",
            learned.to_str().unwrap(),
        ]);
        assert_eq!(code, 1);
        assert!(out.contains("(now: policy "), "{out}");

        let (code, out, _) = run_args(&["learn", events, "--rbac", "--rbac-name", "agent"]);
        assert_eq!(code, 0);
        assert!(
            out.contains("kind: Role\nmetadata:\n  name: \"agent\"\n  namespace: \"shop\""),
            "{out}"
        );

        let bad = dir.path().join("bad.ndjson");
        std::fs::write(&bad, "{}\n").unwrap();
        let (code, _, err) = run_args(&["learn", bad.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(err.contains("line 1: not an audit event"), "{err}");
        let (code, _, _) = run_args(&["replay", strict.to_str().unwrap(), bad.to_str().unwrap()]);
        assert_eq!(code, 2);
    }

    #[test]
    fn check_prints_lints_as_warnings_and_exits_zero() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.yaml");
        std::fs::write(
            &f,
            "apiVersion: mcp-warden.io/v1alpha1\nkind: Policy\nrules:\n  - name: all\n    action: allow\n    verbs: [\"*\"]\n    resources: [\"*\"]\n",
        )
        .unwrap();
        let (code, out, err) = run_args(&["check", f.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert!(out.contains("valid policy"));
        assert!(
            err.starts_with(&format!(
                "{}:4: warning: rules[0].verbs (all): allows",
                f.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn run_directly() {
        let cmd = PolicyCommand::Check {
            files: vec![fixture("example.yaml")],
        };
        assert_eq!(run(cmd).unwrap(), 0);
    }
}
