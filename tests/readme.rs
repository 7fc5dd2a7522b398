//! The README's curl examples, run as written against the shipped routes.toml (only the
//! addresses differ: casegate listens on free ports here). Needs `curl` and a POSIX `sh`;
//! the production examples also `openssl` (to make a test certificate) and a curl with
//! HTTP/2.

use std::path::Path;
use std::process::Command;

/// The ```sh blocks between `<!-- readme-test{tag}:begin -->` and its end marker.
fn readme_commands_of(tag: &str) -> Vec<String> {
    let readme = include_str!("../README.md");
    let start = readme
        .find(&format!("<!-- readme-test{tag}:begin -->"))
        .expect("begin marker");
    let end = readme
        .find(&format!("<!-- readme-test{tag}:end -->"))
        .expect("end marker");
    let section = &readme[start..end];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(i) = rest.find("```sh\n") {
        let after = &rest[i + 6..];
        let j = after.find("```").expect("closed block");
        blocks.push(after[..j].to_string());
        rest = &after[j + 3..];
    }
    blocks
}

fn readme_commands() -> Vec<String> {
    readme_commands_of("")
}

/// Runs a README block with `sh -ec` in `dir`; its standard output.
async fn run_block(block: &str, dir: &Path) -> String {
    let (script, dir) = (block.to_string(), dir.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-ec")
            .arg(&script)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "README block failed:\n{block}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn shipped_config() -> casegate::config::Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml");
    let env = |k: &str| std::env::var(k).ok();
    let mut cfg = casegate::config::load_with(Path::new(path), &env, false).unwrap();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    assert_eq!(cfg.admin_listen, Some("127.0.0.1:9190".parse().unwrap()));
    cfg.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg
}

#[tokio::test]
async fn readme_production_examples_work() {
    let blocks = readme_commands_of(":production");
    assert_eq!(blocks.len(), 3, "certificate, TLS and HTTP/2, admin");
    let dir = tempfile::tempdir().unwrap();
    run_block(&blocks[0], dir.path()).await;
    let mut cfg = shipped_config();
    cfg.tls = Some(casegate::config::TlsFiles {
        cert: dir.path().join("casegate.pem"),
        key: dir.path().join("casegate-key.pem"),
    });
    let running = casegate::server::start(&cfg).await.unwrap();
    let port = running.addr().port();
    let admin = running.admin_addr().unwrap().to_string();
    let tls = run_block(
        &blocks[1].replace("localhost:8443", &format!("localhost:{port}")),
        dir.path(),
    )
    .await;
    assert_eq!(tls, "2\n1.1\n", "HTTP/2 then HTTP/1.1 over TLS");
    let admin_out = run_block(&blocks[2].replace("127.0.0.1:9190", &admin), dir.path()).await;
    let lines: Vec<&str> = admin_out.lines().collect();
    assert_eq!(lines[..2], ["ok", "ready"], "{admin_out}");
    assert!(
        lines[2..].iter().any(|l| l
            .starts_with("casegate_requests_total{route=\"tines-to-thalamus\"")
            && l.contains("operation=\"list\"")
            && l.ends_with(" 2")),
        "the two lists are counted: {admin_out}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn readme_curl_examples_work_against_the_shipped_config() {
    let cfg = shipped_config();
    let running = casegate::server::start(&cfg).await.unwrap();
    let addr = running.addr().to_string();
    let blocks = readme_commands();
    assert_eq!(
        blocks.len(),
        9,
        "setup + one upload and one read-back example per dialect"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for block in blocks {
        outputs.push(run_block(&block.replace("127.0.0.1:8080", &addr), dir.path()).await);
    }
    assert!(outputs[1].contains("\"attachements\""), "{}", outputs[1]);
    assert!(
        outputs[2].contains("FILE_ATTACHED_AND_COMMENTED"),
        "{}",
        outputs[2]
    );
    assert!(
        outputs[3]
            .to_ascii_lowercase()
            .contains("casegate-dropped: bulktags[]"),
        "{}",
        outputs[3]
    );
    assert!(
        outputs[3].contains("\"objectId\":\"9c235210-6834-11ea-a78c-6ffb38a34414\""),
        "{}",
        outputs[3]
    );
    assert!(
        outputs[4].contains("\"externalReferenceAttachmentTypeId\":\".files\""),
        "{}",
        outputs[4]
    );
    // The Tines client's list shows its file, with a link back through casegate (the
    // downloads themselves are checked by the blocks' `cmp`).
    let listed: serde_json::Value = serde_json::from_str(&outputs[6]).unwrap();
    assert_eq!(listed["meta"]["count"], 1, "{listed}");
    assert_eq!(
        listed["files"][0]["file"]["url"],
        format!("http://{addr}/api/v2/cases/42/files/1/download")
    );
    // What the embedded upstreams stored: the file itself, each time.
    let stored: Vec<_> = running
        .gateway()
        .emulators()
        .iter()
        .flat_map(|e| e.files())
        .collect();
    assert_eq!(stored.len(), 4);
    for f in stored {
        assert_eq!(f.data.as_ref(), b"Hello, case!\n", "{}", f.name);
    }
    running.shutdown().await;
}
