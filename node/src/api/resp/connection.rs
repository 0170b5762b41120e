//! One client connection: read, run every complete command in order (pipelining), write all
//! replies at once.

use super::RespConfig;
use super::clients::ClientHandle;
use super::commands::{
    Context, Deferred, MonitorLine, Session, Shared, blocks, collectable, execute,
    refused_while_queuing, send_collected, take_deferred,
};
use super::frame::CommandReader;
use super::reply::Reply;
use super::socket::{Progress, Socket};
use crate::service::Service;
use bytes::BytesMut;
use std::time::Duration;
use tokio::sync::watch;

/// Replies buffered before they are written even in the middle of a pipeline.
const FLUSH_AT: usize = 64 * 1024;

/// Replies held while the client is not reading them, before the connection stops reading its
/// commands until it does. Clients write a whole pipeline before they read a reply (redis-py,
/// redis-rs): a node that stopped reading as soon as the socket was full deadlocked with a
/// pipeline whose commands and replies each outgrew the socket buffers (20,000 `ECHO`s of 1 KiB;
/// redis-server holds any amount for a normal client). The bound keeps a client that never
/// reads from holding more than this of the node's memory.
const OUTPUT_HELD_MAX: usize = 32 << 20;

/// An empty buffer larger than this is let go (a connection that once answered a large `MGET`
/// kept its reply buffer, hundreds of MB, until it closed; one that once sent an 8 MB `SET`,
/// its command buffer).
const KEPT_CAPACITY: usize = 1 << 20;

/// How long the last write before a close waits for a client that takes nothing, when idle
/// connections are never closed (`RESP_IDLE_TIMEOUT_SEC=0`).
const LAST_WRITE_MAX: Duration = Duration::from_secs(60);

/// A timeout that never goes off (a century: far enough, and no overflow when added to now).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub async fn run(
    mut stream: Socket,
    id: u64,
    service: &Service,
    shared: &Shared,
    config: &RespConfig,
    mut stop: watch::Receiver<bool>,
    client: std::sync::Arc<ClientHandle>,
) {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut reader = CommandReader::new(config.limits);
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut session = Session::new(id, service.access(None));
    // Flushed to the node's histograms once per batch of commands answered.
    let mut latencies = service.metrics().resp_latencies();
    // Replies of a run of pipelined writes, held until their ops are in the log together; those
    // computed at apply (INCR) are filled in from the outcomes.
    let mut held: Vec<Reply> = Vec::new();
    let mut deferred: Vec<Deferred> = Vec::new();
    // Registered once for the connection's life, not once per read: the end signals (CLIENT
    // KILL, the node's output bound, the node's stop), and the idle timer (moved forward before
    // each read, which costs no timer-wheel work).
    let ended = async {
        tokio::select! {
            () = client.killed() => {}
            _ = stop.wait_for(|&s| s) => {}
        }
    };
    tokio::pin!(ended);
    let last_write = config.idle_timeout.unwrap_or(LAST_WRITE_MAX);
    // Replies go out through `flush`, noting what stays held: true when the connection must end.
    // `session` names the session (`ctx.session` while a command's context is alive).
    macro_rules! flush_failed {
        ($session:expr) => {{
            let pending = output.len();
            let failed = flush(
                &mut stream,
                &mut output,
                input.len() + $session.held_bytes(),
                &client,
                ended.as_mut(),
                config,
            )
            .await
            .is_err();
            $session.counted.net_output += (pending - output.len()) as u64;
            failed
        }};
    }
    let idle = tokio::time::sleep(config.idle_timeout.unwrap_or(NEVER));
    tokio::pin!(idle);
    // The connection ends by returning from this block, wherever it does: its last commands
    // are then counted below.
    async {
        loop {
            // When the commands that have arrived could start (see `execute`).
            let mut clock = std::time::Instant::now();
            // Run every command that has fully arrived.
            loop {
                let next = reader.next(&mut input);
                let mut ctx = Context {
                    service,
                    hub: &shared.hub,
                    scans: &shared.scans,
                    written: &shared.written,
                    stats: &shared.stats,
                    slowlog: &shared.slowlog,
                    monitors: &shared.monitors,
                    clients: &shared.clients,
                    client: &client,
                    session: &mut session,
                };
                // Consecutive plain writes of a pipeline go to the log together (group commit), in
                // order; anything else first sends them and releases their replies.
                let collect = matches!(&next, Ok(Some(args)) if collectable(&ctx, args));
                if !collect && ctx.session.collecting_pipeline() {
                    let sent = send_collected(&mut ctx, &deferred).await;
                    clock = std::time::Instant::now();
                    deferred.clear();
                    if let Ok(filled) = &sent {
                        for (place, reply) in filled {
                            held[*place] = reply.clone();
                        }
                    }
                    for reply in held.drain(..) {
                        match &sent {
                            Ok(_) => reply.encode(ctx.session.proto, &mut output),
                            Err(e) => e.clone().encode(ctx.session.proto, &mut output),
                        }
                    }
                }
                match next {
                    Ok(Some(args)) if args.is_empty() => continue,
                    Ok(Some(args)) if collect => {
                        ctx.session.start_collecting();
                        let reply = execute(&mut ctx, args, &mut latencies, &mut clock).await;
                        if let Some((op, shape)) = take_deferred(&mut ctx) {
                            deferred.push((held.len(), op, shape));
                        }
                        held.push(reply);
                    }
                    Ok(Some(args)) if blocks(&args) => {
                        // It may wait long (or, as Redis's, without a limit): the replies before
                        // it go out first, and it ends with its client, a CLIENT KILL or the
                        // node's stop.
                        if flush_failed!(ctx.session) {
                            return;
                        }
                        let reply = tokio::select! {
                            reply = execute(&mut ctx, args, &mut latencies, &mut clock) => reply,
                            () = stream.peer_closed() => return,
                            () = &mut ended => return,
                        };
                        reply.encode(session.proto, &mut output);
                    }
                    Ok(Some(args)) => {
                        let reply = execute(&mut ctx, args, &mut latencies, &mut clock).await;
                        reply.encode(session.proto, &mut output);
                        if session.closing {
                            session.counted.net_output += output.len() as u64;
                            stream.close_with(&output, last_write).await;
                            return;
                        }
                        if output.len() >= FLUSH_AT {
                            if flush_failed!(session) {
                                return;
                            }
                            clock = std::time::Instant::now();
                        }
                    }
                    Ok(None) => break,
                    // A command read past (an argument over MAX_BODY_BYTES): answered, and the
                    // connection goes on; inside MULTI it makes EXEC refuse, as a command
                    // refused while queuing does.
                    Err(e) if !e.is_fatal() => {
                        refused_while_queuing(&mut ctx);
                        Reply::err(e).encode(session.proto, &mut output);
                    }
                    Err(e) => {
                        // A protocol error leaves the stream unreadable: say why and close. A
                        // client still writing (a value over MAX_BODY_BYTES) sees only the
                        // closed connection, so the node's log says why too.
                        tracing::info!(
                            client = %client.addr(),
                            error = %e,
                            "closing a Redis connection after a protocol error"
                        );
                        Reply::err(e).encode(session.proto, &mut output);
                        session.counted.net_output += output.len() as u64;
                        stream.close_with(&output, last_write).await;
                        return;
                    }
                }
            }
            latencies.flush();
            session.count_commands(&shared.stats);
            if !output.is_empty() && flush_failed!(session) {
                return;
            }
            // What is left of the commands: the start of one still arriving, if any.
            release_capacity(&mut input);
            client.hold_memory(
                input.len() + output.len() + session.held_bytes(),
                !(input.is_empty() && output.is_empty()),
            );
            // A connection kept for its pushes (subscribed, monitoring) waits as long as it
            // likes, as in Redis; TCP keepalive finds one whose client vanished.
            if let Some(timeout) = config.idle_timeout {
                let timeout = if session.waits_for_pushes() {
                    NEVER
                } else {
                    timeout
                };
                idle.as_mut().reset(tokio::time::Instant::now() + timeout);
            }
            let mut overflow = false;
            // Pushes (invalidations, pub/sub messages) and monitored commands arrive between
            // commands too.
            let (pushes, monitor) = (&mut session.pushes, &mut session.monitor);
            let push = async {
                match pushes.as_mut() {
                    Some((pushes, _)) => pushes.recv().await,
                    None => std::future::pending().await,
                }
            };
            let monitored = async {
                match monitor.as_mut() {
                    Some(monitor) => monitor.next().await,
                    None => std::future::pending().await,
                }
            };
            let pending_output = output.len();
            tokio::select! {
                // Commands, and replies the client had no room for yet: written as it takes
                // them, while its commands go on being read.
                progress = stream.read_or_write(&mut input, &mut output) => match progress {
                    // A large command arriving in parts counts as it arrives.
                    Ok(Progress::Read(read @ 1..)) => {
                        session.counted.net_input += read as u64;
                        client.hold_memory(input.len() + output.len() + session.held_bytes(), true);
                    }
                    Ok(Progress::Wrote) => {
                        session.counted.net_output += (pending_output - output.len()) as u64;
                        release_capacity(&mut output);
                        client.hold_memory(
                            input.len() + output.len() + session.held_bytes(),
                            !(input.is_empty() && output.is_empty()),
                        );
                    }
                    // EOF or a broken connection.
                    _ => return,
                },
                // Idle for too long.
                () = &mut idle => return,
                Some(push) = push => {
                    let proto = session.proto;
                    push.into_reply(proto).encode(proto, &mut output);
                    // Whatever else is queued goes in the same write.
                    if let Some((pushes, overflowed)) = session.pushes.as_mut() {
                        while let Ok(push) = pushes.try_recv() {
                            push.into_reply(proto).encode(proto, &mut output);
                        }
                        // Its client could not keep up: it cannot trust its cache any more.
                        overflow = overflowed.load(std::sync::atomic::Ordering::Relaxed);
                    }
                }
                line = monitored => {
                    // What else is waiting goes in the same write.
                    let mut line = Some(line);
                    while let Some(next) = line {
                        match next {
                            MonitorLine::Command(text) => {
                                output.extend_from_slice(b"+");
                                output.extend_from_slice(text.as_bytes());
                                output.extend_from_slice(b"\r\n");
                            }
                            MonitorLine::Behind(missed) => {
                                output.extend_from_slice(
                                    format!(
                                        "-ERR MONITOR fell {missed} commands behind; \
                                         disconnected (as Redis disconnects a monitor past its \
                                         output buffer limit)\r\n"
                                    )
                                    .as_bytes(),
                                );
                                overflow = true;
                                break;
                            }
                        }
                        line = session.monitor.as_mut().and_then(|m| m.try_next());
                    }
                }
                // CLIENT KILL from another connection, the node's output bound, its stop.
                () = &mut ended => return,
            }
            if overflow {
                session.counted.net_output += output.len() as u64;
                stream.close_with(&output, last_write).await;
                return;
            }
        }
    }
    .await;
    session.count_commands(&shared.stats);
}

/// Writes what the socket takes now, then waits for the rest only while more than
/// [`OUTPUT_HELD_MAX`] would stay held, noting what stays held (with `also_held` bytes of
/// commands not run yet and subscriptions) in the node's bound on client memory. `Err`
/// when the connection is broken or must end (`ended`: killed, past the node's output bound,
/// the node stopping), or when its client took nothing for the idle timeout meanwhile.
async fn flush(
    stream: &mut Socket,
    output: &mut BytesMut,
    also_held: usize,
    client: &ClientHandle,
    mut ended: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    config: &RespConfig,
) -> std::io::Result<()> {
    stream.write_now(output)?;
    while output.len() >= OUTPUT_HELD_MAX {
        client.hold_memory(also_held + output.len(), true);
        // Reset whenever the client takes some: a slow reader goes on, one that stopped ends.
        let stalled = tokio::time::sleep(config.idle_timeout.unwrap_or(NEVER));
        tokio::select! {
            wrote = stream.write_some(output) => wrote?,
            () = ended.as_mut() => return Err(std::io::ErrorKind::ConnectionAborted.into()),
            () = stalled => return Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
    release_capacity(output);
    client.hold_memory(also_held + output.len(), !output.is_empty());
    Ok(())
}

/// Lets go of an empty buffer (of replies, or of commands) grown past [`KEPT_CAPACITY`].
fn release_capacity(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > KEPT_CAPACITY {
        *buffer = BytesMut::with_capacity(16 * 1024);
    }
}
