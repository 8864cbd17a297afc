//! Where delivery reports come back: the producer's context turns each
//! into an ack (the record is durable), a forward (a delivered alert, sent
//! on to the output) or a retry (sent again after a backoff), and the
//! consumer thread reads them through [`Deliveries`].
//!
//! ```text
//! producer thread: delivery report --ok--------> acks      --.
//!                                  --ok, alert--> forwards  --+--> partitions::settle (consumer thread)
//!                                  --failed-----> retries   --'        retries wait in Resends (backoff)
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryResult, ProducerContext};

use super::clients::{CLIENT_ERRORS, error_label, log_client_error};
use super::produce::{
    Ack, REASON, SOURCE_TOPIC, header, is_alert, is_dead_letter, too_large, unpack,
};
use super::route::Outcome;
use super::streak::{Backoff, Messages, Streak};
use crate::config::Config;
use crate::metrics as m;

/// A delivery that failed after librdkafka's own retries: sent again, or
/// dead-lettered if the broker refused it as too large. Or a delivered
/// alert, to send on to the output topic ([`Output::forward`]).
pub(super) struct Retry {
    pub(super) opaque: usize,
    pub(super) too_large: bool,
    /// A delivered alert's record on its way to the output: not counted as
    /// sent again.
    pub(super) forward: bool,
    pub(super) topic: String,
    pub(super) partition: Option<i32>,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) headers: Option<OwnedHeaders>,
}

impl Retry {
    /// The assignment slot of the record.
    pub(super) fn slot(&self) -> u32 {
        unpack(self.opaque).0
    }
}

const DELIVERY_FAILURES: Messages = Messages {
    started: "Deliveries failing; sending them again with backoff",
    ongoing: "Deliveries still failing",
    ended: "Deliveries succeed again",
};

/// The producer's context: delivery reports become acks, forwards or retries.
pub(super) struct DeliveryContext {
    acks: mpsc::Sender<Ack>,
    retries: mpsc::Sender<Retry>,
    forwards: mpsc::Sender<Retry>,
    /// Failed deliveries, said once per streak.
    failures: Mutex<Streak>,
    /// Whether a streak is going on, so that a success takes no lock.
    failing: AtomicBool,
    /// librdkafka's global errors, said once per streak.
    client_errors: Mutex<Streak>,
    passthrough: bool,
}

/// A producer's context and the consumer thread's end of its reports.
pub(super) fn channels(passthrough: bool) -> (DeliveryContext, Deliveries, mpsc::Sender<Ack>) {
    let (ack_tx, ack_rx) = mpsc::channel();
    let (retry_tx, retry_rx) = mpsc::channel();
    let (forward_tx, forward_rx) = mpsc::channel();
    let self_acks = ack_tx.clone();
    let context = DeliveryContext {
        acks: ack_tx,
        retries: retry_tx,
        forwards: forward_tx,
        failures: Mutex::new(Streak::new(DELIVERY_FAILURES)),
        failing: AtomicBool::new(false),
        client_errors: Mutex::new(Streak::new(CLIENT_ERRORS)),
        passthrough,
    };
    let deliveries = Deliveries {
        acks: Mutex::new(ack_rx),
        retries: Mutex::new(retry_rx),
        forwards: Mutex::new(forward_rx),
    };
    (context, deliveries, self_acks)
}

impl DeliveryContext {
    /// How a delivered record counts; a dead letter is counted here, by
    /// reason and input topic.
    fn outcome(&self, msg: &BorrowedMessage<'_>, opaque: usize) -> Outcome {
        if is_dead_letter(opaque) {
            let headers = msg.headers();
            let reason = header(headers, REASON).unwrap_or("unknown").to_string();
            let topic = header(headers, SOURCE_TOPIC)
                .unwrap_or("unknown")
                .to_string();
            metrics::counter!(m::RECORDS, "outcome" => "dead_lettered", "reason" => reason, "topic" => topic)
                .increment(1);
            Outcome::Counted
        } else if self.passthrough || msg.payload().is_none() {
            Outcome::Passed
        } else {
            Outcome::Enriched
        }
    }

    /// Ends a streak of failed deliveries, if one is going on.
    fn succeeded(&self) {
        if self.failing.load(Ordering::Relaxed) {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            failures.succeeded(Instant::now());
            self.failing.store(false, Ordering::Relaxed);
        }
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.client_errors, &error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match result {
            Ok(msg) if is_alert(opaque) => {
                let _ = self.forwards.send(Retry {
                    opaque,
                    too_large: false,
                    forward: true,
                    // Named by the route when it goes on.
                    topic: String::new(),
                    partition: None,
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec),
                    headers: msg.headers().map(|h| h.detach()),
                });
                self.succeeded();
            }
            Ok(msg) => {
                let _ = self.acks.send((opaque, self.outcome(msg, opaque)));
                self.succeeded();
            }
            Err((error, msg)) => {
                metrics::counter!(m::PRODUCE_ERRORS, "error" => error_label(error)).increment(1);
                let too_large = too_large(error);
                if too_large {
                    tracing::warn!(%error, topic = msg.topic(), "Delivery refused as too large; dead-lettering the record");
                } else {
                    let place = format!("{}/{}", msg.topic(), msg.partition());
                    let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                    failures.failed(Instant::now(), error, &place);
                    self.failing.store(true, Ordering::Relaxed);
                }
                let _ = self.retries.send(Retry {
                    opaque,
                    too_large,
                    forward: false,
                    topic: msg.topic().to_string(),
                    partition: (msg.partition() >= 0).then(|| msg.partition()),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec),
                    headers: msg.headers().map(|h| h.detach()),
                });
            }
        }
    }
}

/// The receiving end of the delivery reports, read by the consumer thread.
pub(super) struct Deliveries {
    acks: Mutex<mpsc::Receiver<Ack>>,
    retries: Mutex<mpsc::Receiver<Retry>>,
    forwards: Mutex<mpsc::Receiver<Retry>>,
}

impl Deliveries {
    /// Calls `f` with the opaque and outcome of every record acknowledged
    /// since the last call; returns whether there was any.
    pub(super) fn acked(&self, mut f: impl FnMut(usize, Outcome)) -> bool {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let mut any = false;
        while let Ok((opaque, outcome)) = acks.try_recv() {
            any = true;
            f(opaque, outcome);
        }
        any
    }

    /// The alerts delivered since the last call, to send on to their
    /// output topics.
    pub(super) fn forwarded(&self) -> Vec<Retry> {
        let forwards = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
        forwards.try_iter().collect()
    }

    /// Moves the failed deliveries reported since the last call into `into`.
    pub(super) fn failed(&self, into: &mut Resends) {
        let retries = self.retries.lock().unwrap_or_else(|p| p.into_inner());
        into.queue.extend(retries.try_iter());
    }
}

/// Failed deliveries waiting for their backoff to pass. A broker that
/// fails every request is not asked again in a loop: the failed records
/// wait, and the in-flight limit holds new ones.
pub(super) struct Resends {
    queue: Vec<Retry>,
    /// When the queue goes out; `None` while it is empty.
    at: Option<Instant>,
    backoff: Backoff,
}

impl Resends {
    /// An empty queue with the configured backoff.
    pub(super) fn new(config: &Config) -> Self {
        Self {
            queue: Vec::new(),
            at: None,
            backoff: Backoff::new(
                Duration::from_millis(config.worker.resend_backoff_ms),
                Duration::from_millis(config.worker.resend_backoff_max_ms),
            ),
        }
    }

    /// The records to send again now, if their backoff has passed. `acked`
    /// says whether deliveries succeeded since the last call (which resets
    /// the backoff once nothing is waiting).
    pub(super) fn due(&mut self, now: Instant, acked: bool) -> Vec<Retry> {
        if self.queue.is_empty() {
            if acked {
                self.backoff.reset();
            }
            return Vec::new();
        }
        let due = *self
            .at
            .get_or_insert_with(|| now + self.backoff.next_delay(jitter()));
        if now < due {
            return Vec::new();
        }
        self.at = None;
        std::mem::take(&mut self.queue)
    }
}

/// A number in [0, 1) that differs between workers and calls: enough to
/// keep workers that failed together from retrying together.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0
}
