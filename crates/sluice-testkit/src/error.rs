//! The one error type of the testkit.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a throwaway Redis server or cluster could not be started, reached or driven, or a
/// fake upstream could not be served.
///
/// Every variant says what to do next where there is something to do (install a binary,
/// read a log): these errors end up in the output of a failed test, far from this crate.
/// That is also why `Debug` prints the message (as `Display` does): a test that returns
/// `Result<(), TestkitError>` or calls `unwrap` shows the error by its `Debug`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The `redis-server` binary is not on `PATH`.
    #[error(
        "redis-server not found on PATH: install it (apt-get install -y redis-server), \
         or run scripts/test, which installs it"
    )]
    RedisServerNotFound,

    /// The `redis-cli` binary (needed to create a cluster) is not on `PATH`.
    #[error(
        "redis-cli not found on PATH: install it (apt-get install -y redis-tools), \
         or run scripts/test, which installs it"
    )]
    RedisCliNotFound,

    /// A local I/O operation failed: creating a temporary directory, starting or waiting
    /// for a process, reading a log.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Connecting to a Redis node failed, for example because it is stopped
    /// (see [`TestkitError::is_connection_refused`]).
    #[error("cannot connect to redis at {addr}: {source}")]
    Connect {
        /// The address that was dialled.
        addr: SocketAddr,
        /// The underlying error; its kind is `ConnectionRefused` when nothing listens.
        #[source]
        source: io::Error,
    },

    /// Sending a command or reading its reply failed after the connection was made.
    #[error("redis at {addr}, command {command}: {source}")]
    Transport {
        /// The node's address.
        addr: SocketAddr,
        /// The command's name.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The node sent something that is not valid RESP.
    #[error("redis at {addr}, command {command}: malformed reply: {message}")]
    Protocol {
        /// The node's address.
        addr: SocketAddr,
        /// The command's name.
        command: String,
        /// What was wrong with the reply.
        message: String,
    },

    /// The node answered with an error reply (`-ERR …`, `-MOVED …`, `-CLUSTERDOWN …`).
    #[error("redis at {addr}, command {command}: {message}")]
    Redis {
        /// The node's address.
        addr: SocketAddr,
        /// The command's name.
        command: String,
        /// The error reply, without its leading `-`.
        message: String,
    },

    /// `redis-server` exited while starting.
    #[error(
        "redis-server on 127.0.0.1:{port} exited while starting ({status}); \
         tail of its log {log}:\n{log_tail}"
    )]
    Exited {
        /// The port it was asked to listen on.
        port: u16,
        /// How it exited.
        status: ExitStatus,
        /// The path of its log file.
        log: String,
        /// The last lines of its log and of its standard output.
        log_tail: String,
    },

    /// `redis-server` could not listen on its port because another process holds it.
    /// `spawn` retries with other ports; `restart` (same port) reports this.
    #[error(
        "port {port} on 127.0.0.1 is taken by another process; tail of the redis log:\n{log_tail}"
    )]
    PortTaken {
        /// The port that was taken.
        port: u16,
        /// The last lines of the log of the `redis-server` that failed to bind it.
        log_tail: String,
    },

    /// `redis-server` did not answer `PING` in time.
    #[error(
        "redis-server on 127.0.0.1:{port} did not answer PING within {waited:?}; \
         tail of its log {log}:\n{log_tail}"
    )]
    StartTimeout {
        /// The port it was asked to listen on.
        port: u16,
        /// How long the testkit waited.
        waited: Duration,
        /// The path of its log file.
        log: String,
        /// The last lines of its log and of its standard output.
        log_tail: String,
    },

    /// Redis Cluster needs at least three masters (`redis-cli --cluster create` refuses
    /// fewer).
    #[error("a Redis Cluster needs at least 3 masters, {masters} requested")]
    TooFewMasters {
        /// The number that was requested.
        masters: usize,
    },

    /// `redis-cli --cluster create` failed or did not finish in time.
    #[error("redis-cli --cluster create {outcome}; its output:\n{output}")]
    ClusterCreate {
        /// How it ended: an exit status, or that it was killed after a timeout.
        outcome: String,
        /// What it printed.
        output: String,
    },

    /// The cluster did not reach `cluster_state:ok` on every node in time.
    #[error(
        "redis cluster did not reach cluster_state:ok on every node within {waited:?}; \
         last seen: {last_seen}"
    )]
    ClusterTimeout {
        /// How long the testkit waited.
        waited: Duration,
        /// What each node last said (its `cluster_state`, or the error reaching it).
        last_seen: String,
    },

    /// A node index past the end of the cluster.
    #[error("no node {index}: the cluster has {len} nodes")]
    NoSuchNode {
        /// The index that was asked for.
        index: usize,
        /// The number of nodes.
        len: usize,
    },
}

impl fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TestkitError {
    /// True when this is a failure to connect because nothing listens on the port: what
    /// a client sees after [`RedisServer::stop`](crate::RedisServer::stop).
    pub fn is_connection_refused(&self) -> bool {
        matches!(self, Self::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
