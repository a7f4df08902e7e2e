// `sqlx::migrate!` embeds `migrations/` at compile time, but rustc does not track the files a
// proc macro reads: without this, adding a migration would not rebuild the engine.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
