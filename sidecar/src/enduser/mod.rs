//! End-user authentication: turns a bearer token that is not the sidecar's
//! local token into an [`EndUser`], for the API listener and the MCP front.

use futures::future::BoxFuture;
pub use mcp_warden_shared::enduser::EndUser;

/// Why a bearer token was not accepted as an end user. The message names the
/// reason (expired, wrong audience, unknown issuer, ...) and never contains
/// token text.
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// Verifies end-user bearer tokens.
pub trait VerifyBearer: Send + Sync {
    /// Verifies `token` (the text after `Bearer `) and returns the user it names.
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<EndUser, Rejection>>;
}
