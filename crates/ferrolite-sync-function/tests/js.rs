#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The JavaScript sync function: every helper, every error path with its status and
//! message, time and memory limits, syntax errors, agreement with the default router,
//! concurrency, and the user-profile example's configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrolite_sync_function::{
    CompileError, DefaultSyncRouter, JsOptions, JsSyncFunction, Properties, Reject, Routing,
    SyncRouter, UserContext,
};
use serde_json::{json, Value};

fn props(value: Value) -> Properties {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn js(source: &str) -> JsSyncFunction {
    JsSyncFunction::new(source, JsOptions::default().with_workers(2))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn user(name: &str, roles: &[&str], channels: &[&str]) -> UserContext {
    UserContext {
        name: name.to_owned(),
        roles: roles.iter().map(|s| (*s).to_owned()).collect(),
        channels: channels.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Routes `doc` (no old revision) as `who`.
fn route_as(f: &JsSyncFunction, doc: Value, who: Option<&UserContext>) -> Result<Routing, Reject> {
    f.route(&props(doc), None, who)
}

fn route(f: &JsSyncFunction, doc: Value) -> Routing {
    route_as(f, doc, None).unwrap_or_else(|r| panic!("refused: {r}"))
}

fn refused(f: &JsSyncFunction, doc: Value, who: Option<&UserContext>) -> (u16, String) {
    match route_as(f, doc, who) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(r) => (r.status, r.message),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn map(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), strings(v)))
        .collect()
}

const TIMED_OUT: (u16, &str) = (500, "JS sync function timed out");
const EXCEPTION: (u16, &str) = (500, "Exception in JS sync function");
const ERROR: (u16, &str) = (500, "Error in JS sync function");

fn is(actual: (u16, String), expected: (u16, &str)) {
    assert_eq!((actual.0, actual.1.as_str()), expected);
}

#[test]
fn js_sync_function_is_send_sync_and_a_router() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<JsSyncFunction>();
    let router: Arc<dyn SyncRouter> = Arc::new(js("function(doc){channel(doc.channels);}"));
    let routing = router
        .route(&props(json!({"channels": "a"})), None, None)
        .unwrap();
    assert_eq!(routing.channels, ["a"]);
    assert!(format!("{router:?}").contains("JsSyncFunction"));
}

#[test]
fn arguments() {
    let f = js(r#"function(doc, oldDoc, meta) {
        channel("id." + doc._id, "rev." + doc._rev, "deleted." + (doc._deleted === true));
        channel("old." + (oldDoc === null ? "null" : oldDoc._id + "." + oldDoc.n));
        channel("meta." + JSON.stringify(meta));
        channel("args." + arguments.length);
    }"#);
    let doc = props(json!({"_id": "d1", "_rev": "2-b", "_deleted": true}));
    let old = props(json!({"_id": "d1", "n": 7}));
    let r = f.route(&doc, Some(&old), None).unwrap();
    assert_eq!(
        r.channels,
        [
            "id.d1",
            "rev.2-b",
            "deleted.true",
            "old.d1.7",
            r#"meta.{"xattrs":{}}"#,
            "args.3"
        ]
    );
    let r = route(&f, json!({"_id": "d2", "_rev": "1-a"}));
    assert_eq!(r.channels[2], "deleted.false");
    assert_eq!(r.channels[3], "old.null");
}

#[test]
fn channel_helper() {
    let f = js("function(doc){ channel(doc.a, doc.b); channel(doc.c); }");
    let r = route(&f, json!({"a": "x", "b": ["y", "x", "z"], "c": "w"}));
    assert_eq!(r.channels, ["x", "y", "z", "w"]);
    assert_eq!(
        r,
        Routing {
            channels: strings(&["x", "y", "z", "w"]),
            ..Routing::default()
        }
    );
    // null, undefined, non-strings, empty names and names with commas are ignored.
    let r = route(
        &f,
        json!({"a": null, "b": [1, null, "ok", {"x": 1}, "", "a,b", true]}),
    );
    assert_eq!(r.channels, ["ok"]);
    assert!(route(&f, json!({})).channels.is_empty());
    assert!(route(&f, json!({"a": 12})).channels.is_empty());
    // The star collapses the set.
    let r = route(&f, json!({"a": ["x", "*"], "c": "y"}));
    assert_eq!(r.channels, ["*"]);
    // The public channel is a channel like any other.
    assert_eq!(route(&f, json!({"a": "!"})).channels, ["!"]);
}

#[test]
fn access_helper() {
    let f = js(r#"function(doc){
        access(doc.users, doc.channels);
        access("carol", "c1");
        access(null, "c2");
        access("dave", null);
    }"#);
    let r = route(
        &f,
        json!({"users": ["alice", "role:editor", "alice"], "channels": ["c1", "*", "c2", 5, "c1"]}),
    );
    assert_eq!(
        r.access,
        map(&[
            ("alice", &["c1", "c2"]),
            ("carol", &["c1"]),
            ("role:editor", &["c1", "c2"])
        ])
    );
    assert!(r.channels.is_empty());
    // A lone `*` grants nothing.
    let r = route(&f, json!({"users": "bob", "channels": "*"}));
    assert_eq!(r.access, map(&[("carol", &["c1"])]));
}

#[test]
fn access_to_invalid_principals_fails() {
    let f = js("function(doc){ access(doc.to, 'c'); }");
    for bad in ["", "a/b", "role:", "role:a,b", "x:y", "..."] {
        is(refused(&f, json!({"to": bad}), None), ERROR);
    }
    is(refused(&f, json!({"to": ["ok", "a,b"]}), None), ERROR);
    assert!(route_as(&f, json!({"to": "demo@example.com"}), None).is_ok());
}

#[test]
fn role_helper() {
    let f = js("function(doc){ role(doc.users, doc.roles); role('carol', 'role:viewer'); }");
    let r = route(
        &f,
        json!({"users": ["alice", "bob"], "roles": ["role:editor", "role:viewer", "role:editor"]}),
    );
    assert_eq!(
        r.roles,
        map(&[
            ("alice", &["editor", "viewer"]),
            ("bob", &["editor", "viewer"]),
            ("carol", &["viewer"])
        ])
    );
    // Every role must carry the prefix; roles cannot be granted to roles.
    is(
        refused(&f, json!({"users": "alice", "roles": "editor"}), None),
        ERROR,
    );
    is(
        refused(
            &f,
            json!({"users": "alice", "roles": ["role:a", "b"]}),
            None,
        ),
        ERROR,
    );
    is(
        refused(&f, json!({"users": "alice", "roles": "role:"}), None),
        ERROR,
    );
    is(
        refused(&f, json!({"users": "role:x", "roles": "role:a"}), None),
        ERROR,
    );
    // null and non-strings are ignored.
    let r = route(&f, json!({"users": null, "roles": [null, 4, "role:a"]}));
    assert_eq!(r.roles, map(&[("carol", &["viewer"])]));
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn expiry_helper() {
    let f = js("function(doc){ if (doc.date) expiry(new Date(doc.date)); else expiry(doc.exp); }");
    let expiry = |exp: Value| route(&f, json!({ "exp": exp })).expiry;

    let before = secs(SystemTime::now());
    let relative = secs(expiry(json!(3600)).unwrap());
    let after = secs(SystemTime::now());
    assert!(
        (before + 3600..=after + 3600).contains(&relative),
        "{relative}"
    );
    let relative = secs(expiry(json!("2592000")).unwrap());
    assert!(relative >= before + 2_592_000 && relative <= secs(SystemTime::now()) + 2_592_000);

    assert_eq!(secs(expiry(json!(2_592_001)).unwrap()), 2_592_001);
    assert_eq!(secs(expiry(json!(1_900_000_000)).unwrap()), 1_900_000_000);
    assert_eq!(secs(expiry(json!("1900000000")).unwrap()), 1_900_000_000);
    assert_eq!(
        secs(expiry(json!("2030-01-01T00:00:00Z")).unwrap()),
        1_893_456_000
    );
    assert_eq!(
        secs(expiry(json!("2030-01-01T01:00:00+01:00")).unwrap()),
        1_893_456_000
    );
    let date = route(&f, json!({"date": "2030-01-01T00:00:00Z"})).expiry;
    assert_eq!(secs(date.unwrap()), 1_893_456_000);
    // 0 means no expiry; invalid values and null are ignored.
    for none in [
        json!(0),
        json!(null),
        json!(-5),
        json!("soon"),
        json!("2030-02-30T00:00:00Z"),
        json!(true),
        json!({"a": 1}),
        json!(5e12),
    ] {
        assert_eq!(expiry(none.clone()), None, "{none}");
    }
    assert_eq!(route(&f, json!({"date": "not a date"})).expiry, None);

    // The last valid call wins; an invalid one leaves the previous value.
    let f = js("function(doc){ expiry(1900000000); expiry('junk'); }");
    assert_eq!(secs(route(&f, json!({})).expiry.unwrap()), 1_900_000_000);
    let f = js("function(doc){ expiry(1900000000); expiry(2000000000); }");
    assert_eq!(secs(route(&f, json!({})).expiry.unwrap()), 2_000_000_000);
    let f = js("function(doc){ expiry(1900000000); expiry(0); }");
    assert_eq!(route(&f, json!({})).expiry, None);
}

#[test]
fn reject_helper() {
    let f = js(r#"function(doc){
        channel("a");
        if (doc.status !== undefined) reject(doc.status, doc.message);
        if (doc.second) reject(409, "second");
        if (doc.forbid) throw({forbidden: "thrown"});
    }"#);
    assert_eq!(
        route_as(&f, json!({"status": 409, "message": "conflict"}), None),
        Err(Reject {
            status: 409,
            message: "conflict".into()
        })
    );
    // The first rejection wins, over later ones and over a thrown error.
    is(
        refused(
            &f,
            json!({"status": 400, "message": "first", "second": true, "forbid": true}),
            None,
        ),
        (400, "first"),
    );
    // Statuses below 400 are ignored.
    assert_eq!(
        route(&f, json!({"status": 200, "message": "no"})).channels,
        ["a"]
    );
    assert_eq!(
        route(&f, json!({"status": "403", "message": "no"})).channels,
        ["a"]
    );
    is(
        refused(&f, json!({"status": 200, "second": true}), None),
        (409, "second"),
    );
}

#[test]
fn thrown_errors() {
    let f = js(r#"function(doc){
        switch (doc.kind) {
        case "forbidden": throw({forbidden: "not yours"});
        case "unauthorized": throw({unauthorized: "log in"});
        case "error": throw new Error("boom");
        case "string": throw "boom";
        case "null": throw null;
        case "type": return doc.missing.field;
        case "reference": return undefinedFunction();
        case "caught":
            try { throw({forbidden: "caught"}); } catch (e) { channel("recovered"); }
            return;
        }
        channel("ok");
    }"#);
    is(
        refused(&f, json!({"kind": "forbidden"}), None),
        (403, "not yours"),
    );
    is(
        refused(&f, json!({"kind": "unauthorized"}), None),
        (401, "log in"),
    );
    for kind in ["error", "string", "null", "type", "reference"] {
        is(refused(&f, json!({ "kind": kind }), None), EXCEPTION);
    }
    assert_eq!(route(&f, json!({"kind": "caught"})).channels, ["recovered"]);
    assert_eq!(route(&f, json!({})).channels, ["ok"]);
    // A refusal keeps nothing of what the function asked for before.
    let f = js("function(doc){ channel('a'); access('bob', 'a'); throw({forbidden: 'no'}); }");
    is(refused(&f, json!({}), None), (403, "no"));
}

#[test]
fn require_user() {
    let f = js("function(doc){ requireUser(doc.owners); channel('ok'); }");
    let alice = user("alice", &[], &[]);
    let guest = user("", &[], &[]);
    assert!(route_as(&f, json!({"owners": "alice"}), Some(&alice)).is_ok());
    assert!(route_as(&f, json!({"owners": ["bob", "alice"]}), Some(&alice)).is_ok());
    is(
        refused(&f, json!({"owners": "bob"}), Some(&alice)),
        (403, "sg wrong user"),
    );
    is(
        refused(&f, json!({"owners": ["bob"]}), Some(&alice)),
        (403, "sg wrong user"),
    );
    is(
        refused(&f, json!({"owners": null}), Some(&alice)),
        (403, "sg wrong user"),
    );
    is(
        refused(&f, json!({"owners": "alice"}), Some(&guest)),
        (403, "sg wrong user"),
    );
    assert!(route_as(&f, json!({"owners": ""}), Some(&guest)).is_ok());
    // Admin writes pass every check.
    assert_eq!(route(&f, json!({"owners": "bob"})).channels, ["ok"]);
}

#[test]
fn require_role() {
    let f = js("function(doc){ requireRole(doc.roles); }");
    let editor = user("alice", &["editor", "viewer"], &[]);
    assert!(route_as(&f, json!({"roles": "editor"}), Some(&editor)).is_ok());
    assert!(route_as(&f, json!({"roles": ["admin", "viewer"]}), Some(&editor)).is_ok());
    is(
        refused(&f, json!({"roles": "admin"}), Some(&editor)),
        (403, "sg missing role"),
    );
    // Plain names: the prefix is not part of a role's name here.
    is(
        refused(&f, json!({"roles": "role:editor"}), Some(&editor)),
        (403, "sg missing role"),
    );
    is(
        refused(&f, json!({"roles": "editor"}), Some(&user("", &[], &[]))),
        (403, "sg missing role"),
    );
    assert!(route_as(&f, json!({"roles": "admin"}), None).is_ok());
}

#[test]
fn require_access() {
    let f = js("function(doc){ requireAccess(doc.channels); }");
    let reader = user("alice", &[], &["a", "b"]);
    assert!(route_as(&f, json!({"channels": "a"}), Some(&reader)).is_ok());
    assert!(route_as(&f, json!({"channels": ["x", "b"]}), Some(&reader)).is_ok());
    is(
        refused(&f, json!({"channels": "x"}), Some(&reader)),
        (403, "sg missing channel access"),
    );
    is(
        refused(&f, json!({"channels": []}), Some(&reader)),
        (403, "sg missing channel access"),
    );
    // Everyone reads the public channel; a user with `*` reads everything.
    assert!(route_as(&f, json!({"channels": "!"}), Some(&user("", &[], &[]))).is_ok());
    assert!(route_as(
        &f,
        json!({"channels": "x"}),
        Some(&user("root", &[], &["*"]))
    )
    .is_ok());
    assert!(route_as(&f, json!({"channels": "x"}), None).is_ok());
}

#[test]
fn require_admin() {
    let f = js("function(doc){ requireAdmin(); channel('admin'); }");
    assert_eq!(route(&f, json!({})).channels, ["admin"]);
    for who in [user("alice", &["admin"], &["*"]), user("", &[], &[])] {
        is(
            refused(&f, json!({}), Some(&who)),
            (403, "sg admin required"),
        );
    }
}

#[test]
fn sloppy_mode_and_promises() {
    // Sync functions are written for a non-strict interpreter.
    let f = js("function(doc){ undeclared = 1; channel('a' + undeclared); }");
    assert_eq!(route(&f, json!({})).channels, ["a1"]);
    // Promise jobs run after the call, when the helpers no longer collect.
    let f = js(
        "function(doc){ Promise.resolve().then(function(){ channel('late'); }); channel('now'); }",
    );
    for _ in 0..3 {
        assert_eq!(route(&f, json!({})).channels, ["now"]);
    }
}

#[test]
fn console_and_log_are_available() {
    let f = js(r#"function(doc){
        console.log("routing", doc, 1, null, undefined);
        console.info("i"); console.debug("d"); console.warn({a: [1]}); console.error("e");
        log("shorthand");
        var cyclic = {}; cyclic.self = cyclic; console.log(cyclic);
        channel("ok");
    }"#);
    assert_eq!(route(&f, json!({"_id": "x"})).channels, ["ok"]);
}

#[test]
fn infinite_loop_is_stopped_while_others_proceed() {
    let options = JsOptions::default()
        .with_workers(2)
        .with_time_limit(Duration::from_millis(200));
    let f = Arc::new(
        JsSyncFunction::new(
            r#"function(doc){
                if (doc.loop) { while (true) {} }
                if (doc.stubborn) { while (true) { try { for (;;) {} } catch (e) {} } }
                channel(doc.channels);
            }"#,
            options,
        )
        .unwrap(),
    );
    let looping = {
        let f = Arc::clone(&f);
        thread::spawn(move || {
            let start = Instant::now();
            let r = route_as(&f, json!({"loop": true}), None);
            (r, start.elapsed())
        })
    };
    let others = {
        let f = Arc::clone(&f);
        thread::spawn(move || {
            for i in 0..50 {
                let name = format!("c{i}");
                assert_eq!(route(&f, json!({ "channels": name })).channels, [name]);
            }
        })
    };
    others.join().unwrap();
    let (result, elapsed) = looping.join().unwrap();
    let reject = result.unwrap_err();
    is((reject.status, reject.message), TIMED_OUT);
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // An exception handler does not keep the interrupt from stopping the script.
    let start = Instant::now();
    is(refused(&f, json!({"stubborn": true}), None), TIMED_OUT);
    assert!(start.elapsed() < Duration::from_secs(5));
    // The workers are usable afterwards.
    for _ in 0..4 {
        assert_eq!(route(&f, json!({"channels": "after"})).channels, ["after"]);
    }
}

#[test]
fn a_single_worker_recovers_after_a_timeout() {
    let options = JsOptions::default()
        .with_workers(1)
        .with_time_limit(Duration::from_millis(100));
    let f = JsSyncFunction::new(
        "function(doc){ if (doc.loop) for (;;) {} channel('ok'); }",
        options,
    )
    .unwrap();
    for _ in 0..3 {
        is(refused(&f, json!({"loop": true}), None), TIMED_OUT);
        assert_eq!(route(&f, json!({})).channels, ["ok"]);
    }
}

#[test]
fn memory_hog_is_rejected() {
    let options = JsOptions::default()
        .with_workers(1)
        .with_memory_limit(16 << 20)
        .with_time_limit(Duration::from_secs(30));
    let f = JsSyncFunction::new(
        r#"function(doc){
            if (doc.hog) {
                var all = [];
                while (true) { all.push(new Array(100000).fill(doc.hog)); }
            }
            if (doc.global) {
                hoard = [];
                while (true) { hoard.push("x".repeat(1 << 20) + hoard.length); }
            }
            channel("ok");
        }"#,
        options,
    )
    .unwrap();
    let start = Instant::now();
    is(refused(&f, json!({"hog": 1}), None), EXCEPTION);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(route(&f, json!({})).channels, ["ok"]);
    // Memory kept in a global is released with the engine.
    for _ in 0..3 {
        is(refused(&f, json!({"global": true}), None), EXCEPTION);
        assert_eq!(route(&f, json!({})).channels, ["ok"]);
    }
}

#[test]
fn deep_recursion_is_rejected() {
    let f = js("function(doc){ function down(n){ return down(n + 1) + 1; } if (doc.deep) down(0); channel('ok'); }");
    is(refused(&f, json!({"deep": true}), None), EXCEPTION);
    assert_eq!(route(&f, json!({})).channels, ["ok"]);
}

fn syntax_error(source: &str) -> (u32, u32, String) {
    match JsSyncFunction::new(source, JsOptions::default().with_workers(1)) {
        Ok(_) => panic!("compiled: {source}"),
        Err(CompileError::Syntax(e)) => {
            assert_eq!(
                e.to_string(),
                format!(
                    "sync function: line {}, column {}: {}",
                    e.line, e.column, e.message
                )
            );
            (e.line, e.column, e.message)
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn syntax_errors_name_line_and_column() {
    let (line, column, message) =
        syntax_error("function(doc, oldDoc) {\n  channel(doc.channels);\n  var x = ;\n}");
    assert_eq!((line, column), (3, 11), "{message}");
    assert!(!message.is_empty());
    // On the first line the position is the source's own, not the wrapped text's.
    let (line, column, _) = syntax_error("function(doc) { ) }");
    assert_eq!((line, column), (1, 17));
    // Columns count characters.
    let (line, column, _) = syntax_error("function(doc) {\n  channel(\"é\") ) }");
    assert_eq!((line, column), (2, 16));
    // An unfinished source: the error is at its end.
    let (line, column, message) = syntax_error("function(doc) {\n  channel(doc.channels);");
    assert_eq!(
        (line, column, message.as_str()),
        (2, 25, "unexpected end of the source")
    );
    let (line, column, message) = syntax_error("");
    assert_eq!(
        (line, column, message.as_str()),
        (1, 1, "unexpected end of the source")
    );
    // Not a function.
    let (line, column, message) = syntax_error("\n  42");
    assert_eq!((line, column), (2, 3));
    assert!(
        message.contains("not a function (it evaluates to a number)"),
        "{message}"
    );
    let (_, _, message) = syntax_error("'function(doc){}'");
    assert!(message.contains("a string"), "{message}");
    // Two statements are not one function.
    syntax_error("function(a){}; function(b){}");
    // A source that throws while evaluated.
    let (line, _, message) = syntax_error("(function(){\n  throw new TypeError('nope');\n})()");
    assert_eq!(line, 2);
    assert!(message.contains("nope"), "{message}");
    // The error displays as the documentation says.
    let e =
        JsSyncFunction::new("function(doc) {\n\n  var = 1;\n}", JsOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("sync function: line 3, column 7: "),
        "{e}"
    );
}

#[test]
fn a_comment_ends_the_source() {
    let f = js("function(doc){ channel('a'); } // trailing comment");
    assert_eq!(route(&f, json!({})).channels, ["a"]);
    assert_eq!(
        f.source(),
        "function(doc){ channel('a'); } // trailing comment"
    );
}

#[test]
fn evaluation_of_the_source_is_time_limited() {
    let options = JsOptions::default()
        .with_workers(1)
        .with_time_limit(Duration::from_millis(100));
    let start = Instant::now();
    let e = JsSyncFunction::new("(function(){ for(;;){} })()", options).unwrap_err();
    assert!(matches!(e, CompileError::Syntax(_)), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn default_source_matches_the_default_router() {
    let f = js("function(doc){channel(doc.channels);}");
    for doc in [
        json!({"channels": "a"}),
        json!({"channels": ["a", "b", "a", 3, "", null, "c,d"]}),
        json!({"channels": null}),
        json!({"channels": {"a": 1}}),
        json!({"channels": 7}),
        json!({"x": 1}),
        json!({"channels": ["a", "*"]}),
        json!({"channels": ["!", "user.demo@example.com"], "_id": "x", "_rev": "1-a"}),
        json!({"channels": [], "_deleted": true}),
    ] {
        let doc = props(doc);
        let alice = user("alice", &[], &[]);
        for who in [None, Some(&alice)] {
            assert_eq!(
                f.route(&doc, None, who),
                DefaultSyncRouter.route(&doc, None, who),
                "{doc:?}"
            );
        }
    }
}

#[test]
fn many_threads_at_once() {
    let f = Arc::new(
        JsSyncFunction::new(
            r#"function(doc, oldDoc){
                if (doc.refuse) throw({forbidden: "refused " + doc.n});
                channel("n." + doc.n);
                access(doc.owner, "n." + doc.n);
                if (oldDoc) channel("old." + oldDoc.n);
            }"#,
            JsOptions::default().with_workers(3),
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let f = Arc::clone(&f);
            thread::spawn(move || {
                for i in 0..100 {
                    let n = t * 1000 + i;
                    let doc =
                        props(json!({"n": n, "owner": format!("u{t}"), "refuse": i % 7 == 0}));
                    let old = props(json!({"n": n - 1}));
                    let r = f.route(&doc, Some(&old), None);
                    if i % 7 == 0 {
                        assert_eq!(
                            r,
                            Err(Reject {
                                status: 403,
                                message: format!("refused {n}")
                            })
                        );
                    } else {
                        let r = r.unwrap();
                        assert_eq!(r.channels, [format!("n.{n}"), format!("old.{}", n - 1)]);
                        assert_eq!(r.access[&format!("u{t}")], [format!("n.{n}")]);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn dropping_the_function_stops_its_workers() {
    for _ in 0..5 {
        let f = js("function(doc){ channel('a'); }");
        assert_eq!(route(&f, json!({})).channels, ["a"]);
        drop(f);
    }
}

// ---------------------------------------------------------------------------------------
// The user-profile example

fn userprofile_sync() -> JsSyncFunction {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/userprofile/gateway-config.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    let source = config["databases"]["userprofile"]["sync"].as_str().unwrap();
    JsSyncFunction::new(source, JsOptions::default().with_workers(2)).unwrap()
}

#[test]
fn userprofile_example() {
    let f = userprofile_sync();
    let demo = user("demo@example.com", &[], &["!", "user.demo@example.com"]);
    let demo1 = user("demo1@example.com", &[], &["!", "user.demo1@example.com"]);
    let profile = json!({
        "_id": "user::demo@example.com",
        "type": "user",
        "email": "demo@example.com",
        "name": "Demo",
        "university": "Missouri State University"
    });

    // The owner writes their profile: it goes to their channel, which they are granted.
    let r = route_as(&f, profile.clone(), Some(&demo)).unwrap();
    assert_eq!(r.channels, ["user.demo@example.com"]);
    assert_eq!(
        r.access,
        map(&[("demo@example.com", &["user.demo@example.com"])])
    );
    // An update by the owner is fine too.
    let old = props(profile.clone());
    let mut update = profile.clone();
    update["name"] = json!("Demo Again");
    update["_rev"] = json!("2-b");
    assert!(f
        .route(&props(update.clone()), Some(&old), Some(&demo))
        .is_ok());

    // Someone else may not write it.
    is(
        refused(&f, profile.clone(), Some(&demo1)),
        (403, "sg wrong user"),
    );
    assert_eq!(
        f.route(&props(update.clone()), Some(&old), Some(&demo1))
            .unwrap_err()
            .status,
        403
    );
    // The owner may not hand the profile to someone else.
    let mut stolen = update.clone();
    stolen["email"] = json!("demo1@example.com");
    assert_eq!(
        f.route(&props(stolen.clone()), Some(&old), Some(&demo1))
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        f.route(&props(stolen.clone()), Some(&old), Some(&demo))
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        f.route(&props(stolen), Some(&old), None)
            .unwrap_err()
            .status,
        403
    );
    // A profile without an e-mail address is refused.
    let mut anonymous = profile.clone();
    anonymous.as_object_mut().unwrap().remove("email");
    assert_eq!(
        route_as(&f, anonymous, Some(&demo)).unwrap_err().status,
        403
    );

    // Universities are public and written by the admin only.
    let university = json!({
        "_id": "university_1",
        "type": "university",
        "name": "Missouri State University",
        "country": "United States"
    });
    let r = route_as(&f, university.clone(), None).unwrap();
    assert_eq!(r.channels, ["!"]);
    assert!(r.access.is_empty());
    is(
        refused(&f, university, Some(&demo)),
        (403, "sg admin required"),
    );

    // Deletions are judged by the revision they delete.
    let tombstone = |id: &str| props(json!({"_id": id, "_rev": "3-c", "_deleted": true}));
    let r = f
        .route(
            &tombstone("user::demo@example.com"),
            Some(&old),
            Some(&demo),
        )
        .unwrap();
    assert_eq!(r.channels, ["user.demo@example.com"]);
    let refusal = f.route(
        &tombstone("user::demo@example.com"),
        Some(&old),
        Some(&demo1),
    );
    assert_eq!(refusal.unwrap_err().message, "sg wrong user");
    let old_university = props(json!({"_id": "university_1", "type": "university", "name": "MSU"}));
    let refusal = f.route(
        &tombstone("university_1"),
        Some(&old_university),
        Some(&demo),
    );
    assert_eq!(refusal.unwrap_err().message, "sg admin required");
    let r = f
        .route(&tombstone("university_1"), Some(&old_university), None)
        .unwrap();
    assert_eq!(r.channels, ["!"]);
    // A user cannot take a university over by turning it into a profile.
    let takeover =
        props(json!({"_id": "university_1", "type": "user", "email": "demo@example.com"}));
    let refusal = f
        .route(&takeover, Some(&old_university), Some(&demo))
        .unwrap_err();
    assert_eq!(refusal.message, "the type of a document cannot change");

    // Anything else is refused, even from the admin.
    for who in [None, Some(&demo)] {
        is(
            refused(&f, json!({"_id": "x", "type": "note"}), who),
            (403, "unknown document type"),
        );
        is(
            refused(&f, json!({"_id": "y"}), who),
            (403, "unknown document type"),
        );
    }
}

#[test]
fn userprofile_config_is_valid_json_with_the_expected_users() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/userprofile/gateway-config.json"
    );
    let config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let users = &config["databases"]["userprofile"]["users"];
    assert_eq!(users["GUEST"]["disabled"], json!(true));
    assert_eq!(users["demo@example.com"]["password"], json!("password"));
    assert_eq!(users["demo1@example.com"]["password"], json!("password"));
}

// ---------------------------------------------------------------------------------------
// Cost of one call (run with `--release -- --ignored --nocapture`; prints, asserts nothing
// about time)

#[test]
#[ignore = "a measurement, not a check"]
fn cost_of_one_routing_call() {
    let f = js("function(doc){channel(doc.channels);}");
    let profile = userprofile_sync();
    let doc = props(
        json!({"_id": "d", "_rev": "1-a", "channels": ["a", "b"], "title": "hello", "n": 42}),
    );
    let user_doc = props(
        json!({"_id": "user::demo@example.com", "type": "user", "email": "demo@example.com", "name": "Demo"}),
    );
    let demo = user("demo@example.com", &[], &["!"]);
    let rounds = 20_000;
    let time = |label: &str, call: &dyn Fn() -> bool| {
        for _ in 0..1000 {
            assert!(call());
        }
        let start = Instant::now();
        for _ in 0..rounds {
            assert!(call());
        }
        let per_call = start.elapsed() / rounds;
        println!("{label}: {per_call:?} per call");
    };
    time("DefaultSyncRouter", &|| {
        DefaultSyncRouter.route(&doc, None, None).is_ok()
    });
    time("JS channel(doc.channels)", &|| {
        f.route(&doc, None, None).is_ok()
    });
    time("JS user-profile function", &|| {
        profile.route(&user_doc, None, Some(&demo)).is_ok()
    });
    // Throughput with several callers.
    let f = Arc::new(f);
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let f = Arc::clone(&f);
            let doc = doc.clone();
            thread::spawn(move || {
                for _ in 0..rounds / 4 {
                    assert!(f.route(&doc, None, None).is_ok());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "JS channel(doc.channels), 4 callers: {:?} per call",
        start.elapsed() / rounds
    );
}
