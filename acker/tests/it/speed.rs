//! How long a track + ack pair takes. Run with
//! `cargo test -p acker --release -- --ignored --nocapture track_ack`.

use std::hint::black_box;
use std::time::Instant;

use acker::{AckResult, Acker, AckerConfig, TopicPartition};

#[test]
#[ignore = "timing; run in release mode"]
fn track_ack_ns_per_record() {
    const RECORDS: i64 = 10_000_000;
    const WINDOW: i64 = 4096;
    let mut acker = Acker::new(AckerConfig::default(), Instant::now());
    let tps: Vec<_> = (0..4).map(|p| TopicPartition::new("bro_conn", p)).collect();
    let epochs: Vec<_> = tps.iter().map(|tp| acker.assign(tp.clone())).collect();
    // Acks come back out of order: record n is acked when n + WINDOW is
    // taken, in a scrambled order within each block of 64.
    let start = Instant::now();
    for n in 0..RECORDS {
        let p = (n % 4) as usize;
        let offset = n / 4;
        acker.track(&tps[p], epochs[p], offset, Some(n)).unwrap();
        if n >= WINDOW {
            let done = n - WINDOW;
            let done = (done & !63) | ((done * 37) & 63);
            let dp = (done % 4) as usize;
            let result = acker.ack(&tps[dp], epochs[dp], done / 4);
            assert_eq!(black_box(result), AckResult::Acked);
        }
    }
    let elapsed = start.elapsed();
    let ns = elapsed.as_nanos() as f64 / RECORDS as f64;
    println!(
        "track + ack: {ns:.1} ns per record, {} in flight",
        acker.total_in_flight()
    );
}

#[test]
#[ignore = "timing; run in release mode"]
fn track_ack_ns_per_record_on_one_partition_state() {
    use acker::{Epoch, PartitionState};
    const RECORDS: i64 = 10_000_000;
    const WINDOW: i64 = 4096;
    let mut state = PartitionState::new(Epoch::new(1));
    let start = Instant::now();
    for n in 0..RECORDS {
        state.track(n, Some(n)).unwrap();
        if n >= WINDOW {
            let done = n - WINDOW;
            let done = (done & !63) | ((done * 37) & 63);
            assert_eq!(black_box(state.ack(done)), AckResult::Acked);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / RECORDS as f64;
    println!("PartitionState track + ack: {ns:.1} ns per record");
}
