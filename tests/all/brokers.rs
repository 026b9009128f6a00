//! The brokers the connector tests start (`sluice_tests::brokers`): several run
//! side by side, each answers on its own port, and dropping one stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sluice_tests::brokers::{NatsServer, RedisServer};

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

/// The `INFO {...}` line a NATS server greets every client with.
fn nats_greeting(port: u16) -> String {
    let mut line = String::new();
    BufReader::new(connect(port).unwrap()).read_line(&mut line).unwrap();
    line
}

/// What a Redis server answers to `PING`.
fn redis_ping(port: u16) -> String {
    let mut stream = connect(port).unwrap();
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = [0; 7];
    stream.read_exact(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn nats_servers_run_side_by_side_with_jetstream_and_stop_on_drop() {
    let (a, b) = (NatsServer::start(), NatsServer::start());
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("nats://127.0.0.1:{}", a.port()));
    for server in [&a, &b] {
        let info = nats_greeting(server.port());
        assert!(info.starts_with("INFO {"), "{info}");
        assert!(info.contains("\"jetstream\":true"), "{info}");
        assert!(info.contains(&format!("\"port\":{}", server.port())), "{info}");
    }

    let port = a.port();
    drop(a);
    assert!(connect(port).is_err(), "a dropped NATS server still answers on {port}");
    assert!(nats_greeting(b.port()).contains("\"jetstream\":true"), "dropping one stopped the other");
}

#[test]
fn redis_servers_run_side_by_side_and_stop_on_drop() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("redis://127.0.0.1:{}/", a.port()));
    for server in [&a, &b] {
        assert_eq!(redis_ping(server.port()), "+PONG\r\n");
    }

    let port = a.port();
    drop(a);
    assert!(connect(port).is_err(), "a dropped Redis server still answers on {port}");
    assert_eq!(redis_ping(b.port()), "+PONG\r\n", "dropping one stopped the other");
}
