//! Bad input on a real `stretchfs` process (authority, store and prism in
//! one, on its own 127.0.0.x, with a second prism beside it): every bad request gets a clear 4xx, 413 or
//! 503 in the JSON error shape, writes nothing, costs no more than its
//! headers where the headers already condemn it, and the node still serves
//! a normal request afterwards.
//!
//! `STRETCHFS_TEST_BIN` runs the same tests against another binary (an
//! older build, to see which of them it fails).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stretchfs::client::{call, empty, full, Reply};
use stretchfs::local_cluster::ProcCluster;
use stretchfs_core::hash::{ContentHash, HashKind};
use stretchfs_core::{codec, ClusterId, Envelope, Message, NodeId, PROTOCOL_VERSION};
use stretchfs_transport_http::auth::{body_digest, H_VERSION};
use stretchfs_transport_http::{Signer, MESSAGE_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);
/// A second API key the node takes besides the cluster's (rotation).
const ROTATED_KEY: &str = "rotated-api-key-0123456789abcdef";
/// What the node under test takes as its largest object.
const MAX_OBJECT: u64 = 1 << 20;

/// One process with every role, one copy per object.
async fn node(ip_last: u8) -> ProcCluster {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("stretchfs-bad-{ip_last}-{}", std::process::id()));
    let bin = std::env::var("STRETCHFS_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_stretchfs")));
    let mut c = ProcCluster::prepare(&bin, &dir, &format!("127.0.0.{ip_last}"), 7400, |m| {
        if m.name == "authority" {
            m.cfg.roles = vec!["authority".into(), "store".into(), "prism".into()];
            m.cfg.max_object_bytes = MAX_OBJECT;
            m.cfg.public_url = Some("https://cdn.example".into());
            m.cfg.api_keys = vec![ROTATED_KEY.into()];
        }
    });
    // A second node (a prism) hands its state back to the fresh authority,
    // which then leaves recovery after its window instead of its longest.
    for name in ["authority", "prism-2"] {
        let i = c.index(name);
        c.set_env(i, "STRETCHFS_REPLICAS", "1");
        c.set_env(i, "STRETCHFS_WRITE_QUORUM", "1");
        c.spawn(i);
    }
    c.wait_ready(Duration::from_secs(60)).await.unwrap();
    c
}

fn addr(c: &ProcCluster) -> SocketAddr {
    c.members[c.index("authority")].cfg.listen
}

fn data_dir(c: &ProcCluster) -> &Path {
    &c.members[c.index("authority")].cfg.data_dir
}

fn auth(c: &ProcCluster) -> String {
    format!("Bearer {}", c.secrets.api_key)
}

fn cluster_id(c: &ProcCluster) -> ClusterId {
    ClusterId(u128::from_str_radix(&c.secrets.cluster_id, 16).unwrap())
}

/// Every file under the content, temp and spool directories.
fn files(c: &ProcCluster) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    for d in ["content", "tmp", "spool"] {
        walk(&data_dir(c).join(d), &mut out);
    }
    out.sort();
    out
}

/// The answer is `status` with `{"error":{"code": code, ..}}`.
fn assert_refused(what: &str, r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let body = r
        .json()
        .unwrap_or_else(|e| panic!("{what}: not the JSON error shape: {e}"));
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

/// The node still does its job: healthy, takes an upload, answers for it.
async fn still_serves(c: &ProcCluster) {
    let base = c.url("authority");
    assert_eq!(c.get(&format!("{base}/healthz")).await.unwrap().status, 200);
    let bytes = rand::random::<[u8; 32]>().to_vec();
    let r = c.upload("authority", bytes.clone(), "bin").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let hash = ContentHash::compute(HashKind::Sha1, &bytes);
    let r = c.get(&format!("{base}/v1/content/{hash}")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A request written by hand: the head, with `content-length` declared as
/// `declared`, then `body` (possibly much less than declared), then the
/// whole answer, read until the server closes.
async fn raw(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared: u64,
    body: &[u8],
) -> Result<Reply, String> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {to}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {declared}\r\n\r\n"));
    let work = async {
        let mut sock = tokio::net::TcpStream::connect(to)
            .await
            .map_err(|e| e.to_string())?;
        sock.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        sock.write_all(body).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let _ = sock.read_to_end(&mut answer).await;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(T, work)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {T:?}"))??;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no answer head: {:?}", String::from_utf8_lossy(&answer)))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let mut headers = hyper::HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                hyper::header::HeaderName::from_bytes(k.trim().as_bytes()),
                hyper::header::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    Ok(Reply {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(&answer[split + 4..]),
    })
}

fn ping(cluster: ClusterId) -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        cluster,
        from: NodeId(99),
        from_addr: "127.0.0.1:9".parse().unwrap(),
        sent_at: stretchfs_core::WallTime::default(),
        msg: Message::Ping { probe: 1 },
    }
}

fn now_secs() -> i64 {
    stretchfs_transport_http::client::unix_secs()
}

/// Headers of a node message signed with `secret` for `cluster`, sent to
/// `to` at `t`.
fn signed(
    secret: &str,
    cluster: ClusterId,
    to: &str,
    t: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let s = Signer::new(cluster, secret.as_bytes(), 30);
    let h = s.sign(
        "POST",
        MESSAGE_PATH,
        to,
        t,
        rand::random(),
        &body_digest(body),
    );
    h.pairs().iter().map(|(k, v)| (*k, v.to_string())).collect()
}

async fn post_message(c: &ProcCluster, headers: &[(&'static str, String)], body: Vec<u8>) -> Reply {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = format!("http://{}{MESSAGE_PATH}", addr(c));
    call(hyper::Method::POST, &url, &h, full(body), T)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_messages_are_refused_before_their_body_is_read() {
    let c = node(61).await;
    let to = addr(&c);
    let before = files(&c);
    // A flood of unsigned requests each declaring 64 MiB and sending none
    // of it: every one is answered from its headers alone.
    let flood: Vec<_> = (0..16)
        .map(|_| tokio::spawn(raw(to, "POST", MESSAGE_PATH, &[], 64 << 20, b"")))
        .collect();
    for r in flood {
        let r = r.await.unwrap().expect("answered without the body");
        assert_refused("unsigned 64 MiB", &r, 401, "unsigned");
    }
    // Well signed but declaring more than a node message may have.
    let right = c.secrets.cluster_secret.clone();
    let headers = signed(&right, cluster_id(&c), &to.to_string(), now_secs(), b"");
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = raw(to, "POST", MESSAGE_PATH, &h, 16 << 20, b"")
        .await
        .expect("answered without the body");
    assert_refused("signed 16 MiB", &r, 413, "too_large");
    // Signed with another secret: the MAC needs the body, so only the
    // declared length can refuse it before reading, and does.
    let headers = signed(
        "another-secret-entirely",
        cluster_id(&c),
        &to.to_string(),
        now_secs(),
        b"",
    );
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = raw(to, "POST", MESSAGE_PATH, &h, 9 << 20, b"")
        .await
        .expect("answered without the body");
    assert_refused("wrongly signed 9 MiB", &r, 413, "too_large");
    assert_eq!(files(&c), before, "nothing written");
    still_serves(&c).await;
}

/// Headers that pass every check but the MAC: right cluster, version,
/// destination and time, a nonce and a signature of the right form.
fn forged(c: &ProcCluster) -> Vec<(&'static str, String)> {
    let mut h = signed(
        "any-secret-but-the-cluster-one",
        cluster_id(c),
        &addr(c).to_string(),
        now_secs(),
        b"",
    );
    for (k, v) in h.iter_mut() {
        if *k == stretchfs_transport_http::auth::H_SIGNATURE {
            *v = stretchfs_transport_http::auth::hex(&rand::random::<[u8; 32]>());
        }
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_cannot_hold_more_than_the_nodes_budget() {
    let c = node(67).await;
    let to = addr(&c);
    let headers = forged(&c);
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut head = format!("POST {MESSAGE_PATH} HTTP/1.1\r\nhost: {to}\r\n");
    for (k, v) in &h {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\n\r\n",
        stretchfs_transport_http::MAX_ENVELOPE_BYTES
    ));
    // Eight senders declare the largest message and send none of it: the
    // node holds their reservations while it waits.
    let mut holders = Vec::new();
    for _ in 0..8 {
        let mut sock = tokio::net::TcpStream::connect(to).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        holders.push(sock);
    }
    // A one-byte message is refused as busy once they all hold theirs (a
    // bad signature before that).
    let probe = |h: Vec<(&'static str, String)>| async move {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        raw(to, "POST", MESSAGE_PATH, &h, 1, b"x").await.unwrap()
    };
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = probe(forged(&c)).await;
        if r.status == 503 {
            assert_refused("over budget", &r, 503, "busy");
            break;
        }
        assert_refused("within budget", &r, 401, "bad_signature");
        assert!(std::time::Instant::now() < deadline, "never out of budget");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Gone, they give the budget back.
    drop(holders);
    loop {
        let r = probe(forged(&c)).await;
        if r.status == 401 {
            assert_refused("budget back", &r, 401, "bad_signature");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without a declared length a message is not read at all.
    let url = format!("http://{to}{MESSAGE_PATH}");
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(hyper::body::Frame::data(
        bytes::Bytes::from_static(b"x"),
    ))]);
    let streamed = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(chunks));
    let r = call(hyper::Method::POST, &url, &h, streamed, T)
        .await
        .unwrap();
    assert_refused("chunked", &r, 411, "length_required");
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_node_messages_get_clear_refusals() {
    let c = node(62).await;
    let to = addr(&c).to_string();
    let cluster = cluster_id(&c);
    let right = c.secrets.cluster_secret.clone();
    let body = codec::encode(&ping(cluster));
    let before = files(&c);

    // The control: signed right, accepted once, then a replay.
    let headers = signed(&right, cluster, &to, now_secs(), &body);
    let r = post_message(&c, &headers, body.clone()).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = post_message(&c, &headers, body.clone()).await;
    assert_refused("replayed", &r, 401, "replayed");

    let r = post_message(&c, &[], body.clone()).await;
    assert_refused("unsigned", &r, 401, "unsigned");
    let headers = signed("not-the-cluster-secret", cluster, &to, now_secs(), &body);
    let r = post_message(&c, &headers, body.clone()).await;
    assert_refused("wrong secret", &r, 401, "bad_signature");
    let headers = signed(&right, cluster, &to, now_secs() - 600, &body);
    let r = post_message(&c, &headers, body.clone()).await;
    assert_refused("stale", &r, 401, "stale");
    let headers = signed(&right, ClusterId(cluster.0 ^ 1), &to, now_secs(), &body);
    let r = post_message(&c, &headers, body.clone()).await;
    assert_refused("foreign cluster", &r, 403, "foreign_cluster");
    let mut headers = signed(&right, cluster, &to, now_secs(), &body);
    for (k, v) in headers.iter_mut() {
        if *k == H_VERSION {
            *v = (PROTOCOL_VERSION - 1).to_string();
        }
    }
    let r = post_message(&c, &headers, body.clone()).await;
    assert_refused("older version", &r, 403, "unsupported_version");
    // Signed for another node (a captured message replayed elsewhere).
    let headers = signed(&right, cluster, "127.0.0.62:7401", now_secs(), &body);
    let r = post_message(&c, &headers, body.clone()).await;
    assert_refused("misdirected", &r, 421, "misdirected");
    // Well signed, but not an envelope.
    for (what, bad) in [
        ("truncated", body[..body.len() / 2].to_vec()),
        ("garbage", vec![0xff; 64]),
        ("empty", Vec::new()),
        ("trailing", [body.as_slice(), &[0, 0]].concat()),
    ] {
        let headers = signed(&right, cluster, &to, now_secs(), &bad);
        let r = post_message(&c, &headers, bad).await;
        assert_refused(what, &r, 400, "malformed");
    }
    // A content copy (store endpoint) unsigned.
    let hash = ContentHash::compute(HashKind::Sha1, b"x");
    let url = format!("http://{to}/internal/v1/content/{hash}?ext=bin");
    let r = call(hyper::Method::PUT, &url, &[], full("x"), T)
        .await
        .unwrap();
    assert_refused("unsigned copy", &r, 401, "unsigned");
    assert_eq!(files(&c), before, "nothing written");
    still_serves(&c).await;
    let log = std::fs::read_to_string(c.log_path("authority")).unwrap();
    assert!(
        log.contains("refused a node message"),
        "refusals are logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_are_capped_and_the_key_comes_first() {
    let c = node(63).await;
    let to = addr(&c);
    let base = c.url("authority");
    let key = auth(&c);
    let json = ("content-type", "application/json");
    let before = files(&c);
    // The key is checked before a purchase's body is read.
    let r = raw(to, "POST", "/v1/purchases", &[json], 10 << 20, b"")
        .await
        .expect("answered without the body");
    assert_refused("purchase without key", &r, 401, "unauthorized");
    // JSON bodies are capped, from the declared length and as they stream.
    let r = raw(to, "POST", "/v1/content/exists", &[json], 1 << 20, b"")
        .await
        .expect("answered without the body");
    assert_refused("1 MiB exists", &r, 413, "too_large");
    // Streamed without a declared length: refused once past the cap.
    let huge = format!("{{\"hashes\":[\"{}\"]}}", "a".repeat(100 << 10));
    let chunks = futures_util::stream::iter(
        huge.into_bytes()
            .chunks(16 << 10)
            .map(|c| {
                Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(c)))
            })
            .collect::<Vec<_>>(),
    );
    let streamed = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(chunks));
    let url = format!("{base}/v1/content/exists");
    let r = call(hyper::Method::POST, &url, &[json], streamed, T)
        .await
        .unwrap();
    assert_refused("100 KiB exists", &r, 413, "too_large");
    let many: Vec<String> = (0..300u32)
        .map(|i| ContentHash::compute(HashKind::Sha1, &i.to_le_bytes()).to_string())
        .collect();
    let body = serde_json::json!({ "hashes": many }).to_string();
    let r = call(
        hyper::Method::POST,
        &format!("{base}/v1/content/exists"),
        &[json],
        full(body),
        T,
    )
    .await
    .unwrap();
    assert_refused("300 hashes", &r, 413, "too_many_hashes");
    for (what, bad) in [
        ("malformed", "{\"hashes\": [\"ab"),
        ("wrong shape", "{\"hashes\": 5}"),
        ("not json", "hashes=ab"),
        (
            "nested",
            &format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
        ),
    ] {
        let url = format!("{base}/v1/content/exists");
        let r = call(hyper::Method::POST, &url, &[json], full(bad.to_string()), T)
            .await
            .unwrap();
        assert_refused(what, &r, 400, "bad_json");
    }
    let headers = [("authorization", key.as_str()), json];
    let url = format!("{base}/v1/purchases");
    let r = call(hyper::Method::POST, &url, &headers, full("{\"hash\":"), T)
        .await
        .unwrap();
    assert_refused("malformed purchase", &r, 400, "bad_json");

    assert_eq!(files(&c), before, "nothing written");
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_uploads_and_path_traversal_are_refused() {
    let c = node(65).await;
    let to = addr(&c);
    let base = c.url("authority");
    let key = auth(&c);
    let before = files(&c);
    // Uploads over the maximum object size: refused from the declared
    // length, and as they stream; nothing kept.
    let up = "/v1/content?ext=bin";
    let r = raw(
        to,
        "PUT",
        up,
        &[("authorization", &key)],
        2 * MAX_OBJECT,
        b"",
    )
    .await
    .expect("answered without the body");
    assert_refused("declared too large", &r, 413, "too_large");
    let chunks = futures_util::stream::iter((0..=MAX_OBJECT / 4096).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            1u8;
            4096
        ])))
    }));
    let streamed = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(chunks));
    let r = call(
        hyper::Method::PUT,
        &format!("{base}{up}"),
        &[("authorization", &key)],
        streamed,
        T,
    )
    .await
    .unwrap();
    assert_refused("streamed too large", &r, 413, "too_large");

    // Path traversal in hash, ext and file names.
    let auth_only = [("authorization", key.as_str())];
    for (method, path, status, code) in [
        (
            "GET",
            "/v1/content/..%2F..%2Fetc%2Fpasswd",
            400,
            "bad_request",
        ),
        ("GET", "/v1/content/....", 400, "bad_request"),
        ("DELETE", "/v1/content/..%2Fmeta.redb", 400, "bad_request"),
        ("PUT", "/v1/content?ext=..%2F..%2Fx", 400, "bad_request"),
        (
            "PUT",
            "/v1/content?ext=bin&hash=..%2F..%2Fx",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/c/..%2F..%2Fmeta.redb?n=1&e=1&s=00",
            403,
            "bad_signature",
        ),
        ("GET", "/p/..%2F..%2F/meta.redb", 404, "not_found"),
        ("GET", "/v1/purchases/..%2F..%2Fetc", 404, "not_found"),
        ("GET", "/v1/purchases/zz", 404, "not_found"),
        (
            "GET",
            &format!("/v1/purchases/{}", "f".repeat(33)),
            404,
            "not_found",
        ),
        ("DELETE", "/v1/purchases/%00%00", 404, "not_found"),
        ("GET", "/p/not-a-token/x.bin", 404, "not_found"),
        // Malformed or missing query strings, unknown paths and methods.
        ("PUT", "/v1/content", 400, "bad_request"),
        (
            "PUT",
            "/v1/content?ext=bin&ext=txt&hash=%zz",
            400,
            "bad_request",
        ),
        ("GET", "/c/ab.bin", 400, "bad_request"),
        ("GET", "/c/ab.bin?n=1&e=soon&s=00", 400, "bad_request"),
        ("GET", "/../../etc/passwd", 404, "no_route"),
        ("PATCH", "/v1/content/ab", 405, "method_not_allowed"),
    ] {
        let m = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let r = call(m, &format!("{base}{path}"), &auth_only, full("x"), T)
            .await
            .unwrap();
        assert_refused(&format!("{method} {path}"), &r, status, code);
    }

    assert_eq!(files(&c), before, "nothing written");
    // Either key is taken; a wrong one is not.
    let rotated = format!("Bearer {ROTATED_KEY}");
    for (k, status) in [
        (rotated.as_str(), 201),
        ("Bearer rotated-api-key-0123456789abcdeX", 401),
    ] {
        let r = call(
            hyper::Method::PUT,
            &format!("{base}/v1/content?ext=txt"),
            &[("authorization", k)],
            full("rotation"),
            T,
        )
        .await
        .unwrap();
        assert_eq!(r.status, status, "{}", r.text());
    }
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_refuse_overflows_and_content_is_served_inert() {
    let c = node(66).await;
    let base = c.url("authority");
    let key = auth(&c);
    let json = ("content-type", "application/json");
    let before = files(&c);
    let headers = [("authorization", key.as_str()), json];
    let url = format!("{base}/v1/purchases");
    // Purchase lives that overflow; the URL is the configured one, not
    // whatever `Host` the client sent.
    let bytes = b"<html><script>alert(1)</script></html>".to_vec();
    let r = c.upload("authority", bytes.clone(), "html").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let hash = ContentHash::compute(HashKind::Sha1, &bytes).to_string();
    for life in [
        serde_json::json!("213503982334602d"),
        serde_json::json!("18446744073709551615d"),
        serde_json::json!(u64::MAX),
        serde_json::json!("400d"),
    ] {
        let body = serde_json::json!({ "hash": hash, "ext": "html", "life": life }).to_string();
        let r = call(hyper::Method::POST, &url, &headers, full(body), T)
            .await
            .unwrap();
        assert_refused(&format!("life {life}"), &r, 400, "bad_request");
    }
    let body = serde_json::json!({ "hash": hash, "ext": "html", "life": "1h" }).to_string();
    let with_host = [
        ("authorization", key.as_str()),
        json,
        ("host", "evil.example"),
    ];
    let r = call(hyper::Method::POST, &url, &with_host, full(body), T)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json().unwrap();
    let token = p["token"].as_str().unwrap().to_string();
    let purchase_url = p["url"].as_str().unwrap();
    assert!(
        purchase_url.starts_with("https://cdn.example/p/"),
        "{purchase_url}"
    );

    // Stored HTML is served inert: no sniffing, sandboxed, downloaded.
    let (first, second) = c
        .deliver("authority", &token, &format!("{hash}.html"))
        .await
        .unwrap();
    assert_eq!(first.status, 302, "{}", first.text());
    let served = second.unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(served.header("content-security-policy"), Some("sandbox"));
    assert_eq!(served.header("content-disposition"), Some("attachment"));

    // Inverted and overflowing ranges.
    let store_url = first.header("location").unwrap().to_string();
    for range in [
        "bytes=5-2",
        "bytes=0-99999999999999999999",
        "bytes=99999999999999999999-",
        "bytes=-0",
        "bytes=1000-2000",
    ] {
        let r = call(
            hyper::Method::GET,
            &store_url,
            &[("range", range)],
            empty(),
            T,
        )
        .await
        .unwrap();
        assert_refused(range, &r, 416, "bad_range");
    }

    let after = files(&c);
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(new.len(), 1, "only the one good upload was kept: {new:?}");
    still_serves(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_abandoned_part_way_leaves_nothing() {
    let c = node(64).await;
    let to = addr(&c);
    let key = auth(&c);
    let spool = data_dir(&c).join("spool");
    let head = format!(
        "PUT /v1/content?ext=bin HTTP/1.1\r\nhost: {to}\r\nauthorization: {key}\r\ncontent-length: {}\r\n\r\n",
        MAX_OBJECT
    );
    for _ in 0..4 {
        let mut sock = tokio::net::TcpStream::connect(to).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&vec![3u8; 64 << 10]).await.unwrap();
        // The upload has begun (its spool file exists) before it is cut.
        let deadline = std::time::Instant::now() + T;
        while std::fs::read_dir(&spool).unwrap().count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the upload never began"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(sock);
    }
    let deadline = std::time::Instant::now() + T;
    loop {
        let left: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spool files left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serves(&c).await;
}
