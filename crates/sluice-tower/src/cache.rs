//! Small memos of the keys of recent clients and routes, so that a key is built (escaped,
//! copied into its shared string) once rather than on every request.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use http::Method;
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

/// Slots in one route cache: direct-mapped by a hash of the route, one key each.
const ROUTE_SLOTS: usize = 64;

/// The longest path (in bytes) a route cache keeps; a longer one is built every time.
/// Without axum's `MatchedPath` the path is the client's, so each slot stays small.
const MAX_CACHED_PATH: usize = 256;

/// The longest method (in bytes) a route cache keeps: the standard ones and short
/// extensions.
const MAX_CACHED_METHOD: usize = 16;

/// The keys of recent routes (method, component name and path) in one domain (the first
/// domain it is asked for; keys of any other domain are built every time).
///
/// As [`IpKeys`]: bounded (64 slots, paths of at most 256 bytes), slots taken with
/// `try_lock` and skipped when busy, a clone starts empty, and a hit compares the route
/// exactly, so it returns exactly the key a miss builds.
#[derive(Default)]
pub(crate) struct RouteKeys {
    domain: OnceLock<Box<str>>,
    slots: OnceLock<Box<[RouteSlot]>>,
}

/// One route and its key, or nothing yet.
type RouteSlot = Mutex<Option<RouteEntry>>;

/// A cached route: what was asked for, and its key.
struct RouteEntry {
    method: Method,
    /// The name of the path's component (`path` or `route`).
    name: &'static str,
    path: Box<str>,
    key: Key,
}

impl RouteKeys {
    /// The key of `method` and `path` (the component `name`) in `domain`, from the cache
    /// or from `build`.
    pub(crate) fn get(
        &self,
        domain: &str,
        method: &Method,
        name: &'static str,
        path: &str,
        build: impl FnOnce() -> Result<Key, KeyError>,
    ) -> Result<Key, KeyError> {
        if path.len() > MAX_CACHED_PATH
            || method.as_str().len() > MAX_CACHED_METHOD
            || **self.domain.get_or_init(|| domain.into()) != *domain
        {
            return build();
        }
        let slots = self
            .slots
            .get_or_init(|| (0..ROUTE_SLOTS).map(|_| Mutex::new(None)).collect());
        let Some(slot) = slots.get(route_index(method, name, path)) else {
            return build();
        };
        if let Ok(cached) = slot.try_lock()
            && let Some(entry) = &*cached
            && entry.method == *method
            && entry.name == name
            && *entry.path == *path
        {
            return Ok(entry.key.clone());
        }
        let key = build()?;
        if let Ok(mut cached) = slot.try_lock() {
            *cached = Some(RouteEntry {
                method: method.clone(),
                name,
                path: path.into(),
                key: key.clone(),
            });
        }
        Ok(key)
    }
}

/// The slot of a route: FNV-1a over its parts, spread by a multiplicative hash. Not
/// keyed: a client that aims its paths at one slot only evicts keys, which costs what a
/// path never seen before costs anyway.
fn route_index(method: &Method, name: &str, path: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [method.as_str(), name, path] {
        for &byte in part.as_bytes().iter().chain([&0xff]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let hash = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
    usize::try_from(hash).unwrap_or(0) % ROUTE_SLOTS
}

impl Clone for RouteKeys {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for RouteKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteKeys")
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

    fn build_route(domain: &str, method: &Method, path: &str) -> Result<Key, KeyError> {
        Key::new(domain, [("method", method.as_str()), ("path", path)])
    }

    #[test]
    fn route_hits_are_the_keys_a_miss_builds() {
        let cache = RouteKeys::default();
        let methods = [Method::GET, Method::POST, Method::DELETE];
        let paths: Vec<String> = (0..8)
            .map(|i| format!("/api/items/{i}"))
            .chain(["/".to_owned(), "/a|b=c%d".to_owned(), "/ünï".to_owned()])
            .collect();
        let mut built = 0;
        for round in 0..3 {
            for method in &methods {
                for path in &paths {
                    let key = cache
                        .get("per-route", method, "path", path, || {
                            built += 1;
                            build_route("per-route", method, path)
                        })
                        .expect("valid key");
                    assert_eq!(
                        key,
                        build_route("per-route", method, path).expect("valid key"),
                        "round {round}"
                    );
                }
            }
        }
        // Some routes share a slot and evict each other, but most stay.
        let routes = methods.len() * paths.len();
        assert!(built < 2 * routes, "{built}");
        // The same path under another component name is another key.
        let route = cache
            .get("per-route", &Method::GET, "route", "/", || {
                Key::new("per-route", [("method", "GET"), ("route", "/")])
            })
            .expect("valid key");
        assert_eq!(route.as_str(), "per-route|method=GET|route=/");
        // A long path is never cached: built on every request.
        let long = format!("/{}", "x".repeat(MAX_CACHED_PATH));
        let mut long_built = 0;
        for _ in 0..3 {
            let key = cache
                .get("per-route", &Method::GET, "path", &long, || {
                    long_built += 1;
                    build_route("per-route", &Method::GET, &long)
                })
                .expect("valid key");
            assert_eq!(
                key,
                build_route("per-route", &Method::GET, &long).expect("valid key")
            );
        }
        assert_eq!(long_built, 3);
        // Another domain is never served from this cache.
        let mut other_built = 0;
        for _ in 0..2 {
            let other = cache
                .get("other", &Method::GET, "path", "/", || {
                    other_built += 1;
                    build_route("other", &Method::GET, "/")
                })
                .expect("valid key");
            assert_eq!(other.as_str(), "other|method=GET|path=/");
        }
        assert_eq!(other_built, 2);
    }
}
