//! kube-apisim binary.
fn main() {}
