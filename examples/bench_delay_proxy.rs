//! The benchmark's latency injector: a TCP relay that holds every byte a client sends for
//! `--delay-ms` before passing it to the server, so each request (and each connection's
//! first request) arrives that much later; answers pass at once. The kernel here has no
//! netem (S3-NOTES 52), and a relay at the byte level keeps HTTP keep-alive exactly as
//! the client and server negotiate it.
//!
//! Usage: `bench_delay_proxy UPSTREAM_HOST:PORT --delay-ms MS`. Listens on a free port of
//! 127.0.0.1 and prints `listening PORT` once ready.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let upstream = args
        .first()
        .ok_or("usage: bench_delay_proxy HOST:PORT --delay-ms MS")?
        .clone();
    let delay = match args.iter().position(|a| a == "--delay-ms") {
        Some(i) => Duration::from_millis(args.get(i + 1).ok_or("--delay-ms needs a value")?.parse()?),
        None => Duration::ZERO,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(&upstream).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(client, server, delay).await;
            }
        });
    }
}

/// Client to server, each chunk held until `delay` after it arrived (order kept); server
/// to client at once. Either side closing ends both directions.
async fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 || tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if server_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let back = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = back => {}
    }
}
