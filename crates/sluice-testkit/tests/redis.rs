//! The throwaway Redis helpers against a real `redis-server` (must be on `PATH`;
//! `scripts/test` installs it).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;

use sluice_testkit::{RedisCluster, RedisServer, Reply, TestkitError, free_port};

type Result<T = ()> = std::result::Result<T, TestkitError>;

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_server_answers_ping_set_and_get_on_its_own_port() -> Result {
    let redis = RedisServer::spawn()?;
    assert_ne!(redis.port(), 6379);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/", redis.port()));
    assert_eq!(
        redis.addr().to_string(),
        format!("127.0.0.1:{}", redis.port())
    );
    assert_eq!(redis.command(&["PING"])?, "PONG");
    assert_eq!(
        redis.command(&["SET", "greeting", "hello world\r\n"])?,
        "OK"
    );
    assert_eq!(redis.command(&["GET", "greeting"])?, "hello world\r\n");
    assert_eq!(redis.command(&["GET", "missing"])?, "");
    assert_eq!(redis.query(&["GET", "missing"])?, Reply::Nil);
    assert_eq!(redis.query(&["INCRBY", "n", "41"])?, Reply::Integer(41));
    assert_eq!(redis.command(&["INCR", "n"])?, "42");

    // Persistence is off, and the server is the one this handle started.
    assert_eq!(redis.command(&["CONFIG", "GET", "save"])?, "save\n");
    assert_eq!(
        redis.command(&["CONFIG", "GET", "appendonly"])?,
        "appendonly\nno"
    );
    let info = redis.command(&["INFO", "server"])?;
    assert!(
        info.contains(&format!("process_id:{}\r\n", redis.pid())),
        "{info}"
    );
    assert!(redis.log_path().starts_with(redis.dir()));
    assert!(redis.log_path().exists());
    Ok(())
}

#[test]
fn an_error_reply_is_an_error_with_its_message() -> Result {
    let redis = RedisServer::spawn()?;
    let err = redis.command(&["NO-SUCH-COMMAND", "x"]).unwrap_err();
    assert!(
        matches!(&err, TestkitError::Redis { message, .. } if message.starts_with("ERR unknown command")),
        "{err}"
    );
    assert!(!err.is_connection_refused());
    Ok(())
}

#[test]
fn two_servers_are_independent() -> Result {
    let a = RedisServer::spawn()?;
    let b = RedisServer::spawn()?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());
    a.command(&["SET", "k", "a"])?;
    assert_eq!(b.command(&["GET", "k"])?, "");
    Ok(())
}

#[test]
fn a_stopped_server_refuses_connections_and_restarts_on_the_same_port() -> Result {
    let mut redis = RedisServer::spawn()?;
    let (port, first_pid) = (redis.port(), redis.pid());
    redis.command(&["SET", "k", "v"])?;
    assert!(redis.is_running());

    redis.stop();
    assert!(!redis.is_running());
    assert!(!process_exists(first_pid));
    let err = redis.command(&["PING"]).unwrap_err();
    assert!(err.is_connection_refused(), "{err}");
    redis.stop(); // stopping twice is harmless

    redis.restart()?;
    assert!(redis.is_running());
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), first_pid);
    assert_eq!(redis.command(&["PING"])?, "PONG");
    assert_eq!(redis.command(&["GET", "k"])?, "", "persistence is off");
    redis.restart()?; // restarting a running server is harmless
    assert_eq!(redis.command(&["PING"])?, "PONG");
    Ok(())
}

#[test]
fn dropping_a_server_kills_its_process_and_removes_its_directory() -> Result {
    let mut redis = RedisServer::spawn()?;
    let first_pid = redis.pid();
    redis.stop();
    redis.restart()?;
    let (pid, dir) = (redis.pid(), redis.dir().to_owned());
    assert!(process_exists(pid));
    assert!(dir.exists());
    drop(redis);
    assert!(
        !process_exists(pid),
        "redis-server {pid} outlived its handle"
    );
    assert!(!process_exists(first_pid));
    assert!(!dir.exists(), "{} outlived its handle", dir.display());
    Ok(())
}

#[test]
fn free_ports_are_distinct_bindable_and_never_6379() -> Result {
    let ports: BTreeSet<u16> = (0..20).map(|_| free_port()).collect::<Result<_>>()?;
    assert_eq!(ports.len(), 20);
    assert!(!ports.contains(&6379));
    for port in ports {
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            panic!("free port {port} cannot be bound: {e}");
        }
    }
    Ok(())
}

#[test]
fn a_cluster_needs_three_masters() {
    let err = RedisCluster::spawn(2).unwrap_err();
    assert!(
        matches!(err, TestkitError::TooFewMasters { masters: 2 }),
        "{err}"
    );
}

/// The masters and slot ranges of a `CLUSTER SLOTS` reply: (start, end, port).
fn slot_ranges(reply: &Reply) -> Vec<(i64, i64, i64)> {
    let mut ranges: Vec<_> = reply
        .as_array()
        .expect("CLUSTER SLOTS is an array")
        .iter()
        .map(|range| {
            let range = range.as_array().expect("a slot range is an array");
            let master = range[2].as_array().expect("a node is an array");
            (
                range[0].as_integer().expect("start"),
                range[1].as_integer().expect("end"),
                master[1].as_integer().expect("port"),
            )
        })
        .collect();
    ranges.sort_unstable();
    ranges
}

#[test]
fn a_cluster_of_three_masters_serves_every_slot_and_keeps_hash_tags_together() -> Result {
    let mut cluster = RedisCluster::spawn(3)?;
    assert_eq!(cluster.len(), 3);
    let ports = cluster.ports();
    assert!(!ports.contains(&6379));
    assert_eq!(
        cluster.urls(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
    );
    assert_eq!(cluster.nodes().len(), 3);

    for node in 0..3 {
        let info = cluster.command(node, &["CLUSTER", "INFO"])?;
        for field in [
            "cluster_state:ok",
            "cluster_slots_assigned:16384",
            "cluster_known_nodes:3",
            "cluster_size:3",
        ] {
            assert!(info.contains(field), "node {node} lacks {field}:\n{info}");
        }
    }
    // Three masters, one range each, covering 0..=16383 in node order.
    let ranges = slot_ranges(&cluster.query(1, &["CLUSTER", "SLOTS"])?);
    assert_eq!(
        ranges,
        vec![
            (0, 5460, i64::from(ports[0])),
            (5461, 10922, i64::from(ports[1])),
            (10923, 16383, i64::from(ports[2])),
        ]
    );

    // Keys with one hash tag share a slot, hence a node; that node takes multi-key
    // commands over them, the others redirect.
    let slot = cluster.command(0, &["CLUSTER", "KEYSLOT", "{a}x"])?;
    assert_eq!(cluster.command(0, &["CLUSTER", "KEYSLOT", "{a}y"])?, slot);
    assert_eq!(cluster.command(0, &["CLUSTER", "KEYSLOT", "a"])?, slot);
    let owner = cluster.node_for_key("{a}x")?;
    assert_eq!(cluster.node_for_key("{a}y")?, owner);
    assert_eq!(
        cluster.command(owner, &["MSET", "{a}x", "1", "{a}y", "2"])?,
        "OK"
    );
    assert_eq!(cluster.command(owner, &["MGET", "{a}x", "{a}y"])?, "1\n2");
    let other = (owner + 1) % 3;
    let err = cluster.command(other, &["GET", "{a}x"]).unwrap_err();
    assert!(
        matches!(&err, TestkitError::Redis { message, .. } if message == &format!("MOVED {slot} 127.0.0.1:{}", ports[owner])),
        "{err}"
    );
    assert!(
        cluster.command(0, &["CLUSTER", "KEYSLOT", "ax"])?
            != cluster.command(0, &["CLUSTER", "KEYSLOT", "by"])?
    );
    let err = cluster
        .command(owner, &["MGET", "{a}x", "{b}y"])
        .unwrap_err();
    assert!(
        matches!(&err, TestkitError::Redis { message, .. } if message.starts_with("CROSSSLOT")),
        "{err}"
    );

    // A node stopped and restarted keeps its identity and slots, not its data.
    let id = cluster.command(owner, &["CLUSTER", "MYID"])?;
    let old_pid = cluster.pids()[owner];
    cluster.stop_node(owner)?;
    assert!(!cluster.is_node_running(owner));
    assert!(!process_exists(old_pid));
    assert!(
        cluster
            .command(owner, &["PING"])
            .unwrap_err()
            .is_connection_refused()
    );
    cluster.restart_node(owner)?;
    assert!(cluster.is_node_running(owner));
    assert_eq!(cluster.ports(), ports);
    assert_eq!(cluster.command(owner, &["CLUSTER", "MYID"])?, id);
    cluster.wait_until_ok()?;
    assert_eq!(cluster.command(owner, &["GET", "{a}x"])?, "");
    assert_eq!(cluster.node_for_key("{a}x")?, owner);

    assert!(matches!(
        cluster.stop_node(3),
        Err(TestkitError::NoSuchNode { index: 3, len: 3 })
    ));
    assert!(!cluster.is_node_running(3));

    // Dropping the cluster kills every node.
    let pids = cluster.pids();
    assert!(pids.iter().all(|&pid| process_exists(pid)));
    drop(cluster);
    for pid in pids {
        assert!(
            !process_exists(pid),
            "cluster node {pid} outlived its handle"
        );
    }
    Ok(())
}

#[test]
fn a_restart_reports_a_port_taken_meanwhile_and_works_once_it_is_free() -> Result {
    let mut redis = RedisServer::spawn()?;
    redis.stop();
    let squatter = TcpListener::bind(("127.0.0.1", redis.port())).expect("the port is free");
    let err = redis.restart().unwrap_err();
    assert!(
        matches!(&err, TestkitError::PortTaken { port, log_tail } if *port == redis.port() && log_tail.contains("Address already in use")),
        "{err}"
    );
    assert!(!redis.is_running());
    drop(squatter);
    redis.restart()?;
    assert_eq!(redis.command(&["PING"])?, "PONG");
    Ok(())
}
