//! The open connections of the Redis port, for `CLIENT LIST` and `CLIENT KILL`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// What `CLIENT LIST` shows of one connection, and how to close it.
struct Client {
    addr: SocketAddr,
    local: SocketAddr,
    name: String,
    since: Instant,
    last_active: Instant,
    last_command: String,
    proto: u8,
    kill: Arc<Notify>,
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
    /// Adds a connection; the returned notifier fires when `CLIENT KILL` closes it.
    pub fn register(&self, id: u64, addr: SocketAddr, local: SocketAddr) -> Arc<Notify> {
        let kill = Arc::new(Notify::new());
        let now = Instant::now();
        self.lock().insert(
            id,
            Client {
                addr,
                local,
                name: String::new(),
                since: now,
                last_active: now,
                last_command: "NULL".into(),
                proto: 2,
                kill: kill.clone(),
            },
        );
        kill
    }

    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Notes a command `id` ran (and its protocol and name after it).
    pub fn ran(&self, id: u64, command: &str, proto: u8, name: Option<&[u8]>) {
        if let Some(client) = self.lock().get_mut(&id) {
            client.last_active = Instant::now();
            client.last_command.clear();
            client.last_command.push_str(command);
            client.proto = proto;
            client.name =
                name.map_or_else(String::new, |n| String::from_utf8_lossy(n).into_owned());
        }
    }

    /// `CLIENT LIST`'s text: one line per connection, in Redis's `key=value` format.
    pub fn list(&self) -> String {
        let open = self.lock();
        let mut ids: Vec<&u64> = open.keys().collect();
        ids.sort();
        let mut text = String::new();
        for id in ids {
            let c = &open[id];
            text.push_str(&format!(
                "id={id} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 \
                 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 \
                 tot-mem=0 events=r cmd={} user=default redir=-1 resp={}\n",
                c.addr,
                c.local,
                c.name,
                c.since.elapsed().as_secs(),
                c.last_active.elapsed().as_secs(),
                c.last_command,
                c.proto
            ));
        }
        text
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
                c.kill.notify_one();
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
