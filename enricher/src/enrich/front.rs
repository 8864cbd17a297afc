//! A small per-thread front for L1 (keyed by address), and for the parts
//! of host names (keyed by the name, `enrich/domains.rs`).
//!
//! A hit in moka costs about a microsecond on this hardware: a hash, a walk
//! of a concurrent table whose nodes are cold in the CPU cache, a clock read,
//! a read record for the eviction policy and, every few hundred reads, that
//! policy's housekeeping on the reading thread. The thread that enriches (an
//! enrichment lane) reads two to four addresses per record, so that is a
//! quarter of its time. The front
//! is a two-way set-associative table owned by one thread (no locks, no
//! atomics beyond the `Arc` clone); only the slots in use are touched, so its
//! working set follows the hot addresses, not its size.
//!
//! Two ways rather than one: with 2,000 Zipf-distributed addresses in 4,096
//! direct-mapped slots, about 7% of reads found another address in the slot
//! (two hot addresses evicting each other) and went on to moka; with two ways
//! in 4,096 sets, about 1%.
//!
//! It holds what L1 returned, never anything else, and trusts it for at most
//! [`REFRESH`]: a hot address still reaches moka about once a second, so
//! moka's eviction policy keeps seeing it as hot, and anything L1 learns (a
//! replaced entry) is seen within that second. The caller also checks the
//! entry's own expiry and GeoIP generation, like for any L1 hit.

use std::borrow::Borrow;
use std::hash::BuildHasher;
use std::net::IpAddr;

use tokio::time::Instant;

/// Longest a slot is trusted before the address is read from L1 again.
pub(crate) const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Slots in a front; a power of two. 8,192 slots of 48 bytes: 384 KiB.
pub(crate) const SLOTS: usize = 8192;

/// Slots per set.
const WAYS: usize = 2;

/// A key of a front: what picks its set.
pub(crate) trait FrontKey {
    /// The key folded to 64 bits; `state` is the front's own hasher.
    fn fold(&self, state: &foldhash::fast::RandomState) -> u64;
}

impl FrontKey for IpAddr {
    fn fold(&self, _: &foldhash::fast::RandomState) -> u64 {
        match self {
            IpAddr::V4(v4) => u64::from(u32::from(*v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(*v6);
                (bits as u64) ^ ((bits >> 64) as u64).rotate_left(29)
            }
        }
    }
}

/// Names (`enrich/domains.rs`): hashed with the front's own keyed hasher,
/// since names in logs are chosen by whoever sends the traffic.
impl FrontKey for str {
    fn fold(&self, state: &foldhash::fast::RandomState) -> u64 {
        state.hash_one(self)
    }
}

impl FrontKey for String {
    fn fold(&self, state: &foldhash::fast::RandomState) -> u64 {
        self.as_str().fold(state)
    }
}

struct Slot<K, V> {
    key: K,
    value: V,
    until: Instant,
}

/// A two-way set-associative front: each key has a set of two slots; a new
/// key takes an empty slot of its set, else the one filled longer ago.
pub(crate) struct Front<K, V> {
    slots: Box<[Option<Slot<K, V>>]>,
    state: foldhash::fast::RandomState,
}

impl<K: FrontKey, V: Clone> Front<K, V> {
    /// A front of `slots` slots (rounded up to a power of two, at least one
    /// set).
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.max(WAYS).next_power_of_two();
        Self {
            slots: (0..slots).map(|_| None).collect(),
            state: foldhash::fast::RandomState::default(),
        }
    }

    fn sets(&self) -> usize {
        self.slots.len() / WAYS
    }

    /// Where `key`'s set lies in `slots`.
    fn set_range<Q: FrontKey + ?Sized>(&self, key: &Q) -> std::ops::Range<usize> {
        let first = self.index(key) * WAYS;
        first..first + WAYS
    }

    fn index<Q: FrontKey + ?Sized>(&self, key: &Q) -> usize {
        // Fibonacci hashing of the key folded to 64 bits: the top bits of
        // the product mix every input bit.
        let hash = key.fold(&self.state).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The number of sets is a power of two and at least 1.
        let bits = self.sets().trailing_zeros();
        if bits == 0 {
            0
        } else {
            (hash >> (64 - bits)) as usize
        }
    }

    /// The value held for `key`, if it was stored less than [`REFRESH`] ago.
    pub(crate) fn get<Q>(&self, key: &Q, now: Instant) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: FrontKey + Eq + ?Sized,
    {
        self.slots
            .get(self.set_range(key))
            .unwrap_or_default()
            .iter()
            .flatten()
            .find(|slot| slot.key.borrow() == key)
            .filter(|slot| now < slot.until)
            .map(|slot| &slot.value)
    }

    /// Holds `value` for `key` until `now + REFRESH`: in the slot that holds
    /// `key` already, else an empty one, else the one filled longer ago.
    pub(crate) fn put<Q>(&mut self, key: &Q, value: V, now: Instant)
    where
        K: Borrow<Q>,
        Q: FrontKey + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let range = self.set_range(key);
        let Some(set) = self.slots.get_mut(range) else {
            return;
        };
        let rank = |slot: &Option<Slot<K, V>>| match slot {
            Some(s) if s.key.borrow() == key => (0, None),
            None => (1, None),
            Some(s) => (2, Some(s.until)),
        };
        if let Some(slot) = set.iter_mut().min_by_key(|slot| rank(slot)) {
            *slot = Some(Slot {
                key: key.to_owned(),
                value,
                until: now + REFRESH,
            });
        }
    }

    /// The value held for `key` while `usable` says so, else what `load`
    /// returns, which is then held.
    pub(crate) fn get_or_load<Q>(
        &mut self,
        key: &Q,
        now: Instant,
        usable: impl Fn(&V) -> bool,
        load: impl FnOnce() -> Option<V>,
    ) -> Option<V>
    where
        K: Borrow<Q>,
        Q: FrontKey + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(value) = self.get(key, now).filter(|v| usable(v)) {
            return Some(value.clone());
        }
        let value = load()?;
        self.put(key, value.clone(), now);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn holds_an_address_for_the_refresh_interval_only() {
        let mut front: Front<IpAddr, i32> = Front::new(SLOTS);
        let now = Instant::now();
        assert_eq!(front.get(&v4(1), now), None);
        front.put(&v4(1), 7, now);
        assert_eq!(front.get(&v4(1), now), Some(&7));
        assert_eq!(front.get(&v4(1), now + REFRESH / 2), Some(&7));
        assert_eq!(front.get(&v4(1), now + REFRESH), None);
        assert_eq!(front.get(&v4(2), now), None);
    }

    #[test]
    fn an_unusable_value_is_loaded_again_and_a_failed_load_holds_nothing() {
        let mut front: Front<IpAddr, i32> = Front::new(SLOTS);
        let now = Instant::now();
        assert_eq!(front.get_or_load(&v4(1), now, |_| true, || None), None);
        assert_eq!(front.get(&v4(1), now), None);
        assert_eq!(
            front.get_or_load(&v4(1), now, |_| true, || Some(1)),
            Some(1)
        );
        assert_eq!(
            front.get_or_load(&v4(1), now, |_| true, || Some(2)),
            Some(1)
        );
        assert_eq!(
            front.get_or_load(&v4(1), now, |v| *v != 1, || Some(3)),
            Some(3)
        );
        assert_eq!(front.get(&v4(1), now), Some(&3));
    }

    #[test]
    fn a_third_address_in_a_set_replaces_the_older_and_never_reads_as_another() {
        // One set: every address collides.
        let mut front: Front<IpAddr, i32> = Front::new(1);
        let now = Instant::now();
        let later = now + std::time::Duration::from_millis(10);
        let v6 = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        front.put(&v4(1), 1, now);
        front.put(&v6, 2, later);
        assert_eq!(front.get(&v4(1), later), Some(&1));
        assert_eq!(front.get(&v6, later), Some(&2));
        // Refreshing an address keeps it in its own slot.
        front.put(&v4(1), 3, later);
        assert_eq!(front.get(&v6, later), Some(&2));
        front.put(&v4(2), 4, later + std::time::Duration::from_millis(10));
        assert_eq!(front.get(&v4(2), later), Some(&4));
        assert_eq!(front.get(&v4(1), later), None, "v4(1) was filled first");
        assert_eq!(front.get(&v6, later), Some(&2));
    }

    #[test]
    fn neighbouring_addresses_spread_over_the_slots() {
        let front: Front<IpAddr, u8> = Front::new(SLOTS);
        let used: std::collections::HashSet<usize> = (0..=255u8)
            .flat_map(|c| (0..=15u8).map(move |d| IpAddr::from([10, 0, c, d])))
            .map(|ip| front.index(&ip))
            .collect();
        // 4,096 addresses into 4,096 sets: a uniform hash fills about 63%.
        assert!(used.len() > front.sets() / 2, "{} sets used", used.len());
    }
}
