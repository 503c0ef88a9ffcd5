//! The end-to-end suite, one test binary (one link on CI): each module is
//! one area. Select an area by its module name prefix, e.g.
//! `cargo test --workspace --test it -- realkube_` (the real control plane)
//! or `-- apisim_` (kube-apisim alone).
//!
//! All `realkube_*`, `apisim_vs_real` and `simulated_pod` tests that use
//! [`RealKube::shared`](mcp_warden_tests::realkube::RealKube::shared) share
//! one control plane in this process, so each works in its own namespaces
//! and under its own names; `realkube_manifests` installs cluster-wide
//! webhook configurations and takes a control plane of its own.

mod apisim_crd_schema;
mod apisim_kube_rs;
mod apisim_kubectl;
mod apisim_python;
mod apisim_raw;
mod apisim_streams;
mod apisim_vs_real;
mod approvals_stack;
mod enduser_stack;
mod grants_stack;
mod hardening_e2e;
mod masking_e2e;
mod mcp_front;
mod policy_conditions_e2e;
mod policy_e2e;
mod policy_learn;
mod preview_e2e;
mod realkube_enduser;
mod realkube_grants;
mod realkube_manifests;
mod realkube_sidecar;
mod realkube_webhook;
mod recording_e2e;
mod simulated_pod;
mod stack_smoke;
