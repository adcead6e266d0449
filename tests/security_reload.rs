//! SIGHUP (issue 6): the broker re-reads its configuration file for the log level (and the
//! files `Global::reload` covers) without dropping connections; a broken file leaves the
//! running settings in force.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{listen_address, stdout_lines, TestClient};
use rumqttc::QoS;

/// A broker started from a config file only (no `--log-level` flag, which would override
/// the file), with its log in a file.
pub struct FileBroker {
    child: Child,
    pub port: u16,
    pub dir: std::path::PathBuf,
    log: std::path::PathBuf,
    pub config: std::path::PathBuf,
}

impl FileBroker {
    pub fn start(tag: &str, config: &str) -> FileBroker {
        let dir = std::env::temp_dir().join(format!("ringmq-hup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let cfg = dir.join("ringmq.toml");
        std::fs::write(&cfg, config).expect("config");
        let log = dir.join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--shards",
                "1",
                "--durability",
                "none",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn ringmq");
        let addr: std::net::SocketAddr = stdout_lines(&mut child, listen_address)
            .recv_timeout(Duration::from_secs(20))
            .expect("broker start")
            .parse()
            .expect("addr");
        FileBroker {
            child,
            port: addr.port(),
            dir,
            log,
            config: cfg,
        }
    }

    pub fn log(&self) -> String {
        common::settled_log(&self.log)
    }

    /// Send SIGHUP and wait until the log shows `mark` (appearing after the signal).
    pub fn hangup_until(&self, mark: &str) {
        let before = self.log().matches(mark).count();
        // SAFETY: plain kill(2) on our child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGHUP);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log().matches(mark).count() <= before {
            assert!(
                Instant::now() < deadline,
                "no {mark:?} after SIGHUP:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn opts(&self, id: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", self.port);
        o.set_keep_alive(Duration::from_secs(30));
        o
    }
}

impl Drop for FileBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn sighup_reloads_the_log_level_without_dropping_connections() {
    let b = FileBroker::start("level", "log_level = \"info\"\n");
    let mut early = TestClient::connect_opts(b.opts("early"));
    early.subscribe("hup/#", QoS::AtLeastOnce);
    assert!(b.log().contains("client connected"), "{}", b.log());
    assert!(!b.log().contains("subscribed"), "debug lines at info level");

    std::fs::write(&b.config, "log_level = \"debug\"\n").unwrap();
    b.hangup_until("log level reloaded");
    let mut late = TestClient::connect_opts(b.opts("late"));
    late.subscribe("late/#", QoS::AtLeastOnce);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        b.log()
            .lines()
            .any(|l| l.contains("subscribed") && l.contains("late")),
        "debug level not in force after SIGHUP"
    );
    // The connection made before the reload is still there.
    late.publish_confirmed("hup/1", QoS::AtLeastOnce, false, "still here");
    assert_eq!(&early.recv().payload[..], b"still here");

    // A broken file: reported, the running settings stay.
    std::fs::write(&b.config, "log_level = [broken\n").unwrap();
    b.hangup_until("configuration not reloaded");
    let mut third = TestClient::connect_opts(b.opts("third"));
    third.subscribe("third/#", QoS::AtLeastOnce);
    std::thread::sleep(Duration::from_millis(100));
    assert!(b
        .log()
        .lines()
        .any(|l| l.contains("subscribed") && l.contains("third")));
    late.publish_confirmed("hup/2", QoS::AtLeastOnce, false, "after broken");
    assert_eq!(&early.recv().payload[..], b"after broken");
}

#[test]
fn sighup_reloads_the_acl_for_new_subscriptions_and_every_delivery() {
    let dir = std::env::temp_dir().join(format!("ringmq-hup-aclfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let acl = dir.join("acl");
    std::fs::write(&acl, "default deny\nall\nallow readwrite feed/#\n").unwrap();
    let b = FileBroker::start(
        "acl",
        &format!("acl_file = {:?}\n", acl.display().to_string()),
    );
    let mut sub = TestClient::connect_opts(b.opts("reader"));
    sub.subscribe("feed/#", QoS::AtLeastOnce);
    let mut publ = TestClient::connect_opts(b.opts("writer"));
    publ.publish_confirmed("feed/a", QoS::AtLeastOnce, false, "before");
    assert_eq!(&sub.recv().payload[..], b"before");

    // Writing stays allowed, reading `feed/secret/#` is now denied.
    std::fs::write(
        &acl,
        "default deny\nall\ndeny read feed/secret/#\nallow readwrite feed/#\n",
    )
    .unwrap();
    b.hangup_until("ACL reloaded");
    publ.publish_confirmed("feed/secret/x", QoS::AtLeastOnce, false, "hidden");
    publ.publish_confirmed("feed/b", QoS::AtLeastOnce, false, "after");
    // The existing subscription (and connection) stays; the denied topic is filtered.
    assert_eq!(&sub.recv().payload[..], b"after");
    sub.expect_no_publish(Duration::from_millis(300));

    // A broken ACL is refused with its line; the reloaded one stays in force.
    std::fs::write(&acl, "default deny\nall\nallow sometimes feed/#\n").unwrap();
    b.hangup_until("ACL not reloaded");
    assert!(b.log().contains("line 3"), "{}", b.log());
    publ.publish_confirmed("feed/secret/y", QoS::AtLeastOnce, false, "hidden too");
    publ.publish_confirmed("feed/c", QoS::AtLeastOnce, false, "still");
    assert_eq!(&sub.recv().payload[..], b"still");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_password_file_and_keeps_connected_clients() {
    let first = common::passwd::password_file(&[("alice", "wonderland")]);
    let b = FileBroker::start(
        "pw",
        &format!("password_file = {:?}\n", first.display().to_string()),
    );
    let login = |user: &str, pw: &str| {
        let mut o = b.opts(&format!("c-{user}-{pw}"));
        o.set_credentials(user, pw);
        TestClient::try_connect_opts(o)
    };
    let mut alice = login("alice", "wonderland").expect("alice before the reload");
    assert!(login("bob", "builder").is_err());
    // The same path now holds bob only.
    let second = common::passwd::password_file(&[("bob", "builder")]);
    std::fs::copy(&second, &first).unwrap();
    b.hangup_until("password file reloaded");
    assert!(
        login("alice", "wonderland").is_err(),
        "alice still accepted"
    );
    let _bob = login("bob", "builder").expect("bob after the reload");
    // alice's connection from before the reload stays.
    alice.subscribe("still/#", QoS::AtMostOnce);
    alice.publish("still/here", QoS::AtMostOnce, false, "yes");
    assert_eq!(&alice.recv().payload[..], b"yes");
}
