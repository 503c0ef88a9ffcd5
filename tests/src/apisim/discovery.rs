//! Discovery documents: `/version`, the legacy `/api` + `/apis` documents
//! (APIVersions, APIGroupList, APIResourceList) and aggregated discovery
//! (`apidiscovery.k8s.io` v2 and v2beta1 APIGroupDiscoveryList).

use super::registry::ResourceInfo;
use serde_json::{Value, json};

/// Create-only resources served outside the registry (reviews).
struct Virtual {
    group: &'static str,
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
}

const VIRTUALS: &[Virtual] = &[
    Virtual {
        group: "authentication.k8s.io",
        resource: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
    },
    Virtual {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
    },
    Virtual {
        group: "authorization.k8s.io",
        resource: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
    },
];

/// The `/version` document for a `vMAJOR.MINOR.PATCH` string.
pub fn version(git_version: &str) -> Value {
    let core = git_version.trim_start_matches('v');
    let mut parts = core.split('.');
    let major = parts.next().unwrap_or("1").to_string();
    let minor = parts.next().unwrap_or("32").to_string();
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api` (APIVersions).
pub fn api_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}],
    })
}

/// All (group, versions) pairs other than the core group, in a stable order.
fn groups(types: &[ResourceInfo]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |g: &str, v: &str| match out.iter_mut().find(|(x, _)| x == g) {
        Some((_, vs)) => {
            if !vs.iter().any(|x| x == v) {
                vs.push(v.to_string())
            }
        }
        None => out.push((g.to_string(), vec![v.to_string()])),
    };
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        add(&t.group, &t.version);
    }
    for v in VIRTUALS {
        add(v.group, "v1");
    }
    out
}

fn group_doc(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis` (APIGroupList).
pub fn api_group_list(types: &[ResourceInfo]) -> Value {
    let gs: Vec<Value> = groups(types)
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `/apis/GROUP` (APIGroup), None when unknown.
pub fn api_group(types: &[ResourceInfo], group: &str) -> Option<Value> {
    groups(types)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut d = group_doc(g, vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

/// `/api/v1` or `/apis/GROUP/VERSION` (APIResourceList), None when unknown.
pub fn resource_list(types: &[ResourceInfo], group: &str, version: &str) -> Option<Value> {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut res = Vec::new();
    for t in types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let mut r = json!({
            "name": t.resource,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs(),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        res.push(r);
        for (sub, verbs) in &t.subresources {
            let kind = match sub.as_str() {
                "scale" => "Scale",
                "token" => "TokenRequest",
                "exec" => "PodExecOptions",
                "attach" => "PodAttachOptions",
                "portforward" => "PodPortForwardOptions",
                "log" => "Pod",
                _ => t.kind.as_str(),
            };
            let mut s = json!({"name": format!("{}/{sub}", t.resource), "singularName": "", "namespaced": t.namespaced, "kind": kind, "verbs": verbs});
            if sub == "scale" {
                s["group"] = json!("autoscaling");
                s["version"] = json!("v1");
            }
            if sub == "token" {
                s["group"] = json!("authentication.k8s.io");
                s["version"] = json!("v1");
            }
            res.push(s);
        }
    }
    if version == "v1" {
        for v in VIRTUALS.iter().filter(|v| v.group == group) {
            res.push(json!({"name": v.resource, "singularName": v.singular, "namespaced": false, "kind": v.kind, "verbs": ["create"]}));
        }
    }
    if res.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}),
    )
}

fn discovery_resource(t: &ResourceInfo) -> Value {
    let mut r = json!({
        "resource": t.resource,
        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs(),
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    if !t.subresources.is_empty() {
        let subs: Vec<Value> = t
            .subresources
            .iter()
            .map(|(sub, verbs)| {
                let (g, v, k) = match sub.as_str() {
                    "scale" => ("autoscaling", "v1", "Scale"),
                    "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
                    "exec" => ("", "v1", "PodExecOptions"),
                    "attach" => ("", "v1", "PodAttachOptions"),
                    "portforward" => ("", "v1", "PodPortForwardOptions"),
                    _ => (t.group.as_str(), t.version.as_str(), t.kind.as_str()),
                };
                json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": verbs})
            })
            .collect();
        r["subresources"] = json!(subs);
    }
    r
}

/// Aggregated discovery for `/api` (core) or `/apis` (everything else).
pub fn aggregated(types: &[ResourceInfo], core: bool, api_version: &str) -> Value {
    let mut items = Vec::new();
    if core {
        let res: Vec<Value> = types
            .iter()
            .filter(|t| t.group.is_empty())
            .map(discovery_resource)
            .collect();
        items.push(json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": res, "freshness": "Current"}],
        }));
    } else {
        for (g, versions) in groups(types) {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let mut res: Vec<Value> = types
                        .iter()
                        .filter(|t| t.group == g && &t.version == v)
                        .map(discovery_resource)
                        .collect();
                    for vr in VIRTUALS.iter().filter(|x| x.group == g && v == "v1") {
                        res.push(json!({
                            "resource": vr.resource,
                            "responseKind": {"group": g, "version": "v1", "kind": vr.kind},
                            "scope": "Cluster",
                            "singularResource": vr.singular,
                            "verbs": ["create"],
                        }));
                    }
                    json!({"version": v, "resources": res, "freshness": "Current"})
                })
                .collect();
            items.push(json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs}));
        }
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apisim::registry::builtins;

    #[test]
    fn aggregated_and_legacy_documents() {
        let types = builtins();
        let core = aggregated(&types, true, "apidiscovery.k8s.io/v2");
        let res = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap();
        let pods = res.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"]["kind"], "Pod");
        assert!(
            pods["subresources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["subresource"] == "exec")
        );
        let apis = aggregated(&types, false, "apidiscovery.k8s.io/v2");
        let names: Vec<&str> = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"apps") && names.contains(&"authentication.k8s.io"));
        assert!(!names.contains(&""));
        let v1 = resource_list(&types, "", "v1").unwrap();
        assert!(
            v1["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "serviceaccounts/token")
        );
        assert!(resource_list(&types, "nope", "v1").is_none());
        assert_eq!(version("v1.29.4")["minor"], "29");
        assert_eq!(
            api_group(&types, "apps").unwrap()["preferredVersion"]["version"],
            "v1"
        );
    }
}
