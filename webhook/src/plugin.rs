//! `kubectl mcp-warden`: the approver's side of just-in-time approvals.
//!
//! `approve|deny NAME [-n NS] [--reason TEXT]` updates the `status`
//! subresource of an `AccessRequest` with the user's own kubeconfig
//! credentials (RBAC: `update` on `accessrequests/status`); the admission
//! webhook stamps `decidedBy` from the authenticated user, so the plugin
//! never sends an identity. `pending [-n NS | -A]` lists what waits, with
//! the one-line summary of each preview; `show NAME [-n NS]` prints one
//! AccessRequest with its preview (the server's dry run) as a field diff.
//!
//! Grants: `grant --pod NAME | --service-account NAME --rule RULE --for 30m`
//! creates an AccessRequest with `spec.grant` and approves it in one step
//! (RBAC: `create` on accessrequests too); `approve NAME --for 30m` approves
//! a held request and grants its requester the same rule for the window;
//! `revoke NAME` ends a grant (Approved → Expired); `grants [-n NS | -A]`
//! lists the active ones with the time left.

use clap::{Parser, Subcommand};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use mcp_warden_shared::access_request::{
    AccessRequest, AccessRequestSpec, GrantSpec, Requester, State,
};
use mcp_warden_shared::grant::{self, Reading};
use std::path::PathBuf;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `kubectl mcp-warden`: approve or deny requests held by mcp-warden sidecars.
#[derive(Parser, Debug)]
#[command(name = "kubectl-mcp_warden", version, bin_name = "kubectl mcp-warden")]
pub struct PluginCli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, which may list
    /// several files, or ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Approve a pending AccessRequest: the held request goes through once.
    Approve(Decide),
    /// Deny a pending AccessRequest: the held request gets 403.
    Deny(Decide),
    /// Show one AccessRequest: what was asked, its state, and the preview
    /// of its effect (the server's dry run, as a field diff).
    Show {
        /// Name of the AccessRequest.
        name: String,
        /// Namespace of the AccessRequest (default: the context's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// List pending AccessRequests.
    Pending {
        /// Namespace (default: the context's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
    },
    /// Grant a pod or ServiceAccount a time window in which requests one
    /// `approve` rule would hold pass without a new hold.
    Grant(GrantArgs),
    /// End an active grant now.
    Revoke(Decide),
    /// List active grants with the time left.
    Grants {
        /// Namespace (default: the context's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
    },
}

/// Arguments of `grant`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pod", "service_account"])))]
pub struct GrantArgs {
    /// The pod the grant is for.
    #[arg(long)]
    pub pod: Option<String>,
    /// The ServiceAccount the grant is for (every pod running as it).
    #[arg(long)]
    pub service_account: Option<String>,
    /// The `approve` rule whose requests pass.
    #[arg(long)]
    pub rule: String,
    /// How long, from now: 90s, 30m, 1h (at most the webhook's
    /// --max-grant and the pod policy's approval.maxGrant).
    #[arg(long = "for")]
    pub window: String,
    /// Namespace of the pod or ServiceAccount, where the grant is kept
    /// (default: the context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only requests into this namespace pass (default: any the rule covers).
    #[arg(long)]
    pub target_namespace: Option<String>,
    /// Why (stored in spec.message and status.reason).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Arguments of approve and deny.
#[derive(clap::Args, Debug)]
pub struct Decide {
    /// Name of the AccessRequest.
    pub name: String,
    /// Namespace of the AccessRequest (default: the context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Why (stored in status.reason).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// With approve: also grant the requester this rule for a window
    /// (90s, 30m, 1h), so its next requests pass without a hold.
    #[arg(long = "for")]
    pub window: Option<String>,
}

/// Plugin failures, printed as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("accessrequests.mcp-warden.io {name:?} is {state}, not Pending: nothing to decide")]
    NotPending { name: String, state: String },
    #[error("{0}")]
    Api(String),
    #[error("{0}")]
    Usage(String),
    #[error("accessrequests.mcp-warden.io {name:?} is not an active grant ({why})")]
    NotAGrant { name: String, why: String },
}

fn api_error(e: kube::Error) -> PluginError {
    match e {
        kube::Error::Api(s) => {
            PluginError::Api(format!("Error from server ({}): {}", s.reason, s.message))
        }
        other => PluginError::Api(other.to_string()),
    }
}

/// The object to PUT to `/status`: state and reason set, nothing else
/// (decidedBy is the webhook's to stamp). Refuses anything not Pending.
pub fn decided(
    obj: &AccessRequest,
    state: State,
    reason: &str,
) -> Result<AccessRequest, PluginError> {
    let cur = obj.state();
    if cur != State::Pending {
        return Err(PluginError::NotPending {
            name: obj.name().to_string(),
            state: cur.to_string(),
        });
    }
    let mut o = obj.clone();
    let status = o.status.get_or_insert_with(Default::default);
    status.state = Some(state);
    // An empty reason is no reason: the field is left out.
    status.reason = reason.to_string();
    Ok(o)
}

/// Age of an object created at `created` (Unix seconds), kubectl-style.
fn age(created: Option<i64>, now: OffsetDateTime) -> String {
    let Some(t) = created else {
        return "<unknown>".into();
    };
    let s = (now.unix_timestamp() - t).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// The `pending` table (kubectl-style columns).
pub fn pending_table(items: &[AccessRequest], now: OffsetDateTime, with_ns: bool) -> String {
    let mut rows = vec![{
        let mut h = vec![
            "NAME",
            "REQUESTER",
            "SUMMARY",
            "RULE",
            "AGE",
            "EXPIRES",
            "PREVIEW",
        ];
        if with_ns {
            h.insert(0, "NAMESPACE");
        }
        h.into_iter().map(str::to_string).collect::<Vec<_>>()
    }];
    for o in items {
        if o.state() != State::Pending {
            continue;
        }
        // Past expiresAt nobody can decide it any more (the webhook refuses).
        if OffsetDateTime::parse(&o.spec.expires_at, &Rfc3339).is_ok_and(|t| t <= now) {
            continue;
        }
        let created = o
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second());
        let mut r = vec![
            o.name().to_string(),
            o.spec.requester.service_account.clone(),
            o.spec.summary.clone(),
            o.spec.rule.clone(),
            age(created, now),
            o.spec.expires_at.clone(),
            preview_summary(o),
        ];
        if with_ns {
            r.insert(0, o.namespace().to_string());
        }
        rows.push(r);
    }
    if rows.len() == 1 {
        return "No pending access requests.\n".into();
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The preview's one line for `pending`, `-` without one.
fn preview_summary(o: &AccessRequest) -> String {
    match o.status().preview {
        Some(p) if !p.summary.is_empty() => p.summary,
        _ => "-".into(),
    }
}

/// What `show` prints: the request, its state and decision, and the
/// preview as a readable diff.
pub fn show_text(o: &AccessRequest) -> String {
    let st = o.status();
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", o.name().to_string()),
        ("Namespace", o.namespace().to_string()),
        ("State", o.state().to_string()),
        ("Request", o.spec.summary.clone()),
        ("Requester", o.spec.requester.service_account.clone()),
        ("Pod", o.spec.requester.pod.clone()),
        ("Rule", o.spec.rule.clone()),
        ("Message", o.spec.message.clone()),
        ("Expires", o.spec.expires_at.clone()),
        ("Decided by", st.decided_by.clone()),
        ("Decided at", st.decided_at.clone()),
        ("Reason", st.reason.clone()),
    ];
    rows.retain(|(_, v)| !v.is_empty());
    let mut out: String = rows
        .into_iter()
        .map(|(k, v)| format!("{:<12}{v}\n", format!("{k}:")))
        .collect();
    match &st.preview {
        Some(p) => out.push_str(&mcp_warden_shared::preview::render(p)),
        None => out.push_str("Preview: none (no dry run applies to this request)\n"),
    }
    out
}

/// Whom a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A pod, running as the ServiceAccount named second.
    Pod {
        name: String,
        service_account: String,
    },
    /// A ServiceAccount.
    ServiceAccount(String),
}

/// A lowercase DNS-1123 piece of `s` for a `generateName` prefix.
fn dns_piece(s: &str, max: usize) -> String {
    let mut p: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    p.truncate(max);
    p.trim_matches('-').to_string()
}

/// The AccessRequest a grant creates in `namespace` (pure): approvable
/// until `now + window`, its window counted from the approval.
pub fn grant_request(
    namespace: &str,
    target: &Target,
    rule: &str,
    window: std::time::Duration,
    target_namespace: &str,
    reason: &str,
    now: OffsetDateTime,
) -> AccessRequest {
    let (pod, sa) = match target {
        Target::Pod {
            name,
            service_account,
        } => (name.clone(), service_account.clone()),
        Target::ServiceAccount(sa) => (String::new(), sa.clone()),
    };
    let who = match target {
        Target::Pod { name, .. } => format!("pod {namespace}/{name}"),
        Target::ServiceAccount(sa) => format!("serviceaccount {namespace}/{sa}"),
    };
    let scope = if target_namespace.is_empty() {
        String::new()
    } else {
        format!(" in {target_namespace}")
    };
    let spec = AccessRequestSpec {
        requester: Requester {
            service_account: grant::service_account_user(namespace, &sa),
            pod: pod.clone(),
        },
        rule: rule.to_string(),
        message: reason.to_string(),
        summary: format!(
            "grant {rule}{scope} to {who} for {}",
            grant::format_duration(window)
        ),
        expires_at: (now + time::Duration::try_from(window).unwrap_or(time::Duration::ZERO))
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&Rfc3339)
            .unwrap_or_default(),
        grant: Some(GrantSpec {
            rule: rule.to_string(),
            namespace: target_namespace.to_string(),
            // A pod grant names only the pod: the requester carries its
            // ServiceAccount, which the sidecar checks too.
            service_account: if pod.is_empty() { sa } else { String::new() },
            pod,
            duration: grant::format_duration(window),
        }),
        ..Default::default()
    };
    let mut ar = AccessRequest::new("", spec);
    ar.metadata.name = None;
    let prefix = match dns_piece(rule, 40) {
        p if p.is_empty() => "grant-".to_string(),
        p => format!("grant-{p}-"),
    };
    ar.metadata.generate_name = Some(prefix);
    ar.metadata.namespace = Some(namespace.to_string());
    ar
}

/// kubectl-style short duration: `29m`, `45s`, `1h2m`.
fn left(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s / 60 % 60),
    }
}

/// The `grants` table: active grants (approved, window not over) with the
/// time left.
pub fn grants_table(items: &[AccessRequest], now: OffsetDateTime, with_ns: bool) -> String {
    let mut rows = vec![{
        let mut h = vec!["NAME", "FOR", "RULE", "IN", "GRANTED-BY", "LEFT"];
        if with_ns {
            h.insert(0, "NAMESPACE");
        }
        h.into_iter().map(str::to_string).collect::<Vec<_>>()
    }];
    for o in items {
        // Listed under the largest cap: whether a sidecar honours it is its
        // policy's call.
        let Reading::Active(g) = grant::read(o, std::time::Duration::MAX) else {
            continue;
        };
        let remaining = g.remaining(now);
        if remaining.is_zero() {
            continue;
        }
        let spec = o.spec.grant.clone().unwrap_or_default();
        let target = if spec.pod.is_empty() {
            format!("serviceaccount/{}", spec.service_account)
        } else {
            format!("pod/{}", spec.pod)
        };
        let mut r = vec![
            o.name().to_string(),
            target,
            g.rule.clone(),
            if g.namespace.is_empty() {
                "*".into()
            } else {
                g.namespace.clone()
            },
            g.approved_by.clone(),
            left(remaining),
        ];
        if with_ns {
            r.insert(0, o.namespace().to_string());
        }
        rows.push(r);
    }
    if rows.len() == 1 {
        return "No active grants.\n".into();
    }
    table(rows)
}

fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The object to PUT to `/status` to end a grant: Expired, with the reason.
pub fn revoked(obj: &AccessRequest, reason: &str) -> Result<AccessRequest, PluginError> {
    let why = match grant::read(obj, std::time::Duration::MAX) {
        Reading::Active(_) | Reading::Invalid(_) => None,
        Reading::NotAGrant => Some("it is a held request; deny it instead".to_string()),
        Reading::Inactive => Some(format!("it is {}", obj.state())),
    };
    if let Some(why) = why {
        return Err(PluginError::NotAGrant {
            name: obj.name().to_string(),
            why,
        });
    }
    let reason = if reason.is_empty() {
        "revoked".to_string()
    } else {
        format!("revoked: {reason}")
    };
    Ok(obj.with_state(State::Expired, &reason))
}

fn window(s: &str) -> Result<std::time::Duration, PluginError> {
    grant::parse_duration(s).map_err(|e| PluginError::Usage(format!("--for: {e}")))
}

/// Creates the grant and approves it; a refused approval leaves it
/// Expired (best effort) with the refusal as its reason.
async fn create_grant(
    api: &Api<AccessRequest>,
    ar: &AccessRequest,
    reason: &str,
) -> Result<AccessRequest, PluginError> {
    let created = api
        .create(&PostParams::default(), ar)
        .await
        .map_err(api_error)?;
    let name = created.name().to_string();
    let approve = decided(&created, State::Approved, reason)?;
    match api
        .replace_status(&name, &PostParams::default(), &approve)
        .await
    {
        Ok(done) => Ok(done),
        Err(e) => {
            let e = api_error(e);
            let expire = created.with_state(State::Expired, &format!("not approved: {e}"));
            if let Ok(cur) = api.get(&name).await {
                let expire = AccessRequest {
                    metadata: cur.metadata,
                    ..expire
                };
                let _ = api
                    .replace_status(&name, &PostParams::default(), &expire)
                    .await;
            }
            Err(e)
        }
    }
}

fn granted_line(done: &AccessRequest) -> String {
    let g = done.spec.grant.clone().unwrap_or_default();
    format!(
        "accessrequest.mcp-warden.io/{} granted (decidedBy: {}): {} (until {} after {})\n",
        done.name(),
        done.status().decided_by,
        done.spec.summary,
        g.duration,
        done.status().decided_at,
    )
}

async fn client(cli: &PluginCli) -> Result<(kube::Client, String), PluginError> {
    let opts = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).map_err(|e| PluginError::Config(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts).await
        }
        None => kube::Config::from_kubeconfig(&opts).await,
    }
    .map_err(|e| PluginError::Config(e.to_string()))?;
    let ns = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
    Ok((client, ns))
}

/// Whom `approve --for` grants: the held request's pod when it names one,
/// else its ServiceAccount (which must be of `namespace`).
fn held_requester(held: &AccessRequest, namespace: &str) -> Result<Target, PluginError> {
    let prefix = format!("system:serviceaccount:{namespace}:");
    let sa = held
        .spec
        .requester
        .service_account
        .strip_prefix(&prefix)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            PluginError::Usage(format!(
                "--for: the requester {:?} is not a ServiceAccount of {namespace}",
                held.spec.requester.service_account
            ))
        })?;
    if held.spec.rule.is_empty() {
        return Err(PluginError::Usage(
            "--for: the held request names no rule".into(),
        ));
    }
    Ok(if held.spec.requester.pod.is_empty() {
        Target::ServiceAccount(sa.to_string())
    } else {
        Target::Pod {
            name: held.spec.requester.pod.clone(),
            service_account: sa.to_string(),
        }
    })
}

/// Runs one command; returns what to print.
pub async fn run(cli: PluginCli) -> Result<String, PluginError> {
    let (client, default_ns) = client(&cli).await?;
    match &cli.command {
        PluginCommand::Approve(d) | PluginCommand::Deny(d) => {
            let (state, verb) = match cli.command {
                PluginCommand::Approve(_) => (State::Approved, "approved"),
                _ => (State::Denied, "denied"),
            };
            let then = match (&d.window, state == State::Approved) {
                (Some(w), true) => Some(window(w)?),
                (Some(_), false) => {
                    return Err(PluginError::Usage("--for goes with approve only".into()));
                }
                (None, _) => None,
            };
            let ns = d.namespace.clone().unwrap_or(default_ns);
            let api: Api<AccessRequest> = Api::namespaced(client, &ns);
            let cur = api.get(&d.name).await.map_err(api_error)?;
            let new = decided(&cur, state, &d.reason)?;
            let out = api
                .replace_status(&d.name, &PostParams::default(), &new)
                .await
                .map_err(api_error)?;
            let mut text = format!(
                "accessrequest.mcp-warden.io/{} {verb} (decidedBy: {}): {}\n",
                d.name,
                out.status().decided_by,
                out.spec.summary,
            );
            if let Some(w) = then {
                let target = held_requester(&cur, &ns)?;
                let ar = grant_request(
                    &ns,
                    &target,
                    &cur.spec.rule,
                    w,
                    "",
                    &d.reason,
                    OffsetDateTime::now_utc(),
                );
                let done = create_grant(&api, &ar, &d.reason).await?;
                text.push_str(&granted_line(&done));
            }
            Ok(text)
        }
        PluginCommand::Grant(g) => {
            let w = window(&g.window)?;
            let ns = g.namespace.clone().unwrap_or(default_ns);
            let target = match (&g.pod, &g.service_account) {
                (Some(pod), _) => {
                    let pods: Api<k8s_openapi::api::core::v1::Pod> =
                        Api::namespaced(client.clone(), &ns);
                    let p = pods.get(pod).await.map_err(api_error)?;
                    let sa = p
                        .spec
                        .and_then(|s| s.service_account_name)
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "default".into());
                    Target::Pod {
                        name: pod.clone(),
                        service_account: sa,
                    }
                }
                (None, Some(sa)) => Target::ServiceAccount(sa.clone()),
                (None, None) => {
                    return Err(PluginError::Usage(
                        "--pod or --service-account is required".into(),
                    ));
                }
            };
            let ar = grant_request(
                &ns,
                &target,
                &g.rule,
                w,
                g.target_namespace.as_deref().unwrap_or(""),
                &g.reason,
                OffsetDateTime::now_utc(),
            );
            let api: Api<AccessRequest> = Api::namespaced(client, &ns);
            let done = create_grant(&api, &ar, &g.reason).await?;
            Ok(granted_line(&done))
        }
        PluginCommand::Revoke(d) => {
            let ns = d.namespace.clone().unwrap_or(default_ns);
            let api: Api<AccessRequest> = Api::namespaced(client, &ns);
            let cur = api.get(&d.name).await.map_err(api_error)?;
            let new = revoked(&cur, &d.reason)?;
            let out = api
                .replace_status(&d.name, &PostParams::default(), &new)
                .await
                .map_err(api_error)?;
            Ok(format!(
                "accessrequest.mcp-warden.io/{} revoked (by {}): {}\n",
                d.name,
                out.status().decided_by,
                out.spec.summary,
            ))
        }
        PluginCommand::Grants {
            namespace,
            all_namespaces,
        } => {
            let list = list_in(client, namespace, *all_namespaces, default_ns).await?;
            Ok(grants_table(
                &list.items,
                OffsetDateTime::now_utc(),
                *all_namespaces,
            ))
        }
        PluginCommand::Show { name, namespace } => {
            let ns = namespace.clone().unwrap_or(default_ns);
            let api: Api<AccessRequest> = Api::namespaced(client, &ns);
            let cur = api.get(name).await.map_err(api_error)?;
            Ok(show_text(&cur))
        }
        PluginCommand::Pending {
            namespace,
            all_namespaces,
        } => {
            let list = list_in(client, namespace, *all_namespaces, default_ns).await?;
            Ok(pending_table(
                &list.items,
                OffsetDateTime::now_utc(),
                *all_namespaces,
            ))
        }
    }
}

/// The AccessRequests of `namespace` (else the kubeconfig's), or of every
/// namespace with `-A`.
async fn list_in(
    client: kube::Client,
    namespace: &Option<String>,
    all_namespaces: bool,
    default_ns: String,
) -> Result<kube::core::ObjectList<AccessRequest>, PluginError> {
    let api: Api<AccessRequest> = if all_namespaces {
        Api::all(client)
    } else {
        Api::namespaced(client, &namespace.clone().unwrap_or(default_ns))
    };
    api.list(&ListParams::default()).await.map_err(api_error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn ar(v: serde_json::Value) -> AccessRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn decide_only_pending_and_never_sends_an_identity() {
        let o = ar(json!({"metadata": {"name": "a"}, "spec": {}}));
        let d = serde_json::to_value(decided(&o, State::Approved, "ok by me").unwrap()).unwrap();
        assert_eq!(d["status"]["state"], "Approved");
        assert_eq!(d["status"]["reason"], "ok by me");
        assert!(d["status"].get("decidedBy").is_none());
        let used = ar(json!({"metadata": {"name": "a"}, "spec": {}, "status": {"state": "Used"}}));
        assert!(matches!(
            decided(&used, State::Denied, ""),
            Err(PluginError::NotPending { .. })
        ));
    }

    #[test]
    fn show_prints_the_preview_as_a_diff() {
        let o = ar(
            json!({"metadata": {"name": "patch-deployments-x", "namespace": "mcp"},
            "spec": {"summary": "patch deployments.apps/scale prod/web", "rule": "scales",
                     "requester": {"serviceAccount": "sa"}, "expiresAt": "2026-11-22T01:05:00Z"},
            "status": {"state": "Pending", "preview": {"code": 200, "kind": "Change",
                "object": "Scale prod/web", "resourceVersion": "42",
                "changes": [{"path": "spec.replicas", "old": "3", "new": "0"},
                            {"path": "data.password", "old": "(masked)", "new": "(masked)"}],
                "summary": "2 fields: spec.replicas 3 → 0, data.password (masked) → (masked)"}}}),
        );
        let t = show_text(&o);
        assert!(t.contains("Name:       patch-deployments-x"), "{t}");
        assert!(t.contains("State:      Pending"), "{t}");
        assert!(
            t.contains(
                "Preview (dry run answered HTTP 200): changes Scale prod/web at resourceVersion 42"
            ),
            "{t}"
        );
        assert!(t.contains("  ~ spec.replicas: 3 → 0\n"), "{t}");
        assert!(
            t.contains("  ~ data.password: (masked) → (masked)\n"),
            "{t}"
        );
        let table = pending_table(&[o], datetime!(2026-11-22 01:00:00 UTC), false);
        assert!(table.contains("2 fields: spec.replicas 3 → 0"), "{table}");
        let bare = ar(json!({"metadata": {"name": "a"}, "spec": {}}));
        assert!(show_text(&bare).contains("Preview: none"));
    }

    #[test]
    fn pending_table_lists_only_pending() {
        let now = datetime!(2026-11-22 01:00:00 UTC);
        let items = vec![
            ar(
                json!({"metadata": {"name": "delete-x-1", "namespace": "mcp", "creationTimestamp": "2026-11-22T00:59:00Z"},
                   "spec": {"summary": "delete deployments.apps mcp/x", "rule": "r", "requester": {"serviceAccount": "sa"}},
                   "status": {"state": "Pending"}}),
            ),
            ar(json!({"metadata": {"name": "done"}, "spec": {}, "status": {"state": "Used"}})),
            ar(
                json!({"metadata": {"name": "stale"}, "spec": {"expiresAt": "2026-11-22T00:30:00Z"},
                   "status": {"state": "Pending"}}),
            ),
        ];
        let t = pending_table(&items, now, true);
        assert!(t.starts_with("NAMESPACE"));
        assert!(t.contains("delete-x-1"));
        assert!(t.contains("60s"));
        assert!(!t.contains("done"));
        assert!(!t.contains("stale"));
        assert_eq!(
            pending_table(&items[1..], now, false),
            "No pending access requests.\n"
        );
    }

    #[test]
    fn a_grant_request_has_its_scope_and_no_empty_fields() {
        let now = datetime!(2026-11-22 01:00:00.5 UTC);
        let ar = grant_request(
            "mcp",
            &Target::ServiceAccount("agent".into()),
            "deletes-need-a-human",
            std::time::Duration::from_secs(1800),
            "prod",
            "incident 42",
            now,
        );
        let v = serde_json::to_value(&ar).unwrap();
        assert_eq!(v["metadata"]["generateName"], "grant-deletes-need-a-human-");
        assert_eq!(
            v["spec"],
            json!({"requester": {"serviceAccount": "system:serviceaccount:mcp:agent"},
                "rule": "deletes-need-a-human", "message": "incident 42",
                "summary": "grant deletes-need-a-human in prod to serviceaccount mcp/agent for 30m",
                "expiresAt": "2026-11-22T01:30:00Z",
                "grant": {"rule": "deletes-need-a-human", "namespace": "prod", "serviceAccount": "agent", "duration": "30m"}})
        );
        let pod = grant_request(
            "mcp",
            &Target::Pod {
                name: "web-0".into(),
                service_account: "agent".into(),
            },
            "r",
            std::time::Duration::from_secs(90),
            "",
            "",
            now,
        );
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["spec"]["requester"]["pod"], "web-0");
        assert_eq!(
            v["spec"]["grant"],
            json!({"rule": "r", "pod": "web-0", "duration": "1m30s"})
        );
        assert_eq!(
            grant::validate(
                "mcp",
                "system:serviceaccount:mcp:agent",
                &pod.spec.grant.unwrap(),
                grant::DEFAULT_MAX_GRANT
            ),
            Ok(std::time::Duration::from_secs(90))
        );
    }

    #[test]
    fn grants_table_lists_active_grants_with_time_left_and_revoke_ends_them() {
        let now = datetime!(2026-11-22 01:10:00 UTC);
        let g = |name: &str, state: &str, decided: &str| {
            ar(json!({"metadata": {"name": name, "namespace": "mcp"},
                "spec": {"requester": {"serviceAccount": "system:serviceaccount:mcp:agent"}, "expiresAt": "2026-11-22T02:00:00Z",
                         "grant": {"rule": "deletes", "serviceAccount": "agent", "duration": "30m"}},
                "status": {"state": state, "decidedBy": "alice", "decidedAt": decided}}))
        };
        let items = vec![
            g("live", "Approved", "2026-11-22T01:00:00Z"),
            g("over", "Approved", "2026-11-22T00:30:00Z"),
            g("revoked", "Expired", "2026-11-22T01:05:00Z"),
            ar(json!({"metadata": {"name": "held"}, "spec": {}, "status": {"state": "Approved"}})),
        ];
        let t = grants_table(&items, now, false);
        assert!(t.starts_with("NAME"), "{t}");
        assert!(
            t.contains("live") && t.contains("serviceaccount/agent"),
            "{t}"
        );
        assert!(t.contains("alice") && t.contains("20m0s"), "{t}");
        for gone in ["over", "revoked", "held"] {
            assert!(!t.contains(gone), "{t}");
        }
        assert_eq!(grants_table(&items[1..], now, false), "No active grants.\n");

        let r = serde_json::to_value(revoked(&items[0], "done").unwrap()).unwrap();
        assert_eq!(r["status"]["state"], "Expired");
        assert_eq!(r["status"]["reason"], "revoked: done");
        assert!(matches!(
            revoked(&items[2], ""),
            Err(PluginError::NotAGrant { .. })
        ));
        assert!(matches!(
            revoked(&items[3], ""),
            Err(PluginError::NotAGrant { .. })
        ));
    }

    #[test]
    fn approve_for_grants_the_held_requester() {
        let held = ar(json!({"metadata": {"name": "h"}, "spec": {"rule": "r",
            "requester": {"serviceAccount": "system:serviceaccount:mcp:agent", "pod": "web-0"}}}));
        assert_eq!(
            held_requester(&held, "mcp").unwrap(),
            Target::Pod {
                name: "web-0".into(),
                service_account: "agent".into()
            }
        );
        assert!(held_requester(&held, "other").is_err());
        let cli = PluginCli::try_parse_from([
            "kubectl-mcp_warden",
            "grant",
            "--rule",
            "r",
            "--for",
            "5m",
        ]);
        assert!(cli.is_err(), "a grant needs --pod or --service-account");
        let cli = PluginCli::try_parse_from([
            "kubectl-mcp_warden",
            "grant",
            "--pod",
            "p",
            "--service-account",
            "s",
            "--rule",
            "r",
            "--for",
            "5m",
        ]);
        assert!(cli.is_err(), "only one of them");
    }
}
