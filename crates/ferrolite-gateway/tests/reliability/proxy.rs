//! A TCP forwarder on 127.0.0.1 that breaks the connections passing through it, as a bad
//! network does: from a seed, each connection may be cut (both sockets closed) at a random
//! byte offset of one direction, its chunks delayed or split, and one direction stalled
//! for a while. Bytes are never reordered, altered or invented (TCP does not do that).
//! Once [`Proxy::heal`] is called, nothing more is injected (a stall in progress ends).
//!
//! The faults of connection *n* come from `Rng::new(seed).fork(n)`, so a seed replays the
//! same plan for the same sequence of connections.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::Rng;

/// How often and how hard each kind of fault strikes.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Chance (percent) that a connection is cut.
    pub cut_percent: u64,
    /// The cut falls at a byte offset below this, in one direction (for half the cuts,
    /// below a sixteenth of it: in the handshake and the first exchanges).
    pub cut_within: u64,
    /// Chance (percent) that a chunk is delayed (and possibly split in two).
    pub delay_percent: u64,
    /// Longest delay of a chunk.
    pub max_delay: Duration,
    /// Chance (percent) that a connection stalls once.
    pub stall_percent: u64,
    /// The stall starts at a byte offset below this, in one direction.
    pub stall_within: u64,
    /// Longest stall.
    pub max_stall: Duration,
}

impl Faults {
    /// A bad network: most connections die young.
    pub const HOSTILE: Faults = Faults {
        cut_percent: 90,
        cut_within: 64 * 1024,
        delay_percent: 15,
        max_delay: Duration::from_millis(25),
        stall_percent: 35,
        stall_within: 8 * 1024,
        max_stall: Duration::from_millis(1200),
    };
}

/// What was injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections: u64,
    pub cuts: u64,
    pub delays: u64,
    pub stalls: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    cuts: AtomicU64,
    delays: AtomicU64,
    stalls: AtomicU64,
    bytes: AtomicU64,
}

struct Shared {
    target: Mutex<SocketAddr>,
    rng: Rng,
    faults: Option<Faults>,
    healed: watch::Sender<bool>,
    counters: Counters,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn is_healed(&self) -> bool {
        *self.healed.borrow()
    }

    /// Resolves when the proxy heals (never if it does not).
    async fn wait_healed(&self) {
        let mut healed = self.healed.subscribe();
        if healed.wait_for(|h| *h).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A running proxy; stops (and closes every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Forwards connections on a fresh 127.0.0.1 port to `target`, injecting `faults`
    /// (none: a plain forwarder) drawn from `seed`. Must run inside a tokio runtime.
    pub async fn start(target: SocketAddr, seed: u64, faults: Option<Faults>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (healed, _) = watch::channel(faults.is_none());
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            rng: Rng::new(seed),
            faults,
            healed,
            counters: Counters::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let n = accepting
                    .counters
                    .connections
                    .fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(serve(accepting.clone(), client, n));
                let mut tasks = accepting.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(task);
            }
        });
        shared.tasks.lock().unwrap().push(accept);
        Proxy { addr, shared }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections go from now on.
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }

    /// Stops injecting faults, on open connections too.
    pub fn heal(&self) {
        self.shared.healed.send_replace(true);
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            connections: c.connections.load(Ordering::SeqCst),
            cuts: c.cuts.load(Ordering::SeqCst),
            delays: c.delays.load(Ordering::SeqCst),
            stalls: c.stalls.load(Ordering::SeqCst),
            bytes: c.bytes.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// The faults planned for one direction of one connection.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    /// Cut the connection once this many bytes went this way.
    cut_at: Option<u64>,
    /// Stall this long once this many bytes went this way.
    stall: Option<(u64, Duration)>,
}

fn millis_up_to(rng: &mut Rng, max: Duration) -> Duration {
    Duration::from_millis(rng.between(1, max.as_millis() as u64))
}

/// Forwards one accepted connection until both directions end or the connection is cut.
async fn serve(shared: Arc<Shared>, client: TcpStream, n: u64) {
    let target = *shared.target.lock().unwrap();
    // The client sees its connection closed if the target is not there.
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut rng = shared.rng.fork(n);
    let mut plans = [Plan::default(), Plan::default()];
    if let Some(f) = shared.faults {
        if rng.chance(f.cut_percent) {
            let within = if rng.chance(50) {
                f.cut_within / 16
            } else {
                f.cut_within
            };
            plans[rng.below(2) as usize].cut_at = Some(rng.below(within));
        }
        if rng.chance(f.stall_percent) {
            plans[rng.below(2) as usize].stall = Some((
                rng.below(f.stall_within),
                millis_up_to(&mut rng, f.max_stall),
            ));
        }
    }
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let (cut, _) = watch::channel(false);
    let up = pump(
        shared.clone(),
        client_read,
        upstream_write,
        plans[0],
        rng.fork(1),
        cut.clone(),
    );
    let down = pump(
        shared.clone(),
        upstream_read,
        client_write,
        plans[1],
        rng.fork(2),
        cut.clone(),
    );
    tokio::join!(up, down);
}

/// Copies one direction. Returns (dropping both halves it holds) at the end of the stream
/// — the writer's drop passes the end on — or when the connection is cut, by this
/// direction or the other.
async fn pump(
    shared: Arc<Shared>,
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    plan: Plan,
    mut rng: Rng,
    cut: watch::Sender<bool>,
) {
    let mut cut_seen = cut.subscribe();
    let copying = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut offset = 0u64;
        let mut stalled = false;
        loop {
            let max = 1 + rng.below(buf.len() as u64) as usize;
            let n = match read(&from, &mut buf[..max]).await {
                Ok(0) => return,
                Ok(n) => n,
                Err(_) => {
                    cut.send_replace(true);
                    return;
                }
            };
            let mut chunk = &buf[..n];
            let end = offset + n as u64;
            let faulty = shared.faults.filter(|_| !shared.is_healed());
            if let Some(faults) = faulty {
                if let Some((_, how_long)) = plan.stall.filter(|(at, _)| !stalled && end > *at) {
                    stalled = true;
                    shared.counters.stalls.fetch_add(1, Ordering::SeqCst);
                    tokio::select! {
                        () = tokio::time::sleep(how_long) => {}
                        () = shared.wait_healed() => {}
                    }
                }
                if let Some(at) = plan.cut_at.filter(|at| end > *at) {
                    let keep = (at - offset) as usize;
                    let _ = write_all(&to, &chunk[..keep]).await;
                    shared
                        .counters
                        .bytes
                        .fetch_add(keep as u64, Ordering::SeqCst);
                    shared.counters.cuts.fetch_add(1, Ordering::SeqCst);
                    cut.send_replace(true);
                    return;
                }
                if rng.chance(faults.delay_percent) {
                    shared.counters.delays.fetch_add(1, Ordering::SeqCst);
                    // Half the delayed chunks are split: the first part goes now.
                    if chunk.len() > 1 && rng.chance(50) {
                        let split = 1 + rng.below(chunk.len() as u64 - 1) as usize;
                        if write_all(&to, &chunk[..split]).await.is_err() {
                            cut.send_replace(true);
                            return;
                        }
                        shared
                            .counters
                            .bytes
                            .fetch_add(split as u64, Ordering::SeqCst);
                        chunk = &chunk[split..];
                    }
                    tokio::time::sleep(millis_up_to(&mut rng, faults.max_delay)).await;
                }
            }
            if write_all(&to, chunk).await.is_err() {
                cut.send_replace(true);
                return;
            }
            shared
                .counters
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            offset = end;
        }
    };
    tokio::select! {
        () = copying => {}
        _ = cut_seen.wait_for(|c| *c) => {}
    }
    drop(from);
    drop(to);
}

async fn read(from: &OwnedReadHalf, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(to: &OwnedWriteHalf, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
