//! Micro-benchmarks of reading what an upstream answers where the answer grows with the
//! case. A Kibana back answers an upload with the whole case, every comment in it, and
//! casegate keeps the one `.files` comment of the new file (the newest named like the
//! upload): read for a client of another dialect (the case not kept) and for a Kibana
//! client (shown the case), for cases of 1, 16 and 128 `.files` comments, each with a user
//! comment between, as cases are used; a Kibana back's list of such a case for a Kibana
//! client; a Tines back's list page of 20 and 100 files. Each read's allocations are
//! counted beside its time. Run with `cargo bench -p casegate-bench --bench answers`.

use casegate::dialect::kibana::Kibana;
use casegate::dialect::{Answer, BackCtx, Dialect, UpstreamOptions};
use casegate::upload::UploadMeta;
use divan::{black_box, Bencher};

// Counts each iteration's allocations beside its time.
#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::Divan::default().config_with_args().main();
}

/// One `.files` comment as Kibana writes it.
fn file_comment(n: usize, name: &str, extension: &str) -> serde_json::Value {
    serde_json::json!({
        "created_at": "2026-12-06T12:00:30.708Z",
        "created_by": {"email": null, "full_name": null, "username": "elastic"},
        "externalReferenceAttachmentTypeId": ".files",
        "externalReferenceId": format!("00000000-0000-4000-8000-{n:012}"),
        "externalReferenceMetadata": {"files": [{
            "created": "2026-12-06T12:00:30.708Z",
            "extension": extension,
            "mimeType": "application/pdf",
            "name": name,
        }]},
        "externalReferenceStorage": {"soType": "file", "type": "savedObject"},
        "id": format!("10000000-0000-4000-8000-{n:012}"),
        "owner": "cases",
        "pushed_at": null,
        "pushed_by": null,
        "type": "externalReference",
        "updated_at": null,
        "updated_by": null,
        "version": "WzEsMV0=",
    })
}

/// A case holding `files` `.files` comments, the newest the upload's (`upload.txt`).
fn case(files: usize) -> Vec<u8> {
    let mut comments = Vec::new();
    for n in 1..files {
        comments.push(file_comment(n, &format!("report-{n}"), "pdf"));
        comments.push(serde_json::json!({
            "comment": format!("looked at report {n}"),
            "created_at": "2026-12-06T12:00:31.000Z",
            "created_by": {"email": null, "full_name": null, "username": "elastic"},
            "id": format!("20000000-0000-4000-8000-{n:012}"),
            "owner": "cases",
            "type": "user",
            "version": "WzEsMV0=",
        }));
    }
    comments.push(file_comment(files, "upload", "txt"));
    let case = serde_json::json!({
        "assignees": [], "category": null, "closed_at": null, "closed_by": null,
        "comments": comments,
        "connector": {"fields": null, "id": "none", "name": "none", "type": ".none"},
        "created_at": "2026-12-06T12:00:30.708Z",
        "created_by": {"email": null, "full_name": null, "profile_uid": "u_emulated", "username": "elastic"},
        "customFields": [], "description": "", "duration": null, "external_service": null,
        "id": "c1", "owner": "cases", "settings": {"syncAlerts": false}, "severity": "low",
        "status": "open", "tags": [], "title": "A case", "totalAlerts": 0,
        "totalComment": comments.len(),
        "updated_at": "2026-12-06T12:00:30.708Z",
        "updated_by": {"email": null, "full_name": null, "profile_uid": "u_emulated", "username": "elastic"},
        "version": "WzIsMV0=",
    });
    serde_json::to_vec(&case).unwrap_or_default()
}

/// The upstream's side of a route with no options.
fn back_ctx(options: &UpstreamOptions, raw_wanted: bool) -> BackCtx<'_> {
    BackCtx {
        base_url: "http://127.0.0.1:9000",
        options,
        client_space: None,
        raw_wanted,
    }
}

/// Kibana's upload answer read for a Tines client: the new file's comment found.
#[divan::bench(args = [1, 16, 128])]
fn kibana_upload_answer(bencher: Bencher, files: usize) {
    read_answer(bencher, files, false);
}

/// The same for a Kibana client, who is shown the case itself (kept whole).
#[divan::bench(args = [1, 16, 128])]
fn kibana_upload_answer_kept(bencher: Bencher, files: usize) {
    read_answer(bencher, files, true);
}

fn read_answer(bencher: Bencher, files: usize, raw_wanted: bool) {
    let body = case(files);
    let mut meta = UploadMeta::default();
    meta.case_id = Some("c1".into());
    meta.file_name = Some("upload.txt".into());
    let options = UpstreamOptions::new();
    let ctx = back_ctx(&options, raw_wanted);
    let want = format!("00000000-0000-4000-8000-{files:012}");
    // The file found is the upload's, else the benchmark measures nothing.
    match Kibana.read_stored(&body, &meta, &ctx) {
        Answer::Stored(r) if r.attachment.id.as_deref() == Some(&want) => {}
        _ => panic!("the answer's file is not the upload's"),
    }
    bencher.bench_local(|| Kibana.read_stored(black_box(&body), &meta, &ctx));
}

/// A page of a Tines case's files as Tines answers a list, `files` records.
fn tines_page(files: usize) -> Vec<u8> {
    let records: Vec<serde_json::Value> = (1..=files)
        .map(|n| {
            serde_json::json!({
                "id": n,
                "case_id": 42,
                "block_id": null,
                "value": "",
                "created_at": "2026-12-06T12:00:30Z",
                "updated_at": "2026-12-06T12:00:30Z",
                "file": {
                    "filename": format!("report-{n}.pdf"),
                    "url": format!("https://tines.example/api/v2/cases/42/files/{n}/download"),
                },
                "user": {
                    "user_id": "7", "first_name": "Ada", "last_name": "Lovelace",
                    "email": "ada@example.com", "avatar_url": null, "is_service_account": false,
                },
            })
        })
        .collect();
    let page = serde_json::json!({"files": records, "meta": {"count": files}});
    serde_json::to_vec(&page).unwrap_or_default()
}

/// A Tines back's list of a case's files (a page of 20 and of 100).
#[divan::bench(args = [20, 100])]
fn tines_list_page(bencher: Bencher, files: usize) {
    let body = tines_page(files);
    let options = UpstreamOptions::new();
    let ctx = back_ctx(&options, false);
    match casegate::dialect::tines::Tines.read_list(&body, &ctx) {
        Ok(listed) if listed.files.len() == files => {}
        _ => panic!("the page's files are not all read"),
    }
    bencher.bench_local(|| casegate::dialect::tines::Tines.read_list(black_box(&body), &ctx));
}

/// A Kibana back's list of a case's files for a Kibana client, who is shown the case.
#[divan::bench(args = [16, 128])]
fn kibana_list_kept(bencher: Bencher, files: usize) {
    let body = case(files);
    let options = UpstreamOptions::new();
    let ctx = back_ctx(&options, true);
    match Kibana.read_list(&body, &ctx) {
        Ok(listed) if listed.files.len() == files && listed.case.is_some() => {}
        _ => panic!("the case's files are not all read"),
    }
    bencher.bench_local(|| Kibana.read_list(black_box(&body), &ctx));
}
