//! Image-build benchmark (docs/performance.md#image-builds): B2I of a large binary onto a base
//! image, built and pushed by Gantry, against buildah doing the same (FROM base, COPY, commit,
//! push) to the same registry in the same run.
//!
//! `image-bench b2i [--size-mb 50] [--iterations 5]` starts a registry (Debian's
//! docker-registry), pushes a busybox base with buildah, then alternates the two builders. Each
//! iteration's binary differs in its last bytes, so nobody skips the upload of a layer the
//! registry already has. Gantry's build runs in a child process of its own (the same library
//! call and runtime kind as `gantry-runner`), which reports its peak RSS (VmHWM).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gantry_runner::image::{B2iTask, Compression, Preset, RegistryAccess, b2i};
use gantry_tests::image_tools::Buildah;
use gantry_tests::registry::Registry;

#[derive(Parser)]
#[command(about = "Gantry image-build benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// B2I of a large binary vs buildah FROM + COPY + commit + push.
    B2i {
        #[arg(long, default_value_t = 50)]
        size_mb: u64,
        #[arg(long, default_value_t = 5)]
        iterations: u32,
        /// The stage's `compression`: fast, default or best (gzip 1, 6, 9).
        #[arg(long, default_value = "fast")]
        compression: String,
    },
    /// (internal) One Gantry B2I build from a task file; prints the pushed image and VmHWM.
    #[command(hide = true)]
    Once {
        task: PathBuf,
        workspace: PathBuf,
        scratch: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Bench::B2i {
            size_mb,
            iterations,
            compression,
        } => {
            let compression: Compression =
                serde_json::from_value(serde_json::Value::String(compression))
                    .context("--compression is fast, default or best")?;
            tokio::runtime::Runtime::new()?.block_on(bench_b2i(size_mb, iterations, compression))
        }
        Bench::Once {
            task,
            workspace,
            scratch,
        } => once(&task, &workspace, &scratch),
    }
}

/// The child: the same kind of runtime `gantry-runner` starts, one build, then its peak RSS.
fn once(task: &Path, workspace: &Path, scratch: &Path) -> Result<()> {
    let task: B2iTask = serde_json::from_str(&std::fs::read_to_string(task)?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // With IMAGE_BENCH_TRACE set, each progress line goes to stderr with the time since start.
    let started = Instant::now();
    let trace = std::env::var_os("IMAGE_BENCH_TRACE").is_some();
    let progress = move |line: &str| {
        if trace {
            eprintln!("{:>6} ms  {line}", started.elapsed().as_millis());
        }
    };
    let pushed = runtime.block_on(b2i::build(&task, workspace, scratch, &progress))?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
        .unwrap_or_default();
    // The bytes uploaded: the new layer and the config (base layers are mounted).
    println!("{} {} {hwm}", pushed.pinned, pushed.uploaded_bytes);
    Ok(())
}

/// About `size` bytes of real machine code (the machine's shared libraries and programs,
/// concatenated in name order), so the layer compresses like a real binary does.
fn make_binary(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut sources: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib"] {
        if let Ok(listing) = std::fs::read_dir(dir) {
            sources.extend(listing.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    sources.sort();
    for source in sources {
        if written >= size {
            break;
        }
        let Ok(bytes) = std::fs::read(&source) else {
            continue;
        };
        let take = bytes.len().min(usize::try_from(size - written)?);
        out.write_all(&bytes[..take])?;
        written += take as u64;
    }
    if written < size {
        bail!("found only {written} bytes of programs to build a {size}-byte binary from");
    }
    out.flush()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Makes iteration `i`'s binary differ from every other's.
fn stamp(path: &Path, i: u32) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::End(-16))?;
    file.write_all(format!("{i:016}").as_bytes())?;
    Ok(())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn check(status: std::process::Output, what: &str) -> Result<String> {
    if !status.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&status.stdout).trim().to_owned())
}

async fn bench_b2i(size_mb: u64, iterations: u32, compression: Compression) -> Result<()> {
    let registry = Registry::start().await;
    let buildah = Buildah::new();
    buildah.push_busybox_base(&registry, "base/busybox:1");
    let base = registry.image("base/busybox:1");
    // buildah keeps pulled images: pull the base once, outside the timings, as Gantry never
    // downloads the base's layers at all.
    check(
        buildah
            .command()
            .args(["pull", "-q", "--tls-verify=false"])
            .arg(format!("docker://{base}"))
            .output()?,
        "buildah pull",
    )?;

    let work = tempfile::tempdir()?;
    let workspace = work.path().join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let binary = workspace.join("app");
    make_binary(&binary, size_mb * 1024 * 1024)?;
    let exe = std::env::current_exe()?;

    let mut gantry_times = Vec::new();
    let mut buildah_times = Vec::new();
    let mut peak_kb = 0u64;
    println!("b2i of a {size_mb} MiB binary onto {base}, {iterations} iterations (alternating)");
    for i in 0..iterations {
        stamp(&binary, i)?;
        // Gantry: a child process per build.
        let task = B2iTask {
            artifact: "app".into(),
            preset: Preset::Binary,
            base: base.clone(),
            output: registry.image(&format!("bench/gantry-{i}:1")),
            entrypoint: None,
            cmd: None,
            workdir: Some("/app".into()),
            webapps_dir: None,
            user: None,
            ports: Vec::new(),
            env: Vec::new(),
            labels: Vec::new(),
            created_epoch: 0,
            created_from_checkout: false,
            compression,
            created_by: None,
            registries: vec![RegistryAccess {
                host: registry.host.clone(),
                plain_http: true,
                ..RegistryAccess::default()
            }],
        };
        let task_file = work.path().join("task.json");
        std::fs::write(&task_file, serde_json::to_vec(&task)?)?;
        let scratch = work.path().join(format!("scratch-{i}"));
        std::fs::create_dir_all(&scratch)?;
        let started = Instant::now();
        let out = Command::new(&exe)
            .arg("once")
            .arg(&task_file)
            .arg(&workspace)
            .arg(&scratch)
            .output()?;
        let took = started.elapsed();
        let line = check(out, "gantry b2i")?;
        let mut fields = line.rsplit(' ');
        let kb: u64 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .context("the child reports its VmHWM")?;
        let uploaded: u64 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .context("the child reports the bytes it uploaded")?;
        peak_kb = peak_kb.max(kb);
        gantry_times.push(took);
        std::fs::remove_dir_all(&scratch)?;

        // buildah: FROM base, COPY, set the entrypoint, commit, push.
        let started = Instant::now();
        let container = check(
            buildah
                .command()
                .args(["from", "-q", &format!("docker://{base}")])
                .output()?,
            "buildah from",
        )?;
        check(
            buildah
                .command()
                .args(["copy", &container])
                .arg(&binary)
                .arg("/app/app")
                .output()?,
            "buildah copy",
        )?;
        check(
            buildah
                .command()
                .args(["config", "--entrypoint", "[\"/app/app\"]", &container])
                .output()?,
            "buildah config",
        )?;
        let local = format!("localhost/bench-{i}");
        check(
            buildah
                .command()
                .args(["commit", "-q", &container, &local])
                .output()?,
            "buildah commit",
        )?;
        check(
            buildah
                .command()
                .args(["push", "-q", "--tls-verify=false", &local])
                .arg(format!(
                    "docker://{}",
                    registry.image(&format!("bench/buildah-{i}:1"))
                ))
                .output()?,
            "buildah push",
        )?;
        let buildah_took = started.elapsed();
        buildah_times.push(buildah_took);
        let _ = buildah.command().args(["rm", &container]).output();
        let _ = buildah.command().args(["rmi", &local]).output();
        println!(
            "  iteration {i}: gantry {:>7.0} ms   buildah {:>7.0} ms   gantry peak RSS {} KiB   \
             gantry uploaded {:.1} MiB ({})",
            took.as_secs_f64() * 1000.0,
            buildah_took.as_secs_f64() * 1000.0,
            kb,
            uploaded as f64 / (1024.0 * 1024.0),
            compression.name()
        );
    }
    let g = median(&mut gantry_times);
    let b = median(&mut buildah_times);
    println!(
        "median: gantry {:.0} ms, buildah {:.0} ms, ratio {:.1}x; gantry peak RSS {:.1} MiB",
        g.as_secs_f64() * 1000.0,
        b.as_secs_f64() * 1000.0,
        b.as_secs_f64() / g.as_secs_f64(),
        peak_kb as f64 / 1024.0
    );
    Ok(())
}
