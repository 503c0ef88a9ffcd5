//! URL paths to routes, following kube-apiserver's RequestInfoFactory: the
//! non-resource paths (discovery, health, OpenAPI) and
//! `/api/v1/...` / `/apis/GROUP/VERSION/...` resource paths with optional
//! `watch/` prefix, namespace, name and subresource.

/// A parsed request path.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Version,
    Health,
    Api,
    Apis,
    ApiGroup(String),
    ApiResources { group: String, version: String },
    OpenApi,
    Resource(ResPath),
    NotFound,
}

/// A resource path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResPath {
    pub group: String,
    pub version: String,
    /// The deprecated `/watch/` path prefix was used.
    pub watch_prefix: bool,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses a request path (without query).
pub fn parse(path: &str) -> Route {
    if path.contains("//") || path.contains('%') {
        return Route::NotFound;
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Route::NotFound;
    }
    match parts.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["openapi", ..] => Route::OpenApi,
        ["api"] => Route::Api,
        ["apis"] => Route::Apis,
        ["api", "v1"] => Route::ApiResources {
            group: String::new(),
            version: "v1".into(),
        },
        ["apis", g] => Route::ApiGroup(g.to_string()),
        ["apis", g, v] => Route::ApiResources {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["api", "v1", rest @ ..] => resource(String::new(), "v1".into(), rest),
        ["apis", g, v, rest @ ..] => resource(g.to_string(), v.to_string(), rest),
        _ => Route::NotFound,
    }
}

fn resource(group: String, version: String, rest: &[&str]) -> Route {
    let mut rest = rest;
    let mut rp = ResPath {
        group,
        version,
        ..Default::default()
    };
    if rest.first() == Some(&"watch") {
        rp.watch_prefix = true;
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        rp.namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let (res, name, sub) = match rest {
        [r] => (r, None, None),
        [r, n] => (r, Some(n), None),
        [r, n, s] => (r, Some(n), Some(s)),
        _ => return Route::NotFound,
    };
    if res.is_empty() || name.is_some_and(|n| n.is_empty()) {
        return Route::NotFound;
    }
    rp.resource = res.to_string();
    rp.name = name.map(|s| s.to_string());
    rp.subresource = sub.map(|s| s.to_string());
    // `namespaces/NAME` is the namespace object itself, not a scope.
    if rp.resource == "namespaces" {
        rp.namespace = None;
    }
    Route::Resource(rp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rp(p: &str) -> ResPath {
        match parse(p) {
            Route::Resource(r) => r,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = rp("/api/v1/namespaces/prod/pods/web-0/log");
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (Some("prod"), "pods", Some("web-0"), Some("log"))
        );
        let r = rp("/api/v1/namespaces/prod");
        assert_eq!(
            (r.namespace, r.resource.as_str(), r.name.as_deref()),
            (None, "namespaces", Some("prod"))
        );
        let r = rp("/api/v1/namespaces/prod/status");
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("prod"), Some("status"))
        );
        let r = rp("/apis/apps/v1/watch/namespaces/a/deployments");
        assert!(r.watch_prefix);
        assert_eq!(r.group, "apps");
        let r = rp("/api/v1/pods");
        assert_eq!((r.namespace, r.name), (None, None));
        assert_eq!(parse("/api/v1/namespaces/a/pods/b/c/d"), Route::NotFound);
        assert_eq!(parse("/api/v1/namespaces/a/pods/..%2fx"), Route::NotFound);
        assert_eq!(parse("/api//v1"), Route::NotFound);
        assert_eq!(parse("/apis/apps"), Route::ApiGroup("apps".into()));
        assert_eq!(parse("/version"), Route::Version);
    }
}
