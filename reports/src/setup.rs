//! Connection setup per transport and the cost of TLS: each TLS run beside its plaintext twin
//! (same transport, same parameters but TLS), for the HTML report and the Markdown summary.

use crate::results::{LatencySummary, Results, RunRecord};

/// Connection setup of one transport under one TLS mode.
#[derive(Clone, Debug, PartialEq)]
pub struct SetupRow<'a> {
    /// The transport.
    pub transport: &'a str,
    /// `none`, `tls` or `mtls`.
    pub tls: &'a str,
    /// Connect plus first call: of the runs with this transport and mode (each measures its
    /// setups the same way, before its warm-up), the one with the lowest median.
    pub setup: LatencySummary,
}

/// Connection setup per transport and TLS mode, in run order.
pub fn setup_rows(results: &Results) -> Vec<SetupRow<'_>> {
    let mut rows: Vec<SetupRow<'_>> = Vec::new();
    for r in &results.runs {
        let Some(setup) = r.summary.connect else {
            continue;
        };
        let key = (r.transport.as_str(), r.params.tls.as_str());
        match rows.iter_mut().find(|x| (x.transport, x.tls) == key) {
            // Points each measure the same setup; the first is as good as any, but keep the
            // lowest median so one point disturbed by a neighbour does not speak for all.
            Some(x) if setup.p50_ns < x.setup.p50_ns => x.setup = setup,
            Some(_) => {}
            None => rows.push(SetupRow {
                transport: key.0,
                tls: key.1,
                setup,
            }),
        }
    }
    rows
}

/// A TLS run and its plaintext twin.
#[derive(Clone, Copy, Debug)]
pub struct TlsPair<'a> {
    /// The run without TLS.
    pub plain: &'a RunRecord,
    /// The same point over TLS or mutual TLS.
    pub tls: &'a RunRecord,
}

/// Every TLS run that has a plaintext twin in the same results: same transport and the same
/// parameters apart from TLS.
pub fn tls_pairs(results: &Results) -> Vec<TlsPair<'_>> {
    results
        .runs
        .iter()
        .filter(|r| r.params.tls != "none")
        .filter_map(|tls| {
            let mut want = tls.params.clone();
            want.tls = "none".into();
            results
                .runs
                .iter()
                .find(|p| p.transport == tls.transport && p.params == want)
                .map(|plain| TlsPair { plain, tls })
        })
        .collect()
}

/// `new` relative to `old` as a signed percentage (`+12%`), or `–` without a base.
pub fn change(old: f64, new: f64) -> String {
    if old <= 0.0 || !old.is_finite() || !new.is_finite() {
        return "–".into();
    }
    format!("{:+.0}%", (new / old - 1.0) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Environment, RunParams, SuiteRecord};

    fn results(runs: Vec<RunRecord>) -> Results {
        let mut r = Results::new(
            "test".into(),
            "2026-01-01T00:00:00Z".into(),
            Environment::default(),
            SuiteRecord::default(),
        );
        r.runs = runs;
        r
    }

    fn run(transport: &str, point: &str, tls: &str, p50: u64) -> RunRecord {
        let mut r = RunRecord {
            transport: transport.into(),
            point: point.into(),
            params: RunParams {
                concurrency: Some(1),
                tls: tls.into(),
                ..RunParams::default()
            },
            ..RunRecord::default()
        };
        r.summary.connect = Some(LatencySummary {
            count: 16,
            p50_ns: p50,
            ..LatencySummary::default()
        });
        r
    }

    #[test]
    fn pairs_match_parameters_not_names() {
        let mut results = results(vec![
            run("tcp", "unary-1", "none", 100),
            run("tcp", "unary-1-mtls", "mtls", 900),
            run("grpc", "unary-1-mtls", "mtls", 2000),
        ]);
        let pairs = tls_pairs(&results);
        assert_eq!(pairs.len(), 1, "grpc has no plaintext twin");
        assert_eq!(pairs[0].plain.point, "unary-1");
        assert_eq!(pairs[0].tls.point, "unary-1-mtls");
        // A different concurrency is not a twin.
        results.runs[1].params.concurrency = Some(4);
        assert!(tls_pairs(&results).is_empty());
    }

    #[test]
    fn setup_rows_per_transport_and_mode() {
        let results = results(vec![
            run("tcp", "a", "none", 300),
            run("tcp", "b", "none", 200),
            run("tcp", "c", "mtls", 900),
        ]);
        let rows = setup_rows(&results);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].tls, rows[0].setup.p50_ns), ("none", 200));
        assert_eq!((rows[1].tls, rows[1].setup.p50_ns), ("mtls", 900));
        assert_eq!(change(100.0, 150.0), "+50%");
        assert_eq!(change(0.0, 1.0), "–");
    }
}
