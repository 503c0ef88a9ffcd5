//! `parse_request` over the request lines real clients send.

#![allow(clippy::unwrap_used)]

use super::*;

/// Expected attributes, compactly: verb, group, version, ns, resource, sub, name.
struct Want {
    resource_request: bool,
    verb: &'static str,
    group: &'static str,
    version: &'static str,
    ns: &'static str,
    resource: &'static str,
    sub: &'static str,
    name: &'static str,
}

const fn r(
    verb: &'static str,
    group: &'static str,
    version: &'static str,
    ns: &'static str,
    resource: &'static str,
    sub: &'static str,
    name: &'static str,
) -> Want {
    Want {
        resource_request: true,
        verb,
        group,
        version,
        ns,
        resource,
        sub,
        name,
    }
}

const fn nr(verb: &'static str) -> Want {
    Want {
        resource_request: false,
        verb,
        group: "",
        version: "",
        ns: "",
        resource: "",
        sub: "",
        name: "",
    }
}

/// Request lines as kubectl, client-go, the Python client and kube-rs send them.
fn table() -> Vec<(&'static str, &'static str, Want)> {
    vec![
        // --- discovery and other non-resource URLs ---
        ("GET", "/version?timeout=32s", nr("get")),
        ("GET", "/api?timeout=32s", nr("get")),
        ("GET", "/apis?timeout=32s", nr("get")),
        ("GET", "/api/v1?timeout=32s", nr("get")),
        ("GET", "/apis/apps", nr("get")),
        ("GET", "/apis/apps/v1?timeout=32s", nr("get")),
        ("GET", "/apis/apiextensions.k8s.io/v1", nr("get")),
        ("GET", "/openapi/v2?timeout=32s", nr("get")),
        ("GET", "/openapi/v3?timeout=32s", nr("get")),
        (
            "GET",
            "/openapi/v3/apis/apps/v1?hash=9C4C0E2DBB3E4F8A1D1E2B6F0C2E5A7B9D3F1A2C4E6B8D0F2A4C6E8B0D2F4A6C8E0B2D4F6A8C0E2B4D6F8A0C2E4B6D8F0A2C4E6",
            nr("get"),
        ),
        (
            "GET",
            "/openapi/v3/api/v1?hash=ABCDEF0123&timeout=32s",
            nr("get"),
        ),
        ("GET", "/healthz", nr("get")),
        ("GET", "/livez?verbose", nr("get")),
        ("GET", "/readyz", nr("get")),
        ("GET", "/metrics", nr("get")),
        ("GET", "/", nr("get")),
        ("HEAD", "/version", nr("head")),
        ("POST", "/logs", nr("post")),
        // --- core group, namespaced ---
        (
            "GET",
            "/api/v1/namespaces/default/pods?limit=500",
            r("list", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0",
            r("get", "", "v1", "default", "pods", "", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-0&watch=true&resourceVersion=123&allowWatchBookmarks=true&timeoutSeconds=300",
            r("watch", "", "v1", "default", "pods", "", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-0&limit=500",
            r("list", "", "v1", "default", "pods", "", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&limit=500",
            r("list", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?allowWatchBookmarks=true&resourceVersion=4711&timeoutSeconds=412&watch=true",
            r("watch", "", "v1", "default", "pods", "", ""),
        ),
        // Python client renders booleans as True.
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=True&timeoutSeconds=5",
            r("watch", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=false",
            r("list", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=0",
            r("list", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=1",
            r("watch", "", "v1", "default", "pods", "", ""),
        ),
        // kube-rs watcher with bookmarks and a continue token.
        (
            "GET",
            "/api/v1/namespaces/default/pods?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=12",
            r("watch", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?limit=500&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTJ9",
            r("list", "", "v1", "default", "pods", "", ""),
        ),
        // Legacy /watch/ prefix.
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods",
            r("watch", "", "v1", "default", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods/web-0",
            r("watch", "", "v1", "default", "pods", "", "web-0"),
        ),
        (
            "GET",
            "/api/v1/watch/pods",
            r("watch", "", "v1", "", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/watch/namespaces",
            r("watch", "", "v1", "", "namespaces", "", ""),
        ),
        (
            "GET",
            "/api/v1/pods?limit=500",
            r("list", "", "v1", "", "pods", "", ""),
        ),
        (
            "GET",
            "/api/v1/pods?watch=true&resourceVersion=0",
            r("watch", "", "v1", "", "pods", "", ""),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods?fieldManager=kubectl-create&fieldValidation=Strict",
            r("create", "", "v1", "default", "pods", "", ""),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods?fieldManager=kubectl-run",
            r("create", "", "v1", "default", "pods", "", ""),
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/configmaps/app-config?fieldManager=kubectl-replace&fieldValidation=Strict",
            r(
                "update",
                "",
                "v1",
                "default",
                "configmaps",
                "",
                "app-config",
            ),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/app-config?fieldManager=kubectl-edit&fieldValidation=Strict",
            r("patch", "", "v1", "default", "configmaps", "", "app-config"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods/web-0",
            r("delete", "", "v1", "default", "pods", "", "web-0"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            r("deletecollection", "", "v1", "default", "pods", "", ""),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps",
            r(
                "deletecollection",
                "",
                "v1",
                "default",
                "configmaps",
                "",
                "",
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/secrets/db-password",
            r("get", "", "v1", "default", "secrets", "", "db-password"),
        ),
        (
            "GET",
            "/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt",
            r(
                "get",
                "",
                "v1",
                "kube-system",
                "configmaps",
                "",
                "kube-root-ca.crt",
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb-0%2CinvolvedObject.namespace%3Ddefault%2CinvolvedObject.uid%3D1f0e&limit=500",
            r("list", "", "v1", "default", "events", "", ""),
        ),
        // --- subresources ---
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/log?container=app&follow=true&tailLines=10",
            r("get", "", "v1", "default", "pods", "log", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/log",
            r("get", "", "v1", "default", "pods", "log", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/status",
            r("get", "", "v1", "default", "pods", "status", "web-0"),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/web-0/status?fieldManager=kube-rs",
            r("patch", "", "v1", "default", "pods", "status", "web-0"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/eviction",
            r("create", "", "v1", "default", "pods", "eviction", "web-0"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/binding",
            r("create", "", "v1", "default", "pods", "binding", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/ephemeralcontainers",
            r(
                "get",
                "",
                "v1",
                "default",
                "pods",
                "ephemeralcontainers",
                "web-0",
            ),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/mcp/token",
            r(
                "create",
                "",
                "v1",
                "default",
                "serviceaccounts",
                "token",
                "mcp",
            ),
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/prod/deployments/web/scale",
            r(
                "update",
                "apps",
                "v1",
                "prod",
                "deployments",
                "scale",
                "web",
            ),
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/prod/deployments/web/scale",
            r("get", "apps", "v1", "prod", "deployments", "scale", "web"),
        ),
        // --- connect subresources: always create ---
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/exec?command=echo&command=hi&container=app&stdout=true&stderr=true",
            r("create", "", "v1", "default", "pods", "exec", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/exec?command=sh&container=app&stdin=true&stdout=true&tty=true",
            r("create", "", "v1", "default", "pods", "exec", "web-0"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/attach?container=app&stdin=true&stdout=true&tty=true",
            r("create", "", "v1", "default", "pods", "attach", "web-0"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/attach?container=app&stdout=true",
            r("create", "", "v1", "default", "pods", "attach", "web-0"),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-0/portforward",
            r(
                "create",
                "",
                "v1",
                "default",
                "pods",
                "portforward",
                "web-0",
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0/portforward?ports=8080",
            r(
                "create",
                "",
                "v1",
                "default",
                "pods",
                "portforward",
                "web-0",
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-0:8080/proxy/metrics",
            r("create", "", "v1", "default", "pods", "proxy", "web-0:8080"),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/services/http:web:80/proxy/healthz",
            r(
                "create",
                "",
                "v1",
                "default",
                "services",
                "proxy",
                "http:web:80",
            ),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/services/web/proxy/cache",
            r("create", "", "v1", "default", "services", "proxy", "web"),
        ),
        (
            "GET",
            "/api/v1/nodes/node-1/proxy/stats/summary",
            r("create", "", "v1", "", "nodes", "proxy", "node-1"),
        ),
        (
            "GET",
            "/api/v1/nodes/node-1/proxy/metrics/cadvisor",
            r("create", "", "v1", "", "nodes", "proxy", "node-1"),
        ),
        // --- namespaces and cluster-scoped objects ---
        (
            "GET",
            "/api/v1/namespaces",
            r("list", "", "v1", "", "namespaces", "", ""),
        ),
        (
            "GET",
            "/api/v1/namespaces/default",
            r("get", "", "v1", "default", "namespaces", "", "default"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/scratch",
            r("delete", "", "v1", "scratch", "namespaces", "", "scratch"),
        ),
        (
            "PUT",
            "/api/v1/namespaces/scratch/finalize",
            r(
                "update",
                "",
                "v1",
                "scratch",
                "namespaces",
                "finalize",
                "scratch",
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/scratch/status",
            r(
                "get",
                "",
                "v1",
                "scratch",
                "namespaces",
                "status",
                "scratch",
            ),
        ),
        (
            "POST",
            "/api/v1/namespaces?fieldManager=kubectl-create",
            r("create", "", "v1", "", "namespaces", "", ""),
        ),
        (
            "GET",
            "/api/v1/nodes?limit=500",
            r("list", "", "v1", "", "nodes", "", ""),
        ),
        (
            "GET",
            "/api/v1/nodes/node-1",
            r("get", "", "v1", "", "nodes", "", "node-1"),
        ),
        (
            "GET",
            "/api/v1/persistentvolumes",
            r("list", "", "v1", "", "persistentvolumes", "", ""),
        ),
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            r(
                "list",
                "apiextensions.k8s.io",
                "v1",
                "",
                "customresourcedefinitions",
                "",
                "",
            ),
        ),
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/accessrequests.mcp-warden.io",
            r(
                "get",
                "apiextensions.k8s.io",
                "v1",
                "",
                "customresourcedefinitions",
                "",
                "accessrequests.mcp-warden.io",
            ),
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles?labelSelector=kubernetes.io%2Fbootstrapping%3Drbac-defaults",
            r(
                "list",
                "rbac.authorization.k8s.io",
                "v1",
                "",
                "clusterroles",
                "",
                "",
            ),
        ),
        (
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings",
            r(
                "create",
                "rbac.authorization.k8s.io",
                "v1",
                "prod",
                "rolebindings",
                "",
                "",
            ),
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            r(
                "create",
                "authorization.k8s.io",
                "v1",
                "",
                "selfsubjectaccessreviews",
                "",
                "",
            ),
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            r(
                "create",
                "authorization.k8s.io",
                "v1",
                "",
                "selfsubjectrulesreviews",
                "",
                "",
            ),
        ),
        (
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            r(
                "create",
                "authentication.k8s.io",
                "v1",
                "",
                "selfsubjectreviews",
                "",
                "",
            ),
        ),
        // --- named groups ---
        (
            "GET",
            "/apis/apps/v1/namespaces/prod/deployments?limit=500",
            r("list", "apps", "v1", "prod", "deployments", "", ""),
        ),
        (
            "GET",
            "/apis/apps/v1/deployments",
            r("list", "apps", "v1", "", "deployments", "", ""),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
            r("patch", "apps", "v1", "prod", "deployments", "", "web"),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web?fieldManager=kubectl&fieldValidation=Strict&force=true",
            r("patch", "apps", "v1", "prod", "deployments", "", "web"),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web?dryRun=All&fieldManager=kubectl-client-side-apply",
            r("patch", "apps", "v1", "prod", "deployments", "", "web"),
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/prod/replicasets?labelSelector=app%3Dweb%2Cpod-template-hash+in+%28abc%29",
            r(
                "deletecollection",
                "apps",
                "v1",
                "prod",
                "replicasets",
                "",
                "",
            ),
        ),
        (
            "GET",
            "/apis/batch/v1/namespaces/jobs/cronjobs/nightly",
            r("get", "batch", "v1", "jobs", "cronjobs", "", "nightly"),
        ),
        (
            "POST",
            "/apis/batch/v1/namespaces/default/jobs",
            r("create", "batch", "v1", "default", "jobs", "", ""),
        ),
        (
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager",
            r(
                "get",
                "coordination.k8s.io",
                "v1",
                "kube-system",
                "leases",
                "",
                "kube-controller-manager",
            ),
        ),
        (
            "GET",
            "/apis/networking.k8s.io/v1/ingresses",
            r("list", "networking.k8s.io", "v1", "", "ingresses", "", ""),
        ),
        (
            "GET",
            "/apis/mcp-warden.io/v1alpha1/namespaces/agents/accessrequests?watch=1",
            r(
                "watch",
                "mcp-warden.io",
                "v1alpha1",
                "agents",
                "accessrequests",
                "",
                "",
            ),
        ),
        (
            "PUT",
            "/apis/mcp-warden.io/v1alpha1/namespaces/agents/accessrequests/ar-1/status",
            r(
                "update",
                "mcp-warden.io",
                "v1alpha1",
                "agents",
                "accessrequests",
                "status",
                "ar-1",
            ),
        ),
        (
            "GET",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
            r(
                "list",
                "metrics.k8s.io",
                "v1beta1",
                "default",
                "pods",
                "",
                "",
            ),
        ),
        (
            "GET",
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/pods/*/http_requests",
            r(
                "get",
                "custom.metrics.k8s.io",
                "v1beta1",
                "default",
                "pods",
                "http_requests",
                "*",
            ),
        ),
        (
            "HEAD",
            "/api/v1/namespaces/default/pods/web-0",
            r("get", "", "v1", "default", "pods", "", "web-0"),
        ),
        // Legacy proxy verb: no subresource, the rest is the proxied path.
        (
            "GET",
            "/api/v1/proxy/namespaces/default/pods/web-0/metrics",
            r("proxy", "", "v1", "default", "pods", "", "web-0"),
        ),
    ]
}

#[test]
fn real_request_lines() {
    let table = table();
    assert!(table.len() >= 60, "only {} lines", table.len());
    for (method, line, want) in table {
        let got = parse_request(method, line).unwrap_or_else(|e| panic!("{method} {line}: {e}"));
        let ctx = format!("{method} {line} -> {got:?}");
        assert_eq!(
            got.is_resource_request, want.resource_request,
            "resource? {ctx}"
        );
        assert_eq!(got.verb, want.verb, "verb {ctx}");
        assert_eq!(got.api_group, want.group, "group {ctx}");
        assert_eq!(got.api_version, want.version, "version {ctx}");
        assert_eq!(got.namespace, want.ns, "namespace {ctx}");
        assert_eq!(got.resource, want.resource, "resource {ctx}");
        assert_eq!(got.subresource, want.sub, "subresource {ctx}");
        assert_eq!(got.name, want.name, "name {ctx}");
        if want.resource_request {
            let prefix = if want.group.is_empty() { "api" } else { "apis" };
            assert_eq!(got.api_prefix, prefix, "prefix {ctx}");
        } else {
            assert_eq!(got.api_prefix, "", "prefix {ctx}");
        }
        let path = line.split('?').next().unwrap_or_default();
        assert_eq!(got.path, path, "path {ctx}");
    }
}

#[test]
fn discovery_is_recognised() {
    for p in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps",
        "/apis/apps/v1",
        "/version",
        "/openapi/v2",
        "/openapi/v3/apis/apps/v1",
    ] {
        let a = parse_request("GET", p).unwrap();
        assert!(a.is_discovery(), "{p}");
    }
    for (m, p) in [
        ("POST", "/api"),
        ("GET", "/healthz"),
        ("GET", "/api/v1/pods"),
        ("GET", "/apis/apps/v1/deployments"),
        ("GET", "/metrics"),
        ("GET", "/"),
    ] {
        let a = parse_request(m, p).unwrap();
        assert!(!a.is_discovery(), "{m} {p}");
    }
}

#[test]
fn harmless_escapes_decode_like_the_api_server() {
    let a = parse_request("GET", "/api/v1/namespaces/de%66ault/pods/web-0").unwrap();
    assert_eq!(
        (a.namespace.as_str(), a.path.as_str()),
        ("default", "/api/v1/namespaces/default/pods/web-0")
    );
    let a = parse_request("GET", "/api/v1/namespaces/d/services/web/proxy/search%20me").unwrap();
    assert_eq!(a.verb, "create");
    // Exec commands may carry newlines and non-ASCII once decoded.
    let a = parse_request(
        "POST",
        "/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=echo+a%0Aecho+%C3%A9",
    )
    .unwrap();
    assert_eq!(a.resource_with_subresource(), "pods/exec");
    assert!(a.is_connect());
}

#[test]
fn upgrades_only_for_the_connect_subresources_the_sidecar_tunnels() {
    for (method, path) in [
        ("GET", "/api/v1/namespaces/d/pods/p/exec?command=sh"),
        ("POST", "/api/v1/namespaces/d/pods/p/attach"),
        ("POST", "/api/v1/namespaces/d/pods/p/portforward"),
        ("GET", "/api/v1/namespaces/d/pods/p/proxy/x"),
        ("GET", "/api/v1/namespaces/d/services/s/proxy"),
        ("GET", "/api/v1/nodes/n/proxy/metrics"),
    ] {
        assert!(
            parse_request(method, path).unwrap().upgrade_allowed(),
            "{path}"
        );
    }
    for (method, path) in [
        ("GET", "/api/v1/namespaces/demo/secrets/db"),
        ("GET", "/api/v1/namespaces/demo/secrets"),
        ("GET", "/api/v1/namespaces/demo/pods?watch=true"),
        ("PATCH", "/api/v1/namespaces/demo/configmaps/c"),
        ("GET", "/api/v1/namespaces/d/pods/p/log"),
        ("GET", "/apis/example.com/v1/namespaces/d/widgets/w/exec"),
        ("GET", "/api/v1/namespaces/d/secrets/s/proxy"),
        ("GET", "/version"),
        ("GET", "/api"),
    ] {
        assert!(
            !parse_request(method, path).unwrap().upgrade_allowed(),
            "{path}"
        );
    }
}
