//! Source checkout against real git servers: `git daemon` (git://) and `git-http-backend` under
//! lighttpd (smart HTTP), each serving bare repositories the test commits to with the git CLI.
//! The checkout's results are checked with the git CLI too.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use gantry_runner::checkout::{CheckedOut, CheckoutError, MirrorCache, checkout};
use gantry_runner::wire::{Checkout, GitAuth};
use gantry_tests::git::{BareRepo, GitDaemon, GitHttp, git, object_count};

/// One server kind with its repositories' directory; `url(name)` is a repository's clone URL.
struct Served<'a> {
    kind: &'static str,
    srv: &'a Path,
    url: &'a dyn Fn(&str) -> String,
}

/// Runs `test` once against git daemon and once against smart HTTP, each on its own directory
/// of repositories.
fn with_each_server(test: impl Fn(Served<'_>)) {
    let srv = tempfile::tempdir().expect("srv dir");
    let daemon = GitDaemon::start(srv.path());
    test(Served {
        kind: "git daemon",
        srv: srv.path(),
        url: &|name| daemon.url(name),
    });
    drop(daemon);
    let srv = tempfile::tempdir().expect("srv dir");
    let http = GitHttp::start(srv.path());
    test(Served {
        kind: "http",
        srv: srv.path(),
        url: &|name| http.url(name),
    });
}

/// A mirror cache of its own, removed with the returned directory.
fn new_cache() -> (tempfile::TempDir, MirrorCache) {
    let dir = tempfile::tempdir().expect("cache dir");
    let cache = MirrorCache::new(dir.path());
    (dir, cache)
}

fn spec(url: &str, commit: &str) -> Checkout {
    Checkout {
        url: url.to_owned(),
        commit: commit.to_owned(),
        git_ref: Some("refs/heads/main".into()),
        depth: 1,
        submodules: false,
        auth: None,
    }
}

/// Checks out and returns the result with the progress lines.
fn run(
    cache: &MirrorCache,
    spec: &Checkout,
    workspace: &Path,
) -> (Result<CheckedOut, CheckoutError>, Vec<String>) {
    let mut lines = Vec::new();
    let result = checkout(cache, spec, workspace, &mut |l| lines.push(l.to_owned()));
    (result, lines)
}

fn ok(cache: &MirrorCache, spec: &Checkout, workspace: &Path) -> (CheckedOut, Vec<String>) {
    let (result, lines) = run(cache, spec, workspace);
    match result {
        Ok(done) => (done, lines),
        Err(err) => panic!(
            "checkout of {} failed: {err}\nprogress: {lines:#?}",
            spec.url
        ),
    }
}

fn fetched_objects(done: &CheckedOut) -> usize {
    done.fetched.iter().map(|f| f.objects).sum()
}

#[test]
fn a_commit_is_checked_out_with_its_modes_and_history() {
    with_each_server(|s| {
        let repo = BareRepo::create(s.srv, "app");
        let work = repo.work_clone();
        work.write("README.md", "# app\n", 0o644)
            .write("build.sh", "#!/bin/sh\necho built\n", 0o755)
            .write("src/main.c", "int main(void) { return 0; }\n", 0o644)
            .symlink("readme-link", "README.md");
        let commit = work.commit("first: the app");
        work.push();

        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("workspace");
        // An artifact unpacked before the checkout stays.
        std::fs::write(ws.path().join("artifact.bin"), "from build").expect("artifact");
        let (done, lines) = ok(&cache, &spec(&(s.url)("app"), &commit), ws.path());

        let read = |p: &str| std::fs::read_to_string(ws.path().join(p)).expect(p);
        assert_eq!(read("README.md"), "# app\n", "{}", s.kind);
        assert_eq!(read("src/main.c"), "int main(void) { return 0; }\n");
        assert_eq!(read("artifact.bin"), "from build");
        let mode = |p: &str| {
            std::fs::metadata(ws.path().join(p))
                .expect(p)
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("build.sh") & 0o111, 0o111, "build.sh is executable");
        assert_eq!(mode("README.md") & 0o111, 0, "README.md is not");
        let link = std::fs::read_link(ws.path().join("readme-link")).expect("a symlink");
        assert_eq!(link, Path::new("README.md"));

        assert_eq!(git(ws.path(), &["rev-parse", "HEAD"]), commit, "{}", s.kind);
        assert_eq!(
            git(ws.path(), &["log", "-1", "--format=%s"]),
            "first: the app"
        );
        // Detached, and nothing differs from the commit but the untracked artifact.
        assert_eq!(
            git(ws.path(), &["rev-parse", "--abbrev-ref", "HEAD"]),
            "HEAD"
        );
        assert_eq!(
            git(ws.path(), &["status", "--porcelain"]),
            "?? artifact.bin",
            "{}",
            s.kind
        );
        assert_eq!(
            git(ws.path(), &["remote", "get-url", "origin"]),
            (s.url)("app")
        );

        assert_eq!(done.files, 4);
        let short = &commit[..7];
        assert_eq!(
            lines[0],
            format!("fetching {short} from {}", (s.url)("app"))
        );
        assert!(lines[1].starts_with("fetched "), "{lines:?}");
        assert_eq!(
            lines.last().map(String::as_str),
            Some(format!("checked out {short} (4 files)").as_str())
        );
    });
}

#[test]
fn a_second_checkout_fetches_only_the_new_objects() {
    with_each_server(|s| {
        let repo = BareRepo::create(s.srv, "app");
        let work = repo.work_clone();
        let files: Vec<(String, String)> = (0..40)
            .map(|i| {
                (
                    format!("src/file{i}.txt"),
                    format!("contents of file {i}\n").repeat(50),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let first = work.commit_files(&refs, "forty files");
        let url = (s.url)("app");
        let (_cache_dir, cache) = new_cache();

        let started = Instant::now();
        let ws1 = tempfile::tempdir().expect("ws");
        let (one, _) = ok(&cache, &spec(&url, &first), ws1.path());
        let cold = started.elapsed();
        let objects_after_first = object_count(&one.mirror);
        let second = work.commit_files(&[("src/file7.txt", "changed\n")], "change one");

        let started = Instant::now();
        let ws2 = tempfile::tempdir().expect("ws");
        let (two, lines) = ok(&cache, &spec(&url, &second), ws2.path());
        let warm = started.elapsed();

        let started = Instant::now();
        let ws3 = tempfile::tempdir().expect("ws");
        let (three, cached_lines) = ok(&cache, &spec(&url, &second), ws3.path());
        let cached = started.elapsed();
        eprintln!(
            "{}: first checkout {cold:?} ({} objects), newer commit {warm:?} ({} objects), \
             same commit again {cached:?} (fetched nothing)",
            s.kind,
            fetched_objects(&one),
            fetched_objects(&two)
        );

        assert_eq!(one.mirror, two.mirror, "one mirror per URL");
        // 40 blobs + 2 trees + 1 commit, then 1 blob + 2 trees + 1 commit.
        assert_eq!(fetched_objects(&one), 43, "{}: {:?}", s.kind, one.fetched);
        assert_eq!(fetched_objects(&two), 4, "{}: {lines:?}", s.kind);
        // The mirror grew by the new objects, not by a second copy of the first commit's
        // (libgit2 may copy a delta base or two into a thin pack it completes).
        let grown = object_count(&two.mirror) - objects_after_first;
        assert!((4..10).contains(&grown), "{}: grew by {grown}", s.kind);
        assert!(three.fetched.is_empty(), "{:?}", three.fetched);
        assert!(
            cached_lines[0].ends_with("is in the git cache already"),
            "{cached_lines:?}"
        );
        assert_eq!(
            std::fs::read_to_string(ws3.path().join("src/file7.txt")).expect("file7"),
            "changed\n"
        );
        assert_eq!(git(ws2.path(), &["rev-parse", "HEAD"]), second);
    });
}

#[test]
fn a_commit_the_server_lacks_is_a_clear_error() {
    with_each_server(|s| {
        let repo = BareRepo::create(s.srv, "app");
        repo.work_clone().commit_files(&[("a", "a\n")], "one");
        let url = (s.url)("app");
        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("ws");
        let missing = "0123456789abcdef0123456789abcdef01234567";
        let (result, _) = run(&cache, &spec(&url, missing), ws.path());
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            err,
            format!(
                "commit {missing} is not in {url} (fetched refs/heads/main, refs/heads/*, refs/tags/*)"
            ),
            "{}",
            s.kind
        );

        let (result, _) = run(&cache, &spec(&url, "abc1234"), ws.path());
        assert!(
            matches!(result, Err(CheckoutError::InvalidCommit(_))),
            "{result:?}"
        );
    });
}

#[test]
fn an_older_commit_is_found_through_its_ref() {
    with_each_server(|s| {
        let repo = BareRepo::create(s.srv, "app");
        let work = repo.work_clone();
        let old = work.commit_files(&[("v", "1\n")], "one");
        work.commit_files(&[("v", "2\n")], "two");
        let tip = work.commit_files(&[("v", "3\n")], "three");
        let url = (s.url)("app");

        // A fresh mirror: the id is refused (neither server allows unadvertised ids), the ref
        // is fetched in full instead.
        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("ws");
        let (done, lines) = ok(&cache, &spec(&url, &old), ws.path());
        assert!(
            lines.iter().any(|l| l.contains("does not hand out")),
            "{}: {lines:?}",
            s.kind
        );
        assert_eq!(
            done.fetched.last().map(|f| f.what.as_str()),
            Some("refs/heads/main")
        );
        assert_eq!(
            std::fs::read_to_string(ws.path().join("v")).ok().as_deref(),
            Some("1\n")
        );
        assert_eq!(git(ws.path(), &["rev-parse", "HEAD"]), old);

        // A shallow mirror (the tip at depth 1) must deepen to reach the old commit.
        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("ws");
        ok(&cache, &spec(&url, &tip), ws.path());
        let ws = tempfile::tempdir().expect("ws");
        let (_, lines) = ok(&cache, &spec(&url, &old), ws.path());
        assert_eq!(git(ws.path(), &["rev-parse", "HEAD"]), old, "{lines:?}");
        assert_eq!(git(ws.path(), &["log", "--format=%s"]), "one");

        // Without a ref, every branch is fetched.
        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("ws");
        let mut no_ref = spec(&url, &old);
        no_ref.git_ref = None;
        let (done, _) = ok(&cache, &no_ref, ws.path());
        assert_eq!(
            done.fetched.last().map(|f| f.what.as_str()),
            Some("refs/heads/*, refs/tags/*")
        );
    });
}

#[test]
fn depth_one_gives_a_shallow_repository() {
    with_each_server(|s| {
        let repo = BareRepo::create(s.srv, "app");
        let work = repo.work_clone();
        for i in 0..3 {
            work.commit_files(&[("n", &format!("{i}\n"))], &format!("commit {i}"));
        }
        let tip = git(work.path(), &["rev-parse", "HEAD"]);
        let url = (s.url)("app");

        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("ws");
        ok(&cache, &spec(&url, &tip), ws.path());
        assert_eq!(
            git(ws.path(), &["rev-parse", "--is-shallow-repository"]),
            "true",
            "{}",
            s.kind
        );
        assert_eq!(git(ws.path(), &["log", "--format=%s"]), "commit 2");

        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("ws");
        let mut full = spec(&url, &tip);
        full.depth = 0;
        ok(&cache, &full, ws.path());
        assert_eq!(
            git(ws.path(), &["rev-parse", "--is-shallow-repository"]),
            "false"
        );
        assert_eq!(
            git(ws.path(), &["log", "--format=%s"]),
            "commit 2\ncommit 1\ncommit 0"
        );
    });
}

#[test]
fn mirrors_serve_files_directories_and_changes_without_a_work_tree() {
    with_each_server(|s| {
        let repo = BareRepo::create(s.srv, "app");
        let work = repo.work_clone();
        let before = work.commit_files(
            &[
                (".gantry/build.yaml", "build: 1\n"),
                (".gantry/deploy.yaml", "deploy: 1\n"),
                (".gantry/shared/common.yaml", "common\n"),
                ("README.md", "readme\n"),
            ],
            "pipelines",
        );
        work.write(".gantry/build.yaml", "build: 2\n", 0o644)
            .write(".gantry/lint.yaml", "lint\n", 0o644)
            .symlink(".gantry/alias.yaml", "build.yaml")
            .remove(".gantry/deploy.yaml");
        let after = work.commit("change pipelines");
        work.push();
        let url = (s.url)("app");

        let (_cache_dir, cache) = new_cache();
        let mirror = cache
            .fetch(&url, &after, Some("refs/heads/main"), None, 0)
            .unwrap_or_else(|e| panic!("{}: {e}", s.kind));
        let text = |c: &str, p: &str| {
            mirror
                .read_file(c, p)
                .expect("read_file")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        assert_eq!(
            text(&before, ".gantry/build.yaml").as_deref(),
            Some("build: 1\n")
        );
        assert_eq!(
            text(&after, ".gantry/build.yaml").as_deref(),
            Some("build: 2\n")
        );
        assert_eq!(text(&after, ".gantry/deploy.yaml"), None);
        assert_eq!(text(&after, ".gantry"), None, "a directory is not a file");

        let listed: Vec<(String, String)> = mirror
            .list_dir(&after, ".gantry")
            .expect("list_dir")
            .into_iter()
            .map(|(n, b)| (n, String::from_utf8_lossy(&b).into_owned()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("build.yaml".to_owned(), "build: 2\n".to_owned()),
                ("lint.yaml".to_owned(), "lint\n".to_owned()),
            ],
            "regular files only, sorted"
        );
        assert!(mirror.list_dir(&after, "nope").expect("list").is_empty());
        assert!(
            mirror
                .list_dir(&after, "README.md")
                .expect("list")
                .is_empty()
        );

        assert_eq!(
            mirror.changed_files(Some(&before), &after).expect("diff"),
            [
                ".gantry/alias.yaml",
                ".gantry/build.yaml",
                ".gantry/deploy.yaml",
                ".gantry/lint.yaml"
            ]
        );
        let everything = [
            ".gantry/build.yaml",
            ".gantry/deploy.yaml",
            ".gantry/shared/common.yaml",
            "README.md",
        ];
        assert_eq!(
            mirror.changed_files(None, &before).expect("all"),
            everything
        );
        let zero = "0".repeat(40);
        assert_eq!(
            mirror.changed_files(Some(&zero), &before).expect("all"),
            everything
        );

        assert_eq!(
            mirror
                .resolve("refs/heads/main")
                .expect("resolve")
                .as_deref(),
            Some(after.as_str())
        );
        assert_eq!(mirror.resolve("refs/heads/nope").expect("resolve"), None);
        assert_eq!(
            MirrorCache::ls_remote(&url, None, "main").expect("ls-remote"),
            Some(after.clone())
        );
        assert_eq!(
            MirrorCache::ls_remote(&url, None, "refs/heads/main").expect("ls-remote"),
            Some(after.clone())
        );
        assert_eq!(
            MirrorCache::ls_remote(&url, None, "nope").expect("ls"),
            None
        );

        let unknown = "1111111111111111111111111111111111111111";
        let err = mirror.read_file(unknown, "README.md").err();
        assert!(
            matches!(err, Some(CheckoutError::NotInMirror { .. })),
            "{err:?}"
        );
    });
}

#[test]
fn an_empty_repository_has_no_refs_and_no_branch_head() {
    // A repository registered before anyone pushed: listing its refs finds none (libgit2
    // hands back a NULL list, which once aborted the process in debug builds).
    with_each_server(|served| {
        let _bare = BareRepo::create(served.srv, "empty");
        let url = (served.url)("empty");
        assert_eq!(
            MirrorCache::ls_remote(&url, None, "main").expect("ls-remote"),
            None,
            "{}",
            served.kind
        );
    });
}

#[test]
fn an_annotated_tag_is_fetched_by_its_object_and_peeled_to_its_commit() {
    with_each_server(|served| {
        let bare = BareRepo::create(served.srv, "tagged");
        let url = (served.url)("tagged");
        let work = bare.work_clone();
        work.write("README.md", "release\n", 0o644);
        let commit = work.commit("release");
        work.push();
        git(work.path(), &["tag", "-a", "v2.0.0", "-m", "two"]);
        git(work.path(), &["push", "-q", "origin", "v2.0.0"]);
        let object = git(work.path(), &["rev-parse", "v2.0.0"]).trim().to_owned();
        assert_ne!(object, commit);
        let (_dir, cache) = new_cache();
        let mirror = cache
            .fetch(&url, &object, Some("refs/tags/v2.0.0"), None, 1)
            .unwrap_or_else(|e| panic!("{}: {e}", served.kind));
        assert_eq!(
            mirror.peel(&object).expect("peel"),
            commit,
            "{}",
            served.kind
        );
        assert_eq!(
            mirror.peel(&commit).expect("a commit peels to itself"),
            commit
        );
        assert_eq!(
            mirror.read_file(&commit, "README.md").expect("read"),
            Some(b"release\n".to_vec())
        );
    });
}

#[test]
fn concurrent_checkouts_of_one_url_share_one_fetch() {
    with_each_server(|s| {
        let repo = BareRepo::create(s.srv, "app");
        let commit = repo
            .work_clone()
            .commit_files(&[("a", "a\n"), ("b", "b\n")], "two files");
        let url = (s.url)("app");
        let (_cache_dir, cache) = new_cache();
        let (ws1, ws2) = (
            tempfile::tempdir().expect("ws"),
            tempfile::tempdir().expect("ws"),
        );
        let results: Vec<CheckedOut> = std::thread::scope(|scope| {
            let handles: Vec<_> = [ws1.path(), ws2.path()]
                .into_iter()
                .map(|ws| {
                    let (cache, spec) = (&cache, spec(&url, &commit));
                    scope.spawn(move || ok(cache, &spec, ws).0)
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a checkout thread panicked"))
                .collect()
        });
        let fetches: usize = results.iter().map(|r| r.fetched.len()).sum();
        assert_eq!(
            fetches, 1,
            "{}: the lock lets one fetch, the other reuses it",
            s.kind
        );
        for ws in [&ws1, &ws2] {
            assert_eq!(git(ws.path(), &["rev-parse", "HEAD"]), commit);
        }
    });
}

#[test]
fn http_credentials_are_sent_and_never_shown() {
    let srv = tempfile::tempdir().expect("srv");
    let repo = BareRepo::create(srv.path(), "private");
    let commit = repo
        .work_clone()
        .commit_files(&[("secret.txt", "classified\n")], "private");
    let http = GitHttp::start_with_auth(srv.path(), "bot", "t0ken-right");
    let url = http.url("private");
    let (_cache_dir, cache) = new_cache();
    let auth = |password: &str| {
        Some(GitAuth {
            username: "bot".into(),
            password: password.into(),
        })
    };

    let ws = tempfile::tempdir().expect("ws");
    let mut right = spec(&url, &commit);
    right.auth = auth("t0ken-right");
    ok(&cache, &right, ws.path());
    assert!(ws.path().join("secret.txt").exists());

    let (_other_dir, other_cache) = new_cache();
    let mut wrong = spec(&url, &commit);
    wrong.auth = auth("t0ken-wrong");
    let (result, lines) = run(&other_cache, &wrong, ws.path());
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err,
        format!("{url} refused the credentials of user \"bot\": check the token and its access"),
        "{}",
        http.error_log()
    );
    assert!(!lines.concat().contains("t0ken"), "{lines:?}");

    let (result, _) = run(&other_cache, &spec(&url, &commit), ws.path());
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err,
        format!("{url} asks for credentials, and the checkout has none")
    );

    // Credentials in the URL work and are masked in everything printed.
    let in_url = http.url_with_credentials("private", "bot", "t0ken-right");
    let (_cache_dir, cache) = new_cache();
    let ws = tempfile::tempdir().expect("ws");
    let (_, lines) = ok(&cache, &spec(&in_url, &commit), ws.path());
    let shown = http.url_with_credentials("private", "bot", "***");
    assert_eq!(lines[0], format!("fetching {} from {shown}", &commit[..7]));
    assert!(!lines.concat().contains("t0ken"), "{lines:?}");
    // Nor do they stay in the workspace where steps could read them.
    assert_eq!(git(ws.path(), &["remote", "get-url", "origin"]), url);
    let bad_in_url = http.url_with_credentials("private", "bot", "t0ken-bad");
    let (_cache_dir, cache) = new_cache();
    let (result, _) = run(&cache, &spec(&bad_in_url, &commit), ws.path());
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(!err.contains("t0ken"), "{err}");
    assert!(err.contains("bot:***@"), "{err}");
}

#[test]
fn submodules_come_from_their_own_mirrors() {
    with_each_server(|s| {
        let lib = BareRepo::create(s.srv, "lib");
        let lib_commit = lib
            .work_clone()
            .commit_files(&[("lib.txt", "library\n")], "the library");
        let app = BareRepo::create(s.srv, "app");
        let work = app.work_clone();
        work.write("app.txt", "app\n", 0o644)
            .add_submodule("../lib.git", "vendor/lib");
        let app_commit = work.commit("app with lib");
        work.push();
        let url = (s.url)("app");

        let (_cache_dir, cache) = new_cache();
        let ws = tempfile::tempdir().expect("ws");
        let mut with_subs = spec(&url, &app_commit);
        with_subs.submodules = true;
        let (done, lines) = ok(&cache, &with_subs, ws.path());
        assert_eq!(done.submodules, ["vendor/lib"], "{}: {lines:?}", s.kind);
        assert_eq!(
            std::fs::read_to_string(ws.path().join("vendor/lib/lib.txt"))
                .ok()
                .as_deref(),
            Some("library\n")
        );
        assert_eq!(
            git(&ws.path().join("vendor/lib"), &["rev-parse", "HEAD"]),
            lib_commit
        );
        let status = git(ws.path(), &["submodule", "status"]);
        assert!(
            status.starts_with(&format!("{lib_commit} vendor/lib")),
            "git sees the submodule at its commit: {status}"
        );
        assert!(
            lines.iter().any(|l| l.contains(&(s.url)("lib"))),
            "{lines:?}"
        );

        let ws = tempfile::tempdir().expect("ws");
        ok(&cache, &spec(&url, &app_commit), ws.path());
        assert!(!ws.path().join("vendor/lib/lib.txt").exists());
    });
}

#[test]
fn https_checks_out_from_a_trusted_server_and_refuses_an_untrusted_one() {
    let served = tempfile::tempdir().expect("served");
    let bare = BareRepo::create(served.path(), "app");
    let work = bare.work_clone();
    let commit = work.commit_files(&[("README.md", "over https\n")], "first");
    let tls = gantry_tests::git::test_tls();
    let server = GitHttp::start_tls(served.path(), &tls.server);
    let url = server.url("app");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (_cache_dir, cache) = new_cache();
    let ws = tempfile::tempdir().expect("ws");
    ok(&cache, &spec(&url, &commit), ws.path());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("README.md")).expect("checked out"),
        "over https\n"
    );

    // A server whose certificate no CA vouches for is refused, and the error says so.
    let other = tempfile::tempdir().expect("pem dir");
    let untrusted = GitHttp::start_tls(
        served.path(),
        &gantry_tests::git::untrusted_pem(other.path()),
    );
    let (_cache_dir, cache) = new_cache();
    let ws = tempfile::tempdir().expect("ws");
    let (result, _) = run(&cache, &spec(&untrusted.url("app"), &commit), ws.path());
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("certificate"), "{err}");
}
