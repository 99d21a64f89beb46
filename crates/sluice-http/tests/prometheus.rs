//! Any label value or help text makes one line of the exposition, which reads back to the
//! same text.

use proptest::prelude::*;
use sluice_http::prometheus::{MetricType, TextWriter};

/// Any text, with the escaped characters often.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a\\\\\"\n\r\t ]{0,12}"]
}

/// The label value of a `name{label="..."} value` line, unescaped; `None` when the line is
/// not one valid sample with that one label.
fn read_label(line: &str, name: &str, label: &str) -> Option<String> {
    let mut rest = line.strip_prefix(name)?.strip_prefix('{')?;
    rest = rest.strip_prefix(label)?.strip_prefix("=\"")?;
    let mut value = String::new();
    let mut chars = rest.char_indices();
    loop {
        match chars.next()? {
            (_, '\\') => match chars.next()? {
                (_, '\\') => value.push('\\'),
                (_, '"') => value.push('"'),
                (_, 'n') => value.push('\n'),
                _ => return None,
            },
            (_, '\n') => return None,
            (i, '"') => {
                let number = rest[i + 1..].strip_prefix("} ")?;
                number.parse::<u64>().ok()?;
                return Some(value);
            }
            (_, c) => value.push(c),
        }
    }
}

/// A help text, unescaped; `None` when it holds an escape the format does not have.
fn read_help(escaped: &str) -> Option<String> {
    let mut help = String::new();
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => help.push('\\'),
                'n' => help.push('\n'),
                _ => return None,
            },
            c => help.push(c),
        }
    }
    Some(help)
}

proptest! {
    #[test]
    fn any_label_value_makes_one_valid_line(value in text(), n in any::<u64>()) {
        let mut out = TextWriter::new();
        out.sample("sluice_x_total", &[("domain", &value)], n);
        let text = out.finish();
        let line = text.strip_suffix('\n').expect("ends its line");
        prop_assert!(!line.contains('\n'), "one line: {:?}", text);
        prop_assert_eq!(read_label(line, "sluice_x_total", "domain"), Some(value));
        let number = format!(" {n}");
        prop_assert!(line.ends_with(&number));
    }

    #[test]
    fn any_help_makes_one_help_line(help in text()) {
        let mut out = TextWriter::new();
        out.family("sluice_x", MetricType::Counter, &help);
        let text = out.finish();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        prop_assert_eq!(lines.len(), 2, "{:?}", text);
        prop_assert!(lines[0].starts_with("# HELP sluice_x "));
        prop_assert_eq!(lines[1], "# TYPE sluice_x counter");
        prop_assert_eq!(read_help(&lines[0]["# HELP sluice_x ".len()..]), Some(help));
    }
}
