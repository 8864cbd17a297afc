//! A real `redis-server` child process on a free loopback port.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::free_port;

/// How long `start` and `restart` wait for the server to answer PING.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// Connect, read and write timeout of one raw command.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports tried by `start` when another process wins the race for the port.
const PORT_ATTEMPTS: usize = 3;
/// Where Debian installs the binary; `PATH` is searched when it is not there.
const DEBIAN_BINARY: &str = "/usr/bin/redis-server";
/// Environment variable naming another `redis-server` binary to use.
const BINARY_ENV: &str = "REDIS_SERVER_BIN";

/// A `redis-server` process owned by one test.
///
/// Started with `--port N --bind 127.0.0.1 --save '' --appendonly no` and a private
/// temporary `--dir`, so nothing is persisted and tests never share data. The port is
/// kept for the life of the value: [`stop`](Self::stop) then [`restart`](Self::restart)
/// brings the same server address back, which is how tests simulate a Redis outage.
/// Dropping the value kills the process.
///
/// The binary is `$REDIS_SERVER_BIN` if set, else `/usr/bin/redis-server`, else
/// `redis-server` from `PATH`. Its output goes to `redis.log` in the temporary dir and
/// is quoted in start-up errors.
///
/// [`start_with_args`](Self::start_with_args) adds arguments (`--requirepass`,
/// `--tls-port` and the TLS files); the plain port stays open, so readiness checks
/// and [`command`](Self::command) work the same, authenticated when there is a password.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Mutex<Option<Child>>,
    args: Vec<String>,
    password: Option<String>,
}

/// Why one launch failed: a missing binary is final, anything else may be a port race.
enum LaunchError {
    NotFound(anyhow::Error),
    Failed(anyhow::Error),
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits (up to 10 s) until it
    /// answers `PING` with `+PONG`.
    ///
    /// # Errors
    ///
    /// Fails when the binary is missing (the message says to run `./scripts/test.sh` or
    /// `apt-get install redis-server`), exits early, or does not answer in time.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start), with `args` after the defaults, for example
    /// `["--requirepass", "pw"]` or `["--tls-port", "N", "--tls-cert-file", ...]`.
    /// With `--requirepass`, the readiness check and [`command`](Self::command)
    /// send `AUTH` first.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start); an argument the server rejects makes it exit
    /// early, and the error quotes its log.
    pub fn start_with_args(args: &[&str]) -> anyhow::Result<Self> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
        let password = args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| args.get(i + 1))
            .cloned();
        let dir = tempfile::Builder::new()
            .prefix("redis-test-")
            .tempdir()
            .context("creating a temporary dir for redis-server")?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match launch(&binary(), port, dir.path(), &args, password.as_deref()) {
                Ok(child) => {
                    return Ok(Self {
                        port,
                        dir,
                        child: Mutex::new(Some(child)),
                        args,
                        password,
                    });
                }
                Err(LaunchError::NotFound(error)) => return Err(error),
                Err(LaunchError::Failed(error)) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }

    /// The URL a Redis client connects to: `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The loopback TCP port, the same across [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Connections drop at once;
    /// the port stays reserved in this value for [`restart`](Self::restart). Does
    /// nothing when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.lock_child().take() {
            kill(&mut child);
        }
    }

    /// Starts the server again on the same port (stopping it first if it runs) and
    /// waits until it answers `PING`. The data set starts empty.
    ///
    /// # Errors
    ///
    /// Fails when the process cannot be started or does not answer within 10 s, for
    /// example because another process took the port while it was stopped.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let child = match launch(
            &binary(),
            self.port,
            self.dir.path(),
            &self.args,
            self.password.as_deref(),
        ) {
            Ok(child) => child,
            Err(LaunchError::NotFound(error) | LaunchError::Failed(error)) => return Err(error),
        };
        *self.lock_child() = Some(child);
        Ok(())
    }

    /// Whether the child process is alive (it may still be loading).
    pub fn is_running(&self) -> bool {
        match self.lock_child().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends one command over a fresh raw TCP connection and returns the raw RESP
    /// reply, CRLFs included.
    ///
    /// Examples of replies: `DBSIZE` -> `":3\r\n"`, `GET k` -> `"$5\r\nvalue\r\n"` or
    /// `"$-1\r\n"` when missing, `TTL k` -> `":42\r\n"`, `FLUSHALL` -> `"+OK\r\n"`.
    /// A Redis error reply (`"-ERR ...\r\n"`) is returned as text, not as an `Err`.
    ///
    /// # Errors
    ///
    /// Fails on a connection or I/O error, or a malformed reply.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        command_at(self.port, self.password.as_deref(), args)
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the Option intact; keep going.
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        return PathBuf::from(path);
    }
    if Path::new(DEBIAN_BINARY).exists() {
        return PathBuf::from(DEBIAN_BINARY);
    }
    PathBuf::from("redis-server")
}

/// Spawns the process and waits until it is the one answering on `port`.
fn launch(
    binary: &Path,
    port: u16,
    dir: &Path,
    extra: &[String],
    password: Option<&str>,
) -> Result<Child, LaunchError> {
    let log_path = dir.join("redis.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .and_then(|log| Ok((log.try_clone()?, log)))
        .context("opening redis.log")
        .map_err(LaunchError::Failed)?;
    let mut child = Command::new(binary)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.0))
        .stderr(Stdio::from(log.1))
        .spawn()
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                LaunchError::NotFound(anyhow!(
                    "{} not found ({error}): run ./scripts/test.sh, or `apt-get install redis-server`",
                    binary.display()
                ))
            } else {
                LaunchError::Failed(anyhow!("spawning {}: {error}", binary.display()))
            }
        })?;

    match wait_ready(port, password, &mut child) {
        Ok(()) => Ok(child),
        Err(error) => {
            kill(&mut child);
            let log = read_tail(&log_path);
            Err(LaunchError::Failed(error.context(format!(
                "redis-server on port {port} did not start; log:\n{log}"
            ))))
        }
    }
}

/// Polls with PING until `+PONG`, then checks that the answer came from our child and
/// not from another test's server that won the race for the port.
fn wait_ready(port: u16, password: Option<&str>, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().context("polling redis-server")? {
            bail!("redis-server exited with {status}");
        }
        if ping(port, password) {
            break;
        }
        if Instant::now() >= deadline {
            bail!("no +PONG within {STARTUP_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = command_at(port, password, &["INFO", "server"])?;
    let pid_line = format!("process_id:{}", child.id());
    if !info.lines().any(|line| line.trim() == pid_line) {
        bail!("port {port} is answered by another redis-server");
    }
    Ok(())
}

fn ping(port: u16, password: Option<&str>) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if let Some(password) = password {
        let mut ok = [0_u8; 5];
        if stream.write_all(&encode(&["AUTH", password])).is_err()
            || stream.read_exact(&mut ok).is_err()
            || ok != *b"+OK\r\n"
        {
            return false;
        }
    }
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && reply == *b"+PONG\r\n"
}

fn kill(child: &mut Child) {
    // Both fail only when the process is already gone and reaped.
    let _ = child.kill();
    let _ = child.wait();
}

fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One command in RESP.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request
}

fn command_at(port: u16, password: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to redis-server at {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);

    if let Some(password) = password {
        stream
            .write_all(&encode(&["AUTH", password]))
            .context("sending AUTH")?;
        let mut reply = Vec::new();
        read_reply(&mut reader, &mut reply).context("reading the reply to AUTH")?;
        if reply != b"+OK\r\n" {
            bail!(
                "AUTH refused: {}",
                String::from_utf8_lossy(&reply).trim_end()
            );
        }
    }
    stream
        .write_all(&encode(args))
        .with_context(|| format!("sending {args:?}"))?;

    let mut reply = Vec::new();
    read_reply(&mut reader, &mut reply)
        .with_context(|| format!("reading the reply to {args:?}"))?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Appends one complete RESP2/RESP3 reply, byte for byte, to `out`.
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let start = out.len();
    if reader.read_until(b'\n', out)? == 0 {
        bail!("connection closed before a reply");
    }
    let line = &out[start..];
    let Some(header) = line.strip_suffix(b"\r\n") else {
        bail!(
            "reply line without CRLF: {:?}",
            String::from_utf8_lossy(line)
        );
    };
    let Some(&kind) = header.first() else {
        bail!("empty reply line");
    };
    let length = || -> anyhow::Result<i64> {
        let text = std::str::from_utf8(&header[1..])?;
        text.parse::<i64>()
            .with_context(|| format!("bad length {text:?}"))
    };
    match kind {
        // Simple string, error, integer, null, double, boolean, big number.
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(()),
        // Bulk string, bulk error, verbatim string: payload plus CRLF.
        b'$' | b'!' | b'=' => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok(()); // -1: null bulk string
            };
            let mut payload = vec![0_u8; len + 2];
            reader.read_exact(&mut payload)?;
            out.extend_from_slice(&payload);
            Ok(())
        }
        // Array, set, push: n elements; map and attribute: n pairs.
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Ok(count) = usize::try_from(length()?) else {
                return Ok(()); // -1: null array
            };
            let elements = if matches!(kind, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            for _ in 0..elements {
                read_reply(reader, out)?;
            }
            Ok(())
        }
        other => bail!("unknown RESP type byte {:?}", char::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> RedisServer {
        crate::init_tracing();
        RedisServer::start().expect("redis-server should start (run ./scripts/test.sh)")
    }

    #[test]
    fn starts_answers_and_reports_its_address() {
        let redis = started();
        assert!(redis.is_running());
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/", redis.port()));
        assert_eq!(redis.command(&["PING"]).expect("PING"), "+PONG\r\n");
    }

    #[test]
    fn command_returns_raw_replies() {
        let redis = started();
        assert_eq!(redis.command(&["DBSIZE"]).expect("DBSIZE"), ":0\r\n");
        assert_eq!(
            redis
                .command(&["SET", "key", "a value", "EX", "100"])
                .expect("SET"),
            "+OK\r\n"
        );
        assert_eq!(
            redis.command(&["GET", "key"]).expect("GET"),
            "$7\r\na value\r\n"
        );
        assert_eq!(redis.command(&["GET", "missing"]).expect("GET"), "$-1\r\n");
        assert_eq!(redis.command(&["TTL", "key"]).expect("TTL"), ":100\r\n");
        assert_eq!(redis.command(&["DBSIZE"]).expect("DBSIZE"), ":1\r\n");
        assert_eq!(
            redis.command(&["RPUSH", "list", "x", "y"]).expect("RPUSH"),
            ":2\r\n"
        );
        assert_eq!(
            redis
                .command(&["LRANGE", "list", "0", "-1"])
                .expect("LRANGE"),
            "*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
        );
        assert!(
            redis
                .command(&["NOSUCHCOMMAND"])
                .expect("an error reply is still a reply")
                .starts_with("-ERR")
        );
        assert_eq!(redis.command(&["FLUSHALL"]).expect("FLUSHALL"), "+OK\r\n");
        assert_eq!(redis.command(&["DBSIZE"]).expect("DBSIZE"), ":0\r\n");
    }

    #[test]
    fn stop_and_restart_keep_the_port() {
        let mut redis = started();
        let port = redis.port();
        redis.command(&["SET", "k", "v"]).expect("SET");

        redis.stop();
        assert!(!redis.is_running());
        assert!(
            redis.command(&["PING"]).is_err(),
            "a stopped server refuses"
        );
        redis.stop(); // idempotent

        redis.restart().expect("restart");
        assert!(redis.is_running());
        assert_eq!(redis.port(), port);
        assert_eq!(redis.command(&["PING"]).expect("PING"), "+PONG\r\n");
        assert_eq!(
            redis.command(&["DBSIZE"]).expect("DBSIZE"),
            ":0\r\n",
            "nothing is persisted"
        );

        redis.restart().expect("restart while running");
        assert_eq!(redis.command(&["PING"]).expect("PING"), "+PONG\r\n");
    }

    #[test]
    fn drop_kills_the_server() {
        let redis = started();
        let port = redis.port();
        drop(redis);
        assert!(!ping(port, None));
    }

    #[test]
    fn servers_are_independent() {
        let a = started();
        let b = started();
        assert_ne!(a.port(), b.port());
        a.command(&["SET", "only-in-a", "1"]).expect("SET");
        assert_eq!(b.command(&["DBSIZE"]).expect("DBSIZE"), ":0\r\n");
    }

    #[test]
    fn a_password_is_required_and_used_by_command() {
        crate::init_tracing();
        let mut redis = RedisServer::start_with_args(&["--requirepass", "s3cret pass"])
            .expect("redis-server with a password");
        assert_eq!(redis.command(&["PING"]).expect("PING"), "+PONG\r\n");
        assert!(!ping(redis.port(), None), "PING without AUTH is refused");
        assert!(!ping(redis.port(), Some("wrong")));
        assert!(
            command_at(redis.port(), None, &["DBSIZE"])
                .expect("an error reply is a reply")
                .starts_with("-NOAUTH")
        );
        redis.restart().expect("restart keeps the arguments");
        assert!(!ping(redis.port(), None));
        assert_eq!(redis.command(&["PING"]).expect("PING"), "+PONG\r\n");
    }

    #[test]
    fn missing_binary_says_how_to_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Err(LaunchError::NotFound(error)) = launch(
            Path::new("/nonexistent/redis-server"),
            free_port(),
            dir.path(),
            &[],
            None,
        ) else {
            panic!("a missing binary must be reported as not found");
        };
        let message = error.to_string();
        assert!(message.contains("./scripts/test.sh"), "{message}");
        assert!(
            message.contains("apt-get install redis-server"),
            "{message}"
        );
    }
}
