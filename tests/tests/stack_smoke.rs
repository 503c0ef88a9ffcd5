//! The deployed stack starts, serves kubectl through the sidecar, and records.

use mcp_warden_tests::harness::{ApiSim, ApiSimOptions, run_ok};
use mcp_warden_tests::stack::{Collector, Sidecar, SidecarOptions};

#[test]
fn stack_serves_and_records() {
    let sim = ApiSim::start(ApiSimOptions::demo()).unwrap();
    let collector = Collector::start().unwrap();
    let sidecar = Sidecar::start(&sim, SidecarOptions::default().collector(&collector)).unwrap();
    let out = run_ok(sidecar.kubectl("1.32").args(["get", "pods", "-o", "name"])).unwrap();
    assert!(out.contains("pod/web-0"), "{out}");
    let events = mcp_warden_tests::harness::wait_for(
        "the list to be recorded",
        std::time::Duration::from_secs(10),
        || {
            let ev = collector.events();
            ev.iter()
                .any(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods")
                .then_some(ev)
        },
    )
    .unwrap();
    let list = events
        .iter()
        .find(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods")
        .unwrap();
    assert_eq!(list["annotations"]["mcp-warden.io/decision"], "allow");
    assert_eq!(list["responseStatus"]["code"], 200);
    let (code, body) = sidecar.admin_get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("mcp_warden_recording_events_recorded_total"),
        "{body}"
    );
    assert!(body.contains("mcp_warden_policy_reloads_total"), "{body}");
}
