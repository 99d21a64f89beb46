//! A writer of the Prometheus text exposition format (version 0.0.4), the body of a
//! `/metrics` endpoint: a family's `# HELP` and `# TYPE` lines, then its samples.
//!
//! It is a text builder only: it keeps no metric and reads none. Label values and help
//! texts are escaped as the format asks (backslash, double quote and line feed in a label
//! value; backslash and line feed in a help text), so any text makes exactly one line.
//! Metric and label names are the caller's constants and are written as they are.
//!
//! ```
//! use sluice_http::prometheus::{MetricType, TextWriter};
//!
//! let mut out = TextWriter::new();
//! out.family("requests_total", MetricType::Counter, "Requests served.");
//! out.sample("requests_total", &[("route", "/a\"b")], 3);
//! let text = out.finish();
//! assert_eq!(
//!     text.split_terminator('\n').collect::<Vec<_>>(),
//!     [
//!         "# HELP requests_total Requests served.",
//!         "# TYPE requests_total counter",
//!         r#"requests_total{route="/a\"b"} 3"#,
//!     ]
//! );
//! ```

use std::fmt::Write as _;

/// The type of a metric family, as its `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (reset on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// `_bucket{le=...}`, `_sum` and `_count` samples.
    Histogram,
}

impl MetricType {
    /// `counter`, `gauge` or `histogram`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Builds one exposition: [`family`](Self::family) before each family's samples, then
/// [`finish`](Self::finish).
#[derive(Clone, Debug, Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty exposition with room for `bytes` of text.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            out: String::with_capacity(bytes),
        }
    }

    /// The `# HELP` and `# TYPE` lines of family `name`.
    pub fn family(&mut self, name: &str, kind: MetricType, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(&mut self.out, help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.name());
        self.out.push('\n');
    }

    /// One sample line: `name{label="value",...} value`, without braces when `labels` is
    /// empty.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.name_and_labels(name, labels);
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample line with a floating-point value: as Rust writes it when finite (never in
    /// exponent notation), else `+Inf`, `-Inf` or `NaN`.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.name_and_labels(name, labels);
        self.out.push(' ');
        write_f64(&mut self.out, value);
        self.out.push('\n');
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The exposition.
    pub fn finish(self) -> String {
        self.out
    }

    fn name_and_labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(label);
            self.out.push_str("=\"");
            escape_label_value(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push('}');
    }
}

/// `value` as a label value wants it: backslash, double quote and line feed escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `help` as a `# HELP` line wants it: backslash and line feed escaped.
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value in the format's spelling.
fn write_f64(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        escape_label_value(&mut out, value);
        out
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escaped(r"a\b"), r"a\\b");
        assert_eq!(escaped(r#"a"b"#), r#"a\"b"#);
        assert_eq!(escaped("a\nb"), r"a\nb");
        assert_eq!(escaped("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(
            escaped("\\n"),
            "\\\\n",
            "a backslash then n is not a newline"
        );
        assert_eq!(
            escaped("tab\t, é, \r"),
            "tab\t, é, \r",
            "nothing else is escaped"
        );
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let mut out = TextWriter::new();
        out.family("x", MetricType::Gauge, "a \"b\" c\\d\ne");
        assert_eq!(
            out.finish(),
            "# HELP x a \"b\" c\\\\d\\ne\n# TYPE x gauge\n"
        );
    }

    #[test]
    fn samples_with_and_without_labels() {
        let mut out = TextWriter::with_capacity(64);
        out.family("h", MetricType::Histogram, "Latency.");
        out.sample("h_bucket", &[("le", "0.5")], 2);
        out.sample("h_count", &[], u64::MAX);
        out.sample_f64("h_sum", &[], 1.00204);
        out.sample_f64("g", &[("a", "1"), ("b", "2")], 0.000_025);
        assert_eq!(
            out.as_str(),
            "# HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 2\n\
             h_count 18446744073709551615\nh_sum 1.00204\ng{a=\"1\",b=\"2\"} 0.000025\n"
        );
    }

    #[test]
    fn non_finite_values_are_spelled_as_the_format_wants() {
        let mut out = TextWriter::new();
        for value in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -0.5] {
            out.sample_f64("v", &[], value);
        }
        assert_eq!(out.finish(), "v +Inf\nv -Inf\nv NaN\nv -0.5\n");
    }
}
