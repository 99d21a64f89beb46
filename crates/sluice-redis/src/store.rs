//! `RedisStore`: the `Store` contract over one Lua script.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Value};
use sluice_core::time::duration_nanos;
use sluice_core::{Clock, Decision, Nanos, Policy, Ticket, Verdict};
use sluice_store::{Limit, Reservation, Store};

use crate::keys::{HashTag, code, line_key, redis_key, supported};

/// The function library with every algorithm; loaded once per server (`FUNCTION LOAD`),
/// then called by name (`FCALL`), so that a call pays for no Lua definitions.
const LIBRARY: &str = include_str!("sluice.lua");

/// The function the library registers for limits.
const FUNCTION: &str = "sluice";

/// The function the library registers for lines (see [`crate::RedisQueues`]).
const QUEUE_FUNCTION: &str = "sluice_queue";

/// Values per limit in the script's reply.
const FIELDS: usize = 9;

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A policy whose spans the script cannot compute exactly.
    #[error("policy {policy} cannot be held in Redis: {reason}")]
    UnsupportedPolicy {
        /// The policy.
        policy: Policy,
        /// Why not.
        reason: &'static str,
    },
    /// In a Redis Cluster, the limits of one request live under different hash tags, so
    /// no one function call can decide them together.
    #[error(
        "limits of one request must share a hash tag in Redis Cluster: {first:?} and {other:?} differ (use one domain, or HashTag::Constant)"
    )]
    CrossSlot {
        /// The first limit's tag.
        first: String,
        /// A tag that differs from it.
        other: String,
    },
    /// The script answered something this version does not understand.
    #[error("unexpected reply from the sluice script: {0}")]
    Reply(String),
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where the script's `now` comes from.
#[derive(Clone)]
enum Timeline {
    /// Redis `TIME`: one timeline for every instance.
    Redis,
    /// A clock of the caller's (tests).
    Clock(Arc<dyn Clock>),
}

/// Limits shared through Redis. Cheap to clone; clones share connections, which multiplex
/// and pipeline concurrent calls instead of queueing them behind a lock.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    timeline: Timeline,
    prefix: Arc<str>,
    tag: Arc<HashTag>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.connection {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("connection", &kind)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Distinct prefixes for stores made with [`RedisStore::isolated`].
static ISOLATED: AtomicU64 = AtomicU64::new(0);

impl RedisStore {
    /// Connects to one Redis server, e.g. `redis://127.0.0.1:6379/`. The connection
    /// reconnects by itself after Redis restarts. An unreachable server is an error after
    /// about a second (a connect timeout of 1 s, two quick retries), not a long hang: how
    /// long to wait for Redis per call is the failure policy's business (`FallbackStore`).
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1)));
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::with_connection(Connection::Single(manager)))
    }

    /// Connects to a Redis Cluster through any of its nodes; the client follows `MOVED`
    /// and `ASK` redirections.
    pub async fn connect_cluster(urls: &[String]) -> Result<Self, RedisError> {
        let client = redis::cluster::ClusterClient::new(urls.to_vec())?;
        let connection = client.get_async_connection().await?;
        Ok(Self::with_connection(Connection::Cluster(connection)))
    }

    fn with_connection(connection: Connection) -> Self {
        Self {
            connection,
            timeline: Timeline::Redis,
            prefix: "sl".into(),
            tag: Arc::new(HashTag::Domain),
        }
    }

    /// The same store, placing keys on cluster slots by `tag` (default: the key's domain).
    pub fn with_hash_tag(self, tag: HashTag) -> Self {
        Self {
            tag: Arc::new(tag),
            ..self
        }
    }

    /// The same store, deciding on `clock`'s timeline instead of Redis `TIME` (for tests:
    /// the script then computes with the instant the clock gives).
    pub fn with_clock(self, clock: impl Clock) -> Self {
        Self {
            timeline: Timeline::Clock(Arc::new(clock)),
            ..self
        }
    }

    /// The same store, naming its keys `<prefix>:…` (default `sl`).
    pub fn with_prefix(self, prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// The same store with a prefix no other store of this process uses: for tests that
    /// share one Redis.
    pub fn isolated(self) -> Self {
        let n = ISOLATED.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{}-{}-{n}", self.prefix, std::process::id());
        self.with_prefix(&prefix)
    }

    /// Runs one operation of the library over `limits` (with their `tickets` for refunds
    /// and settles) and returns the per-limit replies and the script's `now`.
    async fn run(
        &self,
        op: &str,
        limits: &[(&sluice_core::Key, &Policy, Option<&Ticket>)],
        cost: u64,
        max_wait: Duration,
    ) -> Result<(Vec<Value>, Nanos), RedisError> {
        // With the caller's own timeline, Redis' real-time TTLs could run out before that
        // timeline reaches a state's expiry: keep such keys at least a day.
        let (now, min_ttl_ms) = match &self.timeline {
            Timeline::Redis => (String::new(), 0),
            Timeline::Clock(clock) => (clock.now().as_u64().to_string(), 86_400_000),
        };
        if let (Connection::Cluster(_), Some((first, _, _))) = (&self.connection, limits.first()) {
            let first = self.tag.of(first);
            if let Some((other, _, _)) = limits.iter().find(|(k, _, _)| self.tag.of(k) != first) {
                return Err(RedisError::CrossSlot {
                    first: first.to_owned(),
                    other: self.tag.of(other).to_owned(),
                });
            }
        }
        let mut keys: Vec<String> = Vec::with_capacity(limits.len());
        let mut args: Vec<String> = vec![
            op.to_owned(),
            now,
            cost.to_string(),
            duration_nanos(max_wait)
                .min(crate::MAX_SPAN_NANOS)
                .to_string(),
            min_ttl_ms.to_string(),
        ];
        for (key, policy, ticket) in limits {
            self.limit_args(key, policy, &mut keys, &mut args)?;
            if let Some(ticket) = ticket {
                args.extend([
                    ticket.cost.to_string(),
                    ticket.at.as_u64().to_string(),
                    ticket.lease.to_string(),
                ]);
            }
        }
        let mut call = redis::cmd("FCALL");
        call.arg(FUNCTION).arg(keys.len()).arg(&keys).arg(&args);
        let mut reply: Vec<Value> = self.call(&call).await?;
        let now = reply
            .pop()
            .map(|v| number(&v))
            .transpose()?
            .ok_or_else(|| RedisError::Reply("missing now".into()))?;
        Ok((reply, Nanos::new(now)))
    }

    /// Adds a limit's key (once) and its 6 arguments, as the library reads them.
    fn limit_args(
        &self,
        key: &sluice_core::Key,
        policy: &Policy,
        keys: &mut Vec<String>,
        args: &mut Vec<String>,
    ) -> Result<(), RedisError> {
        supported(policy).map_err(|reason| RedisError::UnsupportedPolicy {
            policy: *policy,
            reason,
        })?;
        let name = redis_key(&self.prefix, &self.tag, key, policy);
        let index = match keys.iter().position(|k| *k == name) {
            Some(i) => i + 1,
            None => {
                keys.push(name);
                keys.len()
            }
        };
        args.extend([
            index.to_string(),
            code(policy.algorithm()).to_owned(),
            policy.limit().to_string(),
            policy.period_nanos().to_string(),
            policy.burst().to_string(),
            policy.emission_nanos().to_string(),
        ]);
        Ok(())
    }

    /// Runs one operation of the library's line function: `head` is the operation's own
    /// arguments (after op and now), then the line's limits; the line's eleven keys go last
    /// in KEYS.
    pub(crate) async fn run_queue(
        &self,
        op: &str,
        line_name: &sluice_core::Key,
        limits: &[Limit<'_>],
        head: &[String],
    ) -> Result<Vec<Value>, RedisError> {
        let (now, min_ttl_ms) = match &self.timeline {
            Timeline::Redis => (String::new(), 0),
            Timeline::Clock(clock) => (clock.now().as_u64().to_string(), 86_400_000),
        };
        if let Connection::Cluster(_) = &self.connection {
            let first = self.tag.of(line_name);
            if let Some(other) = limits.iter().find(|l| self.tag.of(l.key) != first) {
                return Err(RedisError::CrossSlot {
                    first: first.to_owned(),
                    other: self.tag.of(other.key).to_owned(),
                });
            }
        }
        let mut keys: Vec<String> = Vec::with_capacity(limits.len() + 1);
        let mut args: Vec<String> = vec![op.to_owned(), now, min_ttl_ms.to_string()];
        args.extend(head.iter().cloned());
        for limit in limits {
            self.limit_args(limit.key, limit.policy, &mut keys, &mut args)?;
        }
        let base = line_key(&self.prefix, &self.tag, line_name);
        for part in ["m", "w", "r", "t", "f", "d", "i", "p", "c", "o", "l"] {
            keys.push(format!("{base}:{part}"));
        }
        let mut call = redis::cmd("FCALL");
        call.arg(QUEUE_FUNCTION)
            .arg(keys.len())
            .arg(&keys)
            .arg(&args);
        self.call(&call).await
    }

    /// Sends `call`; if the server has lost the library (a restart, a failover, a
    /// `FUNCTION FLUSH`), loads it and sends `call` once more.
    async fn call(&self, call: &Cmd) -> Result<Vec<Value>, RedisError> {
        match self.query(call).await {
            Err(err) if missing_library(&err) => {
                let mut load = redis::cmd("FUNCTION");
                load.arg("LOAD").arg("REPLACE").arg(LIBRARY);
                let _: Value = self.query(&load).await?;
                Ok(self.query(call).await?)
            }
            other => Ok(other?),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        match &self.connection {
            Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    async fn decide(
        &self,
        op: &str,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> Result<(Verdict, Vec<Option<Ticket>>, Nanos), RedisError> {
        let args: Vec<_> = limits.iter().map(|l| (l.key, l.policy, None)).collect();
        let (reply, now) = self.run(op, &args, cost, max_wait).await?;
        let (verdict, tickets) = verdict_of(&reply, limits.len(), cost)?;
        Ok((verdict, tickets, now))
    }

    async fn adjust(
        &self,
        reservation: &Reservation,
        op: &str,
        cost: u64,
    ) -> Result<(), RedisError> {
        if reservation.holds.is_empty() {
            return Ok(());
        }
        let args: Vec<_> = reservation
            .holds
            .iter()
            .map(|h| (&h.key, &h.policy, Some(&h.ticket)))
            .collect();
        self.run(op, &args, cost, Duration::ZERO).await.map(|_| ())
    }
}

/// The verdict (and each limit's ticket) in `reply`: 9 values per limit.
pub(crate) fn verdict_of(
    reply: &[Value],
    limits: usize,
    cost: u64,
) -> Result<(Verdict, Vec<Option<Ticket>>), RedisError> {
    if reply.len() != limits * FIELDS {
        return Err(RedisError::Reply(format!(
            "{} values for {limits} limits",
            reply.len()
        )));
    }
    let mut decisions = Vec::with_capacity(limits);
    let mut tickets = Vec::with_capacity(limits);
    for fields in reply.chunks(FIELDS) {
        let n = |i: usize| number(&fields[i]);
        let (allowed, limit, remaining, reset) = (n(0)? == 1, n(1)?, n(2)?, n(3)?);
        let reset = Duration::from_nanos(reset);
        let decision = if allowed {
            Decision::allow(limit, remaining, reset)
        } else if n(5)? == 1 {
            Decision::exceeds_capacity(limit, remaining, reset)
        } else {
            Decision::deny(limit, remaining, reset, Duration::from_nanos(n(4)?))
        };
        let at = text(&fields[7])?;
        tickets.push(if at.is_empty() {
            None
        } else {
            Some(Ticket {
                cost,
                at: Nanos::new(parse(&at)?),
                lease: match text(&fields[8])?.as_str() {
                    "" => 0,
                    lease => parse(lease)?,
                },
            })
        });
        decisions.push(decision);
    }
    Ok((Verdict::from_decisions(decisions), tickets))
}

fn missing_library(err: &redis::RedisError) -> bool {
    err.to_string().contains("Function not found")
}

pub(crate) fn number(value: &Value) -> Result<u64, RedisError> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| RedisError::Reply(format!("negative {n}"))),
        other => parse(&text(other)?),
    }
}

pub(crate) fn text(value: &Value) -> Result<String, RedisError> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(RedisError::Reply(format!("{other:?}"))),
    }
}

fn parse(text: &str) -> Result<u64, RedisError> {
    text.parse()
        .map_err(|_| RedisError::Reply(format!("not a number: {text:?}")))
}

impl Store for RedisStore {
    type Error = RedisError;

    async fn check(&self, limit: Limit<'_>, cost: u64) -> Result<Decision, RedisError> {
        let (verdict, _, _) = self.decide("check", &[limit], cost, Duration::ZERO).await?;
        verdict
            .decisions
            .into_iter()
            .next()
            .ok_or_else(|| RedisError::Reply("no decision".into()))
    }

    async fn check_all(&self, limits: &[Limit<'_>], cost: u64) -> Result<Verdict, RedisError> {
        if limits.is_empty() {
            return Ok(Verdict::from_decisions(Vec::new()));
        }
        let (verdict, _, _) = self.decide("check", limits, cost, Duration::ZERO).await?;
        Ok(verdict)
    }

    async fn peek(&self, limit: Limit<'_>) -> Result<Decision, RedisError> {
        let (verdict, _, _) = self.decide("peek", &[limit], 0, Duration::ZERO).await?;
        verdict
            .decisions
            .into_iter()
            .next()
            .ok_or_else(|| RedisError::Reply("no decision".into()))
    }

    async fn reserve(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> Result<Reservation, RedisError> {
        if limits.is_empty() {
            return Ok(Reservation::new(
                limits,
                Verdict::from_decisions(Vec::new()),
                Vec::new(),
                Nanos::ZERO,
            ));
        }
        let (verdict, tickets, now) = self.decide("reserve", limits, cost, max_wait).await?;
        Ok(Reservation::new(limits, verdict, tickets, now))
    }

    async fn cancel(&self, reservation: &Reservation) -> Result<(), RedisError> {
        self.adjust(reservation, "refund", 0).await
    }

    async fn settle(&self, reservation: &Reservation, actual: u64) -> Result<(), RedisError> {
        self.adjust(reservation, "settle", actual).await
    }

    async fn reset(&self, limit: Limit<'_>) -> Result<(), RedisError> {
        let mut del = redis::cmd("DEL");
        del.arg(redis_key(&self.prefix, &self.tag, limit.key, limit.policy));
        self.query::<()>(&del).await?;
        Ok(())
    }
}
