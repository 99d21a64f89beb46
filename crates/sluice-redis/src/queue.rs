//! `RedisQueues`: sluice-store's queue contract over the library's line function, so that
//! processes sharing a Redis wait in one line.

use redis::Value;
use sluice_core::Nanos;
use sluice_core::queue::{Overflow, Refusal};
use sluice_store::queue::{
    Joined, Line, LineStats, QueueStore, QueueTicket, Request, Served, TicketStatus,
};

use crate::store::{RedisError, RedisStore, number, text, verdict_of};

/// Lines in Redis, granting from the limits a [`RedisStore`] keeps there: each operation
/// is one `FCALL` of the library's line function, atomic on the line and its limits (which
/// share a cluster slot: the line's key takes the hash tag of its name, as limits do).
///
/// A line lives in eleven keys (hashes, sorted sets and a list; see `sluice.lua`), so that
/// every operation is O(log n) in its waiters. Waiters poll (each wakes at most every
/// `poll` of [`acquire`](sluice_store::queue::acquire)): the `queue_load` example measures
/// what that costs Redis; wake-ups by pub/sub instead of polling are the next step.
#[derive(Clone, Debug)]
pub struct RedisQueues {
    store: RedisStore,
    max_outcomes: usize,
}

impl RedisQueues {
    /// Lines over `store`'s connection, prefix, hash tags and timeline, keeping up to
    /// 10,000 unread outcomes per line.
    pub fn new(store: RedisStore) -> Self {
        Self {
            store,
            max_outcomes: 10_000,
        }
    }

    async fn run(
        &self,
        op: &str,
        line: Line<'_>,
        request: Option<&Request<'_>>,
        ticket: Option<QueueTicket>,
    ) -> Result<Vec<Value>, RedisError> {
        let overflow = match line.config.overflow {
            Overflow::RejectNew => "r",
            Overflow::DropOldest => "d",
            Overflow::EvictLowestPriority => "e",
        };
        let (priority, tenant, max_wait, cost) = match request {
            Some(r) => (
                r.priority.to_string(),
                r.tenant
                    .map(|t| {
                        let cut = &t[..t.floor_char_boundary(sluice_store::queue::MAX_TENANT_LEN)];
                        format!("={cut}")
                    })
                    .unwrap_or_default(),
                sluice_core::time::duration_nanos(r.max_wait)
                    .min(crate::MAX_SPAN_NANOS)
                    .to_string(),
                r.cost.to_string(),
            ),
            None => ("0".into(), String::new(), "0".into(), "0".into()),
        };
        let head = [
            line.config.max_length.to_string(),
            overflow.to_owned(),
            self.max_outcomes.to_string(),
            priority,
            tenant,
            max_wait,
            cost,
            ticket.map_or_else(|| "0".to_owned(), |t| t.0.to_string()),
        ];
        self.store.run_queue(op, line.key, line.limits, &head).await
    }

    fn status_of(reply: &[Value], limits: usize) -> Result<TicketStatus, RedisError> {
        let kind = reply.first().map(text).transpose()?.unwrap_or_default();
        Ok(match kind.as_str() {
            "w" => TicketStatus::Waiting,
            "g" => TicketStatus::Granted(verdict_of(&reply[1..], limits, 0)?.0),
            "t" => TicketStatus::TimedOut,
            "e" => TicketStatus::Evicted,
            "l" => TicketStatus::TooLarge,
            "u" => TicketStatus::Unknown,
            other => return Err(RedisError::Reply(format!("ticket status {other:?}"))),
        })
    }
}

/// A serve's reply: now, next_at or '', then `granted` tickets.
fn served_of(reply: &[Value], granted: usize) -> Result<Served, RedisError> {
    let now = reply
        .first()
        .map(number)
        .transpose()?
        .ok_or_else(|| RedisError::Reply("serve: no now".into()))?;
    let next_at = match reply.get(1).map(text).transpose()?.as_deref() {
        None | Some("") => None,
        Some(at) => {
            Some(Nanos::new(at.parse().map_err(|_| {
                RedisError::Reply(format!("serve: next_at {at:?}"))
            })?))
        }
    };
    let granted = reply
        .iter()
        .skip(2)
        .take(granted)
        .map(|v| number(v).map(QueueTicket))
        .collect::<Result<_, _>>()?;
    Ok(Served {
        granted,
        next_at,
        now: Nanos::new(now),
    })
}

fn signed(value: &Value) -> Result<i64, RedisError> {
    let text = text(value)?;
    text.parse()
        .map_err(|_| RedisError::Reply(format!("not a number: {text:?}")))
}

impl QueueStore for RedisQueues {
    type Error = RedisError;

    async fn join(&self, line: Line<'_>, request: Request<'_>) -> Result<Joined, RedisError> {
        let reply = self.run("join", line, Some(&request), None).await?;
        let kind = reply.first().map(text).transpose()?.unwrap_or_default();
        Ok(match kind.as_str() {
            "g" => Joined::Granted(verdict_of(&reply[1..], line.limits.len(), request.cost)?.0),
            "w" => Joined::Waiting(QueueTicket(number(
                reply
                    .get(1)
                    .ok_or_else(|| RedisError::Reply("no ticket".into()))?,
            )?)),
            "r" => match reply.get(1).map(text).transpose()?.as_deref() {
                Some("paused") => Joined::Refused(Refusal::Paused),
                _ => Joined::Refused(Refusal::Overflow),
            },
            other => return Err(RedisError::Reply(format!("join answered {other:?}"))),
        })
    }

    async fn serve(&self, line: Line<'_>) -> Result<Served, RedisError> {
        let reply = self.run("serve", line, None, None).await?;
        served_of(&reply, reply.len().saturating_sub(2))
    }

    async fn poll(
        &self,
        line: Line<'_>,
        ticket: QueueTicket,
    ) -> Result<(Served, TicketStatus), RedisError> {
        let reply = self.run("poll", line, None, Some(ticket)).await?;
        let granted = usize::try_from(number(
            reply
                .get(2)
                .ok_or_else(|| RedisError::Reply("poll: no count".into()))?,
        )?)
        .map_err(|_| RedisError::Reply("poll: count".into()))?;
        let rest = reply.get(3..).unwrap_or_default();
        let mut head = reply[..2].to_vec();
        head.extend(rest.iter().take(granted).cloned());
        let served = served_of(&head, granted)?;
        let status = Self::status_of(rest.get(granted..).unwrap_or_default(), line.limits.len())?;
        Ok((served, status))
    }

    async fn status(
        &self,
        line: Line<'_>,
        ticket: QueueTicket,
    ) -> Result<TicketStatus, RedisError> {
        let reply = self.run("status", line, None, Some(ticket)).await?;
        Self::status_of(&reply, line.limits.len())
    }

    async fn leave(&self, line: Line<'_>, ticket: QueueTicket) -> Result<TicketStatus, RedisError> {
        let reply = self.run("leave", line, None, Some(ticket)).await?;
        Self::status_of(&reply, line.limits.len())
    }

    async fn pause(&self, line: Line<'_>) -> Result<(), RedisError> {
        self.run("pause", line, None, None).await.map(|_| ())
    }

    async fn resume(&self, line: Line<'_>) -> Result<(), RedisError> {
        self.run("resume", line, None, None).await.map(|_| ())
    }

    async fn stats(&self, line: Line<'_>) -> Result<LineStats, RedisError> {
        let reply = self.run("stats", line, None, None).await?;
        if reply.len() < 7 || (reply.len() - 7) % 2 != 0 {
            return Err(RedisError::Reply(format!("stats: {} values", reply.len())));
        }
        let n = |i: usize| number(&reply[i]);
        let oldest_wait = match text(&reply[6])?.as_str() {
            "" => None,
            waited => Some(std::time::Duration::from_nanos(waited.parse().map_err(
                |_| RedisError::Reply(format!("stats: oldest wait {waited:?}")),
            )?)),
        };
        let waiting_by_priority = reply[7..]
            .chunks(2)
            .map(|pair| {
                let priority = i32::try_from(signed(&pair[0])?)
                    .map_err(|_| RedisError::Reply("stats: priority".into()))?;
                let count = usize::try_from(number(&pair[1])?)
                    .map_err(|_| RedisError::Reply("stats: count".into()))?;
                Ok((priority, count))
            })
            .collect::<Result<Vec<_>, RedisError>>()?;
        Ok(LineStats {
            waiting_by_priority,
            oldest_wait,
            paused: n(0)? == 1,
            granted: n(1)?,
            overflow: n(2)?,
            paused_refusals: n(3)?,
            timed_out: n(4)?,
            evicted: n(5)?,
        })
    }
}
