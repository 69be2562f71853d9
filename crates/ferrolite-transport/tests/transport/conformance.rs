//! One conformance suite, run against every transport.

use crate::support::*;

macro_rules! conformance_suite {
    ($name:ident, $make:path) => {
        mod $name {
            use crate::support::*;

            #[tokio::test]
            async fn messages_arrive_in_order() {
                messages_in_order($make().await).await;
            }

            #[tokio::test]
            async fn binary_is_intact() {
                binary_intact($make().await).await;
            }

            #[tokio::test]
            async fn sender_waits_for_a_reader() {
                back_pressure($make().await).await;
            }

            #[tokio::test]
            async fn close_code_and_reason_reach_the_peer() {
                close_seen_by_peer($make().await).await;
            }

            #[tokio::test]
            async fn drop_is_an_abnormal_close() {
                drop_seen_as_abnormal($make().await).await;
            }
        }
    };
}

conformance_suite!(websocket_client_to_server, ws_pair);
conformance_suite!(websocket_server_to_client, ws_pair_reversed);
conformance_suite!(in_process, in_process_pair);
conformance_suite!(message_stream_mode, message_stream_pair);
conformance_suite!(byte_stream_mode, byte_stream_pair);
conformance_suite!(
    byte_stream_mode_passive_to_active,
    byte_stream_pair_reversed
);
conformance_suite!(byte_stream_mode_over_tcp, byte_stream_tcp_pair);

#[tokio::test]
async fn pairs_report_their_subprotocol() {
    let pair = ws_pair().await;
    assert_eq!(pair.a.subprotocol(), Some("BLIP_3+CBMobile_3"));
    assert_eq!(pair.b.subprotocol(), Some("BLIP_3+CBMobile_3"));
    let pair = in_process_pair().await;
    assert_eq!(pair.a.subprotocol(), None);
    // Byte streams negotiate nothing; they report what Couchbase Lite 3.x speaks.
    let pair = byte_stream_pair().await;
    assert_eq!(pair.a.subprotocol(), Some("BLIP_3+CBMobile_3"));
    assert_eq!(pair.b.subprotocol(), Some("BLIP_3+CBMobile_3"));
}
