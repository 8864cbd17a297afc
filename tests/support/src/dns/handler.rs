//! The server's side of a query: classify it, wait out the scripted latency,
//! and encode the answer its [`Behaviour`] gives (PTR, NXDOMAIN with a SOA,
//! an error code, or nothing at all), counting it on arrival.
//!
//! ```text
//! UDP query --> Handler::handle_request --> classify --> Behaviour (override, mix, default)
//!                   |  count (total, per address, in flight)        |
//!                   '<-- PTR / NXDOMAIN + SOA / REFUSED / SERVFAIL / silence
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::domain::Label;
use hickory_proto::rr::rdata::{PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::{Answer, Behaviour, synth_name};

/// State shared between the test's handle and the request handler.
pub(super) struct Shared {
    pub(super) behaviour: Mutex<Arc<Behaviour>>,
    pub(super) total: AtomicU64,
    pub(super) per_ip: Mutex<HashMap<IpAddr, u64>>,
    pub(super) in_flight: AtomicU64,
    pub(super) peak: AtomicU64,
}

/// Counts one query as held from its arrival until it is dropped.
struct Held<'a>(&'a Shared);

impl<'a> Held<'a> {
    fn new(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) struct Handler {
    pub(super) shared: Arc<Shared>,
}

/// What a query asks for, as far as this server cares.
enum Target {
    /// A PTR query for a whole address.
    Ptr(IpAddr),
    /// A PTR query for a name that is not a whole `in-addr.arpa.` / `ip6.arpa.` address.
    UnknownName,
    /// Anything else: another type, opcode, or not exactly one query.
    Unsupported,
}

/// The message to send, once delays are over.
enum Reply {
    Ptr(Name),
    NxDomain,
    Code(ResponseCode),
    Silence,
}

fn classify(request: &Request) -> Target {
    let queries = request.queries.queries();
    if request.metadata.op_code != OpCode::Query || queries.len() != 1 {
        return Target::Unsupported;
    }
    let query = &queries[0];
    if query.query_type() != RecordType::PTR {
        return Target::Unsupported;
    }
    match query.original().name().parse_arpa_name() {
        Ok(net) if net.prefix_len() == net.max_prefix_len() => Target::Ptr(net.addr()),
        _ => Target::UnknownName,
    }
}

/// Builds a name from raw label bytes, keeping as much as DNS can carry.
pub(super) fn raw_name(text: &str) -> Name {
    let mut name = Name::root();
    for part in text.split('.').filter(|part| !part.is_empty()) {
        let bytes = &part.as_bytes()[..part.len().min(63)];
        let Ok(label) = Label::from_raw_bytes(bytes) else {
            continue;
        };
        match name.clone().append_label(label) {
            Ok(longer) => name = longer,
            Err(_) => break,
        }
    }
    name
}

/// The zone whose SOA goes with a negative answer for `name`.
fn soa_record(name: &Name, negative_ttl: u32) -> Record {
    let zone = ["in-addr.arpa.", "ip6.arpa."]
        .into_iter()
        .map(|zone| Name::from_ascii(zone).expect("static zone name"))
        .find(|zone| zone.zone_of(name))
        .unwrap_or_else(Name::root);
    let soa = SOA::new(
        Name::from_ascii("ns.example.test.").expect("static name"),
        Name::from_ascii("hostmaster.example.test.").expect("static name"),
        1,
        3600,
        600,
        86_400,
        negative_ttl,
    );
    Record::from_rdata(zone, negative_ttl, RData::SOA(soa))
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let nth = self.shared.total.fetch_add(1, Ordering::SeqCst);
        let _held = Held::new(&self.shared);
        let behaviour = Arc::clone(&lock(&self.shared.behaviour));
        let target = classify(request);
        if let Target::Ptr(ip) = target {
            *lock(&self.shared.per_ip).entry(ip).or_insert(0) += 1;
        }

        let mut latency = behaviour.latency;
        if let Some(mix) = &behaviour.mix {
            latency += mix.latency(nth);
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }

        let reply = match target {
            Target::Unsupported => Reply::Code(ResponseCode::Refused),
            Target::UnknownName => Reply::NxDomain,
            Target::Ptr(ip) => {
                let mixed;
                let mut answer = match (behaviour.overrides.get(&ip), &behaviour.mix) {
                    (Some(answer), _) => answer,
                    (None, Some(mix)) => {
                        mixed = mix.answer_for(ip, &behaviour.default);
                        &mixed
                    }
                    (None, None) => &behaviour.default,
                };
                while let Answer::Delay(delay, inner) = answer {
                    tokio::time::sleep(*delay).await;
                    answer = inner;
                }
                match answer {
                    Answer::Synth => Reply::Ptr(
                        Name::from_ascii(synth_name(ip)).expect("synthetic names are valid"),
                    ),
                    Answer::Name(text) => Reply::Ptr(raw_name(text)),
                    Answer::NxDomain => Reply::NxDomain,
                    Answer::ServFail => Reply::Code(ResponseCode::ServFail),
                    Answer::Silence => Reply::Silence,
                    Answer::Delay(..) => unreachable!("delays were waited out above"),
                }
            }
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;

        // Echo EDNS so a resolver that offered a bigger UDP payload gets one.
        let response_edns = request.edns.as_ref().map(|request_edns| {
            let mut edns = Edns::new();
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }

        let query_name = request
            .queries
            .queries()
            .first()
            .map(|query| query.original().name().clone())
            .unwrap_or_else(Name::root);
        let mut answers = Vec::new();
        let mut soa = Vec::new();
        match reply {
            Reply::Silence => {
                return ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                });
            }
            Reply::Ptr(target) => {
                answers.push(Record::from_rdata(
                    query_name,
                    behaviour.ttl,
                    RData::PTR(PTR(target)),
                ));
            }
            Reply::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                soa.push(soa_record(&query_name, behaviour.negative_ttl));
            }
            Reply::Code(code) => metadata.response_code = code,
        }

        let response = builder.build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            soa.iter(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "Test DNS server failed to send a response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
