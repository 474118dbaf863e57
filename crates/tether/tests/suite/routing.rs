//! What every L7 balancer user expects: request IDs, richer routes, sticky traffic splits.

use std::time::Duration;

use crate::support::fixture::*;

/// The request headers an echo server saw, from its JSON answer.
async fn seen(r: reqwest::Response) -> serde_json::Value {
    let v: serde_json::Value = r.json().await.unwrap();
    v["headers"].clone()
}

#[tokio::test]
async fn a_request_id_is_generated_seen_by_the_server_returned_and_logged() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let r = client().get(t.url("web")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(seen(r).await["x-request-id"], id.as_str(), "the server sees the same id");
    let line = t.wait_for_log(|l| l["request_id"] == id.as_str(), Duration::from_secs(5)).await;
    assert!(line.is_some(), "the access log names it");
}

#[tokio::test]
async fn a_request_id_is_kept_from_a_trusted_proxy_and_replaced_from_anyone_else() {
    let servers = echo_servers(1);
    let trusting = start(config_on(web().trusted_proxies(&["127.0.0.1"]), app(&servers))).await;
    let wary = start(config(app(&servers))).await;
    let send = |t: &tether_testkit::Tether| {
        client().get(t.url("web")).header("x-request-id", "front-1234").send()
    };
    let kept = send(&trusting).await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "front-1234");
    assert_eq!(seen(kept).await["x-request-id"], "front-1234");
    let replaced = send(&wary).await.unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "front-1234");
    assert_eq!(seen(replaced).await["x-request-id"], id.as_str());
}

#[tokio::test]
async fn request_ids_can_be_renamed_or_turned_off_and_traceparent_passes_through() {
    let servers = echo_servers(1);
    let renamed = start(config(app(&servers)).set("request_id.header", "X-Trace-Id")).await;
    let r = client().get(renamed.url("web")).send().await.unwrap();
    assert!(r.headers().contains_key("x-trace-id") && !r.headers().contains_key("x-request-id"));
    let off = start(config(app(&servers)).set("request_id.enabled", false)).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client().get(off.url("web")).header("traceparent", tp).send().await.unwrap();
    assert!(!r.headers().contains_key("x-request-id"));
    let h = seen(r).await;
    assert_eq!(h["traceparent"], tp);
    assert!(h.get("x-request-id").is_none());
}
