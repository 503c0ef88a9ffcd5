//! `kubectl mcp-warden`: the approver's side of just-in-time approvals.
//!
//! `approve|deny NAME [-n NS] [--reason TEXT]` updates the `status`
//! subresource of an `AccessRequest` with the user's own kubeconfig
//! credentials (RBAC: `update` on `accessrequests/status`); the admission
//! webhook stamps `decidedBy` from the authenticated user, so the plugin
//! never sends an identity. `pending [-n NS | -A]` lists what waits, with
//! the one-line summary of each preview; `show NAME [-n NS]` prints one
//! AccessRequest with its preview (the server's dry run) as a field diff.

use clap::{Parser, Subcommand};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use mcp_warden_shared::access_request::{AccessRequest, State};
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

/// Runs one command; returns what to print.
pub async fn run(cli: PluginCli) -> Result<String, PluginError> {
    let (client, default_ns) = client(&cli).await?;
    match &cli.command {
        PluginCommand::Approve(d) | PluginCommand::Deny(d) => {
            let (state, verb) = match cli.command {
                PluginCommand::Approve(_) => (State::Approved, "approved"),
                _ => (State::Denied, "denied"),
            };
            let ns = d.namespace.clone().unwrap_or(default_ns);
            let api: Api<AccessRequest> = Api::namespaced(client, &ns);
            let cur = api.get(&d.name).await.map_err(api_error)?;
            let new = decided(&cur, state, &d.reason)?;
            let out = api
                .replace_status(&d.name, &PostParams::default(), &new)
                .await
                .map_err(api_error)?;
            Ok(format!(
                "accessrequest.mcp-warden.io/{} {verb} (decidedBy: {}): {}\n",
                d.name,
                out.status().decided_by,
                out.spec.summary,
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
            let api: Api<AccessRequest> = if *all_namespaces {
                Api::all(client)
            } else {
                let ns = namespace.clone().unwrap_or(default_ns);
                Api::namespaced(client, &ns)
            };
            let list = api.list(&ListParams::default()).await.map_err(api_error)?;
            Ok(pending_table(
                &list.items,
                OffsetDateTime::now_utc(),
                *all_namespaces,
            ))
        }
    }
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
}
