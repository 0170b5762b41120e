//! The open-files limit: raised at start to what the system allows, as Redis raises its own to
//! `maxclients` plus its files, and as Go (the original FireScroll's runtime) does for every
//! program. Many systems start a process with a soft limit of 1,024 descriptors; a node with
//! `RESP_MAX_CLIENTS=10000` and `HTTP_MAX_CONNECTIONS=4096` would refuse connections long before
//! its limits, and its store could fail to open a table file.

/// Descriptors kept for what is not a client connection: store files, log segments, the
/// broker's and peers' sockets.
const RESERVED: u64 = 1024;

/// What raising the limit came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Raised {
    /// The soft limit went from the first number to the second.
    From(u64, u64),
    /// It already allowed everything the hard limit does.
    Already(u64),
    /// It could not be read or changed (the OS said why).
    Failed(String),
}

/// Raises the soft open-files limit to the hard limit.
pub fn raise() -> Raised {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Raised::Failed(std::io::Error::last_os_error().to_string());
    }
    let before = limit.rlim_cur;
    if before >= limit.rlim_max {
        return Raised::Already(before);
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `setrlimit` reads one `rlimit` through a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Raised::Failed(std::io::Error::last_os_error().to_string());
    }
    Raised::From(before, limit.rlim_max)
}

/// Logs what [`raise`] did, and warns when the limit is still below what the configured
/// connection limits need (`clients`: the descriptors of Redis and HTTP connections together).
pub fn report(raised: &Raised, clients: u64) {
    let needed = clients.saturating_add(RESERVED);
    let now = match raised {
        Raised::From(before, after) => {
            tracing::info!(
                before,
                after,
                "raised the open-files limit to the hard limit"
            );
            *after
        }
        Raised::Already(limit) => *limit,
        Raised::Failed(why) => {
            tracing::warn!(error = %why, "cannot read or raise the open-files limit");
            return;
        }
    };
    if now < needed {
        tracing::warn!(
            limit = now,
            needed,
            "the open-files limit is below what RESP_MAX_CLIENTS and HTTP_MAX_CONNECTIONS allow \
             (plus {RESERVED} for files and peers): connections past it are refused. Raise the \
             hard limit (ulimit -Hn, systemd LimitNOFILE=, docker --ulimit nofile=) or lower \
             those settings"
        );
    }
}
