//! Conformance outcomes as JUnit XML, so CI systems show each case: one `<testsuite>` per
//! transport, one `<testcase>` per case; a failure is a `<failure>`, an unsupported case a
//! `<skipped>` carrying its reason (never a pass).

use std::fmt::Write as _;

use crate::conformance::{CaseOutcome, Verdict};

/// Escapes text for XML attributes and content.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML document for `outcomes`.
pub fn render(outcomes: &[CaseOutcome]) -> String {
    let mut transports: Vec<&str> = Vec::new();
    for o in outcomes {
        if !transports.contains(&o.transport.as_str()) {
            transports.push(&o.transport);
        }
    }
    let count = |v: Verdict, t: Option<&str>| {
        outcomes
            .iter()
            .filter(|o| o.verdict == v && t.is_none_or(|t| o.transport == t))
            .count()
    };
    let secs = |t: Option<&str>| {
        outcomes
            .iter()
            .filter(|o| t.is_none_or(|t| o.transport == t))
            .map(|o| o.elapsed_ms)
            .sum::<f64>()
            / 1e3
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"wirebench conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        outcomes.len(),
        count(Verdict::Fail, None),
        count(Verdict::Unsupported, None),
        secs(None)
    );
    for t in transports {
        let cases: Vec<&CaseOutcome> = outcomes.iter().filter(|o| o.transport == t).collect();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
            esc(t),
            cases.len(),
            count(Verdict::Fail, Some(t)),
            count(Verdict::Unsupported, Some(t)),
            secs(Some(t))
        );
        for o in cases {
            let _ = write!(
                x,
                "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\"",
                esc(&o.transport),
                esc(&o.group),
                esc(&o.case),
                o.elapsed_ms / 1e3
            );
            let detail = o.detail.as_deref().unwrap_or("");
            match o.verdict {
                Verdict::Pass if detail.is_empty() => x.push_str("/>\n"),
                Verdict::Pass => {
                    let _ = writeln!(
                        x,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        esc(detail)
                    );
                }
                Verdict::Fail => {
                    let first = detail.lines().next().unwrap_or("failed");
                    let _ = writeln!(
                        x,
                        ">\n      <failure message=\"{}\" type=\"conformance\">{}</failure>\n    </testcase>",
                        esc(first),
                        esc(detail)
                    );
                }
                Verdict::Unsupported => {
                    let _ = writeln!(
                        x,
                        ">\n      <skipped message=\"unsupported: {}\"/>\n    </testcase>",
                        esc(detail)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(case: &str, t: &str, v: Verdict, detail: Option<&str>) -> CaseOutcome {
        CaseOutcome {
            case: case.into(),
            group: "g".into(),
            transport: t.into(),
            verdict: v,
            detail: detail.map(str::to_owned),
            elapsed_ms: 1500.0,
        }
    }

    #[test]
    fn each_case_is_a_testcase_with_its_verdict() {
        let x = render(&[
            o("a", "tcp", Verdict::Pass, None),
            o(
                "b",
                "tcp",
                Verdict::Fail,
                Some("got <1> & \"2\"\nsecond line"),
            ),
            o("c", "inproc", Verdict::Unsupported, Some("no wire")),
        ]);
        assert!(x.starts_with("<?xml"));
        assert!(x.contains(
            "<testsuites name=\"wirebench conformance\" tests=\"3\" failures=\"1\" skipped=\"1\""
        ));
        assert!(x.contains("<testsuite name=\"tcp\" tests=\"2\" failures=\"1\""));
        assert!(x.contains("<testcase classname=\"tcp.g\" name=\"a\" time=\"1.500\"/>"));
        assert!(x.contains("<failure message=\"got &lt;1&gt; &amp; &quot;2&quot;\""));
        assert!(x.contains("<skipped message=\"unsupported: no wire\"/>"));
        // Balanced: every opened testcase/testsuite is closed.
        assert_eq!(
            x.matches("<testsuite ").count(),
            x.matches("</testsuite>").count()
        );
        assert_eq!(
            x.matches("<testcase ").count(),
            x.matches("</testcase>").count() + x.matches("\"/>\n").count()
                - x.matches("<skipped").count()
        );
    }

    #[test]
    fn control_characters_cannot_break_the_document() {
        assert_eq!(esc("a\u{1}b"), "a\\u{1}b");
        assert_eq!(esc("tab\tok"), "tab\tok");
    }
}
