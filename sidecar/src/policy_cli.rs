//! policy_cli (being written).
