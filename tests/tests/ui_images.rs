//! The run page's artifacts and built images, in a real browser: the b2i example pushes an
//! image to a real registry (Debian's docker-registry); its page names the repository and the
//! digest the registry reports, and the artifact it layered in downloads from the page with
//! the SHA-256 the page shows.

use std::time::Duration;

use gantry_tests::browser::Browser;
use gantry_tests::image_tools::{Buildah, skopeo_inspect};
use gantry_tests::registry::Registry;
use gantry_tests::{TestEngine, assert_succeeded, stage_of, workspace};
use serde_json::json;

const RUN_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_shows_the_pushed_image_by_digest_and_downloads_the_artifact() {
    let registry = Registry::start().await;
    Buildah::new().push_busybox_base(&registry, "base/busybox:1");
    let host = registry.host.clone();
    let app = TestEngine::start_with(move |c| c.insecure_registries = vec![host]).await;
    let example = std::fs::read_to_string(workspace().join("pipelines/b2i.yaml")).expect("b2i");
    let name = app.apply(&example).await;
    let run = app.trigger(&name, &[("registry", &registry.host)]).await;
    let (row, stages) = app.wait_for_run(run.run_id, RUN_LIMIT).await;
    assert_succeeded(&row);
    let pinned = stage_of(&stages, "package").image.clone().expect("image");
    let digest = skopeo_inspect(
        &registry,
        &registry.image(&format!("demo/hello:{}", run.number)),
    )["Digest"]
        .as_str()
        .expect("the registry's digest")
        .to_owned();

    let browser = Browser::start("images").await;
    browser
        .sign_in(&app.url(), "admin", &app.admin_password())
        .await;
    browser
        .goto(&format!("{}/runs/{}", app.url(), run.run_id))
        .await;
    let cells = |table: &str| {
        format!(
            "return [...document.querySelectorAll('section[aria-labelledby={table}] tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim()));"
        )
    };
    let images = browser.js(&cells("img-h"), vec![]).await;
    assert_eq!(
        images,
        json!([[
            "package",
            format!("{}/demo/hello", registry.host),
            digest.clone()
        ]]),
        "the image as pushed ({pinned})"
    );
    let artifacts = browser.js(&cells("art-h"), vec![]).await;
    let artifacts = artifacts.as_array().expect("rows");
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert_eq!(artifacts[0][0], "build");
    assert_eq!(
        artifacts[0][1], "artifacts",
        "the stage's bundle of its paths"
    );
    let shown = artifacts[0][3].as_str().expect("checksum").to_owned();
    assert_eq!(shown.len(), 64, "{shown}");

    // The link downloads it (with the session cookie) and the bytes hash to what is shown.
    let fetched = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const link = document.querySelector('section[aria-labelledby=art-h] tbody a[download]');
             fetch(link.href).then(async r => {
               const body = await r.arrayBuffer();
               const hash = await crypto.subtle.digest('SHA-256', body);
               const hex = [...new Uint8Array(hash)].map(b => b.toString(16).padStart(2, '0')).join('');
               const head = [...new Uint8Array(body.slice(0, 2))];
               done([r.status, r.headers.get('content-type'), r.headers.get('x-checksum-sha256'), hex, head,
                     r.headers.get('content-disposition')]);
             }).catch(e => done(String(e)));",
            vec![],
        )
        .await
        .expect("download in the page");
    assert_eq!(fetched[0], 200, "{fetched}");
    assert_eq!(fetched[1], "application/gzip");
    assert_eq!(fetched[2], shown.as_str());
    assert_eq!(
        fetched[3],
        shown.as_str(),
        "the bytes hash to the shown SHA-256"
    );
    assert_eq!(fetched[4], json!([0x1f, 0x8b]), "a gzip stream");
    assert_eq!(
        fetched[5],
        format!(
            "attachment; filename=\"b2i-run{}-build-artifacts.tar.gz\"",
            run.number
        )
    );
    browser.screenshot("run-page").await;
    browser.close().await;
    app.stop().await;
}
