//! `tiersweep bench` at a smoke size, so the benchmark cannot rot: it runs, converges every
//! change it prepared, counts RPCs, and writes its JSON and plot. No timing is asserted.
//!
//! The emulator setting is left out here: it reproduces a stall on the Pub/Sub emulator
//! (see docs/performance.md) that makes its duration unpredictable.

use std::process::Command;

#[test]
fn bench_runs_at_smoke_size_and_reports_every_figure() {
    let out = tempdir();
    let status = Command::new(env!("CARGO_BIN_EXE_tiersweep"))
        .args([
            "bench",
            "--settings",
            "memory,cloud",
            "--changes",
            "200",
            "--baseline-changes",
            "20",
            "--in-flight",
            "1,16",
        ])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("running tiersweep bench");
    assert!(status.success());

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    let settings = report["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 2);
    for s in settings {
        assert_eq!(s["baseline"]["changes"], 20, "{s}");
        let pipeline = s["pipeline"].as_array().unwrap();
        assert_eq!(pipeline.len(), 2);
        for run in pipeline.iter().chain(s["lost_claims"].as_array().unwrap()) {
            assert_eq!(
                run["changes"], 200,
                "every prepared change converged: {run}"
            );
            assert_eq!(run["timed_out"], false, "{run}");
            let rpcs = run["rpcs_per_change"].as_f64().unwrap();
            // claim, re-read, fence (2), delete, remove, settle, plus amortised scans/publishes.
            assert!((6.0..12.0).contains(&rpcs), "{run}");
        }
        // Without the shard split four scanners race for the same rows.
        let lost = s["lost_claims"].as_array().unwrap();
        assert_eq!(lost[0]["claims_lost"], 0, "split scanners never collide");
    }
    let svg = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
