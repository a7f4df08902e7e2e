//! Tells the engine the runner is alive, and hears from it whether the stage was cancelled.
//!
//! The engine treats an attempt without heartbeats as lost, so heartbeats run from the moment
//! the spec arrives until the completion is accepted, through downloads, steps and uploads.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::EngineClient;
use crate::stop::{Stop, StopSignal};

/// Beats every `every` until cancelled or failed; either raises a [`Stop`] and ends the task.
pub async fn beat(client: Arc<EngineClient>, every: Duration, stop: StopSignal) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
    // After a slow beat (the engine restarting) go on at the normal pace, without a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // The first tick is immediate; the spec call just showed we are alive.
    loop {
        ticks.tick().await;
        match client.heartbeat().await {
            Ok(reply) if reply.cancel => {
                eprintln!("gantry-runner: the engine cancelled the stage");
                stop.raise(Stop::Cancelled("cancelled by the engine".into()));
                return;
            }
            Ok(_) => {}
            Err(err) => {
                stop.raise(Stop::Fatal(format!("heartbeat: {err}")));
                return;
            }
        }
    }
}
