//! In-memory object storage: JSON objects keyed by group/resource, namespace
//! and name, one global resourceVersion counter, and the watch hub (a bounded
//! event history for watches that start at an older resourceVersion plus a
//! broadcast channel for live events).

use base64::Engine;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// How many past events a watch may start from.
const HISTORY: usize = 20_000;

/// Storage key: (group/resource, namespace, name); namespace is "" for
/// cluster-scoped objects.
pub type Key = (String, String, String);

/// A change to one object.
#[derive(Debug, Clone)]
pub struct Event {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub type_: &'static str,
    pub group_resource: String,
    pub namespace: String,
    pub object: Arc<Value>,
    /// The previous state for MODIFIED events (watch filters need it to turn
    /// a change that leaves or enters a selector into DELETED or ADDED).
    pub old: Option<Arc<Value>>,
    pub rv: u64,
}

/// Errors of store operations (mapped to Status by the handlers).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("conflict: resourceVersion {given} is not {current}")]
    Conflict { given: String, current: String },
    #[error("too old resource version: {0}")]
    Gone(u64),
    #[error("invalid continue token")]
    BadContinue,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
}

/// The object store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
}

impl Default for Store {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            inner: Mutex::new(Inner {
                rv: 1000,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            tx,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Value>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// A continue token: the list's resourceVersion and the last key returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinueToken {
    pub rv: u64,
    pub start: String,
}

impl ContinueToken {
    /// The opaque (base64 JSON) form clients pass back.
    pub fn encode(&self) -> String {
        let v = json!({"v": "apisim.k8s.io/v1", "rv": self.rv, "start": self.start});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// Parses a token made by [`ContinueToken::encode`].
    pub fn decode(s: &str) -> Result<Self, StoreError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| StoreError::BadContinue)?;
        let v: Value = serde_json::from_slice(&raw).map_err(|_| StoreError::BadContinue)?;
        if v["v"] != "apisim.k8s.io/v1" {
            return Err(StoreError::BadContinue);
        }
        let rv = v["rv"].as_u64().ok_or(StoreError::BadContinue)?;
        let start = v["start"]
            .as_str()
            .ok_or(StoreError::BadContinue)?
            .to_string();
        Ok(ContinueToken { rv, start })
    }
}

fn sort_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Reads one object.
    pub fn get(&self, gr: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(gr.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Lists objects of a type (in one namespace, or all when `ns` is None),
    /// filtered by `filter`, paginated by `limit` and `cont`.
    pub fn list(
        &self,
        gr: &str,
        ns: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        limit: Option<usize>,
        cont: Option<&str>,
        count_remaining: bool,
    ) -> Result<Page, StoreError> {
        let g = self.lock();
        let (rv, start) = match cont {
            Some(c) => {
                let t = ContinueToken::decode(c)?;
                (t.rv, Some(t.start))
            }
            None => (g.rv, None),
        };
        let mut matching = g
            .objects
            .iter()
            .filter(|((r, n, _), _)| r == gr && ns.is_none_or(|want| want == n))
            .filter(|((_, n, name), _)| {
                start
                    .as_ref()
                    .is_none_or(|s| sort_key(n, name).as_str() > s.as_str())
            })
            .filter(|(_, v)| filter(v));
        let mut items = Vec::new();
        let mut last = None;
        let limit = limit.filter(|l| *l > 0);
        for ((_, n, name), v) in matching.by_ref() {
            if limit.is_some_and(|l| items.len() >= l) {
                // There is at least one more: emit a continue token.
                let remaining = 1 + matching.count() as u64;
                return Ok(Page {
                    items,
                    rv,
                    continue_token: last.map(|start| ContinueToken { rv, start }.encode()),
                    remaining: count_remaining.then_some(remaining),
                });
            }
            last = Some(sort_key(n, name));
            items.push(v.clone());
        }
        Ok(Page {
            items,
            rv,
            continue_token: None,
            remaining: None,
        })
    }

    fn publish(g: &mut Inner, tx: &broadcast::Sender<Event>, ev: Event) {
        g.history.push_back(ev.clone());
        while g.history.len() > HISTORY {
            g.history.pop_front();
        }
        // No receivers is fine.
        let _ = tx.send(ev);
    }

    /// Stores a new object; `mutate` gets the new resourceVersion to stamp.
    pub fn create(
        &self,
        gr: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let mut g = self.lock();
        let key = (gr.to_string(), ns.to_string(), name.to_string());
        if g.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        g.rv += 1;
        let rv = g.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        g.objects.insert(key, obj.clone());
        let ev = Event {
            type_: "ADDED",
            group_resource: gr.to_string(),
            namespace: ns.to_string(),
            object: Arc::new(obj.clone()),
            old: None,
            rv,
        };
        Self::publish(&mut g, &self.tx, ev);
        Ok(obj)
    }

    /// Replaces an object. When `expected_rv` is given it must match the
    /// stored one (optimistic concurrency).
    pub fn update(
        &self,
        gr: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
        expected_rv: Option<&str>,
    ) -> Result<Value, StoreError> {
        let mut g = self.lock();
        let key = (gr.to_string(), ns.to_string(), name.to_string());
        let Some(cur) = g.objects.get(&key) else {
            return Err(StoreError::NotFound);
        };
        let cur_rv = cur
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(e) = expected_rv.filter(|e| !e.is_empty())
            && e != cur_rv
        {
            return Err(StoreError::Conflict {
                given: e.to_string(),
                current: cur_rv,
            });
        }
        let old = Arc::new(cur.clone());
        if *cur == obj {
            // Unchanged objects keep their resourceVersion, like etcd3 storage.
            return Ok(obj);
        }
        g.rv += 1;
        let rv = g.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        g.objects.insert(key, obj.clone());
        let ev = Event {
            type_: "MODIFIED",
            group_resource: gr.to_string(),
            namespace: ns.to_string(),
            object: Arc::new(obj.clone()),
            old: Some(old),
            rv,
        };
        Self::publish(&mut g, &self.tx, ev);
        Ok(obj)
    }

    /// Removes an object and returns it (with the deletion's resourceVersion).
    pub fn delete(
        &self,
        gr: &str,
        ns: &str,
        name: &str,
        expected_rv: Option<&str>,
    ) -> Result<Value, StoreError> {
        let mut g = self.lock();
        let key = (gr.to_string(), ns.to_string(), name.to_string());
        let Some(cur) = g.objects.get(&key) else {
            return Err(StoreError::NotFound);
        };
        if let Some(e) = expected_rv.filter(|e| !e.is_empty()) {
            let cur_rv = cur
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if e != cur_rv {
                return Err(StoreError::Conflict {
                    given: e.to_string(),
                    current: cur_rv.to_string(),
                });
            }
        }
        let Some(mut obj) = g.objects.remove(&key) else {
            return Err(StoreError::NotFound);
        };
        g.rv += 1;
        let rv = g.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ev = Event {
            type_: "DELETED",
            group_resource: gr.to_string(),
            namespace: ns.to_string(),
            object: Arc::new(obj.clone()),
            old: None,
            rv,
        };
        Self::publish(&mut g, &self.tx, ev);
        Ok(obj)
    }

    /// Starts a watch: returns the events to send first (replayed history
    /// after `from_rv`, or synthetic ADDED events for every current object
    /// when `from_rv` is None) and the live receiver, taken atomically so
    /// nothing is missed or duplicated.
    pub fn watch(
        &self,
        gr: &str,
        ns: Option<&str>,
        from_rv: Option<u64>,
    ) -> Result<(Vec<Event>, u64, broadcast::Receiver<Event>), StoreError> {
        let g = self.lock();
        let rx = self.tx.subscribe();
        let in_scope = |e: &Event| e.group_resource == gr && ns.is_none_or(|n| n == e.namespace);
        let initial = match from_rv {
            None => g
                .objects
                .iter()
                .filter(|((r, n, _), _)| r == gr && ns.is_none_or(|want| want == n))
                .map(|((_, n, _), v)| Event {
                    type_: "ADDED",
                    group_resource: gr.to_string(),
                    namespace: n.clone(),
                    rv: v
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    object: Arc::new(v.clone()),
                    old: None,
                })
                .collect(),
            Some(rv) => {
                let oldest = g.history.front().map(|e| e.rv).unwrap_or(g.rv + 1);
                if rv + 1 < oldest && rv < g.rv {
                    return Err(StoreError::Gone(rv));
                }
                g.history
                    .iter()
                    .filter(|e| e.rv > rv && in_scope(e))
                    .cloned()
                    .collect()
            }
        };
        Ok((initial, g.rv, rx))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}})
    }

    #[test]
    fn continue_token_roundtrip_and_garbage() {
        let t = ContinueToken {
            rv: 7,
            start: "ns/a".into(),
        };
        assert_eq!(ContinueToken::decode(&t.encode()).unwrap(), t);
        assert_eq!(ContinueToken::decode("!!!"), Err(StoreError::BadContinue));
        assert_eq!(
            ContinueToken::decode("eyJ4IjoxfQ"),
            Err(StoreError::BadContinue)
        );
    }

    #[test]
    fn pagination_covers_everything_once() {
        let s = Store::default();
        for i in 0..5 {
            s.create("/pods", "ns", &format!("p{i}"), obj(&format!("p{i}")))
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cont: Option<String> = None;
        let mut pages = 0;
        loop {
            let p = s
                .list(
                    "/pods",
                    Some("ns"),
                    &|_| true,
                    Some(2),
                    cont.as_deref(),
                    true,
                )
                .unwrap();
            pages += 1;
            seen.extend(
                p.items
                    .iter()
                    .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
            );
            match p.continue_token {
                Some(c) => {
                    assert!(p.remaining.unwrap() > 0);
                    cont = Some(c)
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, vec!["p0", "p1", "p2", "p3", "p4"]);
    }

    #[test]
    fn conflicts_and_watch_replay() {
        let s = Store::default();
        let a = s.create("/pods", "ns", "a", obj("a")).unwrap();
        let rv = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let mut b = a.clone();
        b["spec"] = json!({"x": 1});
        assert!(matches!(
            s.update("/pods", "ns", "a", b.clone(), Some("1")),
            Err(StoreError::Conflict { .. })
        ));
        s.update("/pods", "ns", "a", b, Some(&rv)).unwrap();
        let (evs, _, _) = s
            .watch("/pods", Some("ns"), Some(rv.parse().unwrap()))
            .unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].type_, "MODIFIED");
        let (evs, _, _) = s.watch("/pods", None, None).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].type_, "ADDED");
    }
}
