//! The validators of a policy's rule fields: verbs, API groups,
//! resources, nonResourceURLs and the glob patterns of names, namespaces
//! and service accounts. Each takes one value and returns why it is wrong,
//! in words a policy author can act on; `parse` puts the file, line and
//! field in front.

const RESOURCE_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "impersonate",
    "proxy",
];
const NON_RESOURCE_VERBS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options"];

/// A verb of a rule on resources: a Kubernetes verb or `*`.
pub(super) fn check_resource_verb(v: &str) -> Result<(), String> {
    check_verb(v, false)
}

/// A verb of a rule on nonResourceURLs: an HTTP verb or `*`.
pub(super) fn check_non_resource_verb(v: &str) -> Result<(), String> {
    check_verb(v, true)
}

fn check_verb(v: &str, non_resource: bool) -> Result<(), String> {
    if v == "*" {
        return Ok(());
    }
    let lower = v.to_ascii_lowercase();
    if lower != v
        && (RESOURCE_VERBS.contains(&lower.as_str())
            || NON_RESOURCE_VERBS.contains(&lower.as_str()))
    {
        return Err(format!("verbs are lower case: write {lower:?}"));
    }
    let is_res = RESOURCE_VERBS.contains(&v);
    let is_nonres = NON_RESOURCE_VERBS.contains(&v);
    if !is_res && !is_nonres {
        let hint = match v {
            "use" | "bind" | "escalate" | "sign" | "approve" => {
                " (an RBAC verb the API server checks internally; no request carries it)"
                    .to_string()
            }
            "read" => " (use get, list, watch)".to_string(),
            "write" => " (use create, update, patch, delete)".to_string(),
            "exec" | "attach" | "portforward" => {
                format!(" (exec, attach and port-forward are the verb create on resource pods/{v})")
            }
            _ => String::new(),
        };
        return Err(format!(
            "unknown verb {v:?}{hint}; known verbs: {}, and for nonResourceURLs {}",
            RESOURCE_VERBS.join(", "),
            NON_RESOURCE_VERBS.join(", ")
        ));
    }
    if non_resource && !is_nonres {
        return Err(format!(
            "verb {v:?} never applies to nonResourceURLs; use HTTP verbs: {}",
            NON_RESOURCE_VERBS.join(", ")
        ));
    }
    if !non_resource && !is_res {
        let instead = match v {
            "post" => "create",
            "put" => "update",
            _ => "get",
        };
        return Err(format!(
            "verb {v:?} is an HTTP method; for resources use Kubernetes verbs (here: {instead:?})"
        ));
    }
    Ok(())
}

fn is_dns_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
}

pub(super) fn check_api_group(g: &str) -> Result<(), String> {
    if g.is_empty() || g == "*" {
        return Ok(());
    }
    if g == "core" || g == "v1" {
        return Err(format!(
            "{g:?} is not a group name: the core group is \"\" (an empty string)"
        ));
    }
    if let Some((group, _)) = g.split_once('/') {
        return Err(format!("API groups have no version: write {group:?}"));
    }
    if !g.chars().all(is_dns_char) || g.starts_with(['.', '-']) || g.ends_with(['.', '-']) {
        return Err(format!(
            "{g:?} is not a valid API group (lower-case DNS name, \"\" for core, \"*\" for all)"
        ));
    }
    Ok(())
}

pub(super) fn check_resource(r: &str) -> Result<(), String> {
    if r == "*" {
        return Ok(());
    }
    let part_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let hint = "resources are lower-case plurals: pods, pods/log, */scale, pods/*, or \"*\"";
    if r.contains('.') {
        return Err(format!(
            "{r:?}: put the API group in apiGroups, not in the resource ({hint})"
        ));
    }
    match r.split_once('/') {
        None if part_ok(r) => Ok(()),
        Some((res, sub))
            if (res == "*" || part_ok(res))
                && (sub == "*" || part_ok(sub))
                && !(res == "*" && sub == "*") =>
        {
            Ok(())
        }
        _ => Err(format!("invalid resource {r:?} ({hint})")),
    }
}

pub(super) fn check_non_resource_url(u: &str) -> Result<(), String> {
    if u == "*" {
        return Ok(());
    }
    if !u.starts_with('/') {
        return Err(format!("{u:?} must be a path starting with '/' (or \"*\")"));
    }
    // Byte offsets, not a slice: the URL may end in a multi-byte character.
    if u.find('*').is_some_and(|i| i + 1 != u.len()) {
        return Err(format!(
            "{u:?}: '*' is only allowed as the last character (e.g. /healthz/*)"
        ));
    }
    Ok(())
}

fn check_glob_chars(p: &str, what: &str, extra: &[char]) -> Result<(), String> {
    if p.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "{p:?}: {what} are lower case, so this pattern can never match"
        ));
    }
    let ok = p.chars().all(|c| {
        is_dns_char(c)
            || matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | ',' | '!')
            || extra.contains(&c)
    });
    if !ok {
        return Err(format!("{p:?} has characters that no {what} contain"));
    }
    Ok(())
}

pub(super) fn check_name_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(
            "an empty name matches nothing; omit resourceNames to match every name".to_string(),
        );
    }
    // Custom metrics and port-qualified proxy names use ':' and '*'.
    check_glob_chars(p, "object names", &[':'])
}

pub(super) fn check_namespace_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Ok(()); // "" = cluster-scoped
    }
    if p.contains('.') {
        return Err(format!("{p:?}: namespace names have no dots"));
    }
    check_glob_chars(p, "namespace names", &[])
}

pub(super) fn check_service_account_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    if p.starts_with("system:serviceaccount:") {
        return Err(format!("{p:?}: write service accounts as NAMESPACE/NAME"));
    }
    match p.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            check_glob_chars(ns, "namespace names", &[])?;
            check_glob_chars(name, "service account names", &[])
        }
        _ => Err(format!(
            "{p:?} must be NAMESPACE/NAME (globs allowed, e.g. agents/*), or \"*\""
        )),
    }
}

/// A `users` or `groups` glob: any text but empty or with control
/// characters (names come from an identity provider, in any case).
pub(super) fn check_subject_pattern(p: &str, what: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(format!("an empty pattern matches no {what}"));
    }
    if p.chars().any(char::is_control) {
        return Err(format!(
            "{p:?} has control characters, which no {what} contain"
        ));
    }
    Ok(())
}
