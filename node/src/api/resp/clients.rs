//! The open connections of the Redis port, for `CLIENT LIST` and `CLIENT KILL`.

use crate::api::client_memory::MemoryHolder;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// What `CLIENT LIST` shows of one connection, and how to close it.
struct Client {
    addr: SocketAddr,
    local: SocketAddr,
    since: Instant,
    handle: Arc<ClientHandle>,
}

/// A connection's own view of its registry entry: it notes its activity here (a lock nobody
/// else takes but `CLIENT LIST`), and learns here that `CLIENT KILL` closed it.
pub struct ClientHandle {
    /// The client's address.
    addr: SocketAddr,
    activity: Mutex<Activity>,
    kill: Notify,
    /// The commands arriving and replies not yet taken it holds, in the node's bound.
    memory: MemoryHolder,
}

struct Activity {
    last_active: Instant,
    last_command: String,
    name: String,
    proto: u8,
    /// `CLIENT SETINFO lib-name` / `lib-ver`: which client library, as redis-py and node-redis
    /// say when they connect.
    lib_name: String,
    lib_ver: String,
}

impl ClientHandle {
    /// Notes that the connection ran `command` at `at` (and its protocol and name after it).
    /// Reuses its buffers: no allocation per command.
    pub fn ran(&self, command: &[u8], at: Instant, proto: u8, name: Option<&[u8]>) {
        let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        a.last_active = at;
        a.last_command.clear();
        a.last_command
            .extend(command.iter().map(|b| char::from(b.to_ascii_lowercase())));
        a.proto = proto;
        let name = name.unwrap_or_default();
        if a.name.as_bytes() != name {
            a.name = String::from_utf8_lossy(name).into_owned();
        }
    }

    /// `CLIENT SETINFO`: the client library's name (`lib_version` false) or version.
    pub fn set_lib(&self, lib_version: bool, value: &str) {
        let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        let field = if lib_version {
            &mut a.lib_ver
        } else {
            &mut a.lib_name
        };
        value.clone_into(field);
    }

    /// The client's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves when `CLIENT KILL` selects this connection, or when the node closes it for the
    /// replies it holds (`CLIENT_MEMORY_MAX_BYTES`).
    pub async fn killed(&self) {
        tokio::select! {
            () = self.kill.notified() => {}
            () = self.memory.evicted() => {}
        }
    }

    /// What every client connection of the node holds now, and the bound on it (`INFO memory`).
    pub fn clients_memory(&self) -> (usize, usize) {
        let node = self.memory.node();
        (node.held(), node.limit())
    }

    /// Notes that the connection holds `bytes` of commands arriving, replies not yet taken and
    /// subscriptions; `waiting`: whether any of it waits on the client (a command still
    /// arriving, replies not taken), else it is state kept while idle, which never stalls.
    pub fn hold_memory(&self, bytes: usize, waiting: bool) {
        self.memory.hold_waiting(bytes, waiting);
    }

    /// `CLIENT NO-EVICT on|off`: whether the node may close this connection past
    /// `CLIENT_MEMORY_MAX_BYTES`.
    pub fn set_no_evict(&self, on: bool) {
        self.memory.set_exempt(on);
    }
}

/// Every open connection of the port.
#[derive(Default)]
pub struct ClientRegistry {
    open: Mutex<HashMap<u64, Client>>,
}

/// Which connections `CLIENT KILL` closes.
#[derive(Debug, Default)]
pub struct KillFilter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    /// Spare the connection asking (the default, as in Redis).
    pub skip: Option<u64>,
}

impl ClientRegistry {
    /// Adds a connection; it notes its activity, and what it holds (in `memory`),
    /// through the returned handle.
    pub fn register(
        &self,
        id: u64,
        addr: SocketAddr,
        local: SocketAddr,
        memory: MemoryHolder,
    ) -> Arc<ClientHandle> {
        let now = Instant::now();
        let handle = Arc::new(ClientHandle {
            addr,
            activity: Mutex::new(Activity {
                last_active: now,
                last_command: "NULL".into(),
                name: String::new(),
                proto: 2,
                lib_name: String::new(),
                lib_ver: String::new(),
            }),
            kill: Notify::new(),
            memory,
        });
        self.lock().insert(
            id,
            Client {
                addr,
                local,
                since: now,
                handle: handle.clone(),
            },
        );
        handle
    }

    /// Whether connection `id` is open.
    pub fn exists(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// `CLIENT LIST`'s text: one line per connection (of `only`, when given), in Redis's
    /// `key=value` format. The asking connection (`me`: its id, name and protocol, which its
    /// line would otherwise show as of its last noted command) is running `client|list`.
    /// `subscribed` holds each subscribed connection's channel and pattern counts (taken from
    /// the hub before, so no lock is held inside another); `pubsub` keeps only subscribed
    /// connections (`TYPE pubsub`) or only the others (`TYPE normal`).
    pub fn list(
        &self,
        only: Option<&[u64]>,
        me: (u64, &str, u8),
        subscribed: &HashMap<u64, (usize, usize)>,
        pubsub: Option<bool>,
    ) -> String {
        let open = self.lock();
        let mut ids: Vec<&u64> = match only {
            // As many ids as arguments (262,144): each looked up, not each compared with every
            // connection.
            Some(only) => only.iter().filter(|id| open.contains_key(id)).collect(),
            None => open.keys().collect(),
        };
        ids.sort();
        ids.dedup();
        let mut text = String::new();
        for id in ids {
            let subs = subscribed.get(id).copied().unwrap_or_default();
            if pubsub.is_some_and(|pubsub| pubsub != (subs != (0, 0))) {
                continue;
            }
            let c = &open[id];
            let a = c.handle.activity.lock().unwrap_or_else(|p| p.into_inner());
            text.push_str(&if *id == me.0 {
                line(*id, c, me.1, 0, "client|list", me.2, &a, subs)
            } else {
                line(
                    *id,
                    c,
                    &a.name,
                    a.last_active.elapsed().as_secs(),
                    &a.last_command,
                    a.proto,
                    &a,
                    subs,
                )
            });
        }
        text
    }

    /// `CLIENT INFO`: connection `id`'s line of `CLIENT LIST`, as it is now (its activity is
    /// noted only now and then: the caller knows its name and protocol).
    /// `subscribed`: its channel and pattern counts.
    pub fn info(
        &self,
        id: u64,
        name: &str,
        proto: u8,
        subscribed: (usize, usize),
    ) -> Option<String> {
        let open = self.lock();
        let c = open.get(&id)?;
        let a = c.handle.activity.lock().unwrap_or_else(|p| p.into_inner());
        Some(line(id, c, name, 0, "client|info", proto, &a, subscribed))
    }

    /// Closes the connections `filter` selects; how many.
    pub fn kill(&self, filter: &KillFilter) -> usize {
        let open = self.lock();
        let mut killed = 0;
        for (id, c) in open.iter() {
            let selected = filter.id.is_none_or(|want| want == *id)
                && filter
                    .addr
                    .as_ref()
                    .is_none_or(|a| *a == c.addr.to_string())
                && filter
                    .laddr
                    .as_ref()
                    .is_none_or(|a| *a == c.local.to_string())
                && filter.skip != Some(*id);
            if selected {
                c.handle.kill.notify_one();
                killed += 1;
            }
        }
        killed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Client>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's line of `CLIENT LIST`, in Redis 7.2's format (`lib` its library, as
/// `CLIENT SETINFO` gave it; `(sub, psub)` its channel and pattern subscriptions).
#[allow(clippy::too_many_arguments)]
fn line(
    id: u64,
    c: &Client,
    name: &str,
    idle_secs: u64,
    command: &str,
    proto: u8,
    lib: &Activity,
    (sub, psub): (usize, usize),
) -> String {
    // What the connection holds, commands arriving and replies not yet taken (Redis splits it
    // into `qbuf` and `omem`; its `tot-mem` is the sum), when it counts (`client_memory`).
    let omem = c.handle.memory.held();
    // Redis's flags, in its order: `P` a subscriber, `e` a connection `CLIENT NO-EVICT`
    // exempts; `N` none.
    let mut flags = String::with_capacity(2);
    if sub + psub > 0 {
        flags.push('P');
    }
    if c.handle.memory.exempt() {
        flags.push('e');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={id} addr={} laddr={} fd=0 name={name} age={} idle={idle_secs} flags={flags} db=0 sub={sub} \
         psub={psub} ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem={omem} \
         tot-mem={omem} events=r cmd={command} user=default redir=-1 resp={proto} lib-name={} \
         lib-ver={}\n",
        c.addr,
        c.local,
        c.since.elapsed().as_secs(),
        lib.lib_name,
        lib.lib_ver,
    )
}
