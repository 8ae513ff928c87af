//! Starting and stopping a stand-in, on the caller's tokio runtime ([`StandIn`]) or on a
//! thread and runtime of its own ([`BlockingStandIn`]), so that async and plain tests alike can
//! use one.

use std::io;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;

use crate::config::StandInConfig;
use crate::controls::Controls;
use crate::routes::handle;

/// A running stand-in on the caller's tokio runtime. Stops on
/// [`StandIn::shutdown`] or when dropped.
#[derive(Debug)]
pub struct StandIn {
    controls: Controls,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Deref for StandIn {
    type Target = Controls;
    fn deref(&self) -> &Controls {
        &self.controls
    }
}

impl StandIn {
    /// Binds 127.0.0.1 (on `config.port`, or a free port) and serves on the
    /// current tokio runtime. The socket is listening when this returns.
    pub async fn start(config: StandInConfig) -> io::Result<StandIn> {
        let listener =
            tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port.unwrap_or(0))).await?;
        let addr = listener.local_addr()?;
        let controls = Controls::new(addr, config);
        let app = Router::new().fallback(handle).with_state(controls.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(StandIn {
            controls,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Starts a stand-in on a thread of its own, with its own tokio runtime,
    /// for tests that are not async (or that would rather not share their
    /// runtime). Usable from `#[test]` and `#[tokio::test]` alike.
    pub fn start_blocking(config: StandInConfig) -> io::Result<BlockingStandIn> {
        BlockingStandIn::start(config)
    }

    /// A handle on the controls that outlives borrows of `self`.
    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    /// Stops accepting, lets requests in flight finish (for up to 5 s), and
    /// returns when the server is down.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A stand-in running on its own thread and runtime; see
/// [`StandIn::start_blocking`]. Stops on [`BlockingStandIn::shutdown`] or
/// when dropped.
#[derive(Debug)]
pub struct BlockingStandIn {
    controls: Controls,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Deref for BlockingStandIn {
    type Target = Controls;
    fn deref(&self) -> &Controls {
        &self.controls
    }
}

impl BlockingStandIn {
    /// Same as [`StandIn::start_blocking`].
    pub fn start(config: StandInConfig) -> io::Result<BlockingStandIn> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("victorops-standin".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match StandIn::start(config).await {
                        Ok(standin) => {
                            let (stop, stopped) = oneshot::channel::<()>();
                            if started_tx.send(Ok((standin.controls(), stop))).is_ok() {
                                // Resolves on shutdown() and on drop of the handle alike.
                                let _ = stopped.await;
                            }
                            standin.shutdown().await;
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                        }
                    }
                });
            })?;
        match started_rx.recv() {
            Ok(Ok((controls, stop))) => Ok(BlockingStandIn {
                controls,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "the stand-in thread ended before starting",
                ))
            }
        }
    }

    /// A handle on the controls that outlives `self`.
    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    /// Stops the server and joins its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BlockingStandIn {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
