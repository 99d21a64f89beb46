//! Static dispatch from an algorithm's name to its type, for every store that keeps
//! per-algorithm state (the memory store, the conformance model).

/// Calls `$body` with `$A` bound to the algorithm type for `$kind`.
macro_rules! with_algorithm {
    ($kind:expr, $A:ident => $body:expr) => {
        match $kind {
            sluice_core::AlgorithmKind::Gcra => {
                type $A = sluice_core::Gcra;
                $body
            }
            sluice_core::AlgorithmKind::FixedWindow => {
                type $A = sluice_core::FixedWindow;
                $body
            }
            sluice_core::AlgorithmKind::SlidingWindow => {
                type $A = sluice_core::SlidingWindow;
                $body
            }
            sluice_core::AlgorithmKind::SlidingLog => {
                type $A = sluice_core::SlidingLog;
                $body
            }
            sluice_core::AlgorithmKind::Concurrency => {
                type $A = sluice_core::Concurrency;
                $body
            }
        }
    };
}
pub(crate) use with_algorithm;
