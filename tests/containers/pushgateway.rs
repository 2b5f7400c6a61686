//! A real Pushgateway (Debian's `prometheus-pushgateway`, extracted by `scripts/tools.sh`),
//! started on a loopback port for one test and stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Pushgateway {
    pub url: String,
    child: Child,
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pushgateway {
    pub async fn start() -> Pushgateway {
        let bin = crate::common::tools_dir().join("prometheus-pushgateway");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/tools.sh (make setup does)",
            bin.display()
        );
        let port = super::rig::free_port();
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Pushgateway {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        for _ in 0..100 {
            if pg.get("/-/ready").await.is_some() {
                return pg;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Pushgateway on {} did not become ready", pg.url);
    }

    async fn get(&self, path: &str) -> Option<String> {
        let r = reqwest::get(format!("{}{path}", self.url)).await.ok()?;
        r.status().is_success().then_some(())?;
        r.text().await.ok()
    }

    /// The value of `name` in the group `job="etcd-backup"` with `labels` (as
    /// `cluster="test"`), from the gateway's own /metrics.
    pub async fn value(&self, name: &str, labels: &str) -> Option<f64> {
        let text = self.get("/metrics").await?;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.contains(labels) && l.contains("job=\"etcd-backup\""))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }
}
