//! Processes the load test starts beside itself (an `enricher run` worker,
//! the Python peer) and what `/proc` and their HTTP endpoints say of them:
//! CPU time, memory, readiness, metrics.
//!
//! Signals go through `kill(1)`: the crate has no unsafe code and no libc
//! binding of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use enricher::config::Config;

/// The `enricher` binary next to the running executable (both are built
/// into `target/<profile>/`).
///
/// # Errors
///
/// When it is not there.
pub fn enricher_beside_me() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding loadtest's own executable")?;
    let path = me.with_file_name(format!("enricher{}", std::env::consts::EXE_SUFFIX));
    check_binary(&path)?;
    Ok(path)
}

/// Fails with what to do when `path` is not a file.
///
/// # Errors
///
/// When it is not a file.
pub fn check_binary(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        path.is_file(),
        "the enricher binary {} does not exist: build it beside loadtest with \
         `cargo build --release -p enricher -p loadtest`, or pass --enricher PATH",
        path.display()
    );
    Ok(())
}

/// `config` as the TOML file `enricher run --config` reads.
///
/// # Errors
///
/// When a value has no TOML form.
pub fn worker_config_toml(config: &Config) -> anyhow::Result<String> {
    toml::to_string(config).context("writing the worker's config as TOML")
}

/// A free port on 127.0.0.1 (bound, read, released).
///
/// # Errors
///
/// When no port can be bound.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A value from `/proc/<pid>/status` in MiB (`pid` `None`: this process).
pub fn proc_status_mb(pid: Option<u32>, key: &str) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_string(),
        |p| format!("/proc/{p}/status"),
    );
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb as f64 / 1024.0)
}

/// User plus system CPU time of a process, every thread, in seconds
/// (`pid` `None`: this process), from `/proc/<pid>/stat`. Linux fixes its
/// clock ticks there at 100 a second on every architecture.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields are counted
    // from the last ')'. utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`, ...) to `pid`.
///
/// # Errors
///
/// When `kill` cannot run or refuses.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid}: {status}");
    Ok(())
}

/// One `GET` over HTTP/1.0: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of the first sample of `name` carrying every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A child process with its output in a log file; killed if still running
/// when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `command`, its standard output and error into `log`.
    ///
    /// # Errors
    ///
    /// When the log cannot be created or the program cannot start.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_string(),
            log,
        })
    }

    /// Its process id (0 once it has been waited for).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its CPU time so far, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(Some(self.pid()))
    }

    /// Its resident memory, MiB.
    pub fn rss_mb(&self) -> f64 {
        proc_status_mb(Some(self.pid()), "VmRSS:").unwrap_or(0.0)
    }

    /// Its highest resident memory so far, MiB.
    pub fn peak_rss_mb(&self) -> f64 {
        proc_status_mb(Some(self.pid()), "VmHWM:").unwrap_or(0.0)
    }

    /// Sends it `sig`.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        signal(self.pid(), sig)
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its log ends:\n  {tail}")
        }
    }

    /// Fails when it has exited.
    ///
    /// # Errors
    ///
    /// When it is no longer running.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            anyhow::bail!("{} exited ({status}){}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL when it has not exited within `grace`; says
    /// how it ended.
    ///
    /// # Errors
    ///
    /// When it cannot be waited for.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<String> {
        let Some(mut child) = self.child.take() else {
            return Ok("gone".into());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(format!("{status} before SIGTERM"));
        }
        let _ = signal(child.id(), "TERM");
        let by = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(format!("{status} after SIGTERM"));
            }
            if Instant::now() > by {
                let _ = child.kill();
                let status = child.wait()?;
                return Ok(format!("{status}: killed, SIGTERM was not enough"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process takes SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `enricher run --config <file>` as a child process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// The process.
    pub proc: Proc,
    metrics: SocketAddr,
    grace: Duration,
}

impl WorkerProcess {
    /// Writes `config` to `<dir>/<name>.toml` and starts `enricher run` on
    /// it with `env` added to its environment (`ENRICHER_*` overrides), its
    /// log in `<dir>/<name>.log`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written or the binary cannot start.
    pub fn spawn(
        binary: &Path,
        config: &Config,
        dir: &Path,
        name: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, worker_config_toml(config)?)?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&file)
            .env("ENRICHER_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        let proc = Proc::spawn(name, command, dir.join(format!("{name}.log")))
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            proc,
            metrics: config.worker.metrics_addr,
            grace: Duration::from_millis(config.worker.shutdown_grace_ms),
        })
    }

    /// Where its `/metrics`, `/healthz` and `/readyz` answer.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// Whether `/readyz` answers 200: assigned by the group, a broker up.
    pub fn ready(&self) -> bool {
        http_get(self.metrics, "/readyz").is_some_and(|(s, _)| s == 200)
    }

    /// Waits until it is ready.
    ///
    /// # Errors
    ///
    /// When it exits or is not ready within `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let by = Instant::now() + timeout;
        while !self.ready() {
            self.proc.check_alive()?;
            anyhow::ensure!(
                Instant::now() < by,
                "the worker was not ready within {timeout:?}{}",
                self.proc.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The body of `/metrics`.
    pub fn metrics(&self) -> Option<String> {
        http_get(self.metrics, "/metrics").map(|(_, body)| body)
    }

    /// L1 cache lookups that missed so far.
    pub fn l1_misses(&self) -> Option<f64> {
        metric(
            &self.metrics()?,
            enricher::metrics::CACHE,
            &["tier=\"l1\"", "result=\"miss\""],
        )
        .or(Some(0.0))
    }

    /// Stops it the way Kubernetes does: SIGTERM, SIGKILL after its grace
    /// and 5 s more.
    ///
    /// # Errors
    ///
    /// When it cannot be waited for.
    pub fn stop(self) -> anyhow::Result<String> {
        self.proc.stop(self.grace + Duration::from_secs(5))
    }
}
