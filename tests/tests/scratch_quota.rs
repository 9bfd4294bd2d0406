#![cfg(not(target_arch = "wasm32"))]
use std::time::Duration;
use graft_tests::e2e::{self, ChromeDriver, StaticServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota() {
    let server = StaticServer::start(e2e::dist_dir());
    let driver = ChromeDriver::start();
    let client = driver.session_without_webgpu().await;
    let url = server.url("/");
    client.goto(&url).await.expect("open");
    let origin = url.trim_end_matches('/').to_string();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let write = r#"const [n, key, done] = arguments;
      const open = indexedDB.open("scratch", 1);
      open.onupgradeneeded = () => open.result.createObjectStore("s");
      open.onsuccess = () => { const db = open.result; const tx = db.transaction("s", "readwrite");
        tx.objectStore("s").put(new Uint8Array(n).map((_, i) => (i * 7919) % 251), key);
        tx.oncomplete = () => { db.close(); done("ok"); }; tx.onabort = () => { db.close(); done("abort " + tx.error); }; };"#;
    println!("first write: {}", client.execute_async(write, vec![20000.into(), 1.into()]).await.unwrap());
    let u = e2e::devtools(&client, "Storage.getUsageAndQuota", serde_json::json!({"origin": origin})).await;
    println!("usage: {u}");
    let usage = u["usage"].as_u64().unwrap();
    e2e::devtools(&client, "Storage.overrideQuotaForOrigin", serde_json::json!({"origin": origin, "quotaSize": usage})).await;
    println!("small write right away: {}", client.execute_async(write, vec![20000.into(), 2.into()]).await.unwrap());
    println!("big write right away: {}", client.execute_async(write, vec![5000000.into(), 3.into()]).await.unwrap());
    tokio::time::sleep(Duration::from_secs(31)).await;
    println!("small write after 31 s: {}", client.execute_async(write, vec![20000.into(), 4.into()]).await.unwrap());
    println!("big write after 31 s: {}", client.execute_async(write, vec![5000000.into(), 5.into()]).await.unwrap());
    let u = e2e::devtools(&client, "Storage.getUsageAndQuota", serde_json::json!({"origin": origin})).await;
    println!("usage: {u}");
    client.close().await.unwrap();
}
