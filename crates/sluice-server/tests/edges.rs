//! The server's own edges against clients that hold connections without using them: each
//! test starts its own server with short limits and talks raw TCP, HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_server::{ConnectionLimits, ServeOptions, Spawned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Longest any step may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);

async fn start(adjust: impl FnOnce(&mut ConnectionLimits)) -> Spawned {
    let mut connections = ConnectionLimits::default();
    adjust(&mut connections);
    let options = ServeOptions {
        watch: false,
        connections,
        ..ServeOptions::default()
    };
    sluice_server::spawn(options)
        .await
        .expect("the server starts")
}

/// Reads until the server closes the connection (EOF or reset); returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("still open after {PATIENCE:?}"),
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; the status code.
async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let answer = until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// The value of one metrics line, polled in short steps until `want` (or the patience ends).
async fn wait_for_metric(addr: SocketAddr, line: &str, want: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("sent");
        let text = String::from_utf8(until_closed(&mut stream).await).expect("text");
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or(0);
        if value >= want || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slow_client_is_cut_off_after_the_header_read_timeout_while_others_are_answered() {
    let limit = Duration::from_millis(400);
    let server = start(|c| c.header_read_timeout = limit).await;
    let begun = Instant::now();
    let mut slow_http = TcpStream::connect(server.http).await.expect("connects");
    slow_http
        .write_all(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .expect("half a head");
    let mut silent_grpc = TcpStream::connect(server.grpc).await.expect("connects");
    let mut preface_only = TcpStream::connect(server.grpc).await.expect("connects");
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");

    // Others are answered meanwhile.
    for _ in 0..5 {
        assert_eq!(get_status(server.http, "/healthz").await, 200);
    }
    assert!(begun.elapsed() < limit, "the answers took too long to test");

    for stream in [&mut slow_http, &mut silent_grpc, &mut preface_only] {
        until_closed(stream).await;
        let waited = begun.elapsed();
        assert!(
            waited >= limit - Duration::from_millis(50),
            "closed early: {waited:?}"
        );
        assert!(
            waited < limit + Duration::from_secs(2),
            "closed late: {waited:?}"
        );
    }
    assert_eq!(get_status(server.http, "/healthz").await, 200);
    let timed_out = "sluice_connections_timed_out_total{listener=";
    let http = format!("{timed_out}\"http\",reason=\"header_read\"}}");
    let grpc = format!("{timed_out}\"grpc\",reason=\"header_read\"}}");
    assert_eq!(wait_for_metric(server.http, &http, 1).await, 1);
    assert_eq!(wait_for_metric(server.http, &grpc, 2).await, 2);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let server = start(|c| c.max_connections = 3).await;
    for (addr, listener) in [(server.http, "http"), (server.grpc, "grpc")] {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(addr).await.expect("connects"));
        }
        // The fourth is accepted by the kernel, then closed by the server at once.
        let begun = Instant::now();
        let mut over = TcpStream::connect(addr).await.expect("connects");
        until_closed(&mut over).await;
        assert!(
            begun.elapsed() < Duration::from_secs(2),
            "{:?}",
            begun.elapsed()
        );
        drop(held);
        let refused = format!("sluice_connections_refused_total{{listener=\"{listener}\"}}");
        // /metrics is served once the held connections are gone.
        assert_eq!(
            wait_for_metric(server.http, &refused, 1).await,
            1,
            "{listener}"
        );
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_idle_timeout() {
    let idle = Duration::from_millis(400);
    let server = start(|c| c.idle_timeout = idle).await;

    // HTTP/1.1 keep-alive.
    let mut stream = TcpStream::connect(server.http).await.expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("sent");
    let mut buf = [0_u8; 1024];
    let n = timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let answered = Instant::now();
    until_closed(&mut stream).await;
    let waited = answered.elapsed();
    assert!(
        waited >= idle - Duration::from_millis(50),
        "closed early: {waited:?}"
    );
    assert!(
        waited < idle + Duration::from_secs(2),
        "closed late: {waited:?}"
    );

    // HTTP/2 (h2c) on the HTTP port and gRPC's health check on the gRPC port.
    for (addr, path, grpc) in [
        (server.http, "/healthz", false),
        (server.grpc, "/grpc.health.v1.Health/Check", true),
    ] {
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.expect("connects"));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        let closed = tokio::spawn(connection);
        let mut request = http::Request::post(format!("http://{addr}{path}"));
        if grpc {
            request = request
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        }
        // An empty gRPC message: the health check of the whole server.
        let body = if grpc { vec![0_u8; 5] } else { Vec::new() };
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let response = timeout(PATIENCE, sender.send_request(request))
            .await
            .expect("answered")
            .expect("response");
        assert!(
            response.status().is_success() || response.status() == 405,
            "{path}"
        );
        drop(response);
        let answered = Instant::now();
        let _ = timeout(PATIENCE, closed)
            .await
            .unwrap_or_else(|_| panic!("{path}: still open after {PATIENCE:?}"));
        let waited = answered.elapsed();
        assert!(
            waited >= idle - Duration::from_millis(50),
            "{path}: early {waited:?}"
        );
        assert!(
            waited < idle + Duration::from_secs(2),
            "{path}: late {waited:?}"
        );
    }
    let idle_closed = "sluice_connections_timed_out_total{listener=\"grpc\",reason=\"idle\"}";
    assert_eq!(wait_for_metric(server.http, idle_closed, 1).await, 1);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn a_request_whose_body_never_comes_is_answered_408_after_the_request_timeout() {
    let limit = Duration::from_millis(400);
    let server = start(|c| c.request_timeout = limit).await;
    let mut stream = TcpStream::connect(server.http).await.expect("connects");
    stream
        .write_all(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("head and a byte");
    let begun = Instant::now();
    let mut buf = [0_u8; 4096];
    let n = timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("--request-timeout"), "{text}");
    assert!(begun.elapsed() >= limit - Duration::from_millis(50));
    server.stop().await.expect("stops");
}

/// One HTTP/2 frame: type, flags, stream, payload.
async fn read_frame(stream: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0_u8; 9];
    timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .expect("a frame");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0_u8; len];
    timeout(PATIENCE, stream.read_exact(&mut payload))
        .await
        .expect("a payload in time")
        .expect("a payload");
    (head[3], head[4], id, payload)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small").to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;

#[tokio::test]
async fn an_http2_client_cannot_open_more_than_the_max_concurrent_streams() {
    let server = start(|c| {
        c.http2_max_concurrent_streams = 2;
        c.http2_max_frame_size = 20_000;
        c.http2_max_header_list_size = 4096;
    })
    .await;
    for addr in [server.http, server.grpc] {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.expect("preface");
        let (kind, flags, _, payload) = read_frame(&mut stream).await;
        assert_eq!((kind, flags), (SETTINGS, 0));
        let settings: Vec<(u16, u32)> = payload
            .chunks(6)
            .map(|s| {
                (
                    u16::from_be_bytes([s[0], s[1]]),
                    u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                )
            })
            .collect();
        // MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE.
        for want in [(0x3, 2), (0x5, 20_000), (0x6, 4096)] {
            assert!(
                settings.contains(&want),
                "{addr}: {want:?} not in {settings:?}"
            );
        }
        stream
            .write_all(&frame(SETTINGS, 0x1, 0, &[]))
            .await
            .expect("ack");
        // Three POSTs whose bodies never come: the third is one too many.
        let mut block = vec![0x83, 0x86, 0x44, 9];
        block.extend_from_slice(b"/v1/check");
        for id in [1, 3, 5] {
            stream
                .write_all(&frame(HEADERS, 0x4, id, &block))
                .await
                .expect("headers");
        }
        let refused = loop {
            let (kind, _, id, payload) = read_frame(&mut stream).await;
            if kind == RST_STREAM {
                break (
                    id,
                    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
                );
            }
        };
        // REFUSED_STREAM on the third stream.
        assert_eq!(refused, (5, 0x7), "{addr}");
    }
    server.stop().await.expect("stops");
}
