//! Throwaway `redis-server` processes and Redis Clusters on free loopback ports.
//!
//! Waiting for another process is the one place in sluice's tests that needs the real
//! clock: a server that never comes up must fail the test after a timeout, not hang it.
#![allow(
    clippy::disallowed_types,
    reason = "timeouts for external processes need the real clock (std::time::Instant)"
)]

use std::fs::File;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::resp::{Reply, request};
use crate::{TestkitError, free_port};

/// How long a starting `redis-server` has to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `redis-cli --cluster create` may run.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new cluster has to reach `cluster_state:ok` on every node.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect, write and read timeout of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect and read timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Ports tried by `spawn` when another process takes the chosen one first.
const SPAWN_ATTEMPTS: usize = 5;
/// Lines of each log quoted in an error.
const TAIL_LINES: usize = 20;
/// `--cluster-node-timeout`, in milliseconds.
const NODE_TIMEOUT_MS: &str = "5000";
/// Slots of a Redis Cluster.
const SLOTS: i64 = 16_384;

/// One `redis-server` child process, its port(s) and its private directory.
#[derive(Debug)]
struct Node {
    port: u16,
    /// The cluster bus port, for cluster nodes.
    bus_port: Option<u16>,
    dir: TempDir,
    child: Option<Child>,
    pid: u32,
}

impl Node {
    /// Starts a node on fresh ports in a fresh directory, retrying on new ports when
    /// another process takes the chosen ones first.
    fn spawn(cluster: bool) -> Result<Self, TestkitError> {
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            let bus_port = if cluster { Some(free_port()?) } else { None };
            let dir = tempfile::Builder::new()
                .prefix(&format!("sluice-redis-{port}-"))
                .tempdir()
                .map_err(|e| TestkitError::io("creating a temporary directory for redis", e))?;
            let mut node = Self {
                port,
                bus_port,
                dir,
                child: None,
                pid: 0,
            };
            match node.start() {
                Err(TestkitError::PortTaken { .. }) if attempt < SPAWN_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
                Ok(()) => return Ok(node),
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }

    /// Starts `redis-server` on this node's port(s) and directory and waits until it
    /// answers `PING`. Does nothing when it is already running.
    fn start(&mut self) -> Result<(), TestkitError> {
        if self.is_running() {
            return Ok(());
        }
        let stdout_path = self.stdout_path();
        let stdout = File::options()
            .create(true)
            .append(true)
            .open(&stdout_path)
            .map_err(|e| TestkitError::io(format!("opening {}", stdout_path.display()), e))?;
        let stderr = stdout
            .try_clone()
            .map_err(|e| TestkitError::io(format!("opening {}", stdout_path.display()), e))?;

        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        if let Some(bus_port) = self.bus_port {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
                .arg("--cluster-port")
                .arg(bus_port.to_string());
        }
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command.spawn().map_err(|e| match e.kind() {
            ErrorKind::NotFound => TestkitError::RedisServerNotFound,
            _ => TestkitError::io("starting redis-server", e),
        })?;
        self.pid = child.id();
        self.child = Some(child);
        self.wait_ready().inspect_err(|_| self.stop())
    }

    /// Polls with `PING` until this node's process answers, it exits, or the start
    /// timeout passes.
    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            if let Some(status) = self.try_wait()? {
                let log_tail = self.log_tail();
                if log_tail.contains("Address already in use") {
                    return Err(TestkitError::PortTaken {
                        port: self.port,
                        log_tail,
                    });
                }
                return Err(TestkitError::Exited {
                    port: self.port,
                    status,
                    log: self.log_path().display().to_string(),
                    log_tail,
                });
            }
            if matches!(request(self.addr(), &["PING"], PROBE_TIMEOUT), Ok(Reply::Simple(ref s)) if s == "PONG")
            {
                return self.check_identity();
            }
            if started.elapsed() >= START_TIMEOUT {
                return Err(TestkitError::StartTimeout {
                    port: self.port,
                    waited: started.elapsed(),
                    log: self.log_path().display().to_string(),
                    log_tail: self.log_tail(),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Checks that the server answering on this node's port is this node's process, not
    /// another test's server that took the port first (ours then fails to bind).
    fn check_identity(&self) -> Result<(), TestkitError> {
        let info = request(self.addr(), &["INFO", "server"], COMMAND_TIMEOUT)?.to_text();
        let process_id = info_field(&info, "process_id").unwrap_or("?");
        if process_id == self.pid.to_string() {
            Ok(())
        } else {
            Err(TestkitError::PortTaken {
                port: self.port,
                log_tail: format!(
                    "another redis-server (process_id {process_id}) answers on this port"
                ),
            })
        }
    }

    /// Reaps the process if it has exited, returning how.
    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, TestkitError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child
            .try_wait()
            .map_err(|e| TestkitError::io(format!("checking redis-server pid {}", self.pid), e))?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None)) && self.child.is_some()
    }

    /// Kills the process (SIGKILL) and reaps it. Nothing to do when it is not running.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process has already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn query(&self, args: &[&str]) -> Result<Reply, TestkitError> {
        request(self.addr(), args, COMMAND_TIMEOUT)
    }

    /// The last lines of the node's log and of its standard output and error.
    fn log_tail(&self) -> String {
        let mut out = String::new();
        for path in [self.log_path(), self.stdout_path()] {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
            if !tail.is_empty() {
                out.push_str(&format!("--- {}\n{}\n", path.display(), tail.join("\n")));
            }
        }
        if out.is_empty() {
            out.push_str("(no log output)");
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of `field` in an `INFO`-style `field:value` text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// A throwaway `redis-server` on a free loopback port, for tests.
///
/// It runs with persistence off (`--save '' --appendonly no`) in a fresh temporary
/// directory that holds its log (`redis.log`), and never on port 6379, so a system Redis
/// is never touched. Dropping it kills the process and removes the directory.
///
/// Starting and the helper commands block (plain `std::net`, a few milliseconds); that is
/// fine inside an async test too. Each command opens its own connection.
///
/// ```
/// # fn main() -> Result<(), sluice_testkit::TestkitError> {
/// let mut redis = sluice_testkit::RedisServer::spawn()?;
/// assert_eq!(redis.command(&["SET", "k", "v"])?, "OK");
/// redis.stop(); // a crash, as far as clients can tell
/// assert!(redis.command(&["PING"]).unwrap_err().is_connection_refused());
/// redis.restart()?; // same port, empty data set
/// assert_eq!(redis.command(&["GET", "k"])?, "");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    node: Node,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`
    /// (usually a few milliseconds; gives up after 10 s with the tail of its log).
    pub fn spawn() -> Result<Self, TestkitError> {
        Ok(Self {
            node: Node::spawn(false)?,
        })
    }

    /// Its port on 127.0.0.1; the same after [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Its address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    /// Its URL for a Redis client: `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The process id of the `redis-server` last started (still that one's after
    /// [`stop`](Self::stop); a new one after [`restart`](Self::restart)).
    pub fn pid(&self) -> u32 {
        self.node.pid
    }

    /// Its private directory (working directory and log), removed on drop.
    pub fn dir(&self) -> &Path {
        self.node.dir.path()
    }

    /// Its log file, `redis.log` in [`dir`](Self::dir).
    pub fn log_path(&self) -> PathBuf {
        self.node.log_path()
    }

    /// Whether the process is alive (a server that died on its own counts as stopped).
    pub fn is_running(&mut self) -> bool {
        self.node.is_running()
    }

    /// Kills the process (SIGKILL, so clients see a crash, not a clean shutdown) and
    /// waits for it to exit; connections to [`addr`](Self::addr) are refused afterwards.
    /// Does nothing when it is already stopped.
    pub fn stop(&mut self) {
        self.node.stop();
    }

    /// Starts `redis-server` again on the same port and waits until it answers `PING`.
    /// The data set starts empty (persistence is off). Does nothing when it is running.
    ///
    /// Fails with [`TestkitError::PortTaken`] if another process took the port meanwhile
    /// (unlikely: see [`free_port`]).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.node.start()
    }

    /// Sends one command and returns its reply as text (see [`Reply::to_text`]: nil is
    /// the empty string). An error reply is [`TestkitError::Redis`].
    pub fn command(&self, args: &[&str]) -> Result<String, TestkitError> {
        Ok(self.node.query(args)?.to_text())
    }

    /// `(calls, usec_per_call)` of `command` (lowercase, e.g. `fcall`) in
    /// `INFO commandstats`; zeros when it has not run.
    pub fn command_stats(&self, command: &str) -> Result<(u64, f64), TestkitError> {
        let info = self.command(&["INFO", "commandstats"])?;
        let prefix = format!("cmdstat_{command}:");
        let Some(line) = info.lines().find(|l| l.starts_with(&prefix)) else {
            return Ok((0, 0.0));
        };
        let field = |name: &str| {
            line.split([':', ','])
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or("0")
                .to_owned()
        };
        Ok((
            field("calls").parse().unwrap_or(0),
            field("usec_per_call").parse().unwrap_or(0.0),
        ))
    }

    /// Sends one command and returns its reply.
    pub fn query(&self, args: &[&str]) -> Result<Reply, TestkitError> {
        self.node.query(args)
    }
}

/// A throwaway Redis Cluster of masters without replicas, each a `redis-server` on free
/// loopback ports (client port and cluster bus port) in its own temporary directory.
///
/// [`spawn`](Self::spawn) returns once every node reports `cluster_state:ok`, which takes
/// a few seconds. Nodes are numbered `0..len()` in the order of [`nodes`](Self::nodes);
/// `redis-cli --cluster create` gives them the slots in that order (node 0 holds
/// 0–5460 of three). Dropping the cluster kills every node and removes their directories.
///
/// Needs Redis 7 or newer (`--cluster-port`), and `redis-cli` on `PATH`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3), joins them with `redis-cli --cluster create`
    /// and waits until every node reports `cluster_state:ok` (gives up after 30 s).
    pub fn spawn(masters: usize) -> Result<Self, TestkitError> {
        if masters < 3 {
            return Err(TestkitError::TooFewMasters { masters });
        }
        let nodes = (0..masters)
            .map(|_| Node::spawn(true))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Self { nodes };
        cluster.create()?;
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// Runs `redis-cli --cluster create` over every node.
    fn create(&self) -> Result<(), TestkitError> {
        let output_path = self.nodes[0].dir.path().join("cluster-create.log");
        let output = File::create(&output_path)
            .map_err(|e| TestkitError::io(format!("creating {}", output_path.display()), e))?;
        let errors = output
            .try_clone()
            .map_err(|e| TestkitError::io(format!("opening {}", output_path.display()), e))?;
        let mut child = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| n.addr().to_string()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => TestkitError::RedisCliNotFound,
                _ => TestkitError::io("starting redis-cli", e),
            })?;
        let started = Instant::now();
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => break format!("failed ({status})"),
                Ok(None) if started.elapsed() > CREATE_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!("did not finish within {CREATE_TIMEOUT:?} and was killed");
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(TestkitError::io("waiting for redis-cli", e)),
            }
        };
        Err(TestkitError::ClusterCreate {
            outcome,
            output: std::fs::read_to_string(&output_path).unwrap_or_default(),
        })
    }

    /// Waits until every node reports `cluster_state:ok` and knows every other node
    /// (gives up after 30 s). [`spawn`](Self::spawn) already does this; call it again
    /// after [`restart_node`](Self::restart_node). It times out while a node is stopped.
    pub fn wait_until_ok(&self) -> Result<(), TestkitError> {
        let started = Instant::now();
        let known = format!("{}", self.nodes.len());
        let mut delay = Duration::from_millis(20);
        loop {
            let states: Vec<Result<(String, String), TestkitError>> = self
                .nodes
                .iter()
                .map(|node| {
                    let info = node.query(&["CLUSTER", "INFO"])?.to_text();
                    let state = info_field(&info, "cluster_state").unwrap_or("?").to_owned();
                    let nodes = info_field(&info, "cluster_known_nodes")
                        .unwrap_or("?")
                        .to_owned();
                    Ok((state, nodes))
                })
                .collect();
            let ready = states
                .iter()
                .all(|s| matches!(s, Ok((state, nodes)) if state == "ok" && *nodes == known));
            if ready {
                return Ok(());
            }
            if started.elapsed() >= CLUSTER_TIMEOUT {
                let last_seen = self
                    .nodes
                    .iter()
                    .zip(&states)
                    .map(|(node, state)| match state {
                        Ok((state, nodes)) => format!(
                            "{}: cluster_state:{state} cluster_known_nodes:{nodes}",
                            node.addr()
                        ),
                        Err(e) => format!("{}: {e}", node.addr()),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(TestkitError::ClusterTimeout {
                    waited: started.elapsed(),
                    last_seen,
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least 3 nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes' addresses, `127.0.0.1:port`, in node order.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// The nodes' URLs, `redis://127.0.0.1:port/`, in node order: the seed list for a
    /// cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The nodes' client ports, in node order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The process ids of the nodes' `redis-server`s as last started, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    fn node(&self, index: usize) -> Result<&Node, TestkitError> {
        self.nodes.get(index).ok_or(TestkitError::NoSuchNode {
            index,
            len: self.nodes.len(),
        })
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut Node, TestkitError> {
        let len = self.nodes.len();
        self.nodes
            .get_mut(index)
            .ok_or(TestkitError::NoSuchNode { index, len })
    }

    /// Sends one command to node `index` and returns its reply as text (see
    /// [`Reply::to_text`]). No redirection is followed: a key of another node's slot
    /// gets a `MOVED` error ([`TestkitError::Redis`]).
    pub fn command(&self, index: usize, args: &[&str]) -> Result<String, TestkitError> {
        Ok(self.node(index)?.query(args)?.to_text())
    }

    /// Sends one command to node `index` and returns its reply.
    pub fn query(&self, index: usize, args: &[&str]) -> Result<Reply, TestkitError> {
        self.node(index)?.query(args)
    }

    /// The index of the node that serves `key`, from `CLUSTER KEYSLOT` and
    /// `CLUSTER SLOTS` asked of the first running node.
    pub fn node_for_key(&self, key: &str) -> Result<usize, TestkitError> {
        let mut last_error = None;
        for node in &self.nodes {
            let answer = node
                .query(&["CLUSTER", "KEYSLOT", key])
                .and_then(|slot| Ok((slot, node.query(&["CLUSTER", "SLOTS"])?)));
            match answer {
                Ok((slot, slots)) => {
                    return slot
                        .as_integer()
                        .and_then(|slot| self.owner_of(slot, &slots))
                        .ok_or_else(|| TestkitError::Protocol {
                            addr: node.addr(),
                            command: "CLUSTER".into(),
                            message: format!(
                                "no node of this cluster owns the slot of {key:?} in {slots:?}"
                            ),
                        });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(TestkitError::NoSuchNode { index: 0, len: 0 }))
    }

    /// The index of the node that `slots` (a `CLUSTER SLOTS` reply) says owns `slot`.
    fn owner_of(&self, slot: i64, slots: &Reply) -> Option<usize> {
        if !(0..SLOTS).contains(&slot) {
            return None;
        }
        slots.as_array()?.iter().find_map(|range| {
            let range = range.as_array()?;
            let (start, end) = (range.first()?.as_integer()?, range.get(1)?.as_integer()?);
            let port = range.get(2)?.as_array()?.get(1)?.as_integer()?;
            if !(start..=end).contains(&slot) {
                return None;
            }
            self.nodes.iter().position(|n| i64::from(n.port) == port)
        })
    }

    /// Whether node `index` is alive; false for an index past the end.
    pub fn is_node_running(&mut self, index: usize) -> bool {
        self.node_mut(index).is_ok_and(Node::is_running)
    }

    /// Kills node `index` (SIGKILL) and waits for it to exit. The others mark it failed
    /// after the node timeout (5 s) and then report `cluster_state:fail`, since its
    /// slots have no replica to take over.
    pub fn stop_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.node_mut(index)?.stop();
        Ok(())
    }

    /// Starts node `index` again on the same ports and directory and waits until it
    /// answers `PING`. It keeps its cluster identity and slots (from its `nodes.conf`)
    /// but not its data. Call [`wait_until_ok`](Self::wait_until_ok) to wait for the
    /// cluster to serve every slot again.
    pub fn restart_node(&mut self, index: usize) -> Result<(), TestkitError> {
        self.node_mut(index)?.start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Server\r\nprocess_id:42\r\nprocess_supervised:no\r\ncluster_state:ok\r\n";
        assert_eq!(info_field(info, "process_id"), Some("42"));
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "process"), None);
    }
}
