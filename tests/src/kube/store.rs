//! The stand-in's object store: what etcd and the API server's registry do for the resources
//! Gantry uses. Objects are kept as JSON exactly as clients sent them, with the metadata the
//! API server owns (uid, resourceVersion, generation, creationTimestamp); every change gets the
//! next resourceVersion and becomes a watch event, kept so a watch can resume from any version.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Secret,
    Job,
    Deployment,
    ReplicaSet,
}

impl Kind {
    pub fn from_path(group_version: &str, plural: &str) -> Option<Kind> {
        Some(match (group_version, plural) {
            ("v1", "pods") => Kind::Pod,
            ("v1", "secrets") => Kind::Secret,
            ("batch/v1", "jobs") => Kind::Job,
            ("apps/v1", "deployments") => Kind::Deployment,
            ("apps/v1", "replicasets") => Kind::ReplicaSet,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::Job => "Job",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Secret => "v1",
            Kind::Job => "batch/v1",
            Kind::Deployment | Kind::ReplicaSet => "apps/v1",
        }
    }

    /// `jobs.batch`, as the API server names a resource in its messages.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
            Kind::Job => "jobs.batch",
            Kind::Deployment => "deployments.apps",
            Kind::ReplicaSet => "replicasets.apps",
        }
    }
}

/// An API error, answered as a `Status` object.
#[derive(Clone, Debug)]
pub struct ApiErr {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn not_found(kind: Kind, name: &str) -> ApiErr {
        ApiErr {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", kind.resource()),
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiErr {
        ApiErr {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }

    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: Kind,
    pub namespace: String,
    pub type_: &'static str,
    pub object: Value,
}

type Key = (Kind, String, String);

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    uid: u64,
}

pub struct Store {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Controllers (kubelet, Deployment controller) get every event, none dropped.
    controllers: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
    /// Every object a client created or patched, as stored (for schema validation).
    received: Mutex<Vec<Value>>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            state: Mutex::default(),
            events: broadcast::channel(1 << 16).0,
            controllers: Mutex::default(),
            received: Mutex::default(),
        }
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    pub fn controller_events(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.controllers).push(tx);
        rx
    }

    pub fn received(&self) -> Vec<Value> {
        lock(&self.received).clone()
    }

    pub fn note_received(&self, object: &Value) {
        lock(&self.received).push(object.clone());
    }

    fn emit(
        &self,
        state: &mut State,
        kind: Kind,
        namespace: &str,
        type_: &'static str,
        object: Value,
    ) {
        let event = Event {
            rv: state.rv,
            kind,
            namespace: namespace.to_owned(),
            type_,
            object,
        };
        state.history.push(event.clone());
        // Sent while the state lock is held, so watchers see events in version order.
        let _ = self.events.send(event.clone());
        lock(&self.controllers).retain(|c| c.send(event.clone()).is_ok());
    }

    pub fn create(&self, kind: Kind, namespace: &str, mut object: Value) -> Result<Value, ApiErr> {
        let mut state = lock(&self.state);
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let meta = &mut object["metadata"];
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(n), _) if !n.is_empty() => n.to_owned(),
            (_, Some(prefix)) => {
                state.uid += 1;
                format!("{prefix}{}", suffix(state.uid))
            }
            _ => return Err(ApiErr::bad("metadata.name or generateName is required")),
        };
        let key = (kind, namespace.to_owned(), name.clone());
        if state.objects.contains_key(&key) {
            return Err(ApiErr {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", kind.resource()),
            });
        }
        state.rv += 1;
        state.uid += 1;
        let rv = state.rv;
        let uid = format!("00000000-0000-4000-8000-{:012}", state.uid);
        meta["name"] = json!(name);
        meta["namespace"] = json!(namespace);
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(rv.to_string());
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        object["kind"] = json!(kind.name());
        object["apiVersion"] = json!(kind.api_version());
        state.objects.insert(key, object.clone());
        self.emit(&mut state, kind, namespace, "ADDED", object.clone());
        Ok(object)
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiErr> {
        lock(&self.state)
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiErr::not_found(kind, name))
    }

    /// Objects of `kind` (in `namespace`, or all) matching `selector`, and the list's version.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &super::selector::Selector,
    ) -> (Vec<Value>, u64) {
        let state = lock(&self.state);
        let items = state
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .filter(|(_, o)| selector.matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        (items, state.rv)
    }

    /// Changes an object in place; a change to `spec` bumps `metadata.generation`.
    pub fn update(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value) -> Result<(), ApiErr>,
    ) -> Result<Value, ApiErr> {
        let mut state = lock(&self.state);
        let key = (kind, namespace.to_owned(), name.to_owned());
        let mut object = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiErr::not_found(kind, name))?;
        let before_spec = object["spec"].clone();
        let meta = object["metadata"].clone();
        change(&mut object)?;
        // Clients may not rewrite what the server owns.
        for owned in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "generation",
        ] {
            object["metadata"][owned] = meta[owned].clone();
        }
        if object["spec"] != before_spec {
            let generation = meta["generation"].as_i64().unwrap_or(1) + 1;
            object["metadata"]["generation"] = json!(generation);
        }
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        object["kind"] = json!(kind.name());
        object["apiVersion"] = json!(kind.api_version());
        state.objects.insert(key, object.clone());
        self.emit(&mut state, kind, namespace, "MODIFIED", object.clone());
        Ok(object)
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiErr> {
        let mut state = lock(&self.state);
        let key = (kind, namespace.to_owned(), name.to_owned());
        let mut object = state
            .objects
            .remove(&key)
            .ok_or_else(|| ApiErr::not_found(kind, name))?;
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        self.emit(&mut state, kind, namespace, "DELETED", object.clone());
        Ok(object)
    }

    /// Events after `rv` already in the history, and a receiver for the ones to come.
    pub fn watch_from(&self, rv: u64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let state = lock(&self.state);
        let receiver = self.events.subscribe();
        let start = state.history.partition_point(|e| e.rv <= rv);
        (state.history[start..].to_vec(), receiver)
    }

    pub fn current_rv(&self) -> u64 {
        lock(&self.state).rv
    }
}

/// Five characters as the API server appends for `generateName` (from a counter: stable tests).
pub fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = n.wrapping_mul(2_654_435_761) % 14_348_907; // 27^5
    let mut out = String::new();
    for _ in 0..5 {
        out.push(ALPHABET[(n % 27) as usize] as char);
        n /= 27;
    }
    out
}
