//! Real brokers for the connector tests and benchmarks: a NATS server with
//! JetStream and a Redis server, each on free 127.0.0.1 ports with a temporary
//! directory of its own, ready when `start` returns, killed on drop.
//!
//! The binaries come from Debian (`scripts/bootstrap` installs them). Parallel
//! tests may each start their own.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a broker may take to become ready before `start` panics.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts with fresh ports when another process took one between our probing
/// it and the broker binding it.
const PORT_TRIES: usize = 5;

/// A `nats-server -js` on 127.0.0.1 with its own store directory.
pub struct NatsServer {
    port: u16,
    _process: Process,
}

impl NatsServer {
    /// Starts a server with JetStream and waits until JetStream is ready.
    /// Panics, showing the server's log, if it is not within 10 s.
    pub fn start() -> NatsServer {
        // A name of its own, so that another test's server which took our port
        // first cannot pass our readiness check.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sluice-test-{}-{}", std::process::id(), STARTED.fetch_add(1, Ordering::Relaxed));
        let command = |dir: &Path, ports: &[u16]| {
            let mut command = Command::new("nats-server");
            command
                .args(["-js", "-a", "127.0.0.1", "-n", &name])
                .args(["-p", &ports[0].to_string(), "-m", &ports[1].to_string()])
                .arg("-sd")
                .arg(dir)
                .arg("-l")
                .arg(dir.join(SERVER_LOG));
            command
        };
        let ready = |ports: &[u16], _pid: u32| nats_ready(ports[0], ports[1], &name);
        let (process, ports) = Process::start("nats-server", 2, command, ready);
        NatsServer { port: ports[0], _process: process }
    }

    /// The client URL: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A `redis-server` on 127.0.0.1 that keeps nothing on disk.
pub struct RedisServer {
    port: u16,
    _process: Process,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`. Panics, showing the
    /// server's log, if it does not within 10 s.
    pub fn start() -> RedisServer {
        let command = |dir: &Path, ports: &[u16]| {
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &ports[0].to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir)
                .arg("--logfile")
                .arg(dir.join(SERVER_LOG));
            command
        };
        let ready = |ports: &[u16], pid: u32| redis_ready(ports[0], pid);
        let (process, ports) = Process::start("redis-server", 1, command, ready);
        RedisServer { port: ports[0], _process: process }
    }

    /// The client URL: `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Ready when the client port greets with our server's name and JetStream on,
/// and the monitoring port's health check says JetStream is up.
fn nats_ready(port: u16, monitor: u16, name: &str) -> bool {
    let Some(info) = exchange(port, b"", |got| got.ends_with(b"\r\n")) else {
        return false;
    };
    let info = String::from_utf8_lossy(&info);
    if !info.contains(&format!("\"server_name\":\"{name}\"")) || !info.contains("\"jetstream\":true") {
        return false;
    }
    // HTTP/1.0: the server closes the connection after the reply.
    let request = b"GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    exchange(monitor, request, |_| false)
        .is_some_and(|reply| String::from_utf8_lossy(&reply).split_whitespace().nth(1) == Some("200"))
}

/// Ready when `PING` gets `+PONG` from our process (`INFO server` names its
/// pid), not from another test's server that took the port first.
fn redis_ready(port: u16, pid: u32) -> bool {
    let request = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n";
    let Some(reply) = exchange(port, request, |got| bulk_after_pong(got).is_some()) else {
        return false;
    };
    bulk_after_pong(&reply)
        .is_some_and(|info| String::from_utf8_lossy(info).contains(&format!("\r\nprocess_id:{pid}\r\n")))
}

/// The bulk string after `+PONG\r\n` (RESP `$LEN\r\nBODY\r\n`), once it is whole.
fn bulk_after_pong(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"+PONG\r\n")?.strip_prefix(b"$")?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    rest.get(end + 2..end + 2 + len)
}

/// Connects to 127.0.0.1:`port`, sends `request`, and reads until `done` says
/// the reply is whole or the peer closes. `None` when nothing answers.
fn exchange(port: u16, request: &[u8], done: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(request).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (!reply.is_empty()).then_some(reply),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
        if done(&reply) {
            return Some(reply);
        }
    }
}

/// The broker's own log, in its directory.
const SERVER_LOG: &str = "server.log";
/// What it writes to stdout and stderr (flag errors, before its log is open).
const OUTPUT_LOG: &str = "output.log";

/// A broker process, its directory, and the thread that owns the child.
///
/// The child is spawned and reaped by a thread that lives as long as it does:
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, so
/// spawning from the test's thread would kill a broker kept in a static once
/// the first test using it returned.
struct Process {
    pid: u32,
    /// Dropping it tells the keeper to kill the child.
    stop: Option<Sender<()>>,
    /// The keeper sends how the child ended if it ended on its own.
    exited: Receiver<ExitStatus>,
    keeper: Option<JoinHandle<()>>,
    /// Declared last: removed after the child is gone.
    dir: TempDir,
}

impl Process {
    /// Starts `program` on `port_count` free ports, retrying with fresh ports
    /// when one was taken meanwhile, and waits until `ready(ports, pid)`.
    fn start(
        program: &str,
        port_count: usize,
        command: impl Fn(&Path, &[u16]) -> Command,
        ready: impl Fn(&[u16], u32) -> bool,
    ) -> (Process, Vec<u16>) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for attempt in 1..=PORT_TRIES {
            let dir = tempfile::Builder::new()
                .prefix(&format!("sluice-{program}-"))
                .tempdir()
                .unwrap_or_else(|e| panic!("cannot make a temporary directory for {program}: {e}"));
            let ports = free_ports(port_count);
            let process = Process::spawn(program, command(dir.path(), &ports), dir);
            loop {
                if let Ok(status) = process.exited.try_recv() {
                    let log = process.log();
                    if attempt < PORT_TRIES && log.to_lowercase().contains("address already in use") {
                        break;
                    }
                    panic!(
                        "{program} on 127.0.0.1 ports {ports:?} exited ({status}) before it was ready; \
                         its log:\n{log}",
                    );
                }
                if ready(&ports, process.pid) {
                    return (process, ports);
                }
                if Instant::now() > deadline {
                    panic!(
                        "{program} on 127.0.0.1 ports {ports:?} was not ready within {}s; its log:\n{}",
                        READY_TIMEOUT.as_secs(),
                        process.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(program: &str, mut command: Command, dir: TempDir) -> Process {
        let output = File::create(dir.path().join(OUTPUT_LOG))
            .unwrap_or_else(|e| panic!("cannot create {program}'s output log: {e}"));
        let stderr = output.try_clone().expect("cannot duplicate a file handle");
        command.stdin(Stdio::null()).stdout(output).stderr(stderr);
        die_with_parent(&mut command);

        let (started_tx, started_rx) = mpsc::channel::<io::Result<u32>>();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (exited_tx, exited) = mpsc::channel();
        let keeper = std::thread::Builder::new()
            .name(format!("{program} keeper"))
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(e) => return drop(started_tx.send(Err(e))),
                };
                let _ = started_tx.send(Ok(child.id()));
                loop {
                    match stop_rx.recv_timeout(Duration::from_millis(20)) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Dropped (or sent to): the broker's owner is done with it.
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return;
                        }
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        let _ = exited_tx.send(status);
                        return;
                    }
                }
            })
            .expect("cannot start a thread");
        let pid = match started_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
                panic!("{program} is not installed: run scripts/bootstrap")
            }
            Ok(Err(e)) => panic!("cannot start {program}: {e}"),
            Err(_) => panic!("the thread starting {program} died"),
        };
        Process { pid, stop: Some(stop), exited, keeper: Some(keeper), dir }
    }

    /// The broker's log and its output, for a panic message.
    fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read(SERVER_LOG), read(OUTPUT_LOG))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// `count` distinct ports free right now (the OS picks them; held together so
/// they differ, then released for the broker to bind).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a bound address").port()).collect()
}

/// Kills the broker when the test process dies without dropping it (a killed
/// or aborted test run), so no broker lingers.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only prctl runs, which is async-signal-safe
    // and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
