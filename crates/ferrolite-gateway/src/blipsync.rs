//! `/{db}/_blipsync`: the WebSocket upgrade done by hand on the HTTP connection, then the
//! facade's passive replication peer on the upgraded stream.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferrolite::transport::{byte_stream, ByteStreamConfig};
use ferrolite::MessageEndpointListener;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};

use std::sync::Arc;

use crate::error::ApiError;
use crate::peer::UserPeer;
use crate::rest::AppState;

/// The replication subprotocols served, most preferred first.
const SUBPROTOCOLS: [&str; 2] = ["BLIP_3+CBMobile_3", "BLIP_3+CBMobile_2"];
/// RFC 6455's key GUID.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn header_has_token(value: Option<&HeaderValue>, token: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Authenticates, negotiates the subprotocol and answers 101; the upgraded connection is
/// then served by a passive replication peer on the database.
pub(crate) async fn blipsync(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let (db, principal) = match state.authorized(&name, headers) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    if !header_has_token(headers.get(header::UPGRADE), "websocket") {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "Can't upgrade this request to websocket connection",
        )
        .into_response();
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
    else {
        return ApiError::bad_request("missing Sec-WebSocket-Key").into_response();
    };
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(subprotocol) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("I only speak {} protocols", SUBPROTOCOLS.join(",")),
        )
            .into_response();
    };
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(WS_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());

    let on_upgrade = hyper::upgrade::on(&mut request);
    let database = db.database.clone();
    let listener = MessageEndpointListener::new(&database)
        .disable_deltas(!db.deltas)
        .peer_access(Arc::new(UserPeer::new(db, principal, !state.admin)));
    let shutdown = state.shared.shutdown.clone();
    state.shared.spawn_session(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = ByteStreamConfig::passive()
                    .with_subprotocol(Some((*subprotocol).to_owned()))
                    .with_shutdown(shutdown);
                let connection = byte_stream(TokioIo::new(upgraded), config).await;
                let served = listener.serve(connection).await;
                if let Err(e) = served {
                    tracing::debug!(target: "ferrolite::gateway", database = %database.name(), "_blipsync session ended: {e}");
                }
            }
            Err(e) => {
                tracing::debug!(target: "ferrolite::gateway", "_blipsync upgrade failed: {e}");
            }
        }
    });

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(subprotocol),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}
