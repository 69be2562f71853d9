//! The subscribed clients: one continuous pull replicator per user, each into its own
//! in-memory database, all on ferrolite's replication runtime in the harness process; and
//! the [`Tracker`] that times each written document from just before its `PUT` to the
//! change listener of the client that should receive it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrolite::{
    ActivityLevel, Authenticator, Database, Endpoint, ListenerToken, Replicator,
    ReplicatorConfiguration, ReplicatorStatus, ReplicatorType,
};

use crate::Result;

/// One timed set of writes: document `<prefix><j>` goes to channel `c<channel[j]>`.
pub(crate) struct Phase {
    pub(crate) prefix: char,
    pub(crate) channel: Vec<u32>,
    /// Nanoseconds after the tracker's base + 1 (0 = not yet).
    sent: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
}

impl Phase {
    pub(crate) fn new(prefix: char, channel: Vec<u32>) -> Phase {
        let zeros = || (0..channel.len()).map(|_| AtomicU64::new(0)).collect();
        Phase {
            prefix,
            sent: zeros(),
            arrived: zeros(),
            channel,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.channel.len()
    }
}

/// Send and arrival instants of every tracked write.
pub(crate) struct Tracker {
    base: Instant,
    phases: Vec<Phase>,
    /// Documents that reached a client that does not read their channel.
    misrouted: AtomicU64,
    /// Change-listener calls for documents no phase knows.
    unknown: AtomicU64,
}

/// Latencies of one phase, in ms.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    pub(crate) ms: Vec<f64>,
    pub(crate) lost: usize,
}

impl Tracker {
    pub(crate) fn new(phases: Vec<Phase>) -> Tracker {
        Tracker {
            base: Instant::now(),
            phases,
            misrouted: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }

    pub(crate) fn phase(&self, index: usize) -> &Phase {
        &self.phases[index]
    }

    /// Records that write `j` of phase `index` is about to be sent.
    pub(crate) fn sent(&self, index: usize, j: usize) {
        self.phases[index].sent[j].store(self.now(), Ordering::Release);
    }

    /// Called by client `client`'s change listener for each document it committed.
    fn arrived(&self, client: u32, id: &str) {
        let now = self.now();
        let mut chars = id.chars();
        let (Some(prefix), Ok(j)) = (chars.next(), chars.as_str().parse::<usize>()) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(phase) = self.phases.iter().find(|p| p.prefix == prefix) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if phase.channel.get(j) != Some(&client) {
            self.misrouted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = phase.arrived[j].compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
    }

    /// How many writes of phase `index` have arrived.
    pub(crate) fn arrived_count(&self, index: usize) -> usize {
        self.phases[index]
            .arrived
            .iter()
            .filter(|a| a.load(Ordering::Acquire) != 0)
            .count()
    }

    /// Waits until every write of phase `index` arrived, or `limit` passed; returns the
    /// time waited.
    pub(crate) fn wait_all(&self, index: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.arrived_count(index) < self.phases[index].len() && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        started.elapsed()
    }

    /// The latency of each write of phase `index` that arrived, and how many did not.
    pub(crate) fn arrivals(&self, index: usize) -> Arrivals {
        let phase = &self.phases[index];
        let mut out = Arrivals::default();
        for (sent, arrived) in phase.sent.iter().zip(&phase.arrived) {
            let (sent, arrived) = (
                sent.load(Ordering::Acquire),
                arrived.load(Ordering::Acquire),
            );
            if sent == 0 || arrived == 0 {
                out.lost += 1;
            } else {
                out.ms.push(arrived.saturating_sub(sent) as f64 / 1e6);
            }
        }
        out
    }

    pub(crate) fn misrouted(&self) -> u64 {
        self.misrouted.load(Ordering::Relaxed)
    }

    pub(crate) fn unknown(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }
}

/// What one client's status listener saw.
#[derive(Default)]
struct Health {
    /// Reached `Idle` (connected and caught up) at least once.
    idle: AtomicBool,
    /// Status changes to offline, stopped or connecting, or with an error, while armed.
    drops: AtomicU32,
    /// Went offline before being armed (a refused or failed first connection).
    early_offline: AtomicU32,
    error: Mutex<Option<String>>,
}

/// The clients, and whether a lost connection counts as a drop yet.
pub(crate) struct Clients {
    clients: Vec<Client>,
    armed: Arc<AtomicBool>,
}

struct Client {
    db: Database,
    replicator: Replicator,
    health: Arc<Health>,
    db_token: ListenerToken,
    status_token: ListenerToken,
}

impl Clients {
    /// Starts one continuous puller per session (client `k` authenticates with
    /// `sessions[k]`, whose user reads channel `c<k>`).
    pub(crate) fn start(url: &str, sessions: &[String], tracker: &Arc<Tracker>) -> Result<Clients> {
        let armed = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::with_capacity(sessions.len());
        for (k, session) in sessions.iter().enumerate() {
            let k32 = u32::try_from(k)?;
            let db = Database::open_in_memory(&format!("client{k}"))?;
            let t = tracker.clone();
            let db_token = db.add_change_listener(move |change| {
                for id in &change.document_ids {
                    t.arrived(k32, id);
                }
            });
            let config = ReplicatorConfiguration::new(&db, Endpoint::url(url)?)
                .replicator_type(ReplicatorType::Pull)
                .continuous(true)
                .authenticator(Authenticator::session(session.clone()));
            let replicator = Replicator::new(config)?;
            let health = Arc::new(Health::default());
            let (h, a) = (health.clone(), armed.clone());
            let status_token =
                replicator.add_change_listener(move |status| observe(&h, &a, status));
            replicator.start();
            clients.push(Client {
                db,
                replicator,
                health,
                db_token,
                status_token,
            });
        }
        Ok(Clients { clients, armed })
    }

    /// How many clients reached `Idle`.
    pub(crate) fn idle(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.health.idle.load(Ordering::Acquire))
            .count()
    }

    /// Connection failures before arming (retried by the replicators).
    pub(crate) fn early_offline(&self) -> u32 {
        self.clients
            .iter()
            .map(|c| c.health.early_offline.load(Ordering::Relaxed))
            .sum()
    }

    /// From now on, any lost connection counts as a drop.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Clients that lost their connection (or errored) since [`arm`](Self::arm), or are
    /// not connected now; and the first error seen.
    pub(crate) fn dropped(&self) -> (usize, Option<String>) {
        let mut count = 0;
        let mut first = None;
        for c in &self.clients {
            let activity = c.replicator.status().activity;
            let lost = c.health.drops.load(Ordering::Relaxed) > 0
                || !matches!(activity, ActivityLevel::Idle | ActivityLevel::Busy);
            if lost {
                count += 1;
                if first.is_none() {
                    first = c
                        .health
                        .error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                        .or_else(|| Some(format!("{activity:?}")));
                }
            }
        }
        (count, first)
    }

    /// Disarms, stops every replicator and waits (up to `limit`) for them to stop.
    pub(crate) fn stop(self, limit: Duration) {
        self.armed.store(false, Ordering::Release);
        for c in &self.clients {
            c.replicator.stop();
        }
        let started = Instant::now();
        for c in &self.clients {
            let left = limit.saturating_sub(started.elapsed());
            let _ = c.replicator.wait_until_stopped(left);
            c.replicator.remove_change_listener(c.status_token);
            c.db.remove_change_listener(c.db_token);
        }
    }
}

fn observe(health: &Health, armed: &AtomicBool, status: &ReplicatorStatus) {
    let bad = matches!(
        status.activity,
        ActivityLevel::Offline | ActivityLevel::Stopped | ActivityLevel::Connecting
    ) || status.error.is_some();
    if armed.load(Ordering::Acquire) {
        if bad {
            health.drops.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = &status.error {
                let mut error = health.error.lock().unwrap_or_else(PoisonError::into_inner);
                error.get_or_insert_with(|| e.to_string());
            }
        }
    } else if status.activity == ActivityLevel::Offline {
        health.early_offline.fetch_add(1, Ordering::Relaxed);
    }
    if status.activity == ActivityLevel::Idle {
        health.idle.store(true, Ordering::Release);
    }
}
