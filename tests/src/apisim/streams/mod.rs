//! Streaming pod subresources of kube-apisim: `pods/log`, `pods/exec`,
//! `pods/attach` (WebSocket channel protocols, SPDY fallback) and
//! `pods/portforward`. The "container" is an echo machine.
//! (being written)
