//! The tool calls in flight, shared by the MCP front (which adds a call when
//! it forwards it and takes it out when its response passes) and the API
//! proxy's recording (which names the calls in flight when an API request
//! is made, [`ToolCalls::link_annotations`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use mcp_warden_shared::enduser::EndUser;
use mcp_warden_shared::mcp::{self, InFlightCall, RpcId};
use mcp_warden_shared::policy;

/// A tool call between the sidecar's decision and its end.
#[derive(Debug, Clone)]
pub struct PendingCall {
    /// What the links name.
    pub call: InFlightCall,
    /// The JSON-RPC id its response will carry.
    pub rpc_id: RpcId,
    /// The masked arguments.
    pub arguments: serde_json::Value,
    /// The policy's decision on it.
    pub decision: policy::Decision,
    /// The verified end user, if any.
    pub user: Option<EndUser>,
    /// When the request carrying it arrived (wall clock).
    pub received: SystemTime,
    /// When it arrived (monotonic).
    pub started: Instant,
    /// Path and query of the MCP request.
    pub path: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The person's approval it was forwarded with (an `approve` tool
    /// rule held it), recorded on its event.
    pub approval: Option<crate::hooks::Approval>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    calls: BTreeMap<u64, PendingCall>,
}

/// The registry of tool calls in flight (one per sidecar).
#[derive(Debug, Default)]
pub struct ToolCalls {
    inner: Mutex<Inner>,
}

impl ToolCalls {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a forwarded call; returns its key.
    pub fn begin(&self, call: PendingCall) -> u64 {
        let mut g = self.lock();
        g.next += 1;
        let key = g.next;
        g.calls.insert(key, call);
        key
    }

    /// Takes the call of `key` out, if it is still in flight.
    pub fn take(&self, key: u64) -> Option<PendingCall> {
        self.lock().calls.remove(&key)
    }

    /// Takes out the call of `session` with JSON-RPC id `id` (its response
    /// has come), if there is one.
    pub fn take_answer(&self, session: &str, id: &RpcId) -> Option<PendingCall> {
        let mut g = self.lock();
        let key = g
            .calls
            .iter()
            .find(|(_, c)| c.call.session == session && &c.rpc_id == id)
            .map(|(k, _)| *k)?;
        g.calls.remove(&key)
    }

    /// Takes out every call of `session` (its stream ended).
    pub fn take_session(&self, session: &str) -> Vec<PendingCall> {
        let mut g = self.lock();
        let keys: Vec<u64> = g
            .calls
            .iter()
            .filter(|(_, c)| c.call.session == session)
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| g.calls.remove(k)).collect()
    }

    /// The calls in flight now, oldest first.
    pub fn in_flight(&self) -> Vec<InFlightCall> {
        self.lock().calls.values().map(|c| c.call.clone()).collect()
    }

    /// The annotations for an API request made now
    /// ([`mcp::link_annotations`]).
    pub fn link_annotations(&self) -> mcp_warden_shared::audit::Annotations {
        mcp::link_annotations(&self.in_flight())
    }
}
