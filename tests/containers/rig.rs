//! The container rig: a PKI made in the test, etcd with `--client-cert-auth`, SeaweedFS's S3
//! gateway, and small clients to inspect them. Images come from `ETCD_IMAGE` and `S3_IMAGE`,
//! which default to the upstream names; `tests/images/build.sh` builds local images under
//! those names where no registry is reachable.

use std::io::Write;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use testcontainers::core::wait::ExitWaitStrategy;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether a Docker engine answers. Without one, the container tests are skipped with one line
/// on stderr saying why; with `CI=true` a missing engine fails the run instead, so CI cannot
/// pass by skipping them.
pub fn docker_available() -> bool {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let r = ping_docker();
        if let Err(why) = &r {
            if std::env::var("CI").as_deref() != Ok("true") {
                // Straight to stderr, past the test harness's capture: one line for the run.
                let _ = std::io::stderr().write_all(
                    format!("container tests skipped: no Docker engine ({why}); set CI=true to make this a failure\n").as_bytes(),
                );
            }
        }
        r
    });
    match r {
        Ok(()) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but no Docker engine answers ({why}): the container tests must run")
        }
        Err(_) => false,
    }
}

fn ping_docker() -> Result<(), String> {
    use std::io::Read;
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let Some(path) = host.strip_prefix("unix://") else {
        // A TCP engine: trust the setting, testcontainers reports what fails.
        return Ok(());
    };
    let mut sock = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("cannot connect to {path}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    sock.write_all(b"GET /_ping HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("{path}: {e}"))?;
    let mut reply = String::new();
    let _ = sock.read_to_string(&mut reply);
    if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("{path} did not answer /_ping with 200"))
    }
}

pub const ACCESS: &str = "etcdbackuptest";
pub const SECRET: &str = "s3-test-secret-value";

fn image(var: &str, default: &str) -> GenericImage {
    let name = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let (repo, tag) = name.rsplit_once(':').unwrap_or((&name, "latest"));
    GenericImage::new(repo, tag)
}

fn etcd_image() -> GenericImage {
    image("ETCD_IMAGE", "quay.io/coreos/etcd:v3.5.1")
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as kubeadm
/// lays them out (ca.crt, server.crt/key, client.crt/key).
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "etcd-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = usages;
            let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (server, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "etcd-server",
            vec![ServerAuth, ClientAuth],
        );
        let (client, client_key) = leaf(vec![], "kube-etcd-healthcheck-client", vec![ClientAuth]);
        for (name, pem) in [
            ("ca.crt", ca_cert.pem()),
            ("server.crt", server),
            ("server.key", server_key),
            ("client.crt", client),
            ("client.key", client_key),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

pub struct Etcd {
    container: ContainerAsync<GenericImage>,
    pub url: String,
    client: etcd_client::Client,
}

impl Etcd {
    pub async fn start(pki: &Pki) -> Etcd {
        Etcd::start_member(pki, None, &[]).await
    }

    /// One member of a three-member cluster on the Docker network `net`, named `{net}-{i}`.
    pub async fn start_cluster(pki: &Pki, net: &str) -> Vec<Etcd> {
        Etcd::start_cluster_with(pki, net, &[]).await
    }

    /// A three-member cluster whose members get `extra` flags too.
    pub async fn start_cluster_with(pki: &Pki, net: &str, extra: &[&str]) -> Vec<Etcd> {
        let (a, b, c) = tokio::join!(
            Etcd::start_member(pki, Some((net, 1)), extra),
            Etcd::start_member(pki, Some((net, 2)), extra),
            Etcd::start_member(pki, Some((net, 3)), extra)
        );
        vec![a, b, c]
    }

    pub async fn stop(&self) {
        self.container.stop().await.unwrap();
    }

    /// A single member (`cluster` None), or member `i` of a three-member cluster on a network.
    async fn start_member(pki: &Pki, cluster: Option<(&str, u8)>, extra: &[&str]) -> Etcd {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (name, peers, initial) = match cluster {
            None => (
                "test".to_string(),
                "http://127.0.0.1:2380".to_string(),
                "test=http://127.0.0.1:2380".to_string(),
            ),
            Some((net, i)) => (
                format!("{net}-{i}"),
                format!("http://{net}-{i}:2380"),
                (1..=3)
                    .map(|m| format!("{net}-{m}=http://{net}-{m}:2380"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        };
        let listen_peer = if cluster.is_some() {
            "http://0.0.0.0:2380"
        } else {
            "http://127.0.0.1:2380"
        };
        let mut request = etcd_image()
            .with_entrypoint("/usr/local/bin/etcd")
            .with_exposed_port(2379.tcp())
            .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
            .with_cmd(
                [
                    format!("--name={name}"),
                    "--data-dir=/var/lib/etcd/data".into(),
                    "--listen-client-urls=https://0.0.0.0:2379".into(),
                    "--advertise-client-urls=https://127.0.0.1:2379".into(),
                    format!("--listen-peer-urls={listen_peer}"),
                    format!("--initial-advertise-peer-urls={peers}"),
                    format!("--initial-cluster={initial}"),
                    "--initial-cluster-state=new".into(),
                    "--cert-file=/pki/server.crt".into(),
                    "--key-file=/pki/server.key".into(),
                    "--trusted-ca-file=/pki/ca.crt".into(),
                    "--client-cert-auth".into(),
                ]
                .into_iter()
                .chain(extra.iter().map(|e| e.to_string())),
            )
            .with_copy_to("/pki/ca.crt", pki.read("ca.crt"))
            .with_copy_to("/pki/server.crt", pki.read("server.crt"))
            .with_copy_to("/pki/server.key", pki.read("server.key"))
            .with_startup_timeout(Duration::from_secs(60));
        if let Some((net, _)) = cluster {
            request = request.with_network(net).with_container_name(&name);
        }
        let container = request
            .start()
            .await
            .expect("starting etcd (run tests/images/build.sh where no registry is reachable)");
        let port = container.get_host_port_ipv4(2379).await.unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let client = connect(pki, &url).await;
        Etcd {
            container,
            url,
            client,
        }
    }

    pub fn client(&self) -> &etcd_client::Client {
        &self.client
    }

    /// Stops the member, passes its bbolt file through `edit` (etcd pages carry no checksums,
    /// so the member serves whatever the file says), and starts it again on the same data.
    pub async fn edit_db(&mut self, pki: &Pki, edit: impl FnOnce(&mut Vec<u8>)) {
        self.stop().await;
        let id = self.container.id().to_string();
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("db");
        let remote = format!("{id}:/var/lib/etcd/data/member/snap/db");
        let docker = |args: &[&str]| {
            let o = std::process::Command::new("docker")
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "docker {args:?}: {o:?}");
        };
        docker(&["cp", &remote, local.to_str().unwrap()]);
        let mut db = std::fs::read(&local).unwrap();
        edit(&mut db);
        std::fs::write(&local, db).unwrap();
        docker(&["cp", local.to_str().unwrap(), &remote]);
        self.container.start().await.unwrap();
        let port = self.container.get_host_port_ipv4(2379).await.unwrap();
        self.url = format!("https://127.0.0.1:{port}");
        self.client = connect(pki, &self.url).await;
        let mut c = self.client.clone();
        for _ in 0..100 {
            if c.status().await.is_ok_and(|s| s.leader() != 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{} did not come back", self.url);
    }

    /// Writes `n` keys with 1 KiB values, overwrites a tenth of them and deletes a tenth, so
    /// that revisions differ from key counts.
    pub async fn load(&self, n: usize) {
        let mut kv = self.client.kv_client();
        for i in 0..n {
            let value = format!(
                "{{\"kind\":\"ConfigMap\",\"i\":{i},\"data\":\"{}\"}}",
                "x".repeat(1000)
            );
            kv.put(
                format!("/registry/configmaps/ns{}/cm{i:05}", i % 5),
                value,
                None,
            )
            .await
            .unwrap();
        }
        for i in (0..n).step_by(10) {
            kv.put(
                format!("/registry/configmaps/ns{}/cm{i:05}", i % 5),
                "updated",
                None,
            )
            .await
            .unwrap();
        }
        for i in (5..n).step_by(10) {
            kv.delete(format!("/registry/configmaps/ns{}/cm{i:05}", i % 5), None)
                .await
                .unwrap();
        }
    }

    /// A snapshot streamed directly, as `etcdctl snapshot save` does: to the end of the stream.
    pub async fn snapshot(&self) -> Vec<u8> {
        let mut client = self.client.clone();
        let mut stream = client.snapshot().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            out.extend_from_slice(m.blob());
        }
        out
    }
}

/// A client of one endpoint, with the test PKI's client certificate.
pub async fn connect(pki: &Pki, url: &str) -> etcd_client::Client {
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(pki.read("ca.crt")))
        .identity(etcd_client::Identity::from_pem(
            pki.read("client.crt"),
            pki.read("client.key"),
        ));
    etcd_client::Client::connect(
        [url],
        Some(etcd_client::ConnectOptions::new().with_tls(tls)),
    )
    .await
    .unwrap()
}

pub struct S3 {
    _container: ContainerAsync<GenericImage>,
    pub endpoint: String,
    filer: u16,
}

impl S3 {
    pub async fn start() -> S3 {
        let container = image("S3_IMAGE", "chrislusf/seaweedfs:4.48")
            .with_entrypoint("/usr/bin/weed")
            .with_exposed_port(8333.tcp())
            .with_exposed_port(8888.tcp())
            .with_cmd([
                "mini",
                "-dir=/data",
                "-s3.port=8333",
                "-master.telemetry=false",
            ])
            .with_env_var("AWS_ACCESS_KEY_ID", ACCESS)
            .with_env_var("AWS_SECRET_ACCESS_KEY", SECRET)
            .start()
            .await
            .expect(
                "starting SeaweedFS (run tests/images/build.sh where no registry is reachable)",
            );
        let endpoint = format!(
            "http://127.0.0.1:{}",
            container.get_host_port_ipv4(8333).await.unwrap()
        );
        let filer = container.get_host_port_ipv4(8888).await.unwrap();
        let s3 = S3 {
            _container: container,
            endpoint,
            filer,
        };
        // It takes a few seconds to start: wait until the filer and the S3 gateway both answer.
        for _ in 0..120 {
            if s3
                .http("GET", "/buckets/")
                .await
                .is_some_and(|(status, _, _)| status == 200)
                && s3
                    .client("probe")
                    .list_with_delimiter(None)
                    .await
                    .is_err_and(|e| e.to_string().contains("NoSuchBucket"))
            {
                return s3;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("SeaweedFS did not start");
    }

    pub fn client(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS)
            .with_secret_access_key(SECRET)
            .build()
            .unwrap()
    }

    /// A signed S3 request to the gateway (what the AWS CLI would send): the tests need bucket
    /// calls object_store does not make.
    pub async fn signed(
        &self,
        method: &str,
        path_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        use base64::Engine;
        let url = format!("{}{path_query}", self.endpoint);
        let mut b = http::Request::builder().method(method).uri(&url);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        if !body.is_empty() {
            let md5 = base64::engine::general_purpose::STANDARD
                .encode(<md5::Md5 as md5::Digest>::digest(body));
            b = b.header("content-md5", md5);
        }
        let mut request = b
            .body(object_store::client::HttpRequestBody::from(body.to_vec()))
            .unwrap();
        let cred = object_store::aws::AwsCredential {
            key_id: ACCESS.into(),
            secret_key: SECRET.into(),
            token: None,
        };
        object_store::aws::AwsAuthorizer::new(&cred, "s3", "us-east-1")
            .try_authorize(&mut request, None)
            .unwrap();
        let client = reqwest::Client::new();
        let mut send = client
            .request(method.parse().unwrap(), &url)
            .body(body.to_vec());
        for (n, v) in request.headers() {
            send = send.header(n, v);
        }
        let r = send.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A bucket with object lock on (and so versioning) and a GOVERNANCE default retention of
    /// `days`, made through the S3 API as an operator would.
    pub async fn create_locked_bucket(&self, name: &str, days: u32) {
        let (status, body) = self
            .signed(
                "PUT",
                &format!("/{name}"),
                &[("x-amz-bucket-object-lock-enabled", "true")],
                b"",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let config = format!("<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>");
        let (status, body) = self
            .signed(
                "PUT",
                &format!("/{name}?object-lock="),
                &[],
                config.as_bytes(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Buckets are directories under /buckets in SeaweedFS's filer.
    pub async fn create_bucket(&self, name: &str) {
        let (status, _, body) = self
            .http("POST", &format!("/buckets/{name}/"))
            .await
            .unwrap();
        assert_eq!(
            status,
            201,
            "creating bucket {name}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<PutPayload>) {
        self.client(bucket)
            .put(&key.into(), body.into())
            .await
            .unwrap();
    }

    pub async fn list(&self, bucket: &str) -> Vec<String> {
        let c = self.client(bucket);
        let objects: Vec<_> = c.list(None).try_collect().await.unwrap();
        objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect()
    }

    /// The backups in `bucket` (names without the manifests, signatures and files archives),
    /// checking that each one has its manifest and no manifest is without its backup: every
    /// run here writes both.
    pub async fn backups(&self, bucket: &str) -> Vec<String> {
        let names: Vec<_> = self
            .list(bucket)
            .await
            .into_iter()
            .filter(|n| !n.ends_with(".json.sig") && !n.ends_with(".files.tar.age"))
            .filter(|n| !n.contains("/stream/"))
            .collect();
        let (manifests, backups): (Vec<_>, Vec<_>) =
            names.into_iter().partition(|n| n.ends_with(".json"));
        let mut expected: Vec<_> = backups.iter().map(|b| format!("{b}.json")).collect();
        let mut found = manifests;
        expected.sort();
        found.sort();
        assert_eq!(found, expected, "each backup with its manifest");
        backups
    }

    /// The object's bytes and its headers (lowercased names), as the S3 gateway stores them.
    pub async fn get(&self, bucket: &str, key: &str) -> (Vec<u8>, Vec<(String, String)>) {
        let (status, headers, body) = self
            .http("GET", &format!("/buckets/{bucket}/{key}"))
            .await
            .unwrap();
        assert_eq!(status, 200);
        (body, headers)
    }

    /// Multipart uploads begun and neither completed nor aborted: SeaweedFS keeps each as a
    /// directory under the bucket's `.uploads`.
    pub async fn open_uploads(&self, bucket: &str) -> Vec<String> {
        let (status, _, body) = self
            .http("GET", &format!("/buckets/{bucket}/.uploads/"))
            .await
            .unwrap();
        if status == 404 {
            return vec![];
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["Entries"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["FullPath"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A minimal HTTP/1.0 request to the filer (no chunking, the connection ends the body).
    async fn http(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.filer))
            .await
            .ok()?;
        let req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.ok()?;
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some((status, headers, resp[split + 4..].to_vec()))
    }
}

/// The binary running `backup` of `endpoints` into `bucket` with the rig's PKI and credentials.
pub fn backup_cmd(pki: &Pki, endpoints: &str, s3: &S3, bucket: &str) -> tokio::process::Command {
    let mut c = cmd(pki, endpoints, s3, bucket);
    c.arg("backup");
    c
}

/// The binary with the rig's etcd settings; the caller adds the subcommand.
pub fn etcd_cmd(pki: &Pki, endpoints: &str) -> tokio::process::Command {
    let mut c = crate::cli::bin();
    c.env("ETCD_ENDPOINTS", endpoints)
        .env("ETCD_CACERT", pki.path("ca.crt"))
        .env("ETCD_CERT", pki.path("client.crt"))
        .env("ETCD_KEY", pki.path("client.key"))
        .env("ETCD_DIAL_TIMEOUT", "3s")
        .env("BACKUP_TMP_DIR", std::env::temp_dir());
    tokio::process::Command::from(c)
}

/// The clock `secs` seconds from now, as `--now` takes it: a backup run at it gets a name of
/// its own without the test waiting for the next second.
pub fn later(secs: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::seconds(secs)).to_rfc3339()
}

/// Runs `cmd` to its end and asserts its exit code, showing its output when that fails; the
/// output is returned for the assertions that follow.
pub async fn run(
    mut cmd: impl std::borrow::BorrowMut<tokio::process::Command>,
    code: i32,
) -> std::process::Output {
    let o = cmd.borrow_mut().output().await.unwrap();
    assert_eq!(o.status.code(), Some(code), "{}", crate::cli::text(&o));
    o
}

/// The binary with the rig's etcd and S3 settings; the caller adds the subcommand.
pub fn cmd(pki: &Pki, endpoints: &str, s3: &S3, bucket: &str) -> tokio::process::Command {
    let mut c = etcd_cmd(pki, endpoints);
    c.env("BACKUP_BUCKET", bucket)
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET);
    c
}

/// A loopback port free right now, for a process we start that takes its port as a flag.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The port of `http(s)://127.0.0.1:PORT`.
pub fn port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

pub fn temp_file(bytes: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    f
}

/// Restores `snapshot` with the real etcdutl into a Docker volume, starts etcd on it (plain
/// http), and returns the container and a client.
pub async fn etcd_from_snapshot(
    snapshot: &[u8],
    volume: &str,
) -> (ContainerAsync<GenericImage>, etcd_client::Client) {
    use testcontainers::core::Mount;
    let peer = "http://127.0.0.1:2380";
    etcd_image()
        .with_entrypoint("/usr/local/bin/etcdutl")
        .with_wait_for(WaitFor::exit(ExitWaitStrategy::new().with_exit_code(0)))
        .with_mount(Mount::volume_mount(volume, "/restore"))
        .with_cmd([
            "snapshot",
            "restore",
            "/tmp/snapshot.db",
            "--name",
            "restored",
            "--initial-cluster",
            &format!("restored={peer}"),
            "--initial-advertise-peer-urls",
            peer,
            "--data-dir",
            "/restore/data",
        ])
        .with_copy_to("/tmp/snapshot.db", snapshot.to_vec())
        .start()
        .await
        .expect("etcdutl snapshot restore failed");
    let etcd = etcd_image()
        .with_entrypoint("/usr/local/bin/etcd")
        .with_exposed_port(2379.tcp())
        .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
        .with_mount(Mount::volume_mount(volume, "/restore"))
        .with_cmd([
            "--name=restored",
            "--data-dir=/restore/data",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=restored=http://127.0.0.1:2380",
        ])
        .start()
        .await
        .expect("etcd did not start on the restored data");
    let url = format!(
        "http://127.0.0.1:{}",
        etcd.get_host_port_ipv4(2379).await.unwrap()
    );
    let client = etcd_client::Client::connect([url], None).await.unwrap();
    (etcd, client)
}

/// Every key with its value and revisions, and the store revision: what a restore must keep.
/// Read in pages at one revision (a single response is capped at 4 MiB).
pub async fn digest(client: &etcd_client::Client) -> (i64, usize, Vec<u8>) {
    use sha2::Digest;
    let mut kv = client.kv_client();
    let mut h = sha2::Sha256::new();
    let (mut from, mut revision, mut count) = (vec![0u8], 0, 0);
    loop {
        let mut opts = etcd_client::GetOptions::new()
            .with_from_key()
            .with_limit(200);
        if revision != 0 {
            opts = opts.with_revision(revision);
        }
        let r = kv.get(from.clone(), Some(opts)).await.unwrap();
        if revision == 0 {
            revision = r.header().unwrap().revision();
        }
        for kv in r.kvs() {
            h.update(kv.key());
            h.update(kv.value());
            h.update(kv.create_revision().to_le_bytes());
            h.update(kv.mod_revision().to_le_bytes());
            h.update(kv.version().to_le_bytes());
        }
        count += r.kvs().len();
        match r.kvs().last() {
            Some(last) if r.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    (revision, count, h.finalize().to_vec())
}

pub fn remove_volume(name: &str) {
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", "-f", name])
        .output();
}

/// Runs the real `etcdutl snapshot restore` on `snapshot` in a container of the etcd image,
/// without `--skip-hash-check`: it must exit 0.
pub async fn etcdutl_restore(snapshot: &[u8]) {
    etcd_image()
        .with_entrypoint("/usr/local/bin/etcdutl")
        .with_wait_for(WaitFor::exit(ExitWaitStrategy::new().with_exit_code(0)))
        .with_cmd([
            "snapshot",
            "restore",
            "/tmp/snapshot.db",
            "--data-dir",
            "/tmp/restored",
        ])
        .with_copy_to("/tmp/snapshot.db", snapshot.to_vec())
        .start()
        .await
        .expect("etcdutl snapshot restore failed on the backup");
}
