//! The README's curl examples, run as written against the shipped routes.toml (only the
//! address differs: casegate listens on a free port here). Needs `curl` and a POSIX `sh`.

use std::process::Command;

fn readme_commands() -> Vec<String> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("<!-- readme-test:begin -->")
        .expect("begin marker");
    let end = readme.find("<!-- readme-test:end -->").expect("end marker");
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

#[tokio::test]
async fn readme_curl_examples_work_against_the_shipped_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml");
    let env = |k: &str| std::env::var(k).ok();
    let mut cfg = casegate::config::load_with(std::path::Path::new(path), &env, false).unwrap();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
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
        let script = block.replace("127.0.0.1:8080", &addr);
        let dir = dir.path().to_path_buf();
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
        outputs.push(stdout);
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
