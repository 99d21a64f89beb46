//! The RFC 9457 problem details body of a 429 response.

use serde_json::{Value, json};
use sluice_core::Decision;

use crate::ceil_secs;

/// The media type of the body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The problem type URI. sluice uses its own type rather than `about:blank` because the body
/// carries an extension member (`violated-policies`), and RFC 9457 §4.2.1 reserves
/// `about:blank` for problems with no more meaning than the status code.
pub const PROBLEM_TYPE: &str = "https://sluice.dev/problems/rate-limited";

/// The problem details object for a refused request, from each limit's name and decision: `type`, `title`
/// (`Too Many Requests`), `status` (429), `detail` (a sentence with the wait), and
/// `violated-policies` (the names of the refused items, in order).
///
/// The wait in `detail` is the largest `retry_after` of the refused items, in whole seconds
/// rounded up, as in `Retry-After`.
pub fn problem_json(items: &[(&str, &Decision)]) -> Value {
    let refused: Vec<&(&str, &Decision)> = items.iter().filter(|(_, d)| !d.allowed).collect();
    let names: Vec<&str> = refused.iter().map(|(name, _)| *name).collect();
    let wait = refused.iter().filter_map(|(_, d)| d.retry_after).max();
    let quoted = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let subject = match names.len() {
        0 => "Rate limit exceeded".to_owned(),
        1 => format!("Rate limit {quoted} exceeded"),
        _ => format!("Rate limits {quoted} exceeded"),
    };
    let detail = match wait {
        Some(wait) => {
            let secs = ceil_secs(wait);
            let unit = if secs == 1 { "second" } else { "seconds" };
            format!("{subject}; retry in {secs} {unit}.")
        }
        None if !refused.is_empty() => {
            format!(
                "{subject}; the request costs more than the limit admits, so retrying will not help."
            )
        }
        None => format!("{subject}."),
    };
    json!({
        "type": PROBLEM_TYPE,
        "title": "Too Many Requests",
        "status": 429,
        "detail": detail,
        "violated-policies": names,
    })
}

/// The body of [`problem_json`] serialised, with its content type.
pub fn problem_body(items: &[(&str, &Decision)]) -> (&'static str, Vec<u8>) {
    (
        PROBLEM_CONTENT_TYPE,
        problem_json(items).to_string().into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn body_for_refusals() {
        let ok = Decision::allow(100, 50, Duration::from_secs(30));
        let short = Decision::deny(100, 0, Duration::from_secs(60), Duration::from_millis(100));
        let long = Decision::deny(100, 0, Duration::from_secs(60), Duration::from_millis(2500));
        let (content_type, body) =
            problem_body(&[("global", &ok), ("user", &short), ("ip", &long)]);
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            r#"{"detail":"Rate limits \"user\", \"ip\" exceeded; retry in 3 seconds.","status":429,"title":"Too Many Requests","type":"https://sluice.dev/problems/rate-limited","violated-policies":["user","ip"]}"#
        );
        let one = problem_json(&[("user", &short)]);
        assert_eq!(
            one["detail"],
            "Rate limit \"user\" exceeded; retry in 1 second."
        );
        let never = problem_json(&[("user", &Decision::exceeds_capacity(100, 0, Duration::ZERO))]);
        assert_eq!(
            never["detail"],
            "Rate limit \"user\" exceeded; the request costs more than the limit admits, so retrying will not help."
        );
        assert_eq!(never["violated-policies"], json!(["user"]));
    }
}
