//! Range requests against a real store over loopback: `If-Range` (RFC 9110,
//! 13.1.5) answers the range only when the validator matches, else the
//! whole file with 200.

use std::time::{Duration, Instant};
use stretchfs::client::{call, empty, full, Reply};
use stretchfs::config::FileConfig;
use stretchfs_core::hash::{ContentHash, HashKind};

async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    call(
        hyper::Method::GET,
        url,
        headers,
        empty(),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_with_a_stale_validator_answers_the_whole_file() {
    let dir = std::env::temp_dir().join(format!("stretchfs-ranges-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let listen: std::net::SocketAddr = "127.0.0.231:7400".parse().unwrap();
    let key = "ranges-test-api-key-0123456789".to_string();
    let cfg = FileConfig {
        data_dir: dir.clone(),
        listen,
        authority: listen,
        roles: vec!["authority".into(), "store".into(), "prism".into()],
        zone: "a".into(),
        weight: 100,
        cluster_id: "0123456789abcdef0123456789abcdef".into(),
        cluster_secret: "ranges-test-cluster-secret".into(),
        api_key: key.clone(),
        api_keys: Vec::new(),
        public_url: None,
        max_object_bytes: 5 << 30,
        proxy: false,
        url_ttl_secs: 60,
        replicas: 1,
        write_quorum: 1,
    };
    let node = stretchfs::server::start(cfg).await.unwrap();
    let start = Instant::now();
    while !node.shared.is_ready() {
        assert!(start.elapsed() < Duration::from_secs(20), "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let auth = format!("Bearer {key}");
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hash = ContentHash::compute(HashKind::Sha1, &bytes).to_string();
    let base = format!("http://{listen}");
    let r = call(
        hyper::Method::PUT,
        &format!("{base}/v1/content?ext=bin"),
        &[("authorization", &auth)],
        full(bytes.clone()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let body = serde_json::json!({"hash": hash, "ext": "bin", "life": "1h"}).to_string();
    let r = call(
        hyper::Method::POST,
        &format!("{base}/v1/purchases"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        full(body),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json().unwrap()["token"].as_str().unwrap().to_string();
    let r = get(&format!("{base}/p/{token}/f.bin"), &[]).await;
    assert_eq!(r.status, 302);
    let url = r.header("location").unwrap().to_string();

    let etag = format!("\"{hash}\"");
    // A matching validator: the range.
    let r = get(&url, &[("range", "bytes=10-19"), ("if-range", &etag)]).await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &bytes[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/5000"));
    // A validator that does not match: the whole file, 200.
    for stale in [
        "\"0000000000000000000000000000000000000000\"",
        "W/\"stale\"",
        // A weak form of the current tag never matches (strong comparison).
        &format!("W/{etag}"),
        // A date: the store sends no Last-Modified, so no date matches.
        "Tue, 01 Dec 2026 10:00:00 GMT",
    ] {
        let r = get(&url, &[("range", "bytes=10-19"), ("if-range", stale)]).await;
        assert_eq!(r.status, 200, "If-Range: {stale}");
        assert_eq!(r.body.len(), bytes.len(), "If-Range: {stale}");
        assert!(r.body[..] == bytes[..], "If-Range: {stale}");
        assert_eq!(r.header("content-range"), None, "If-Range: {stale}");
    }
    // No If-Range: the range.
    let r = get(&url, &[("range", "bytes=-5")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &bytes[4995..]);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
