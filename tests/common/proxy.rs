//! PROXY protocol test helpers: a real HAProxy in TCP mode (started from a generated config
//! on free loopback ports, killed on drop), clients bound to loopback aliases (127.0.0.2,
//! 127.0.0.3: on Linux all of 127/8 is local) and a broker with `[[listeners]]` from TOML.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Broker, Raw};

/// A running `haproxy -db`; killed on drop.
pub struct HaProxy {
    child: Child,
    dir: std::path::PathBuf,
}

impl HaProxy {
    /// Start HAProxy with `frontends_and_backends` after common TCP-mode defaults, and wait
    /// (at most 10 s) until every port of `ports` accepts connections.
    pub fn start(tag: &str, frontends_and_backends: &str, ports: &[u16]) -> HaProxy {
        let dir = std::env::temp_dir().join(format!("ringmq-haproxy-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let cfg = dir.join("haproxy.cfg");
        let text = format!(
            "global\n    maxconn 256\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
             timeout client 30s\n    timeout server 30s\n\n{frontends_and_backends}"
        );
        std::fs::write(&cfg, text).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).expect("haproxy log"),
            ))
            .spawn()
            .expect("haproxy not installed? (.ci/run installs it: apt-get install haproxy)");
        let hp = HaProxy { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        for &p in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], p));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not listen on {p}: {}",
                    hp.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        hp
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw connection to `to` from the local address `from` (a loopback alias).
pub fn raw_from(from: [u8; 4], to: SocketAddr) -> Raw {
    let sk =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sk.bind(&SocketAddr::from((from, 0)).into())
        .expect("bind alias");
    sk.connect_timeout(&to.into(), Duration::from_secs(2))
        .expect("connect");
    let stream: TcpStream = sk.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    Raw { stream }
}

/// A broker with the harness' plain listener plus `[[listeners]]` (and other keys) from
/// `toml`, and extra flags.
pub fn broker_with(tag: &str, toml: &str, extra: &[&str]) -> Broker {
    let dir = std::env::temp_dir().join(format!("ringmq-proxy-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let file = dir.join(format!("{tag}.toml"));
    std::fs::write(&file, toml).expect("write config");
    let path = file.display().to_string();
    let mut args = vec!["--config", path.as_str()];
    args.extend_from_slice(extra);
    Broker::start_with(&args)
}

/// Wait (at most 5 s) until the broker's log contains `needle`.
pub fn wait_log(broker: &Broker, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "broker log lacks {needle:?}:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
