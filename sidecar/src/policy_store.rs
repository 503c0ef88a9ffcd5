//! policy_store (being written).
