//! A TCP proxy on 127.0.0.1 that can silently swallow its traffic: the way a network partition or
//! a dead load balancer looks to a client (sockets stay open, nothing arrives, no error).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let proxy = concord_tests::proxy::Proxy::start(5432).await?;
//! // connect clients to 127.0.0.1:proxy.port() ...
//! proxy.freeze();   // open connections go silent; new ones wait
//! proxy.thaw();     // new connections are forwarded again (the silenced ones stay silent)
//! proxy.cut();      // open connections are closed; new ones are refused (closed at once)
//! proxy.heal();     // new connections are forwarded again
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A freezable TCP proxy to `127.0.0.1:<upstream>`; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    /// Bumped by every freeze: connections of an older generation are silenced for good.
    generation: Arc<AtomicU64>,
    frozen: watch::Sender<bool>,
    /// Bumped by every cut: open connections close; `cut_now` refuses new ones.
    cuts: watch::Sender<(u64, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let generation = Arc::new(AtomicU64::new(0));
        let (frozen, _) = watch::channel(false);
        let (cuts, _) = watch::channel((0, false));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&generation),
            frozen.subscribe(),
            cuts.subscribe(),
        ));
        Ok(Self {
            port,
            generation,
            frozen,
            cuts,
            task,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Silences every open connection (no bytes pass, no error is seen) and holds new ones.
    pub fn freeze(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.frozen.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Closes every open connection and refuses new ones (a partition that resets sockets).
    pub fn cut(&self) {
        self.cuts.send_modify(|(n, cut)| {
            *n += 1;
            *cut = true;
        });
    }

    /// Forwards new connections again after [`Proxy::cut`].
    pub fn heal(&self) {
        self.cuts.send_modify(|(_, cut)| *cut = false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: u16,
    generation: Arc<AtomicU64>,
    frozen: watch::Receiver<bool>,
    cuts: watch::Receiver<(u64, bool)>,
) {
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let (born_cut, refused) = *cuts.borrow();
        if refused {
            drop(client); // the dialer sees its connection closed
            continue;
        }
        let generation = Arc::clone(&generation);
        let mut frozen = frozen.clone();
        let mut cuts = cuts.clone();
        conns.spawn(async move {
            tokio::select! {
                () = forward(client, upstream, generation, &mut frozen) => {}
                _ = cuts.wait_for(|(n, _)| *n != born_cut) => {} // cut: both sockets close
            }
        });
    }
}

async fn forward(
    client: TcpStream,
    upstream: u16,
    generation: Arc<AtomicU64>,
    frozen: &mut watch::Receiver<bool>,
) {
    // Held while frozen; silenced if a freeze comes after it was let through.
    if frozen.wait_for(|f| !*f).await.is_err() {
        return;
    }
    let born = generation.load(Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pipe(cr, sw, Arc::clone(&generation), born),
        pipe(sr, cw, generation, born)
    );
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if generation.load(Ordering::SeqCst) != born {
            // Frozen: keep both sockets open and pass nothing, ever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
