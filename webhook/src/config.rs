//! Injection settings: what the webhook puts into a pod.
//!
//! Read from the `--config FILE` YAML (camelCase keys, every key optional),
//! then overridden by `MCP_WARDEN_*` environment variables, one per field
//! (`sidecarImage` ↔ `MCP_WARDEN_SIDECAR_IMAGE`). The environment is passed in
//! as a lookup function so the merge stays a pure function that tests drive.

pub use mcp_warden_shared::collector::CollectorFormat;
use mcp_warden_shared::{contract, names};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Errors reading or validating the injection settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML file is not a valid config document.
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// An environment twin holds a value that does not parse.
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    /// A setting is out of range or inconsistent.
    #[error("setting {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Which form of the sidecar to inject: `true` (native sidecar: the first
/// init container with `restartPolicy: Always`, Kubernetes >= 1.29),
/// `false` (the first regular container, held ready before the app starts,
/// for every version), or `auto`: native on servers >= 1.29, the container
/// form below and whenever the server's version is not known.
///
/// In YAML `true`/`false` (booleans or strings) and `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativeSidecar {
    /// Always the native sidecar.
    True,
    /// Always the container form.
    False,
    /// By the API server's version.
    #[default]
    Auto,
}

impl NativeSidecar {
    /// Parses `true`, `false` or `auto`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "true" => Some(NativeSidecar::True),
            "false" => Some(NativeSidecar::False),
            "auto" => Some(NativeSidecar::Auto),
            _ => None,
        }
    }

    /// The setting as written in YAML and the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            NativeSidecar::True => "true",
            NativeSidecar::False => "false",
            NativeSidecar::Auto => "auto",
        }
    }

    /// The form for a server of version `server` (`None`: unknown). Unknown
    /// means the container form under `auto`: every server accepts it, while
    /// a server before 1.29 refuses (1.20-1.27) or silently breaks (1.28
    /// with the gate off) the native form.
    pub fn resolve(self, server: Option<KubeVersion>) -> SidecarForm {
        match self {
            NativeSidecar::True => SidecarForm::Native,
            NativeSidecar::False => SidecarForm::Container,
            NativeSidecar::Auto => match server {
                Some(v) if v.has_native_sidecars() => SidecarForm::Native,
                _ => SidecarForm::Container,
            },
        }
    }
}

impl Serialize for NativeSidecar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NativeSidecar::True => s.serialize_bool(true),
            NativeSidecar::False => s.serialize_bool(false),
            NativeSidecar::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for NativeSidecar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(NativeSidecar::True),
            Raw::Bool(false) => Ok(NativeSidecar::False),
            Raw::Text(t) => NativeSidecar::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("nativeSidecar: {t:?} is not true, false or auto"))
            }),
        }
    }
}

/// Where the sidecar goes in the pod (the resolved [`NativeSidecar`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarForm {
    /// First init container with `restartPolicy: Always` (Kubernetes >= 1.29).
    Native,
    /// First regular container; a `postStart` hook holds the app until the
    /// sidecar is ready and a `preStop` hook keeps it serving while the app
    /// shuts down.
    Container,
}

impl SidecarForm {
    /// `native` or `container`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarForm::Native => "native",
            SidecarForm::Container => "container",
        }
    }
}

/// A Kubernetes API server version (`/version`'s `major` and `minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    /// Major version, 1.
    pub major: u32,
    /// Minor version, e.g. 29.
    pub minor: u32,
}

impl KubeVersion {
    /// From `/version`'s `major` and `minor` strings; providers append `+`
    /// (`"29+"`), which is ignored.
    pub fn from_parts(major: &str, minor: &str) -> Option<Self> {
        let digits = |s: &str| -> Option<u32> {
            let d: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
            d.parse().ok()
        };
        Some(KubeVersion {
            major: digits(major)?,
            minor: digits(minor)?,
        })
    }

    /// Parses `1.29`, `v1.29.4` or `1.29+`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let mut parts = s.split('.');
        KubeVersion::from_parts(parts.next()?, parts.next()?)
    }

    /// Native sidecars are on by default from 1.29 (beta, gate on); 1.28 has
    /// them behind a gate that is off by default.
    pub fn has_native_sidecars(self) -> bool {
        (self.major, self.minor) >= (1, 29)
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Compute resources of the sidecar container (Kubernetes quantity strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarResources {
    /// `resources.requests` (for example `cpu: 10m`, `memory: 32Mi`).
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    /// `resources.limits` (for example `memory: 128Mi`).
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

impl Default for SidecarResources {
    fn default() -> Self {
        SidecarResources {
            requests: BTreeMap::from([
                ("cpu".to_string(), "10m".to_string()),
                ("memory".to_string(), "32Mi".to_string()),
            ]),
            limits: BTreeMap::from([("memory".to_string(), "256Mi".to_string())]),
        }
    }
}

/// Everything the webhook needs to build the sidecar and rewire a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InjectConfig {
    /// Sidecar image reference. Env: `MCP_WARDEN_SIDECAR_IMAGE`.
    pub sidecar_image: String,
    /// `imagePullPolicy` of the sidecar (`Always`, `IfNotPresent`, `Never`).
    /// Env: `MCP_WARDEN_IMAGE_PULL_POLICY`.
    pub image_pull_policy: String,
    /// Sidecar requests and limits. Env: `MCP_WARDEN_SIDECAR_RESOURCES` (JSON).
    pub resources: SidecarResources,
    /// Non-root uid (and gid) the sidecar runs as; if the app runs as the same
    /// uid the next free one is used, so the app never shares the sidecar's
    /// identity. Env: `MCP_WARDEN_SIDECAR_UID`.
    pub sidecar_uid: i64,
    /// Collector URL the sidecar streams recordings to; empty: no collector
    /// setting is passed and the sidecar uses its own default.
    /// Env: `MCP_WARDEN_COLLECTOR_URL`.
    pub collector_url: String,
    /// Recording stream format. Env: `MCP_WARDEN_COLLECTOR_FORMAT`.
    pub collector_format: CollectorFormat,
    /// Secret (in the pod's namespace, key `ca.crt`) with the collector's CA;
    /// empty: system roots. Env: `MCP_WARDEN_COLLECTOR_CA_SECRET`.
    pub collector_ca_secret: String,
    /// Secret (in the pod's namespace, key `token`) with the bearer token for
    /// the collector; empty: none. Env: `MCP_WARDEN_COLLECTOR_TOKEN_SECRET`.
    pub collector_token_secret: String,
    /// Cluster name stamped on recordings (`MCP_WARDEN_CLUSTER_NAME` in the
    /// sidecar); empty: not set. Env: `MCP_WARDEN_CLUSTER_NAME`.
    pub cluster_name: String,
    /// Form of the injected sidecar: `auto` (native on API servers >= 1.29,
    /// read from `/version` at start and re-checked; the container form
    /// below, or while the version cannot be read), `true` (always native)
    /// or `false` (always the first regular container).
    /// Env: `MCP_WARDEN_NATIVE_SIDECAR`.
    pub native_sidecar: NativeSidecar,
    /// The cluster's DNS domain: `kubernetes.default.svc.<clusterDomain>` is
    /// one of the names sent to the sidecar (`hostAliases`) and in its
    /// serving certificate. Env: `MCP_WARDEN_CLUSTER_DOMAIN`.
    pub cluster_domain: String,
    /// Port on 127.0.0.1 where the sidecar also serves the app-facing API
    /// (the port of `https://kubernetes.default.svc`): 443 in a pod, with
    /// capability `NET_BIND_SERVICE`; another port for tests; 0: no second
    /// listener. Env: `MCP_WARDEN_HTTPS_ALIAS_PORT`.
    pub https_alias_port: u16,
    /// Namespace the webhook itself runs in; never injected.
    /// Env: `MCP_WARDEN_WEBHOOK_NAMESPACE`.
    pub webhook_namespace: String,
    /// Further namespaces that are never injected (`kube-system` always is
    /// excluded). Env: `MCP_WARDEN_EXCLUDED_NAMESPACES` (comma-separated).
    pub excluded_namespaces: Vec<String>,
    /// Policy ConfigMap used when the pod has no `mcp-warden.io/policy`
    /// annotation. Env: `MCP_WARDEN_POLICY_CONFIGMAP`.
    pub policy_config_map: String,
    /// Audiences that mean "the API server" in a projected token volume; a
    /// token for one of these (or for no audience) is taken from the app.
    /// Env: `MCP_WARDEN_API_AUDIENCES` (comma-separated).
    pub api_audiences: Vec<String>,
    /// Port of the sidecar's TLS listener for the app on 127.0.0.1.
    /// Env: `MCP_WARDEN_API_PORT`.
    pub api_port: u16,
    /// Port of the sidecar's plain-HTTP admin listener (probes, metrics).
    /// Env: `MCP_WARDEN_ADMIN_PORT`.
    pub admin_port: u16,
    /// `expirationSeconds` of the real service-account token (kubelet
    /// rotates it at 80% of its life). Env: `MCP_WARDEN_TOKEN_EXPIRATION_SECONDS`.
    pub token_expiration_seconds: i64,
    /// `sizeLimit` of the recording spool emptyDir, a Kubernetes quantity
    /// such as `256Mi` or `1G` (see [`names::is_quantity`]).
    /// Env: `MCP_WARDEN_SPOOL_SIZE_LIMIT`.
    pub spool_size_limit: String,
    /// End users the injected sidecars accept (their `--oidc-*` flags); no
    /// issuer: none. Env: `MCP_WARDEN_END_USERS` (JSON).
    pub end_users: EndUsers,
}

/// The OIDC settings passed to every injected sidecar, named as
/// kube-apiserver's `--oidc-*` flags (docs/sidecar.md says what each does).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EndUsers {
    /// Issuers whose tokens name end users (`https://` URLs); empty: end-user
    /// tokens are not accepted.
    pub issuer_urls: Vec<String>,
    /// The `aud` the tokens must carry; required with an issuer.
    pub audience: String,
    /// Claim that names the user; unset: the sidecar's default (`sub`).
    pub username_claim: Option<String>,
    /// Prefix of user names; unset: the sidecar's default (as kube-apiserver:
    /// `ISSUER#` unless the claim is `email`).
    pub username_prefix: Option<String>,
    /// Claim that lists the groups; unset: no groups.
    pub groups_claim: Option<String>,
    /// Prefix of group names; unset: none.
    pub groups_prefix: Option<String>,
    /// Send requests upstream as the end user (`Impersonate-*`); needs the
    /// chart's `endUsers.impersonation` grant.
    pub impersonate: bool,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            sidecar_image: "ghcr.io/mcp-warden/mcp-warden-sidecar:0.1.0".to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            resources: SidecarResources::default(),
            sidecar_uid: 15020,
            collector_url: String::new(),
            collector_format: CollectorFormat::EventList,
            collector_ca_secret: String::new(),
            collector_token_secret: String::new(),
            cluster_name: String::new(),
            native_sidecar: NativeSidecar::Auto,
            cluster_domain: "cluster.local".to_string(),
            https_alias_port: 443,
            webhook_namespace: contract::WEBHOOK_NAMESPACE.to_string(),
            excluded_namespaces: Vec::new(),
            policy_config_map: contract::DEFAULT_POLICY_CONFIGMAP.to_string(),
            api_audiences: vec![
                "https://kubernetes.default.svc.cluster.local".to_string(),
                "https://kubernetes.default.svc".to_string(),
                "kubernetes.default.svc".to_string(),
            ],
            api_port: contract::API_PORT,
            admin_port: contract::ADMIN_PORT,
            token_expiration_seconds: 3607,
            spool_size_limit: "256Mi".to_string(),
            end_users: EndUsers::default(),
        }
    }
}

impl InjectConfig {
    /// Parses a config file's YAML (an empty document means all defaults).
    pub fn from_yaml(path: &str, yaml: &str) -> Result<Self, ConfigError> {
        if yaml.trim().is_empty() {
            return Ok(InjectConfig::default());
        }
        serde_saphyr::from_str::<InjectConfig>(yaml).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// Applies the `MCP_WARDEN_*` twins found by `env` over `self`, then
    /// validates the result.
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        fn set_string(env: &impl Fn(&str) -> Option<String>, var: &str, field: &mut String) {
            if let Some(v) = env(var) {
                *field = v;
            }
        }
        fn list(v: &str) -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }
        fn parse<T: std::str::FromStr>(var: &str, v: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse::<T>().map_err(|e| ConfigError::Env {
                var: var.to_string(),
                message: e.to_string(),
                value: v,
            })
        }

        set_string(&env, "MCP_WARDEN_SIDECAR_IMAGE", &mut self.sidecar_image);
        set_string(
            &env,
            "MCP_WARDEN_IMAGE_PULL_POLICY",
            &mut self.image_pull_policy,
        );
        if let Some(v) = env("MCP_WARDEN_SIDECAR_RESOURCES") {
            self.resources = serde_json::from_str(&v).map_err(|e| ConfigError::Env {
                var: "MCP_WARDEN_SIDECAR_RESOURCES".to_string(),
                message: e.to_string(),
                value: v,
            })?;
        }
        if let Some(v) = env("MCP_WARDEN_SIDECAR_UID") {
            self.sidecar_uid = parse("MCP_WARDEN_SIDECAR_UID", v)?;
        }
        set_string(&env, "MCP_WARDEN_COLLECTOR_URL", &mut self.collector_url);
        if let Some(v) = env("MCP_WARDEN_COLLECTOR_FORMAT") {
            self.collector_format = v.parse().map_err(|_| ConfigError::Env {
                var: "MCP_WARDEN_COLLECTOR_FORMAT".to_string(),
                value: v,
                message: "expected eventlist or ndjson".to_string(),
            })?;
        }
        set_string(
            &env,
            "MCP_WARDEN_COLLECTOR_CA_SECRET",
            &mut self.collector_ca_secret,
        );
        set_string(
            &env,
            "MCP_WARDEN_COLLECTOR_TOKEN_SECRET",
            &mut self.collector_token_secret,
        );
        set_string(&env, "MCP_WARDEN_CLUSTER_NAME", &mut self.cluster_name);
        if let Some(v) = env("MCP_WARDEN_NATIVE_SIDECAR") {
            self.native_sidecar = NativeSidecar::parse(&v).ok_or_else(|| ConfigError::Env {
                var: "MCP_WARDEN_NATIVE_SIDECAR".to_string(),
                message: "expected true, false or auto".to_string(),
                value: v,
            })?;
        }
        set_string(&env, "MCP_WARDEN_CLUSTER_DOMAIN", &mut self.cluster_domain);
        if let Some(v) = env("MCP_WARDEN_HTTPS_ALIAS_PORT") {
            self.https_alias_port = parse("MCP_WARDEN_HTTPS_ALIAS_PORT", v)?;
        }
        set_string(
            &env,
            "MCP_WARDEN_WEBHOOK_NAMESPACE",
            &mut self.webhook_namespace,
        );
        if let Some(v) = env("MCP_WARDEN_EXCLUDED_NAMESPACES") {
            self.excluded_namespaces = list(&v);
        }
        set_string(
            &env,
            "MCP_WARDEN_POLICY_CONFIGMAP",
            &mut self.policy_config_map,
        );
        if let Some(v) = env("MCP_WARDEN_API_AUDIENCES") {
            self.api_audiences = list(&v);
        }
        if let Some(v) = env("MCP_WARDEN_API_PORT") {
            self.api_port = parse("MCP_WARDEN_API_PORT", v)?;
        }
        if let Some(v) = env("MCP_WARDEN_ADMIN_PORT") {
            self.admin_port = parse("MCP_WARDEN_ADMIN_PORT", v)?;
        }
        if let Some(v) = env("MCP_WARDEN_TOKEN_EXPIRATION_SECONDS") {
            self.token_expiration_seconds = parse("MCP_WARDEN_TOKEN_EXPIRATION_SECONDS", v)?;
        }
        set_string(
            &env,
            "MCP_WARDEN_SPOOL_SIZE_LIMIT",
            &mut self.spool_size_limit,
        );
        if let Some(v) = env("MCP_WARDEN_END_USERS") {
            self.end_users = serde_json::from_str(&v).map_err(|e| ConfigError::Env {
                var: "MCP_WARDEN_END_USERS".to_string(),
                message: e.to_string(),
                value: v,
            })?;
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks ranges the API server would otherwise reject at pod creation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sidecar_image.trim().is_empty() {
            return Err(ConfigError::Invalid {
                field: "sidecarImage",
                message: "must not be empty".to_string(),
            });
        }
        if !matches!(
            self.image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            return Err(ConfigError::Invalid {
                field: "imagePullPolicy",
                message: format!(
                    "{:?} is not Always, IfNotPresent or Never",
                    self.image_pull_policy
                ),
            });
        }
        if self.sidecar_uid <= 0 {
            return Err(ConfigError::Invalid {
                field: "sidecarUid",
                message: "must be a non-root uid (> 0)".to_string(),
            });
        }
        // kube-apiserver rejects projected tokens shorter than 10 minutes.
        if self.token_expiration_seconds < 600 {
            return Err(ConfigError::Invalid {
                field: "tokenExpirationSeconds",
                message: "must be at least 600".to_string(),
            });
        }
        if !names::is_dns_domain(self.cluster_domain.trim_end_matches('.')) {
            return Err(ConfigError::Invalid {
                field: "clusterDomain",
                message: format!("{:?} is not a DNS domain", self.cluster_domain),
            });
        }
        // Written into the spool emptyDir's sizeLimit: a bad one would make
        // every injected pod fail to create, far from this setting.
        if !names::is_quantity(&self.spool_size_limit) {
            return Err(ConfigError::Invalid {
                field: "spoolSizeLimit",
                message: format!(
                    "{:?} is not a size such as 256Mi or 1G (digits, an optional fraction, \
                     an optional Ki/Mi/Gi/Ti/Pi/Ei or k/M/G/T/P/E suffix)",
                    self.spool_size_limit
                ),
            });
        }
        // Checked here, not first in every injected sidecar's crash loop.
        let eu = &self.end_users;
        if let Some(bad) = eu
            .issuer_urls
            .iter()
            .find(|u| !u.starts_with("https://") || u.contains(','))
        {
            return Err(ConfigError::Invalid {
                field: "endUsers.issuerUrls",
                message: format!("{bad:?} is not an https:// URL without commas"),
            });
        }
        if !eu.issuer_urls.is_empty() && eu.audience.trim().is_empty() {
            return Err(ConfigError::Invalid {
                field: "endUsers.audience",
                message: "is required with endUsers.issuerUrls".to_string(),
            });
        }
        if eu.issuer_urls.is_empty() && eu.impersonate {
            return Err(ConfigError::Invalid {
                field: "endUsers.impersonate",
                message: "needs endUsers.issuerUrls (there is no end user to impersonate)"
                    .to_string(),
            });
        }
        if self.https_alias_port != 0
            && (self.https_alias_port == self.api_port || self.https_alias_port == self.admin_port)
        {
            return Err(ConfigError::Invalid {
                field: "httpsAliasPort",
                message: "must differ from apiPort and adminPort (0 turns it off)".to_string(),
            });
        }
        if self.api_port == 0 || self.admin_port == 0 || self.api_port == self.admin_port {
            return Err(ConfigError::Invalid {
                field: "apiPort/adminPort",
                message: "must be non-zero and distinct".to_string(),
            });
        }
        Ok(())
    }

    /// True when pods in `namespace` must never be injected.
    pub fn is_excluded_namespace(&self, namespace: &str) -> bool {
        namespace == "kube-system"
            || namespace == self.webhook_namespace
            || self.excluded_namespaces.iter().any(|n| n == namespace)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        InjectConfig::default().validate().unwrap();
    }

    #[test]
    fn yaml_then_env() {
        let c = InjectConfig::from_yaml(
            "c.yaml",
            "sidecarImage: example/sidecar:1\nnativeSidecar: false\nexcludedNamespaces: [a]\n",
        )
        .unwrap();
        assert_eq!(c.sidecar_image, "example/sidecar:1");
        assert_eq!(c.native_sidecar, NativeSidecar::False);
        let c = c
            .with_env(|k| match k {
                "MCP_WARDEN_NATIVE_SIDECAR" => Some("true".into()),
                "MCP_WARDEN_EXCLUDED_NAMESPACES" => Some("x, y".into()),
                "MCP_WARDEN_COLLECTOR_FORMAT" => Some("ndjson".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(c.native_sidecar, NativeSidecar::True);
        assert_eq!(c.excluded_namespaces, vec!["x", "y"]);
        assert_eq!(c.collector_format, CollectorFormat::Ndjson);
    }

    /// The default must not be a form that servers before 1.29
    /// refuse; `auto` decides by the server's version.
    #[test]
    fn native_sidecar_defaults_to_auto_and_resolves_by_version() {
        let c = InjectConfig::default();
        assert_eq!(c.native_sidecar, NativeSidecar::Auto);
        let v = |s: &str| KubeVersion::parse(s);
        for (server, form) in [
            (v("1.20"), SidecarForm::Container),
            (v("v1.28.3"), SidecarForm::Container),
            (v("1.29+"), SidecarForm::Native),
            (v("1.33"), SidecarForm::Native),
            (None, SidecarForm::Container),
        ] {
            assert_eq!(c.native_sidecar.resolve(server), form, "{server:?}");
        }
        assert_eq!(KubeVersion::from_parts("1", "29+"), v("1.29"));
        assert_eq!(NativeSidecar::True.resolve(v("1.20")), SidecarForm::Native);
        assert_eq!(
            NativeSidecar::False.resolve(v("1.33")),
            SidecarForm::Container
        );
        for (yaml, want) in [
            ("nativeSidecar: auto\n", NativeSidecar::Auto),
            ("nativeSidecar: true\n", NativeSidecar::True),
            ("nativeSidecar: \"false\"\n", NativeSidecar::False),
        ] {
            assert_eq!(
                InjectConfig::from_yaml("c", yaml).unwrap().native_sidecar,
                want
            );
        }
        assert!(InjectConfig::from_yaml("c", "nativeSidecar: maybe\n").is_err());
        let e = InjectConfig::default()
            .with_env(|k| (k == "MCP_WARDEN_NATIVE_SIDECAR").then(|| "yes".into()))
            .unwrap_err();
        assert!(e.to_string().contains("MCP_WARDEN_NATIVE_SIDECAR"), "{e}");
        let c = InjectConfig::default()
            .with_env(|k| match k {
                "MCP_WARDEN_NATIVE_SIDECAR" => Some("auto".into()),
                "MCP_WARDEN_CLUSTER_DOMAIN" => Some("corp.example".into()),
                "MCP_WARDEN_HTTPS_ALIAS_PORT" => Some("10443".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(c.cluster_domain, "corp.example");
        assert_eq!(c.https_alias_port, 10443);
        let e = InjectConfig::from_yaml("c", "clusterDomain: Not_A_Domain\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("clusterDomain"), "{e}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = InjectConfig::from_yaml("c.yaml", "sidecarImg: x\n").unwrap_err();
        assert!(e.to_string().contains("c.yaml"), "{e}");
        let e = InjectConfig::default()
            .with_env(|k| (k == "MCP_WARDEN_SIDECAR_UID").then(|| "abc".into()))
            .unwrap_err();
        assert!(e.to_string().contains("MCP_WARDEN_SIDECAR_UID"), "{e}");
        let e = InjectConfig::default()
            .with_env(|k| (k == "MCP_WARDEN_SIDECAR_UID").then(|| "0".into()))
            .unwrap_err();
        assert!(e.to_string().contains("sidecarUid"), "{e}");
        let e = InjectConfig::default()
            .with_env(|k| (k == "MCP_WARDEN_SPOOL_SIZE_LIMIT").then(|| "lots".into()))
            .unwrap_err();
        assert!(e.to_string().contains("spoolSizeLimit"), "{e}");
        for ok in ["1Gi", "500M"] {
            InjectConfig::default()
                .with_env(|k| (k == "MCP_WARDEN_SPOOL_SIZE_LIMIT").then(|| ok.into()))
                .unwrap();
        }
    }
}
