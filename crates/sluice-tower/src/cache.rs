//! A small memo of the keys of recent clients, so that a client's key is built (escaped,
//! copied into its shared string) once rather than on every request.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use sluice_core::{Key, KeyError};

/// Slots in one cache: direct-mapped by address, one key each (about 12 KiB).
const SLOTS: usize = 256;

/// The keys of recent client addresses in one domain (the first domain it is asked for;
/// keys of any other domain are built every time).
///
/// Bounded and lock-free for readers in effect: a slot is taken with `try_lock`, and a
/// busy slot is skipped (the key is built as without the cache), so no request ever waits
/// on it. A clone starts empty. Memoisation only: a hit returns exactly the key a miss
/// builds.
#[derive(Default)]
pub(crate) struct IpKeys {
    domain: OnceLock<Box<str>>,
    slots: OnceLock<Box<[Slot]>>,
}

/// One address and its key, or nothing yet.
type Slot = Mutex<Option<(IpAddr, Key)>>;

impl IpKeys {
    /// The key of `ip` in `domain`, from the cache or from `build`.
    pub(crate) fn get(
        &self,
        domain: &str,
        ip: IpAddr,
        build: impl FnOnce() -> Result<Key, KeyError>,
    ) -> Result<Key, KeyError> {
        if **self.domain.get_or_init(|| domain.into()) != *domain {
            return build();
        }
        let slots = self
            .slots
            .get_or_init(|| (0..SLOTS).map(|_| Mutex::new(None)).collect());
        let Some(slot) = slots.get(index(ip)) else {
            return build();
        };
        if let Ok(cached) = slot.try_lock()
            && let Some((cached_ip, key)) = &*cached
            && *cached_ip == ip
        {
            return Ok(key.clone());
        }
        let key = build()?;
        if let Ok(mut cached) = slot.try_lock() {
            *cached = Some((ip, key.clone()));
        }
        Ok(key)
    }
}

/// The slot of `ip`: a multiplicative hash of the address's bits.
fn index(ip: IpAddr) -> usize {
    let bits = match ip {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            // The halves folded together; truncating to the low half is the point.
            #[allow(clippy::cast_possible_truncation)]
            let folded = (bits as u64) ^ ((bits >> 64) as u64);
            folded
        }
    };
    let hash = bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
    usize::try_from(hash).unwrap_or(0) % SLOTS
}

impl Clone for IpKeys {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for IpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpKeys")
            .field("domain", &self.domain.get())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(domain: &str, ip: IpAddr) -> Result<Key, KeyError> {
        Key::new(domain, [("ip", ip.to_string())])
    }

    #[test]
    fn hits_are_the_keys_a_miss_builds() {
        let cache = IpKeys::default();
        let mut built = 0;
        for round in 0..3 {
            for last in 0..=255u8 {
                for ip in [
                    IpAddr::from([10, 0, 0, last]),
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(last)]),
                ] {
                    let key = cache
                        .get("per-ip", ip, || {
                            built += 1;
                            build("per-ip", ip)
                        })
                        .expect("valid key");
                    assert_eq!(
                        key,
                        build("per-ip", ip).expect("valid key"),
                        "round {round}"
                    );
                }
            }
        }
        // Some addresses share a slot and evict each other, but most stay.
        assert!(built < 3 * 512, "{built}");
        // Another domain is never served from this cache.
        let ip = IpAddr::from([10, 0, 0, 1]);
        let other = cache
            .get("other", ip, || build("other", ip))
            .expect("valid key");
        assert_eq!(other.as_str(), "other|ip=10.0.0.1");
    }
}
