//! The REST side: users and sessions on the admin port, and the writers, a pool of
//! concurrent `PUT /{db}/{doc}` requests (reqwest, keep-alive connections), either as fast
//! as they are accepted or paced at a fixed rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::clients::Tracker;
use crate::Result;

/// The documents a run writes.
#[derive(Clone)]
pub(crate) enum Docs {
    /// `<prefix><j>` into channel `c<k>` (`{"channels":"c<k>",…}`), `k` from the tracker's
    /// phase, which times each write.
    Tracked { tracker: Arc<Tracker>, phase: usize },
    /// User profiles shaped for the user-profile sync function, also routable by the
    /// default one: ID `user::<prefix><j>@bench.example`, `type` `user`, that `email`, and
    /// `channels` = the channel the function routes them to.
    Profiles { prefix: String },
}

/// ~200 bytes of letters and digits, different for each document.
fn pad(seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..200)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Docs {
    /// Document `j`: its ID and body (the body's `t` is the send time in µs since the
    /// epoch).
    fn doc(&self, j: usize) -> (String, Vec<u8>) {
        match self {
            Docs::Tracked { tracker, phase } => {
                let phase = tracker.phase(*phase);
                let body = json!({
                    "channels": format!("c{}", phase.channel[j]),
                    "t": micros_now(),
                    "pad": pad(j as u64),
                });
                (
                    format!("{}{j}", phase.prefix),
                    body.to_string().into_bytes(),
                )
            }
            Docs::Profiles { prefix } => {
                let email = format!("{prefix}{j}@bench.example");
                let body = json!({
                    "type": "user",
                    "email": email,
                    "channels": format!("user.{email}"),
                    "t": micros_now(),
                    "pad": pad(j as u64),
                });
                (format!("user::{email}"), body.to_string().into_bytes())
            }
        }
    }

    fn about_to_send(&self, j: usize) {
        if let Docs::Tracked { tracker, phase } = self {
            tracker.sent(*phase, j);
        }
    }
}

/// A REST client of one database on the admin port.
#[derive(Clone)]
pub(crate) struct Rest {
    client: Client,
    /// `http://127.0.0.1:<admin>/<db>`
    db_url: String,
}

/// What a run of writes measured.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) count: usize,
    pub(crate) elapsed: Duration,
    /// Each `PUT`'s response time, ms.
    pub(crate) put_ms: Vec<f64>,
    /// Paced runs: how late each write was sent after its due time, ms.
    pub(crate) late_ms: Vec<f64>,
}

impl Written {
    pub(crate) fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Rest {
    pub(crate) fn new(admin_port: u64, db: &str) -> Result<Rest> {
        let client = Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Rest {
            client,
            db_url: format!("http://127.0.0.1:{admin_port}/{db}"),
        })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let response = self
            .client
            .request(method, format!("{}/{path}", self.db_url))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates users `u<k>` (password `pw-u<k>`, channel `c<k>`) for `k` in `0..count`,
    /// `inflight` at a time.
    pub(crate) async fn create_users(&self, count: usize, inflight: usize) -> Result<()> {
        self.each(count, inflight, |rest, k| async move {
            let body =
                json!({ "password": format!("pw-u{k}"), "admin_channels": [format!("c{k}")] });
            rest.send(reqwest::Method::PUT, &format!("_user/u{k}"), body)
                .await
                .map(drop)
        })
        .await
        .map(drop)
    }

    /// A session for each user `u<k>` (admin `POST /_session`, no password), in order.
    pub(crate) async fn create_sessions(
        &self,
        count: usize,
        inflight: usize,
    ) -> Result<Vec<String>> {
        let ids = self
            .each(count, inflight, |rest, k| async move {
                let answer = rest
                    .send(
                        reqwest::Method::POST,
                        "_session",
                        json!({ "name": format!("u{k}") }),
                    )
                    .await?;
                answer
                    .get("session_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("no session_id in {answer}").into())
            })
            .await?;
        Ok(ids)
    }

    /// Runs `job(k)` for `k` in `0..count`, `inflight` at a time; results in order.
    async fn each<T, F, Fut>(&self, count: usize, inflight: usize, job: F) -> Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(Rest, usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        let next = Arc::new(AtomicUsize::new(0));
        let job = Arc::new(job);
        let mut tasks = JoinSet::new();
        for _ in 0..inflight.max(1) {
            let (rest, next, job) = (self.clone(), next.clone(), job.clone());
            tasks.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= count {
                        return Ok::<_, crate::BoxError>(done);
                    }
                    done.push((k, job(rest.clone(), k).await?));
                }
            });
        }
        let mut all = Vec::with_capacity(count);
        while let Some(done) = tasks.join_next().await {
            all.extend(done??);
        }
        all.sort_by_key(|(k, _)| *k);
        Ok(all.into_iter().map(|(_, t)| t).collect())
    }

    /// Writes documents `0..count` of `docs`, `inflight` requests at a time, as fast as
    /// they are accepted (`rate` = `None`) or write `j` at `j / rate` s after the start.
    pub(crate) async fn write(
        &self,
        docs: &Docs,
        count: usize,
        inflight: usize,
        rate: Option<f64>,
    ) -> Result<Written> {
        let next = Arc::new(AtomicUsize::new(0));
        let started = tokio::time::Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..inflight.max(1) {
            let (rest, next, docs) = (self.clone(), next.clone(), docs.clone());
            tasks.spawn(async move {
                let (mut put_ms, mut late_ms) = (Vec::new(), Vec::new());
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= count {
                        return Ok::<_, crate::BoxError>((put_ms, late_ms));
                    }
                    if let Some(rate) = rate {
                        let due = started + Duration::from_secs_f64(j as f64 / rate);
                        tokio::time::sleep_until(due).await;
                        late_ms.push(due.elapsed().as_secs_f64() * 1e3);
                    }
                    let (id, body) = docs.doc(j);
                    let url = format!("{}/{id}", rest.db_url);
                    let request = rest
                        .client
                        .put(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                    let sent = Instant::now();
                    docs.about_to_send(j);
                    let response = request.send().await?;
                    let status = response.status();
                    let text = response.text().await?;
                    put_ms.push(sent.elapsed().as_secs_f64() * 1e3);
                    if status != StatusCode::CREATED {
                        return Err(format!("PUT {id}: {status} {text}").into());
                    }
                }
            });
        }
        let mut out = Written {
            count,
            ..Written::default()
        };
        while let Some(done) = tasks.join_next().await {
            let (put_ms, late_ms) = done??;
            out.put_ms.extend(put_ms);
            out.late_ms.extend(late_ms);
        }
        out.elapsed = started.elapsed();
        Ok(out)
    }
}
