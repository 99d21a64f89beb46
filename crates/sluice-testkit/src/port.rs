//! Free loopback ports for servers that run in other processes.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use crate::TestkitError;

/// Lowest port [`free_port`] hands out.
const LOWEST: u16 = 20_000;
/// Ports never handed out: the default Redis port and one a machine's own Redis was seen
/// on. A system Redis may run there, and tests must never talk to it.
const RESERVED: [u16; 2] = [6379, 6390];
/// Random candidates tried before giving up.
const ATTEMPTS: usize = 200;

/// Ports this process has handed out, so that two servers of one test run never get the
/// same port, even when one of them is stopped for a while.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that nothing listens on right now, for a server in another process
/// (a throwaway `redis-server`). For a server inside the test process, bind
/// `127.0.0.1:0` and keep the listener instead: that cannot race.
///
/// The port is drawn at random from below the kernel's ephemeral range (20000 up to
/// `/proc/sys/net/ipv4/ip_local_port_range`, usually 32767), then checked by binding it.
/// Outside the ephemeral range no outgoing connection can take the port as its source
/// port, so a server that is stopped and restarted on the same port gets it back. It is
/// never 6379, and never a port this process already handed out. Another process can
/// still take it between this check and the server's bind; the Redis helpers detect that
/// and retry on a new port.
pub fn free_port() -> Result<u16, TestkitError> {
    let (low, high) = candidate_range();
    let seed = RandomState::new();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let span = u64::from(high - low) + 1;
    for attempt in 0..ATTEMPTS {
        let draw = seed.hash_one((attempt, std::process::id())) % span;
        let port = low.saturating_add(u16::try_from(draw).unwrap_or(0));
        if RESERVED.contains(&port) || handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    // A crowded range: let the kernel choose among its ephemeral ports.
    for _ in 0..ATTEMPTS {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| TestkitError::io("binding 127.0.0.1:0 to find a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TestkitError::io("reading the port of 127.0.0.1:0", e))?
            .port();
        if !RESERVED.contains(&port) && handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(TestkitError::io(
        "finding a free loopback port",
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "every port tried was taken"),
    ))
}

/// The ports to draw from: `LOWEST` up to just below the ephemeral range.
fn candidate_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOWEST.saturating_add(1_000) {
        (LOWEST, ephemeral_low - 1)
    } else {
        // The ephemeral range starts unusually low: use the ports above it instead.
        (LOWEST, u16::MAX)
    }
}
