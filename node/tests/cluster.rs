//! Real `stretchfs` processes on loopback. Each test has its own 127.0.0.x
//! address so they run in parallel without port clashes.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use stretchfs::local_cluster::ProcCluster;
use stretchfs_core::hash::{ContentHash, HashKind};

fn cluster(ip_last: u8) -> ProcCluster {
    cluster_with(ip_last, |_| {})
}

fn cluster_with(ip_last: u8, adjust: impl Fn(&mut stretchfs::dev::Member)) -> ProcCluster {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("stretchfs-it-{ip_last}-{}", std::process::id()));
    ProcCluster::start_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_stretchfs")),
        &dir,
        &format!("127.0.0.{ip_last}"),
        7400,
        adjust,
    )
}

async fn get_range(url: &str, range: &str) -> stretchfs::client::Reply {
    stretchfs::client::call(
        hyper::Method::GET,
        url,
        &[("range", range)],
        stretchfs::client::empty(),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn sha1_hex(b: &[u8]) -> String {
    ContentHash::compute(HashKind::Sha1, b).to_string()
}

/// Uploads, checks the answer, purchases; returns (hash, token).
async fn upload_and_purchase(c: &ProcCluster, bytes: &[u8]) -> (String, String) {
    // 503 says "retry": right after every node is ready, a prism's replica
    // may not list the stores as up yet on a loaded machine. A client
    // retries; so does this one, a bounded number of times.
    let mut tries = 0;
    let r = loop {
        let r = c.upload("prism-1", bytes.to_vec(), "bin").await.unwrap();
        if r.status != 503 || tries == 100 {
            break r;
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 201, "{}", r.text());
    let up = r.json().unwrap();
    let hash = sha1_hex(bytes);
    assert_eq!(up["hash"], hash.as_str());
    assert_eq!(up["size"], bytes.len());
    assert_eq!(up["copies"].as_array().unwrap().len(), 2, "{up}");
    let r = c.purchase("prism-1", &hash, "bin", "1h").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json().unwrap();
    (hash, p["token"].as_str().unwrap().to_string())
}

/// Files named `<hash>.*` under each member's content directory.
fn copies_on_disk(c: &ProcCluster, hash: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in &c.members {
        let shard = m
            .cfg
            .data_dir
            .join("content")
            .join(&hash[0..2])
            .join(&hash[2..4]);
        if let Ok(rd) = std::fs::read_dir(&shard) {
            if rd
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(hash))
            {
                out.push(m.name.clone());
            }
        }
    }
    out
}

async fn delivered_bytes(
    c: &ProcCluster,
    prism: &str,
    token: &str,
    hash: &str,
) -> (String, Vec<u8>) {
    let (first, second) = c
        .deliver(prism, token, &format!("{hash}.bin"))
        .await
        .unwrap();
    assert_eq!(first.status, 302, "{prism}: {}", first.text());
    let store_url = first.header("location").unwrap().to_string();
    let second = second.unwrap();
    assert_eq!(second.status, 200, "{}", second.text());
    (store_url, second.body.to_vec())
}

fn store_name_of(c: &ProcCluster, url: &str) -> String {
    c.members
        .iter()
        .find(|m| url.starts_with(&format!("http://{}/", m.cfg.listen)))
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_deliver_kill_a_store_and_repair() {
    let mut c = cluster(21);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let bytes = random_bytes(300_000);
    let (hash, token) = upload_and_purchase(&c, &bytes).await;
    let on_disk = copies_on_disk(&c, &hash);
    assert_eq!(on_disk.len(), 2, "two copies on disk: {on_disk:?}");

    // Both prisms deliver the same bytes.
    for prism in ["prism-1", "prism-2"] {
        let (url, got) = delivered_bytes(&c, prism, &token, &hash).await;
        assert!(got == bytes, "{prism} delivered other bytes");
        // The store honours Range and refuses a tampered URL.
        let r = get_range(&url, "bytes=10-19").await;
        assert_eq!(r.status, 206);
        assert_eq!(&r.body[..], &bytes[10..20]);
        assert_eq!(r.header("etag"), Some(format!("\"{hash}\"").as_str()));
        let tampered = url.replace("&s=", "&s=00");
        assert_eq!(c.get(&tampered).await.unwrap().status, 403);
        // Another store at that address (a wiped store back as a new one)
        // does not take it for a URL of its own: "ask again", not a 404.
        let holder = store_name_of(&c, &url);
        let other = c
            .members
            .iter()
            .find(|m| m.name.starts_with("store") && m.name != holder)
            .unwrap();
        let elsewhere = url.replacen(
            &c.members[c.index(&holder)].cfg.listen.to_string(),
            &other.cfg.listen.to_string(),
            1,
        );
        let r = c.get(&elsewhere).await.unwrap();
        assert_eq!(r.status, 421, "{}", r.text());
        assert!(r.text().contains("wrong_store"), "{}", r.text());
    }

    // kill -9 a store holding a copy: voted down on every node. How fast
    // is the simulator's to judge (timely detection) and is printed here;
    // a loaded test machine may take any time, so only a generous limit
    // stops a hang.
    let victim = on_disk[0].clone();
    let vi = c.index(&victim);
    let victim_id = c.status(&victim).await.unwrap().node;
    let killed = Instant::now();
    c.kill(vi);
    let cfg = c.members[vi].cfg.node_config().unwrap();
    let bound = Duration::from_secs(30);
    loop {
        let mut all = true;
        for (i, m) in c.members.iter().enumerate() {
            if !c.running(i) {
                continue;
            }
            let s = c.status(&m.name).await.unwrap();
            let down = s.nodes.iter().any(|n| n.id == victim_id && n.down);
            all &= down;
        }
        if all {
            break;
        }
        assert!(
            killed.elapsed() < bound,
            "{victim} not down everywhere within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{victim} down on every node after {:?} (detection bound {:?})",
        killed.elapsed(),
        std::time::Duration::from_micros(cfg.detection_bound().as_micros() as u64)
    );
    let s = c.status("authority").await.unwrap();
    let peer = s.nodes.iter().find(|n| n.id == victim_id).unwrap();
    assert!(!peer.left, "killed, not left: it must be down by votes");

    // Deliveries go to the other copy.
    for i in 0..10 {
        let prism = if i % 2 == 0 { "prism-1" } else { "prism-2" };
        let (url, got) = delivered_bytes(&c, prism, &token, &hash).await;
        assert_ne!(
            store_name_of(&c, &url),
            victim,
            "delivered from the killed store"
        );
        assert!(got == bytes);
    }

    // Repair restores two live copies (after the repair grace).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let live: Vec<String> = copies_on_disk(&c, &hash)
            .into_iter()
            .filter(|n| *n != victim)
            .collect();
        let s = c.status("authority").await.unwrap();
        if live.len() == 2 && s.content.under_replicated == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired: live copies {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prism_restarted_empty_waits_until_synced_and_never_answers_a_false_404() {
    let mut c = cluster(22);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let mut bought = Vec::new();
    for _ in 0..5 {
        let bytes = random_bytes(1000);
        bought.push(upload_and_purchase(&c, &bytes).await);
    }
    let pi = c.index("prism-2");
    c.kill(pi);
    c.wipe(pi);
    c.spawn(pi);
    let url = c.url("prism-2");
    let mut not_ready = 0;
    let mut delivered = 0;
    let start = Instant::now();
    while delivered < 50 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "prism-2 never delivered"
        );
        for (hash, token) in &bought {
            // Readiness only goes from "no" to "yes" here: a prism that
            // said ready must deliver.
            let said_ready = match c.get(&format!("{url}/readyz")).await {
                Ok(r) => r.status == 200,
                Err(_) => continue, // Not listening yet.
            };
            let r = c.get(&format!("{url}/p/{token}/{hash}.bin")).await.unwrap();
            match r.status {
                302 => delivered += 1,
                503 => {
                    let e = r.json().unwrap();
                    assert_eq!(e["error"]["code"], "not_ready", "{e}");
                    assert!(!said_ready, "not ready after /readyz said ready");
                    not_ready += 1;
                }
                other => panic!("restarted prism answered {other}: {}", r.text()),
            }
        }
    }
    println!("restarted prism: {not_ready} not-ready answers, then {delivered} deliveries");
    assert_eq!(c.get(&format!("{url}/readyz")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_killed_deliveries_continue_purchases_refused_then_state_intact() {
    let mut c = cluster(23);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let bytes = random_bytes(5000);
    let (hash, token) = upload_and_purchase(&c, &bytes).await;
    let before = c.status("authority").await.unwrap();

    let ai = c.index("authority");
    c.kill(ai);
    for prism in ["prism-1", "prism-2"] {
        let (_, got) = delivered_bytes(&c, prism, &token, &hash).await;
        assert!(
            got == bytes,
            "delivery through {prism} with the authority down"
        );
    }
    let r = c.purchase("prism-2", &hash, "bin", "1h").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let e = r.json().unwrap();
    assert_eq!(e["error"]["code"], "unavailable", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("authority"),
        "{e}"
    );

    c.spawn(ai);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let after = c.status("authority").await.unwrap();
    assert_eq!(after.cluster, before.cluster);
    assert!(after.feed_seq >= before.feed_seq);
    assert_eq!(after.purchases, before.purchases);
    assert_eq!(after.content.items, before.content.items);
    let r = c
        .get(&format!("{}/v1/purchases/{token}", c.url("prism-1")))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // New purchases work again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.purchase("prism-2", &hash, "bin", "1h").await.unwrap();
        if r.status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "purchases still refused: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_a_wrong_secret_or_cluster_are_refused_and_logged() {
    use std::sync::Arc;
    use stretchfs_core::{ClusterId, Envelope, Message, NodeId, PROTOCOL_VERSION};
    use stretchfs_transport_http::{HttpClient, SendError, Signer};

    let c = cluster(24);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let authority = c.members[c.index("authority")].cfg.listen;
    let cluster = ClusterId(u128::from_str_radix(&c.secrets.cluster_id, 16).unwrap());
    let env = |cluster| Envelope {
        version: PROTOCOL_VERSION,
        cluster,
        from: NodeId(99),
        from_addr: "127.0.0.1:9".parse().unwrap(),
        sent_at: stretchfs_core::WallTime::default(),
        msg: Message::Ping { probe: 1 },
    };
    let send = |secret: &str, signed_for: ClusterId, inside: ClusterId| {
        let signer = Arc::new(Signer::new(signed_for, secret.as_bytes(), 30));
        let client = HttpClient::new(signer, Duration::from_secs(2));
        async move { client.post_message(authority, &env(inside)).await }
    };
    let right = c.secrets.cluster_secret.clone();
    // The right secret and cluster pass (the control).
    send(&right, cluster, cluster).await.unwrap();
    match send("not-the-cluster-secret", cluster, cluster).await {
        Err(SendError::Status(401, why)) => assert!(why.contains("signature"), "{why}"),
        other => panic!("wrong secret: {other:?}"),
    }
    match send(&right, ClusterId(cluster.0 ^ 1), cluster).await {
        Err(SendError::Status(403, why)) => assert!(why.contains("cluster"), "{why}"),
        other => panic!("wrong cluster: {other:?}"),
    }
    match send(&right, cluster, ClusterId(cluster.0 ^ 1)).await {
        Err(SendError::Status(403, _)) => {}
        other => panic!("foreign envelope: {other:?}"),
    }
    let unsigned = stretchfs::client::call(
        hyper::Method::POST,
        &format!("http://{authority}/internal/v1/message"),
        &[],
        stretchfs::client::full(stretchfs_core::codec::encode(&env(cluster))),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(unsigned.status, 401);
    // The public API wants the key for writes.
    let r = stretchfs::client::call(
        hyper::Method::PUT,
        &format!("{}/v1/content?ext=txt", c.url("prism-1")),
        &[("authorization", "Bearer wrong")],
        stretchfs::client::full("x"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json().unwrap()["error"]["code"], "unauthorized");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = std::fs::read_to_string(c.log_path("authority")).unwrap();
    assert!(log.contains("refused a node message"), "no log line");
    assert!(
        log.contains("signature does not match"),
        "log does not say why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_is_refused_and_nothing_is_kept() {
    let c = cluster(25);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let wrong = sha1_hex(b"something else");
    let url = format!("{}/v1/content?ext=txt&hash={wrong}", c.url("prism-1"));
    let auth = format!("Bearer {}", c.secrets.api_key);
    let r = stretchfs::client::call(
        hyper::Method::PUT,
        &url,
        &[("authorization", &auth)],
        stretchfs::client::full("the bytes"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json().unwrap()["error"]["code"], "hash_mismatch");
    assert!(copies_on_disk(&c, &sha1_hex(b"the bytes")).is_empty());
    let r = c
        .get(&format!("{}/v1/content/{wrong}", c.url("prism-1")))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_cluster_cleanly() {
    let mut c = cluster(26);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let si = c.index("store-3");
    let id = c.status("store-3").await.unwrap().node;
    let status = c.terminate(si).expect("was running");
    assert!(status.success(), "exit status {status:?}");
    // It said it was leaving: marked down because it left, not by the
    // probes' votes (the cause is checked, not a clock: a loaded machine
    // may take any time to get there).
    let deadline = Instant::now() + Duration::from_secs(30);
    let peer = loop {
        let s = c.status("authority").await.unwrap();
        if let Some(p) = s.nodes.iter().find(|n| n.id == id && n.down) {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "store-3 never marked down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        peer.left,
        "store-3 was voted down instead of leaving: {peer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_prism_streams_the_bytes_itself() {
    let c = cluster_with(27, |m| m.cfg.proxy = m.name == "prism-2");
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let bytes = random_bytes(70_000);
    let (hash, token) = upload_and_purchase(&c, &bytes).await;
    let url = format!("{}/p/{token}/{hash}.bin", c.url("prism-2"));
    let r = c.get(&url).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body[..] == bytes[..]);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let r = get_range(&url, "bytes=-5").await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &bytes[bytes.len() - 5..]);
    // The other prism still redirects.
    let (first, _) = c
        .deliver("prism-1", &token, &format!("{hash}.bin"))
        .await
        .unwrap();
    assert_eq!(first.status, 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_copy_is_found_by_scrub_and_replaced() {
    let c = cluster(28);
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let bytes = random_bytes(20_000);
    let (hash, _) = upload_and_purchase(&c, &bytes).await;
    let holders = copies_on_disk(&c, &hash);
    assert_eq!(holders.len(), 2);
    let victim = &c.members[c.index(&holders[0])];
    let shard = victim
        .cfg
        .data_dir
        .join("content")
        .join(&hash[0..2])
        .join(&hash[2..4]);
    let file = shard.join(format!("{hash}.bin"));
    let mut rotten = bytes.clone();
    rotten[1234] ^= 0x40;
    std::fs::write(&file, &rotten).unwrap();
    // Scrub finds it, the copy is dropped and reported, repair makes a
    // good one again: in the end two intact copies.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let intact: Vec<String> = c
            .members
            .iter()
            .filter(|m| {
                let f = m
                    .cfg
                    .data_dir
                    .join("content")
                    .join(&hash[0..2])
                    .join(&hash[2..4])
                    .join(format!("{hash}.bin"));
                std::fs::read(f).is_ok_and(|b| b == bytes)
            })
            .map(|m| m.name.clone())
            .collect();
        let rotten_left = std::fs::read(&file).is_ok_and(|b| b == rotten);
        if intact.len() == 2 && !rotten_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired: intact {intact:?}, rotten copy left: {rotten_left}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_mix_in_one_process() {
    // The authority is a prism too: purchases made through it are written
    // to its database on the request's own thread.
    let c = cluster_with(29, |m| {
        if m.name == "authority" {
            m.cfg.roles = vec!["authority".into(), "prism".into(), "store".into()];
        }
    });
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let bytes = random_bytes(3000);
    let r = c.upload("authority", bytes.clone(), "bin").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let hash = sha1_hex(&bytes);
    let r = c.purchase("authority", &hash, "bin", "90s").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json().unwrap()["token"].as_str().unwrap().to_string();
    for prism in ["authority", "prism-2"] {
        let (_, got) = delivered_bytes(&c, prism, &token, &hash).await;
        assert!(got == bytes, "through {prism}");
    }
    let s = c.status("authority").await.unwrap();
    let me = s.nodes.iter().find(|n| n.id == s.node).unwrap();
    assert_eq!(me.roles, ["authority", "store", "prism"]);
}
