//! The OIDC verifier: checks a JWT from a configured issuer (signature with
//! the issuer's keys, `exp`, `nbf`, `iss`, `aud`) with the `jsonwebtoken`
//! crate and maps its claims to an [`EndUser`].
//!
//! Keys come from the issuer's JWKS (discovery
//! `ISSUER/.well-known/openid-configuration` → `jwks_uri`, both over HTTPS,
//! each answer at most [`MAX_DOCUMENT_BYTES`] within [`FETCH_TIMEOUT`]) or
//! from `--oidc-jwks-file`. They are cached per issuer and fetched again
//! only for a key id the cache lacks, at most once per
//! `--oidc-jwks-refresh-interval`, so a stream of tokens with made-up key
//! ids cannot make the sidecar hammer the issuer.
//!
//! Only asymmetric algorithms are accepted (never `none` or HMAC, whose
//! "key" would be public). Rejections name the reason in fixed words; no
//! token text, and no claim value, is ever in a message or a log line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use mcp_warden_shared::enduser::{ClaimError, ClaimMapping, EndUser};

use super::config::{KeySource, OidcConfig};
use super::{Rejection, VerifyBearer};

/// Bound of one discovery or JWKS fetch (connect, TLS, answer, body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or JWKS accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most keys kept of one JWKS.
pub const MAX_KEYS: usize = 64;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// The algorithms end-user tokens may be signed with.
const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was rejected, or why keys could not be had. The words are
/// fixed: no token text or claim value is ever part of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm none not allowed")]
    AlgorithmNone,
    #[error("algorithm not allowed (only RS*, PS*, ES256, ES384, EdDSA)")]
    AlgorithmNotAllowed,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("unknown key id")]
    UnknownKey,
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("audience mismatch")]
    AudienceMismatch,
    #[error("issuer mismatch")]
    IssuerMismatch,
    #[error("missing claim {0}")]
    MissingClaim(String),
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("{0}")]
    Claims(#[from] ClaimError),
}

/// Why keys could not be fetched (logged, never shown to the app).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {why}")]
    Http { url: String, why: String },
    #[error("{url}: answered {code}")]
    Status { url: String, code: u16 },
    #[error("{url}: not a valid document: {why}")]
    Document { url: String, why: String },
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {path}: {why}")]
    Ca { path: PathBuf, why: String },
}

/// One issuer's cached keys.
struct IssuerKeys {
    issuer: String,
    state: tokio::sync::Mutex<KeyState>,
}

#[derive(Default)]
struct KeyState {
    keys: Option<Arc<Vec<Jwk>>>,
    fetched_at: Option<Instant>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Verifies end-user JWTs of the configured issuers.
pub struct OidcVerifier {
    issuers: Vec<IssuerKeys>,
    audience: String,
    mapping: ClaimMapping,
    source: KeySource,
    refresh_interval: Duration,
    client: HttpsClient,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// A verifier for `config`; keys are fetched on first use.
    pub fn new(config: &OidcConfig) -> Result<Self, FetchError> {
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                let certs = crate::forward::load_certs(path).map_err(|e| FetchError::Ca {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                for c in certs {
                    roots.add(c).map_err(|e| FetchError::Ca {
                        path: path.clone(),
                        why: e.to_string(),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Ca {
            path: config.ca_file.clone().unwrap_or_default(),
            why: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn);
        Ok(OidcVerifier {
            issuers: config
                .issuers
                .iter()
                .map(|i| IssuerKeys {
                    issuer: i.clone(),
                    state: Default::default(),
                })
                .collect(),
            audience: config.audience.clone(),
            mapping: config.mapping.clone(),
            source: config.keys.clone(),
            refresh_interval: config.refresh_interval,
            client,
        })
    }

    /// Verifies `token` and maps its claims.
    pub async fn verify_token(&self, token: &str) -> Result<EndUser, VerifyError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header = b64_json(h)?;
        let alg_name = header
            .get("alg")
            .and_then(|v| v.as_str())
            .ok_or(VerifyError::Malformed)?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(VerifyError::AlgorithmNone);
        }
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| ALLOWED_ALGORITHMS.contains(a))
            .ok_or(VerifyError::AlgorithmNotAllowed)?;
        let kid = header.get("kid").and_then(|v| v.as_str());
        // The issuer picks the keys; the signature and `iss` are checked
        // against it below, so an unverified `iss` only chooses where to look.
        let claims = b64_json(p)?;
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or(VerifyError::MissingClaim("iss".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or(VerifyError::UnknownIssuer)?;
        let key = self.key_for(issuer, kid, alg).await?;
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = LEEWAY_SECONDS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_audience(&[self.audience.as_str()]);
        v.set_issuer(&[issuer.issuer.as_str()]);
        v.required_spec_claims = ["exp", "iss", "aud"]
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>();
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => VerifyError::Expired,
                    ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                    ErrorKind::InvalidAudience => VerifyError::AudienceMismatch,
                    ErrorKind::InvalidIssuer => VerifyError::IssuerMismatch,
                    ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => {
                        VerifyError::InvalidSignature
                    }
                    ErrorKind::MissingRequiredClaim(c) => VerifyError::MissingClaim(c.clone()),
                    ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                        VerifyError::Invalid("the key does not fit the algorithm")
                    }
                    ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat => {
                        VerifyError::Invalid("the issuer's key is unusable")
                    }
                    _ => VerifyError::Malformed,
                }
            })?;
        Ok(self.mapping.map(&data.claims)?)
    }

    /// The key `kid` of `issuer` for `alg`: from the cache, or fetched when
    /// the cache is empty or lacks it and the last fetch is older than the
    /// refresh interval.
    async fn key_for(
        &self,
        issuer: &IssuerKeys,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, VerifyError> {
        let mut st = issuer.state.lock().await;
        let found = st.keys.as_ref().and_then(|k| pick(k, kid, alg));
        if let Some(key) = found {
            return key;
        }
        let may_fetch = st
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.refresh_interval);
        if may_fetch {
            st.fetched_at = Some(Instant::now());
            match self.fetch(&issuer.issuer).await {
                Ok(keys) => {
                    tracing::info!(issuer = %issuer.issuer, keys = keys.len(), "end-user token keys fetched");
                    st.keys = Some(Arc::new(keys));
                }
                Err(e) => {
                    tracing::warn!(issuer = %issuer.issuer, error = %e, "end-user token keys could not be fetched");
                }
            }
        }
        match &st.keys {
            None => Err(VerifyError::KeysUnavailable),
            Some(k) => pick(k, kid, alg).unwrap_or(Err(VerifyError::UnknownKey)),
        }
    }

    /// The usable keys of `issuer`'s JWKS.
    async fn fetch(&self, issuer: &str) -> Result<Vec<Jwk>, FetchError> {
        let body = match &self.source {
            KeySource::File(path) => read_file(path).await?,
            KeySource::Discovery => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value = serde_json::from_slice(&self.get(&url).await?)
                    .map_err(|e| FetchError::Document {
                        url: url.clone(),
                        why: e.to_string(),
                    })?;
                let doc_err = |why: &str| FetchError::Document {
                    url: url.clone(),
                    why: why.to_string(),
                };
                if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
                    return Err(doc_err("its issuer is not the configured issuer URL"));
                }
                let jwks_uri = doc
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| doc_err("no jwks_uri"))?;
                if !jwks_uri.starts_with("https://") {
                    return Err(doc_err("jwks_uri is not https"));
                }
                self.get(jwks_uri).await?
            }
        };
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| FetchError::Document {
            url: issuer.to_string(),
            why: format!("not a JWKS: {e}"),
        })?;
        Ok(set
            .keys
            .into_iter()
            .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
            .take(MAX_KEYS)
            .collect())
    }

    async fn get(&self, url: &str) -> Result<Bytes, FetchError> {
        let http = |why: String| FetchError::Http {
            url: url.to_string(),
            why,
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| http(e.to_string()))?;
        let req = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| http(e.to_string()))?;
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| http(e.to_string()))?;
            if resp.status() != http::StatusCode::OK {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    code: resp.status().as_u16(),
                });
            }
            Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| http(e.to_string()))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| http(format!("no answer within {FETCH_TIMEOUT:?}")))?
    }
}

async fn read_file(path: &Path) -> Result<Bytes, FetchError> {
    let file = |source| FetchError::File {
        path: path.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(file)?;
    if meta.len() > MAX_DOCUMENT_BYTES as u64 {
        return Err(file(std::io::Error::other(format!(
            "larger than {MAX_DOCUMENT_BYTES} bytes"
        ))));
    }
    tokio::fs::read(path).await.map(Bytes::from).map_err(file)
}

/// The key for `kid` (or, for a token without `kid`, the one key of the
/// set that fits `alg`): `None` when absent, an error when it is there but
/// unusable for `alg`.
fn pick(
    keys: &[Jwk],
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<Result<DecodingKey, VerifyError>> {
    let jwk = match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))?,
        None => {
            let mut fitting = keys.iter().filter(|k| fits(k, alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => k,
                _ => return None,
            }
        }
    };
    if !fits(jwk, alg) {
        return Some(Err(VerifyError::Invalid(
            "the key does not fit the algorithm",
        )));
    }
    Some(
        DecodingKey::from_jwk(jwk)
            .map_err(|_| VerifyError::Invalid("the issuer's key is unusable")),
    )
}

/// Whether `jwk` may verify `alg`: its own `alg`, when it names one, is
/// `alg`, and its key type is `alg`'s family.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(ka) = &jwk.common.key_algorithm
        && format!("{ka:?}") != format!("{alg:?}")
    {
        return false;
    }
    matches!(
        (&jwk.algorithm, alg),
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) | (
            AlgorithmParameters::EllipticCurve(_),
            Algorithm::ES256 | Algorithm::ES384
        ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
    )
}

fn b64_json(part: &str) -> Result<serde_json::Value, VerifyError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| VerifyError::Malformed)?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(VerifyError::Malformed)
    }
}

impl VerifyBearer for OidcVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<EndUser, Rejection>> {
        Box::pin(async move {
            self.verify_token(token)
                .await
                .map_err(|e| Box::new(e) as Rejection)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use mcp_warden_tests::oidc::{AUDIENCE, TestIssuer};
    use serde_json::json;

    fn config(issuers: &[&TestIssuer], ca_file: PathBuf) -> OidcConfig {
        OidcConfig {
            issuers: issuers.iter().map(|i| i.url().to_string()).collect(),
            audience: AUDIENCE.to_string(),
            mapping: ClaimMapping {
                username_claim: "email".into(),
                username_prefix: None,
                groups_claim: Some("groups".into()),
                groups_prefix: "oidc:".into(),
            },
            keys: KeySource::Discovery,
            ca_file: Some(ca_file),
            refresh_interval: Duration::from_secs(10),
            impersonate: false,
        }
    }

    #[tokio::test]
    async fn several_issuers_and_what_is_never_accepted() {
        let (a, b) = (TestIssuer::start().unwrap(), TestIssuer::start().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(
            &ca,
            format!(
                "{}{}",
                std::fs::read_to_string(a.ca_file()).unwrap(),
                std::fs::read_to_string(b.ca_file()).unwrap()
            ),
        )
        .unwrap();
        let v = OidcVerifier::new(&config(&[&a, &b], ca)).unwrap();
        let u = v
            .verify_token(&b.token("bob@example.com", &["dev"]).unwrap())
            .await
            .unwrap();
        assert_eq!(
            (u.username.as_str(), u.groups.as_slice(), u.issuer.as_str()),
            ("bob@example.com", &["oidc:dev".to_string()][..], b.url())
        );
        assert!(
            v.verify_token(&a.token("alice@example.com", &[]).unwrap())
                .await
                .is_ok()
        );
        // An HMAC token, whatever its secret, is refused before any key is looked up.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &a.claims("alice@example.com", &[]),
            &EncodingKey::from_secret(b"public"),
        )
        .unwrap();
        assert_eq!(
            v.verify_token(&hs).await,
            Err(VerifyError::AlgorithmNotAllowed)
        );
        // An unverified email does not name a user.
        let mut c = a.claims("alice@example.com", &[]);
        c["email_verified"] = json!(false);
        assert_eq!(
            v.verify_token(&a.token_with(c).unwrap()).await,
            Err(VerifyError::Claims(ClaimError::EmailNotVerified))
        );
        for junk in ["a.b.c", "x", "e30.e30.", "bm9uZQ.e30.e30"] {
            assert_eq!(
                v.verify_token(junk).await,
                Err(VerifyError::Malformed),
                "{junk}"
            );
        }
    }

    #[tokio::test]
    async fn a_jwks_file_and_a_token_without_kid() {
        let a = TestIssuer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, a.jwks_json()).unwrap();
        let mut cfg = config(&[&a], dir.path().join("no-ca.crt"));
        cfg.ca_file = None;
        cfg.keys = KeySource::File(jwks.clone());
        let v = OidcVerifier::new(&cfg).unwrap();
        // A token without `kid` is verified with the one key that fits.
        let token = a.token("alice@example.com", &[]).unwrap();
        let no_kid = a
            .token_with_header(
                Header::new(Algorithm::ES256),
                a.claims("alice@example.com", &[]),
            )
            .unwrap();
        assert!(v.verify_token(&no_kid).await.is_ok());
        assert!(v.verify_token(&token).await.is_ok());
        assert_eq!(a.jwks_fetches(), 0);
        // A file that disappears keeps the cached keys.
        std::fs::remove_file(&jwks).unwrap();
        assert!(v.verify_token(&token).await.is_ok());
    }
}
