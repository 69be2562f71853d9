//! Arbitrary JSON documents (what a REST `PUT` or a pushed revision carries) through the
//! JavaScript sync function of the user-profile example: the conversion of the document and
//! its previous revision into JavaScript, the helpers (`channel`, `access`, `requireUser`…)
//! and the time and memory limits. A refusal is fine, a panic is not.
//!
//! Input: `doc JSON`, optionally followed by `0x00` and the previous revision's JSON.

#![no_main]

use std::sync::OnceLock;

use ferrolite_gateway::channels::{SyncRouter, UserContext};
use ferrolite_gateway::GatewayConfig;
use ferrolite_sync_function::{JsOptions, JsSyncFunction};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../examples/userprofile/gateway-config.json");

fn sync_function() -> &'static JsSyncFunction {
    static FUNCTION: OnceLock<JsSyncFunction> = OnceLock::new();
    FUNCTION.get_or_init(|| {
        let config = GatewayConfig::from_json(EXAMPLE).expect("the example configuration");
        let source = config.databases["userprofile"]
            .sync
            .clone()
            .expect("the example's sync function");
        JsSyncFunction::new(&source, JsOptions::default().with_workers(1))
            .expect("the example's sync function compiles")
    })
}

fn object(bytes: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let (doc, old) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let Some(doc) = object(doc) else {
        return;
    };
    let old = old.and_then(object);
    let user = UserContext {
        name: "demo@example.com".to_owned(),
        roles: Vec::new(),
        channels: vec!["user.demo@example.com".to_owned()],
    };
    let routed = sync_function().route(&doc, old.as_ref(), Some(&user));
    if let Err(reject) = routed {
        assert!(reject.status >= 400, "{reject:?}");
    }
});
