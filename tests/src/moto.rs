//! moto's AWS stand-in server on loopback, for testing secrets kept in AWS Secrets Manager
//! against the real API. Install it with `pip install "moto[server]"` (scripts/test does).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Credentials moto accepts (it accepts any); tests hand them to warden through the standard
/// AWS environment variables.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

/// The standard AWS variables a warden process needs to talk to moto.
pub fn aws_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", REGION),
    ]
}

/// A running `moto_server`; killed when dropped.
pub struct Moto {
    child: Option<Child>,
    port: u16,
}

impl Moto {
    /// Starts moto on 127.0.0.1 on a free port and waits until it answers.
    pub fn start() -> Moto {
        let mut child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start moto_server ({e}): these tests need moto's AWS stand-in. Install it with `pip install \"moto[server]\"` (scripts/test does this)"
            ),
        };
        // moto logs every request on stderr: read it all, or it would block once the pipe
        // fills. Its first lines say which port it took.
        let stderr = child.stderr.take().unwrap();
        let (port_tx, port_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(rest.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                panic!("moto_server did not say which port it listens on within 60 s");
            }
        };
        let moto = Moto {
            child: Some(child),
            port,
        };
        for _ in 0..100 {
            if moto.call("ListSecrets", "{}").is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server on port {port} does not answer");
    }

    /// `http://127.0.0.1:PORT`, for a secret's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_secret(&self, name: &str, value: &str) {
        let body = serde_json::json!({ "Name": name, "SecretString": value }).to_string();
        self.call("CreateSecret", &body)
            .unwrap_or_else(|e| panic!("moto CreateSecret {name}: {e}"));
    }

    /// A new current version, as rotation would write.
    pub fn put_secret_value(&self, name: &str, value: &str) {
        let body = serde_json::json!({ "SecretId": name, "SecretString": value }).to_string();
        self.call("PutSecretValue", &body)
            .unwrap_or_else(|e| panic!("moto PutSecretValue {name}: {e}"));
    }

    /// Stops the server: from now on its endpoint refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One Secrets Manager call over plain HTTP (moto checks no signature; the credential
    /// scope tells it which service is meant). Returns the response body.
    fn call(&self, action: &str, body: &str) -> Result<String, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Amz-Target: secretsmanager.{action}\r\nContent-Type: application/x-amz-json-1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/{REGION}/secretsmanager/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
            port = self.port,
            len = body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        let status = response.split(' ').nth(1).unwrap_or_default();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        if status == "200" {
            Ok(body)
        } else {
            Err(format!("HTTP {status}: {body}"))
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
