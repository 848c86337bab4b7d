//! The web page in a real browser: headless Chromium driven through WebDriver
//! (chromedriver), against real servers on DynamoDB Local. `make test` runs these
//! when `chromium` and `chromedriver` are installed and says it skips them otherwise;
//! run directly without them, they fail with that message rather than pass.
//!
//! Nothing here asserts a wall-clock time: "live" is asserted as "shown by the next
//! answers the page asked for" (the page counts them in `<body data-refreshes>`, and
//! asks every second), and every wait is bounded so that a broken page fails.

mod admin;
mod list;
mod lock;
mod screenshots;
mod security;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The longest any condition is waited for before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The narrowest window Chromium makes; narrower screens are emulated.
const MIN_WINDOW_WIDTH: u32 = 500;

/// How the page looks: the viewer's colour scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Light,
    Dark,
}

/// A browser window on a fencelock page.
pub struct Browser {
    client: Client,
    _turn: SemaphorePermit<'static>,
}

/// The chromedriver every test of this binary shares, started on first use.
fn driver() -> &'static str {
    static DRIVER: OnceLock<String> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let chromedriver = find_program(&["chromedriver"]).unwrap_or_else(|| missing());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // When this process exits, however it exits, the shell's stdin closes and it
        // kills its process group: chromedriver and every browser it started, those of
        // a test that failed before closing its window included.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{chromedriver} --port={port} --allowed-ips=127.0.0.1 & cat >/dev/null; kill -KILL 0"
            ))
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        std::mem::forget(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        format!("http://{addr}")
    })
}

fn find_program(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
            .map(|found| found.display().to_string())
    })
}

fn missing() -> ! {
    panic!(
        "the browser tests need Chromium and ChromeDriver (Debian: apt-get install chromium \
         chromium-driver); `make test` skips them, and says so, when they are missing"
    )
}

impl Browser {
    /// A new headless Chromium window of `width`×`height` in `scheme`, on `url`.
    pub async fn open(url: &str, width: u32, height: u32, scheme: Scheme) -> Self {
        // Two browsers at a time: each is several processes, and the machine has two cores.
        static TURNS: Semaphore = Semaphore::const_new(2);
        let turn = TURNS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let binary = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| missing());
        let scheme = match scheme {
            Scheme::Dark => 0,
            Scheme::Light => 1,
        };
        let mut options = json!({
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--hide-scrollbars",
                format!("--window-size={},{height}", width.max(MIN_WINDOW_WIDTH)),
                format!("--blink-settings=preferredColorScheme={scheme}"),
            ],
        });
        if width < MIN_WINDOW_WIDTH {
            // A phone: Chromium's windows are never this narrow, so emulate its screen.
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1}});
        }
        let capabilities = json!({"browserName": "chrome", "goog:chromeOptions": options});
        let Value::Object(capabilities) = capabilities else {
            unreachable!("capabilities are an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(driver())
            .await
            .expect("a Chromium session");
        let browser = Self {
            client,
            _turn: turn,
        };
        if width >= MIN_WINDOW_WIDTH {
            // The window's size includes what Chromium draws around the page.
            browser
                .client
                .set_window_size(width, height)
                .await
                .expect("a window size");
            let inner = browser.eval("innerHeight").await.as_u64().unwrap_or(0) as u32;
            let outer = height + height.saturating_sub(inner);
            browser
                .client
                .set_window_size(width, outer)
                .await
                .expect("a window size");
        }
        browser.goto(url).await;
        browser
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// The value of the JavaScript expression `expression`.
    pub async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .unwrap_or_else(|err| panic!("{expression}: {err}"))
    }

    /// Waits until the JavaScript expression `condition` is true; fails the test,
    /// saying `what`, when it has not become true within [`PATIENCE`].
    pub async fn wait_until(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.eval(condition).await != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "{what}: `{condition}` never became true; the page says: {}",
                self.eval("document.querySelector('main').innerText").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many answers of the server the page has shown.
    pub async fn refreshes(&self) -> u64 {
        self.eval("Number(document.body.dataset.refreshes ?? 0)")
            .await
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until the page has shown two more answers than `after`: the second of
    /// them was asked for after anything that happened before `after` was read.
    pub async fn two_more_refreshes(&self, after: u64) {
        self.wait_until(
            &format!(
                "Number(document.body.dataset.refreshes ?? 0) >= {}",
                after + 2
            ),
            "the page asks the server again every second",
        )
        .await;
    }

    /// The names of the locks the list shows, in its order.
    pub async fn listed(&self) -> Vec<String> {
        let names = self
            .eval("Array.from(document.querySelectorAll('tbody tr'), row => row.dataset.lock)")
            .await;
        serde_json::from_value(names).expect("a list of names")
    }

    /// The text of the cell `column` in the row of `lock`.
    pub async fn cell(&self, lock: &str, column: &str) -> String {
        let text = self
            .eval(&format!(
                "document.querySelector('tr[data-lock=\"{lock}\"] td[data-label=\"{column}\"]')?.textContent"
            ))
            .await;
        text.as_str()
            .unwrap_or_else(|| panic!("no {column} cell for {lock}"))
            .to_owned()
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no {css} on the page: {err}"))
    }

    /// Types `text` into the input `css`, after emptying it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("the input clears");
        input.send_keys(text).await.expect("the input takes keys");
    }

    /// Clicks the element `css`. The page redraws what it polls for, so an element
    /// found may be replaced before the click reaches it; then it is found again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(err) if err.is_stale_element_reference() && Instant::now() < deadline => {}
                Err(err) => panic!("a click on {css}: {err}"),
            }
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("a screenshot")
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
