//! How files that change under a running server (certificates, key sets) are watched: `poll`
//! runs a check on a blocking thread at a fixed period until the server stops.

/// Runs `check` on a blocking thread every `every` until `stop`: the watch of files that change
/// under a running server (each `check` reads them and acts on what changed). `what` names it in
/// the log should a check panic.
pub fn poll(
    what: &'static str,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
    check: impl Fn() + Send + Sync + 'static,
) {
    let check = std::sync::Arc::new(check);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            let check = std::sync::Arc::clone(&check);
            if let Err(error) = tokio::task::spawn_blocking(move || check()).await {
                tracing::error!(%error, what, "a file check failed");
            }
        }
    });
}
