//! The benchmarks run as their users run them: the `facepay-bench` binary, its JSON read back.

use std::process::Command;

/// `facepay-bench device` with its devices in a process of their own (the default): every
/// payment is answered `PAID` through the load generator's process, and the report says
/// where the devices ran.
#[test]
fn the_device_bench_runs_its_devices_in_a_process_of_their_own() {
    let out = Command::new(env!("CARGO_BIN_EXE_facepay-bench"))
        .args(["device", "--json", "--devices", "4", "--rate", "8", "--seconds", "2", "--payers", "20"])
        .output()
        .expect("facepay-bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report["load"], "process", "{report}");
    assert_eq!(report["payments"], 16, "8/s for 2 s: {report}");
    assert_eq!(report["statuses"]["PAID"], 16, "{report}");
    assert_eq!((report["timeouts"].as_u64(), report["errors"].as_u64()), (Some(0), Some(0)), "{report}");
    assert!(report["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
}
