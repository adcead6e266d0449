//! Test PKI and TLS client options: a CA, a server certificate for 127.0.0.1/localhost, a
//! client certificate (CN `device-42`, SAN `dev42.example`) and a client certificate from an
//! untrusted CA, all generated with rcgen at test time into a temporary directory.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Broker;

/// The CN and first SAN of [`Pki::client_cert`].
pub const CLIENT_CN: &str = "device-42";
pub const CLIENT_SAN: &str = "dev42.example";

/// Certificates and keys on disk (PEM), removed on drop.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signed by a CA the broker does not trust.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca(cn: &str) -> (CertificateParams, KeyPair, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("ca key");
    let pem = p.self_signed(&key).expect("ca cert").pem();
    (p, key, pem)
}

fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    cn: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p = CertificateParams::new(
        sans.iter()
            .filter(|s| s.parse::<std::net::IpAddr>().is_err())
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )
    .expect("leaf params");
    for s in sans {
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            p.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = p.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ringmq-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let (ca_params, ca_key, ca_pem) = ca("ringmq test CA");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let (srv, srv_key) = leaf(
            &issuer,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (cli, cli_key) = leaf(
            &issuer,
            CLIENT_CN,
            &[CLIENT_SAN],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (rogue_params, rogue_ca_key, _) = ca("rogue CA");
        let rogue_issuer = Issuer::from_params(&rogue_params, &rogue_ca_key);
        let (rogue, rogue_key) = leaf(
            &rogue_issuer,
            CLIENT_CN,
            &[CLIENT_SAN],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        Pki {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &srv),
            server_key: write("server.key", &srv_key),
            client_cert: write("client.pem", &cli),
            client_key: write("client.key", &cli_key),
            rogue_cert: write("rogue.pem", &rogue),
            rogue_key: write("rogue.key", &rogue_key),
            dir,
        }
    }

    fn read(p: &PathBuf) -> Vec<u8> {
        std::fs::read(p).expect("read pem")
    }

    /// rumqttc TLS transport trusting the test CA, optionally presenting a certificate.
    pub fn transport(&self, client: Option<(&PathBuf, &PathBuf)>) -> rumqttc::Transport {
        rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
            ca: Self::read(&self.ca),
            alpn: None,
            client_auth: client.map(|(c, k)| (Self::read(c), Self::read(k))),
        })
    }

    /// Broker flags for a TLS listener on `port` (plus the plain one the harness adds).
    pub fn listener_args(&self, port: u16) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            format!("127.0.0.1:{port}"),
            "--tls-cert".into(),
            self.server_cert.display().to_string(),
            "--tls-key".into(),
            self.server_key.display().to_string(),
        ]
    }

    /// As [`Pki::listener_args`], requiring client certificates signed by the test CA.
    pub fn mutual_args(&self, port: u16) -> Vec<String> {
        let mut v = self.listener_args(port);
        v.extend(["--tls-client-ca".into(), self.ca.display().to_string()]);
        v
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the broker binds it right after).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports: all are held while the next is picked (a port released at once
/// can come back from the next bind to port 0, and two listeners of one broker would then
/// share it through SO_REUSEPORT).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("probe addr").port())
}

/// Start a broker with `args` (strings) plus `extra`.
pub fn start(args: &[String], extra: &[&str]) -> Broker {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    Broker::start_with(&all)
}

/// rumqttc v3.1.1 options for a TLS client of `port` (server name 127.0.0.1).
pub fn tls_opts(pki: &Pki, id: &str, port: u16, client: bool) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(std::time::Duration::from_secs(30));
    o.set_transport(pki.transport(client.then_some((&pki.client_cert, &pki.client_key))));
    o
}
