//! Pushes a connection asks for: `CLIENT TRACKING` (client-side caching invalidations) and
//! `SUBSCRIBE`/`PSUBSCRIBE` (keyspace notifications; `PUBLISH` between clients is not offered).
//! The hub ([`crate::api::resp::push`]) produces the messages from the change feed.

use super::{Context, wrong_arity};
use crate::api::resp::push::{MAX_SUBSCRIPTIONS, NotifyFlags, Tracking};
use crate::api::resp::reply::Reply;
use crate::model::partition_of;
use bytes::Bytes;

/// Commands a RESP2 connection may send while subscribed (Redis's rule).
pub(super) const ALLOWED_WHILE_SUBSCRIBED: [&str; 7] = [
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
];

/// Makes sure the connection receives pushes.
fn ensure_registered(ctx: &mut Context<'_>) {
    if ctx.session.pushes.is_none() {
        ctx.session.pushes = Some(ctx.hub.register(ctx.session.id));
    }
}

/// Most `PREFIX`es of one `CLIENT TRACKING ... BCAST`.
const MAX_TRACKING_PREFIXES: usize = 1024;

/// `SUBSCRIBE`/`PSUBSCRIBE channel ...`: one confirmation per channel.
pub fn subscribe(ctx: &mut Context<'_>, args: &[Bytes], pattern: bool) -> Reply {
    let name = if pattern { "psubscribe" } else { "subscribe" };
    if args.is_empty() {
        return wrong_arity(name);
    }
    if ctx.session.subscriptions + args.len() > MAX_SUBSCRIPTIONS {
        return Reply::err(format!(
            "a connection may subscribe to {MAX_SUBSCRIPTIONS} channels and patterns at most"
        ));
    }
    // Notifications name keys: a longer name matches none, and each is kept for as long as the
    // subscription (10,000 names of 8 MB each were taken).
    let most = 2 * ctx.service.limits().max_key_bytes + 64;
    if let Some(long) = args.iter().find(|a| a.len() > most) {
        return Reply::err(format!(
            "a channel or pattern holds at most {most} bytes (twice MAX_KEY_BYTES, and a prefix \
             such as __keyspace@0__:); this one has {}",
            long.len()
        ));
    }
    ensure_registered(ctx);
    change_subscriptions(ctx, name, args.to_vec(), pattern, true)
}

/// (Un)subscribes to each of `channels`: one confirmation each, with the count after it.
fn change_subscriptions(
    ctx: &mut Context<'_>,
    name: &'static str,
    channels: Vec<Bytes>,
    pattern: bool,
    on: bool,
) -> Reply {
    let mut frames = Vec::with_capacity(channels.len());
    for channel in channels {
        // The hub keeps a copy: the argument is a slice of the connection's read buffer,
        // which a kept reference would hold whole for as long as the subscription.
        let kept = Bytes::copy_from_slice(&channel);
        let before = ctx.session.subscriptions;
        let count = ctx.hub.subscribe(ctx.session.id, kept, pattern, on);
        ctx.session.subscriptions = count;
        // What the hub keeps for this connection.
        match count.cmp(&before) {
            std::cmp::Ordering::Greater => ctx.session.subscribed_bytes += channel.len(),
            std::cmp::Ordering::Less => {
                ctx.session.subscribed_bytes =
                    ctx.session.subscribed_bytes.saturating_sub(channel.len())
            }
            std::cmp::Ordering::Equal => {}
        }
        if count == 0 {
            ctx.session.subscribed_bytes = 0;
        }
        frames.push(Reply::Push(vec![
            Reply::bulk(name),
            Reply::Bulk(channel),
            Reply::Int(count as i64),
        ]));
    }
    Reply::Frames(frames)
}

/// `UNSUBSCRIBE`/`PUNSUBSCRIBE [channel ...]` (all without arguments).
pub fn unsubscribe(ctx: &mut Context<'_>, args: &[Bytes], pattern: bool) -> Reply {
    let name = if pattern {
        "punsubscribe"
    } else {
        "unsubscribe"
    };
    let channels = if args.is_empty() {
        ctx.hub.subscriptions(ctx.session.id, pattern)
    } else {
        args.to_vec()
    };
    if channels.is_empty() {
        return Reply::Push(vec![
            Reply::bulk(name),
            Reply::Null,
            Reply::Int(ctx.session.subscriptions as i64),
        ]);
    }
    change_subscriptions(ctx, name, channels, pattern, false)
}

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP]`.
pub fn tracking(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [switch, options @ ..] = args else {
        return wrong_arity("client|tracking");
    };
    let on = match switch.to_ascii_uppercase().as_slice() {
        b"ON" => true,
        b"OFF" => false,
        _ => return Reply::err("syntax error"),
    };
    let mut tracking = Tracking::default();
    let mut i = 0;
    while i < options.len() {
        match options[i].to_ascii_uppercase().as_slice() {
            b"BCAST" => tracking.bcast = true,
            b"OPTIN" => tracking.optin = true,
            b"OPTOUT" => tracking.optout = true,
            b"NOLOOP" => tracking.noloop = true,
            b"PREFIX" if i + 1 < options.len() => {
                // A copy, for the reason subscriptions copy their channels.
                tracking
                    .prefixes
                    .push(Bytes::copy_from_slice(&options[i + 1]));
                i += 1;
            }
            b"REDIRECT" if i + 1 < options.len() => {
                let Some(id) = std::str::from_utf8(&options[i + 1])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    return Reply::err("Invalid client ID");
                };
                if id != ctx.session.id && !ctx.clients.exists(id) {
                    return Reply::err("The client ID you want redirect to does not exist");
                }
                tracking.redirect = (id != ctx.session.id).then_some(id);
                i += 1;
            }
            _ => return Reply::err("syntax error"),
        }
        i += 1;
    }
    if !on {
        ctx.hub.set_tracking(ctx.session.id, None);
        ctx.session.tracking = None;
        ctx.session.tracking_bytes = 0;
        return Reply::ok();
    }
    if tracking.optin && tracking.optout {
        return Reply::err("You can't use both OPTIN and OPTOUT");
    }
    if tracking.bcast && (tracking.optin || tracking.optout) {
        return Reply::err("OPTIN and OPTOUT are not compatible with BCAST");
    }
    if !tracking.prefixes.is_empty() && !tracking.bcast {
        return Reply::err("PREFIX option requires BCAST mode to be enabled");
    }
    // Every change is matched against every prefix of every broadcast connection, under the
    // hub's lock: 200,000 prefixes of one client slowed every write's notifications.
    if tracking.prefixes.len() > MAX_TRACKING_PREFIXES {
        return Reply::err(format!(
            "a connection tracks at most {MAX_TRACKING_PREFIXES} prefixes"
        ));
    }
    let most = ctx.service.limits().max_key_bytes;
    if tracking.prefixes.iter().any(|p| p.len() > most) {
        return Reply::err(format!(
            "a prefix holds at most {most} bytes (MAX_KEY_BYTES): a longer one matches no key"
        ));
    }
    // As Redis: one change would otherwise be announced once per prefix it matches. In sorted
    // order a prefix comes right before some string it begins (everything between them begins
    // with it too), so neighbours are all there is to compare: 1,024 prefixes of 2 KiB compared
    // pairwise took a worker ~0.2 s per command.
    let mut sorted: Vec<&Bytes> = tracking.prefixes.iter().collect();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[1].starts_with(pair[0])) {
        return Reply::err(format!(
            "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single \
             client must not overlap.",
            String::from_utf8_lossy(pair[0]),
            String::from_utf8_lossy(pair[1])
        ));
    }
    ensure_registered(ctx);
    ctx.hub.set_tracking(ctx.session.id, Some(tracking.clone()));
    ctx.session.tracking_bytes = 2 * tracking.prefixes.iter().map(Bytes::len).sum::<usize>();
    ctx.session.tracking = Some(tracking);
    ctx.session.caching = None;
    Reply::ok()
}

/// `CLIENT CACHING YES|NO`: whether the next command's reads are tracked (OPTIN/OPTOUT).
pub fn caching(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let [value] = args else {
        return wrong_arity("client|caching");
    };
    let yes = match value.to_ascii_uppercase().as_slice() {
        b"YES" => true,
        b"NO" => false,
        _ => return Reply::err("syntax error"),
    };
    match &ctx.session.tracking {
        Some(t) if (yes && t.optin) || (!yes && t.optout) => {
            ctx.session.caching = Some(yes);
            Reply::ok()
        }
        Some(t) if t.optin || t.optout => Reply::err(if yes {
            "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
        } else {
            "CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
        }),
        _ => Reply::err(
            "CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ),
    }
}

/// `CLIENT TRACKINGINFO`.
pub fn tracking_info(ctx: &Context<'_>) -> Reply {
    let tracking = &ctx.session.tracking;
    let mut flags = Vec::new();
    match tracking {
        None => flags.push(Reply::bulk("off")),
        Some(t) => {
            flags.push(Reply::bulk("on"));
            for (set, flag) in [
                (t.bcast, "bcast"),
                (t.optin, "optin"),
                (t.optout, "optout"),
                (t.noloop, "noloop"),
            ] {
                if set {
                    flags.push(Reply::bulk(flag));
                }
            }
            match ctx.session.caching {
                Some(true) => flags.push(Reply::bulk("caching-yes")),
                Some(false) => flags.push(Reply::bulk("caching-no")),
                None => {}
            }
        }
    }
    let redirect = match tracking {
        None => -1,
        Some(t) => t.redirect.map_or(0, |id| id as i64),
    };
    let prefixes = tracking
        .as_ref()
        .map(|t| t.prefixes.iter().cloned().map(Reply::Bulk).collect())
        .unwrap_or_default();
    Reply::Map(vec![
        (Reply::bulk("flags"), Reply::Array(flags)),
        (Reply::bulk("redirect"), Reply::Int(redirect)),
        (Reply::bulk("prefixes"), Reply::Array(prefixes)),
    ])
}

/// `CLIENT GETREDIR`: the redirect target, 0 for none, -1 when tracking is off.
pub fn get_redirect(ctx: &Context<'_>) -> Reply {
    Reply::Int(match &ctx.session.tracking {
        None => -1,
        Some(t) => t.redirect.map_or(0, |id| id as i64),
    })
}

/// The keys a read command reads (what default-mode tracking remembers).
pub(super) fn read_keys<'a>(name: &str, args: &'a [Bytes]) -> &'a [Bytes] {
    match name {
        "mget" | "exists" | "touch" => args,
        "get" | "strlen" | "getrange" | "substr" | "getex" | "hget" | "hmget" | "hgetall"
        | "hkeys" | "hvals" | "hlen" | "hexists" | "hstrlen" | "hrandfield" | "hscan" | "type"
        | "ttl" | "pttl" | "expiretime" | "pexpiretime" | "httl" | "hpttl" | "hexpiretime"
        | "hpexpiretime" | "json.get" => &args[..args.len().min(1)],
        _ => &[],
    }
}

/// Before a read command: its keys, each with its partition and an offset the read will see at
/// least up to (for [`track`]): what the hub had handled of the partition, or the last write to
/// the key's slot through this node (the read waits for it), whichever is later. Not the
/// partition's last write: a read does not wait for other slots' writes, and a bound past what
/// it saw would let the hub skip (or send before the key was tracked) the invalidation of a
/// change the client's value does not hold.
pub(super) fn before_read(ctx: &Context<'_>, keys: &[Bytes]) -> Vec<(Bytes, u32, u64)> {
    let partitions = ctx.service.partition_count();
    keys.iter()
        .map(|key| {
            // The pk the key names (a binary key's, for bytes that are not UTF-8).
            let pk = super::text_ref(key).unwrap_or_else(|_| String::from_utf8_lossy(key));
            let partition = partition_of(&pk, partitions);
            let seen = ctx.hub.handled(partition).max(ctx.written.key_next(&pk));
            // A copy: the tracking table keeps the key, and a slice would keep the whole read
            // buffer it came in (a pipeline's worth, a large value's) for as long.
            (Bytes::copy_from_slice(key), partition, seen)
        })
        .collect()
}

/// After a read command: remember its keys for this connection's tracking (the hub invalidates
/// at once the keys whose changes may have been missed, see `Hub::track`).
pub(super) fn track(ctx: &mut Context<'_>, keys: Vec<(Bytes, u32, u64)>) {
    let Some(tracking) = &ctx.session.tracking else {
        return;
    };
    let caching = ctx.session.caching.take();
    if tracking.bcast
        || keys.is_empty()
        || (tracking.optin && caching != Some(true))
        || (tracking.optout && caching == Some(false))
    {
        return;
    }
    ctx.hub.track(ctx.session.id, keys);
}

/// `CONFIG SET notify-keyspace-events <flags>`.
pub fn set_notify_config(ctx: &Context<'_>, value: &Bytes) -> Reply {
    match std::str::from_utf8(value).ok().and_then(NotifyFlags::parse) {
        Some(flags) => {
            ctx.hub.set_notify_flags(flags);
            Reply::ok()
        }
        None => Reply::err(
            "Invalid argument 'notify-keyspace-events' for CONFIG SET: use Redis's flags \
             (K, E, g, $, h, x, A)",
        ),
    }
}
