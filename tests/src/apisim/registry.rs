//! The resource types kube-apisim serves: the built-in ones and those that
//! CustomResourceDefinitions register at run time. Discovery, routing, Table
//! printing and defaulting all read this one registry.

use serde_json::Value;
use std::sync::RwLock;

/// One additional printer column of a CRD (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// A servable resource type (one group/version/resource).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    /// Plural resource name, as in the URL.
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Subresources and the verbs they support.
    pub subresources: Vec<(String, Vec<String>)>,
    /// True for custom resources (JSON merge only, items keep kind/apiVersion).
    pub custom: bool,
    /// Printer columns of a CRD; empty for built-ins.
    pub printer_columns: Vec<PrinterColumn>,
    /// The version's `schema.openAPIV3Schema` (custom resources only): what
    /// [`super::schema::admit`] prunes, defaults and validates against.
    pub schema: Option<Value>,
}

impl ResourceInfo {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key used by the store: `group/resource`.
    pub fn group_resource(&self) -> String {
        format!("{}/{}", self.group, self.resource)
    }

    /// `resource.group` as kube-apiserver prints it in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// Verbs of the main resource as discovery lists them.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Whether `sub` is a subresource of this type.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|(s, _)| s == sub)
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    resource: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    categories: &[&str],
    subs: &[(&str, &[&str])],
) -> ResourceInfo {
    ResourceInfo {
        group: group.to_string(),
        version: "v1".to_string(),
        resource: resource.to_string(),
        singular: singular.to_string(),
        kind: kind.to_string(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        subresources: subs
            .iter()
            .map(|(s, v)| (s.to_string(), v.iter().map(|x| x.to_string()).collect()))
            .collect(),
        custom: false,
        printer_columns: Vec::new(),
        schema: None,
    }
}

const GUP: &[&str] = &["get", "patch", "update"];

/// The built-in resource types.
pub fn builtins() -> Vec<ResourceInfo> {
    vec![
        builtin(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            &[],
            &[("finalize", &["update"]), ("status", GUP)],
        ),
        builtin(
            "",
            "pods",
            "pod",
            "Pod",
            true,
            &["po"],
            &["all"],
            &[
                ("attach", &["create", "get"]),
                ("exec", &["create", "get"]),
                ("log", &["get"]),
                ("portforward", &["create", "get"]),
                ("status", GUP),
            ],
        ),
        builtin("", "secrets", "secret", "Secret", true, &[], &[], &[]),
        builtin(
            "",
            "configmaps",
            "configmap",
            "ConfigMap",
            true,
            &["cm"],
            &[],
            &[],
        ),
        builtin(
            "",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
            &[],
            &[("token", &["create"])],
        ),
        builtin(
            "",
            "services",
            "service",
            "Service",
            true,
            &["svc"],
            &["all"],
            &[("status", GUP)],
        ),
        builtin("", "events", "event", "Event", true, &["ev"], &[], &[]),
        builtin(
            "apps",
            "deployments",
            "deployment",
            "Deployment",
            true,
            &["deploy"],
            &["all"],
            &[("scale", GUP), ("status", GUP)],
        ),
        builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["api-extensions"],
            &[("status", GUP)],
        ),
    ]
}

/// Errors turning a CRD object into resource types.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("CustomResourceDefinition {name:?}: {msg}")]
    Invalid { name: String, msg: String },
}

/// The resource types (one per served version) a CRD object defines.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceInfo>, CrdError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let bad = |msg: &str| CrdError::Invalid {
        name: name.clone(),
        msg: msg.to_string(),
    };
    let spec = crd.get("spec").ok_or_else(|| bad("spec is required"))?;
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).map(str::to_string);
    let group = s("/group").ok_or_else(|| bad("spec.group is required"))?;
    let plural = s("/names/plural").ok_or_else(|| bad("spec.names.plural is required"))?;
    let kind = s("/names/kind").ok_or_else(|| bad("spec.names.kind is required"))?;
    if name != format!("{plural}.{group}") {
        return Err(bad(
            "metadata.name must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let singular = s("/names/singular").unwrap_or_else(|| kind.to_lowercase());
    let list_kind = s("/names/listKind").unwrap_or_else(|| format!("{kind}List"));
    let namespaced = s("/scope").as_deref() != Some("Cluster");
    let strs = |p: &str| -> Vec<String> {
        spec.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strs("/names/shortNames");
    let categories = strs("/names/categories");
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("spec.versions is required"))?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let Some(version) = v.get("name").and_then(Value::as_str) else {
            return Err(bad("spec.versions[].name is required"));
        };
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push((
                "status".to_string(),
                vec!["get".into(), "patch".into(), "update".into()],
            ));
        }
        if v.pointer("/subresources/scale").is_some() {
            subresources.push((
                "scale".to_string(),
                vec!["get".into(), "patch".into(), "update".into()],
            ));
        }
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        let g =
                            |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        let json_path = g("jsonPath");
                        if json_path.is_empty() {
                            return None;
                        }
                        Some(PrinterColumn {
                            name: g("name"),
                            type_: g("type"),
                            format: g("format"),
                            description: g("description"),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            json_path,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceInfo {
            group: group.clone(),
            version: version.to_string(),
            resource: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            namespaced,
            short_names: short_names.clone(),
            categories: categories.clone(),
            subresources,
            custom: true,
            printer_columns,
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
        });
    }
    if out.is_empty() {
        return Err(bad("no served version"));
    }
    Ok(out)
}

/// The live set of resource types.
#[derive(Debug)]
pub struct Registry {
    types: RwLock<Vec<ResourceInfo>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            types: RwLock::new(builtins()),
        }
    }
}

impl Registry {
    /// A snapshot of all types.
    pub fn all(&self) -> Vec<ResourceInfo> {
        match self.types.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Looks up a type by group, version and plural resource name.
    pub fn find(&self, group: &str, version: &str, resource: &str) -> Option<ResourceInfo> {
        self.all()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
    }

    /// Whether any type is served under `group/version`.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.all()
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    /// Registers (or replaces) the types of a CRD.
    pub fn register_crd(&self, crd: &Value) -> Result<(), CrdError> {
        let new = from_crd(crd)?;
        let mut g = match self.types.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.retain(|r| !(r.custom && r.group == new[0].group && r.resource == new[0].resource));
        g.extend(new);
        Ok(())
    }

    /// Removes the types a CRD registered.
    pub fn unregister_crd(&self, crd: &Value) {
        if let Ok(new) = from_crd(crd) {
            let mut g = match self.types.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            g.retain(|r| !(r.custom && r.group == new[0].group && r.resource == new[0].resource));
        }
    }
}
