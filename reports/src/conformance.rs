//! Conformance outcomes as saved in results: one record per case × transport, and the
//! matrix rendered from them.

use serde::{Deserialize, Serialize};

/// A case's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The behaviour holds.
    Pass,
    /// The transport declares the capability but the behaviour does not hold.
    Fail,
    /// The transport does not declare a needed capability; `detail` says why.
    Unsupported,
}

impl Verdict {
    /// `pass`, `fail` or `unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Unsupported => "unsupported",
        }
    }
}

/// One case against one transport.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseOutcome {
    /// The case's name.
    pub case: String,
    /// Its group.
    pub group: String,
    /// The transport.
    pub transport: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The failure or unsupported reason, or a pass note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How long the case ran, in milliseconds.
    pub elapsed_ms: f64,
}

/// The case × transport matrix as aligned text (cases as rows, transports as columns).
pub fn matrix_text(outcomes: &[CaseOutcome]) -> String {
    let mut transports: Vec<&str> = Vec::new();
    let mut cases: Vec<(&str, &str)> = Vec::new();
    for o in outcomes {
        if !transports.contains(&o.transport.as_str()) {
            transports.push(&o.transport);
        }
        if !cases.iter().any(|(c, _)| *c == o.case) {
            cases.push((&o.case, &o.group));
        }
    }
    let case_w = cases.iter().map(|(c, _)| c.len()).max().unwrap_or(4).max(4);
    let group_w = cases.iter().map(|(_, g)| g.len()).max().unwrap_or(5).max(5);
    let col_w: Vec<usize> = transports.iter().map(|t| t.len().max(11)).collect();
    let mut out = format!("{:<group_w$}  {:<case_w$}", "group", "case");
    for (t, w) in transports.iter().zip(&col_w) {
        out.push_str(&format!("  {t:<w$}"));
    }
    out.push('\n');
    for (case, group) in &cases {
        out.push_str(&format!("{group:<group_w$}  {case:<case_w$}"));
        for (t, w) in transports.iter().zip(&col_w) {
            let cell = outcomes
                .iter()
                .find(|o| o.case == *case && o.transport == *t)
                .map_or("-", |o| match o.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "FAIL",
                    Verdict::Unsupported => "unsupported",
                });
            out.push_str(&format!("  {cell:<w$}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(case: &str, t: &str, v: Verdict) -> CaseOutcome {
        CaseOutcome {
            case: case.into(),
            group: "g".into(),
            transport: t.into(),
            verdict: v,
            detail: None,
            elapsed_ms: 1.0,
        }
    }

    #[test]
    fn matrix_has_a_row_per_case_and_a_column_per_transport() {
        let m = matrix_text(&[
            o("a", "tcp", Verdict::Pass),
            o("a", "inproc", Verdict::Fail),
            o("b", "tcp", Verdict::Unsupported),
        ]);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("tcp") && lines[0].contains("inproc"));
        assert!(lines[1].contains("pass") && lines[1].contains("FAIL"));
        assert!(lines[2].contains("unsupported") && lines[2].trim_end().ends_with('-'));
    }

    #[test]
    fn verdicts_serialize_lowercase() {
        let s = serde_json::to_string(&o("a", "tcp", Verdict::Unsupported)).unwrap();
        assert!(s.contains("\"unsupported\""));
        let back: CaseOutcome = serde_json::from_str(&s).unwrap();
        assert_eq!(back.verdict, Verdict::Unsupported);
    }
}
