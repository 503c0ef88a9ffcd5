//! mcp-warden test support: kube-apisim (a stand-in kube-apiserver), the
//! harness that starts it and the other binaries for tests, and helpers for
//! driving real clients (kubectl, the Python client, kube-rs).

pub mod apisim;
pub mod chart;
pub mod collector;
pub mod harness;
pub mod oidc;
pub mod realkube;
pub mod simpod;
pub mod stack;
