//! The crate graph of `docs/ARCHITECTURE.md`, checked against `cargo metadata`: each crate
//! depends on exactly the crates of ours the document allows, and the crates that must stay
//! free of network stacks (core, the sans-IO cores, scenarios, reports) pull none in, however
//! deep. A dependency added without updating the document fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each crate's direct (normal) dependencies among ours — the table in `docs/ARCHITECTURE.md`.
const ALLOWED: &[(&str, &[&str])] = &[
    ("wirebench-core", &[]),
    ("wirebench-wire", &["wirebench-core"]),
    ("wirebench-tls", &["wirebench-core"]),
    ("wirebench-policy", &["wirebench-core"]),
    ("wirebench-brokerrpc", &["wirebench-core"]),
    ("wirebench-brokerproc", &["wirebench-core"]),
    (
        "wirebench-tcp",
        &["wirebench-core", "wirebench-tls", "wirebench-wire"],
    ),
    (
        "wirebench-quic",
        &["wirebench-core", "wirebench-tls", "wirebench-wire"],
    ),
    ("wirebench-grpc", &["wirebench-core", "wirebench-tls"]),
    (
        "wirebench-nats",
        &[
            "wirebench-brokerproc",
            "wirebench-brokerrpc",
            "wirebench-core",
        ],
    ),
    (
        "wirebench-mqtt",
        &[
            "wirebench-brokerproc",
            "wirebench-brokerrpc",
            "wirebench-core",
        ],
    ),
    (
        "wirebench-transports",
        &[
            "wirebench-core",
            "wirebench-grpc",
            "wirebench-mqtt",
            "wirebench-nats",
            "wirebench-quic",
            "wirebench-tcp",
        ],
    ),
    ("wirebench-scenarios", &["wirebench-core", "wirebench-tls"]),
    ("wirebench-reports", &[]),
    (
        "wirebench",
        &[
            "wirebench-core",
            "wirebench-policy",
            "wirebench-reports",
            "wirebench-scenarios",
            "wirebench-tls",
            "wirebench-transports",
        ],
    ),
    (
        "wirebench-benches",
        &[
            "wirebench-core",
            "wirebench-grpc",
            "wirebench-transports",
            "wirebench-wire",
        ],
    ),
];

/// Protocol and network stacks, which only transport crates (and what builds on them) may
/// pull in.
const NETWORK_STACKS: &[&str] = &[
    "tonic",
    "hyper",
    "h2",
    "quinn",
    "async-nats",
    "rumqttc",
    "rmqtt",
];

/// Crates that must not reach any of [`NETWORK_STACKS`], even transitively.
const STACK_FREE: &[&str] = &[
    "wirebench-core",
    "wirebench-wire",
    "wirebench-tls",
    "wirebench-policy",
    "wirebench-brokerrpc",
    "wirebench-brokerproc",
    "wirebench-scenarios",
    "wirebench-reports",
];

fn text(v: &Value) -> &str {
    v.as_str()
        .expect("cargo metadata gives ids and names as strings")
}

/// The workspace's resolved graph: package name -> names of its normal dependencies.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (text(&p["id"]), text(&p["name"])))
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let name = names[text(&node["id"])].to_owned();
        let deps: Vec<String> = node["deps"]
            .as_array()
            .expect("a node's deps")
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .expect("a dependency's kinds")
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| names[text(&d["pkg"])].to_owned())
            .collect();
        graph.entry(name).or_insert_with(BTreeSet::new).extend(deps);
    }
    graph
}

#[test]
fn each_crate_depends_on_exactly_what_the_architecture_allows() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (krate, allowed) in ALLOWED {
        let deps = graph
            .get(*krate)
            .unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        let ours: BTreeSet<&str> = deps
            .iter()
            .map(String::as_str)
            .filter(|d| d.starts_with("wirebench"))
            .collect();
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        if ours != allowed {
            wrong.push(format!(
                "{krate}: depends on {ours:?}, docs/ARCHITECTURE.md allows {allowed:?}"
            ));
        }
    }
    let listed: BTreeSet<&str> = ALLOWED.iter().map(|(k, _)| *k).collect();
    for krate in graph.keys().filter(|k| k.starts_with("wirebench")) {
        if !listed.contains(krate.as_str()) {
            wrong.push(format!("{krate} is not in docs/ARCHITECTURE.md's table"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_core_crates_reach_no_network_stack() {
    let graph = graph();
    for krate in STACK_FREE {
        let mut seen = BTreeSet::new();
        let mut todo = vec![(*krate).to_owned()];
        while let Some(k) = todo.pop() {
            for d in graph.get(&k).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        let reached: Vec<&&str> = NETWORK_STACKS
            .iter()
            .filter(|s| seen.contains(**s))
            .collect();
        assert!(reached.is_empty(), "{krate} reaches {reached:?}");
    }
}

#[test]
fn the_architecture_document_lists_every_crate() {
    let doc = include_str!("../../docs/ARCHITECTURE.md");
    for (krate, _) in ALLOWED {
        assert!(
            doc.contains(krate),
            "docs/ARCHITECTURE.md never names {krate}"
        );
    }
}
