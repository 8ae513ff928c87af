//! Raw TCP clients for `warden serve`'s tests that misbehave as an HTTP client library would
//! not: one whose receive buffer stays small, so an answer it does not read stays with the
//! server rather than in this side's kernel, and reading whatever arrives until the server
//! goes quiet (a kept-alive connection never closes by itself).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A connection to `addr` with a 4 KiB receive buffer.
pub async fn connect_reading_little(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// What arrives on `conn` until it closes or has been quiet for `idle`.
pub async fn read_until_idle(conn: &mut TcpStream, idle: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(Ok(n)) = tokio::time::timeout(idle, conn.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}
