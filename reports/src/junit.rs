//! Conformance outcomes and load verdicts as JUnit XML, so CI systems show each: one
//! `<testsuite>` per transport's conformance, one `<testcase>` per case (a failure is a
//! `<failure>`, an unsupported case a `<skipped>` carrying its reason, never a pass); and a
//! `load` suite with one `<testcase>` per load run — an open loop that did not sustain its
//! offered rate is a `<failure>`, a run whose numbers measure the tool (invalid) an `<error>`.

use std::fmt::Write as _;

use crate::conformance::{CaseOutcome, Verdict};
use crate::results::RunRecord;

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

/// The JUnit XML document for conformance `outcomes` and load `runs`.
pub fn render(outcomes: &[CaseOutcome], runs: &[RunRecord]) -> String {
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
    let load = LoadCounts::of(runs);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"wirebench\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        outcomes.len() + runs.len(),
        count(Verdict::Fail, None) + load.failures,
        load.errors,
        count(Verdict::Unsupported, None),
        secs(None) + load.secs
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
            case(&mut x, o);
        }
        x.push_str("  </testsuite>\n");
    }
    if !runs.is_empty() {
        let _ = writeln!(
            x,
            "  <testsuite name=\"load\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3}\">",
            runs.len(),
            load.failures,
            load.errors,
            load.secs
        );
        for r in runs {
            load_case(&mut x, r);
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// One conformance case.
fn case(x: &mut String, o: &CaseOutcome) {
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

/// The load suite's totals.
struct LoadCounts {
    failures: usize,
    errors: usize,
    secs: f64,
}

impl LoadCounts {
    fn of(runs: &[RunRecord]) -> LoadCounts {
        LoadCounts {
            failures: runs
                .iter()
                .filter(|r| {
                    let label = r.validity.label();
                    label == "UNSUSTAINED" || (label != "INVALID" && r.breaches().next().is_some())
                })
                .count(),
            errors: runs
                .iter()
                .filter(|r| r.validity.label() == "INVALID")
                .count(),
            secs: runs.iter().map(|r| r.summary.elapsed_s).sum(),
        }
    }
}

/// One load run: its figures as output, its verdict as a failure or an error.
fn load_case(x: &mut String, r: &RunRecord) {
    let s = &r.summary;
    let _ = writeln!(
        x,
        "    <testcase classname=\"load.{}\" name=\"{}\" time=\"{:.3}\">",
        esc(&r.transport),
        esc(&r.point),
        s.elapsed_s
    );
    let breaches: Vec<String> = r
        .breaches()
        .map(|b| format!("{} (measured {})", b.threshold, b.measured))
        .collect();
    // An invalid run's figures say nothing, its thresholds included: an error, not a failure.
    if r.validity.label() == "INVALID" {
        let _ = writeln!(
            x,
            "      <error message=\"invalid: {}\" type=\"invalid\"/>",
            esc(&r.validity.why())
        );
    } else if r.validity.label() == "UNSUSTAINED" {
        let _ = writeln!(
            x,
            "      <failure message=\"unsustained: {}\" type=\"unsustained\"/>",
            esc(&r.validity.why())
        );
    } else if !breaches.is_empty() {
        let _ = writeln!(
            x,
            "      <failure message=\"threshold breached: {}\" type=\"threshold\"/>",
            esc(&breaches.join("; "))
        );
    }
    let _ = writeln!(
        x,
        "      <system-out>{:.0} calls/s, p50 {} ns, p99 {} ns, {} errors</system-out>\n    </testcase>",
        s.throughput_per_s, s.latency.p50_ns, s.latency.p99_ns, s.errors
    );
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
        let x = render(
            &[
                o("a", "tcp", Verdict::Pass, None),
                o(
                    "b",
                    "tcp",
                    Verdict::Fail,
                    Some("got <1> & \"2\"\nsecond line"),
                ),
                o("c", "inproc", Verdict::Unsupported, Some("no wire")),
            ],
            &[],
        );
        assert!(x.starts_with("<?xml"));
        assert!(x.contains(
            "<testsuites name=\"wirebench\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""
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

    fn run(point: &str, validity: crate::results::Validity) -> RunRecord {
        let mut r = RunRecord {
            transport: "tcp".into(),
            point: point.into(),
            validity,
            ..RunRecord::default()
        };
        r.summary.elapsed_s = 2.0;
        r
    }

    #[test]
    fn each_load_run_is_a_testcase_failing_when_unsustained_and_erring_when_invalid() {
        use crate::results::Validity;
        let runs = [
            run(
                "ok",
                Validity {
                    valid: true,
                    ..Validity::default()
                },
            ),
            run(
                "slow",
                Validity {
                    unsustained: Some("offered 5000/s, achieved 837/s".into()),
                    ..Validity::default()
                },
            ),
            run(
                "broken",
                Validity {
                    reasons: vec!["generator lag".into()],
                    ..Validity::default()
                },
            ),
        ];
        let x = render(&[], &runs);
        assert!(x.contains("tests=\"3\" failures=\"1\" errors=\"1\""), "{x}");
        assert!(x.contains("<testsuite name=\"load\" tests=\"3\" failures=\"1\" errors=\"1\""));
        assert!(x.contains("<testcase classname=\"load.tcp\" name=\"slow\" time=\"2.000\">"));
        assert!(x.contains(
            "<failure message=\"unsustained: offered 5000/s, achieved 837/s\" type=\"unsustained\"/>"
        ));
        assert!(x.contains("<error message=\"invalid: generator lag\" type=\"invalid\"/>"));
        assert_eq!(
            x.matches("<testcase ").count(),
            x.matches("</testcase>").count()
        );
    }

    #[test]
    fn control_characters_cannot_break_the_document() {
        assert_eq!(esc("a\u{1}b"), "a\\u{1}b");
        assert_eq!(esc("tab\tok"), "tab\tok");
    }
}
