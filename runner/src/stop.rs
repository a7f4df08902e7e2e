//! Why a stage stops before its steps are done, from wherever that is noticed: the engine
//! cancelled it (heartbeat reply), the runner got SIGTERM or SIGINT (a deleted pod, Ctrl-C), or
//! talking to the engine failed for good. The first reason raised wins.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Stop the steps and complete as cancelled, with this reason.
    Cancelled(String),
    /// Stop the steps and exit without completing: the engine cannot be told anything.
    Fatal(String),
}

/// Raises a [`Stop`]; cheap to clone into every task that may notice one.
#[derive(Clone)]
pub struct StopSignal {
    tx: std::sync::Arc<watch::Sender<Option<Stop>>>,
}

/// Learns about a [`Stop`].
#[derive(Clone)]
pub struct StopWatch {
    rx: watch::Receiver<Option<Stop>>,
}

pub fn channel() -> (StopSignal, StopWatch) {
    let (tx, rx) = watch::channel(None);
    (
        StopSignal {
            tx: std::sync::Arc::new(tx),
        },
        StopWatch { rx },
    )
}

impl StopSignal {
    /// Raises `stop` unless an earlier reason was raised already.
    pub fn raise(&self, stop: Stop) {
        self.tx.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(stop);
            true
        });
    }
}

impl StopWatch {
    pub fn current(&self) -> Option<Stop> {
        self.rx.borrow().clone()
    }

    /// Waits until a stop is raised.
    pub async fn raised(&mut self) -> Stop {
        // Clone out of the borrow at once: holding it across an await would block the sender.
        let raised = self
            .rx
            .wait_for(Option::is_some)
            .await
            .map(|stop| stop.clone());
        match raised {
            Ok(Some(stop)) => stop,
            Ok(None) => Stop::Fatal("stop without a reason".into()),
            // Every sender is gone: nothing can raise a stop any more.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Turns SIGTERM and SIGINT into a cancel. The handlers are installed before this returns its
/// future, so a signal arriving early is not lost.
pub fn on_signals(
    stop: StopSignal,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("gantry-runner: received {name}; stopping the stage");
        stop.raise(Stop::Cancelled(format!("the runner received {name}")));
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_first_reason_wins_and_wakes_the_watcher() {
        let (signal, mut watch) = channel();
        assert_eq!(watch.current(), None);
        let waiter = tokio::spawn(async move { watch.raised().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        signal.raise(Stop::Cancelled("by the engine".into()));
        signal.raise(Stop::Fatal("later".into()));
        let stop = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woke")
            .expect("joined");
        assert_eq!(stop, Stop::Cancelled("by the engine".into()));
    }
}
