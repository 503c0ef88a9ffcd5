#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_warden_fuzz::policy_parse::check(data));
