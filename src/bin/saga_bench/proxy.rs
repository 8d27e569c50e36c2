//! A TCP proxy between the service and its database, to cut the connection in a test: `Up`
//! forwards, `Refuse` closes every connection and refuses new ones, `Partition` forwards nothing
//! and closes nothing (what a network partition looks like from both ends).

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Refuse,
    Partition,
}

/// A running proxy on a random loopback port.
pub struct Proxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:`port` (random) to `upstream` (host:port).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(Mode::Up);
        tokio::spawn(accept_loop(Some(listener), port, upstream, rx));
        Proxy {
            port,
            mode: Arc::new(tx),
        }
    }

    /// Switches every connection, present and future, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Waits until the mode is `Up` (answers true) or `Refuse` (false).
async fn until_up(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Up => return true,
            Mode::Refuse => return false,
            Mode::Partition => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

async fn accept_loop(
    mut listener: Option<TcpListener>,
    port: u16,
    upstream: String,
    mut mode: watch::Receiver<Mode>,
) {
    loop {
        if *mode.borrow_and_update() == Mode::Refuse {
            // Closed listener: new connections are refused until the proxy is up again.
            listener = None;
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        tokio::select! {
            r = l.accept() => {
                let Ok((client, _)) = r else { continue };
                let (upstream, mode) = (upstream.clone(), mode.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, mode.clone()));
                    tokio::spawn(pump(sr, cw, mode));
                });
            }
            _ = mode.changed() => {}
        }
    }
}

/// Copies one direction, holding data while partitioned; ends (closing its halves) on Refuse.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !until_up(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        if !until_up(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
