#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::ws_frame_tap::check(data));
