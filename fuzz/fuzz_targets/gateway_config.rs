//! Arbitrary text as a gateway configuration (`GatewayConfig::from_json`): errors are fine,
//! panics are not. What parses must answer every accessor, and a configuration that parses
//! names its listener addresses.

#![no_main]

use ferrolite_gateway::GatewayConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = GatewayConfig::from_json(&text) {
        assert!(config.public_addr().is_ok());
        assert!(config.admin_addr().is_ok());
        assert!(config.tls_files().is_ok());
        assert!(!config.effective_databases().is_empty());
        let _ = config.effective_data_dir();
    }
});
