//! A real browser for the web UI's tests and benchmark: Debian's headless Chromium, driven
//! through chromedriver (WebDriver) with fantoccini. Each [`Browser`] has its own chromedriver,
//! profile directory and process group, all gone when it is dropped. Screenshots are kept
//! under the target directory (`target/debug/ui-screenshots/`) as test output.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub client: Client,
    /// chromedriver's own URL (for its Chrome-specific commands).
    pub driver_url: String,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Names screenshots: `<prefix>-<name>.png`.
    prefix: String,
}

/// Where screenshots go.
pub fn screenshot_dir() -> PathBuf {
    crate::bin_dir().join("ui-screenshots")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub async fn start(prefix: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let (driver, port) = crate::serve::on_free_port("chromedriver", |port| {
            let mut command = Command::new(CHROMEDRIVER);
            command
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Its own process group: dropping the browser kills chromedriver and every
            // Chromium process it started, whatever state the test left them in.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            command
                .spawn()
                .expect("start chromedriver (apt-get install chromium-driver)")
        });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            driver_url: url,
            driver,
            _profile: profile,
            prefix: prefix.to_owned(),
        }
    }

    /// Runs a Chrome DevTools command (`Network.clearBrowserCache`, ...) in this session.
    pub async fn devtools(&self, command: &str, params: Value) -> Value {
        let session = self
            .client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a WebDriver session id");
        reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.driver_url
            ))
            .json(&json!({ "cmd": command, "params": params }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("DevTools {command}: {e}"))
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current URL")
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy (polling every 25 ms) and returns it.
    pub async fn wait_for(&self, what: &str, script: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.js(script, vec![]).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                let body = self
                    .js("return document.body.innerText.slice(0, 3000);", vec![])
                    .await;
                panic!(
                    "{what}: not within {limit:?}\npage text:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clicks the button whose text is `text`.
    pub async fn click_button(&self, text: &str) {
        let xpath = format!("//button[normalize-space(.)='{text}']");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button `{text}`: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{text}`: {e}"));
    }

    /// Presses `keys` one after the other as a keyboard would (WebDriver key actions, sent to
    /// whatever has focus): text, or [`fantoccini::key::Key`] characters (Tab, Enter, ...).
    pub async fn press(&self, keys: &str) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".into());
        for value in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("pressing {keys:?}: {e}"));
    }

    /// Presses Tab until the focused element matches `css` (at most `limit` times) and
    /// returns how many presses it took; panics naming what had focus along the way.
    pub async fn tab_to(&self, css: &str, limit: usize) -> usize {
        let tab = char::from(fantoccini::key::Key::Tab).to_string();
        let mut seen = Vec::new();
        for presses in 0..=limit {
            let focused = self
                .js(
                    "const e = document.activeElement; return [e.matches(arguments[0]), e.outerHTML.slice(0, 80)];",
                    vec![json!(css)],
                )
                .await;
            if focused[0] == json!(true) {
                return presses;
            }
            seen.push(focused[1].as_str().unwrap_or_default().to_owned());
            self.press(&tab).await;
        }
        panic!(
            "no `{css}` within {limit} presses of Tab; focus went through:\n{}",
            seen.join("\n")
        );
    }

    /// Signs in through the login form and waits to leave it.
    pub async fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        self.fill("#name", user).await;
        self.fill("#password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.wait_for(
            "signed in",
            "return !location.pathname.startsWith('/login') && document.readyState === 'complete';",
            Duration::from_secs(20),
        )
        .await;
    }

    /// Saves a PNG of the page as test output and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{}-{name}.png", self.prefix));
        match self.client.screenshot().await {
            Ok(png) => {
                let _ = std::fs::write(&path, png);
            }
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
        path
    }

    pub async fn close(self) {
        let Browser { client, .. } = &self;
        let _ = client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
