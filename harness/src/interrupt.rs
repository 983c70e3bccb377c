//! Ctrl-C: the first one asks the run to stop after the current step and keep what it has;
//! a second one exits at once (server children exit when their stdin pipe closes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Installs the handler (once) and returns the flag it sets.
pub fn install() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let set = flag.clone();
        let _ = std::thread::Builder::new()
            .name("wb-ctrl-c".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if tokio::signal::ctrl_c().await.is_err() {
                        return;
                    }
                    set.store(true, Ordering::SeqCst);
                    eprintln!(
                        "\ninterrupted: finishing the current step and saving results \
                         (Ctrl-C again to quit at once)"
                    );
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(i32::from(crate::exit::INTERRUPTED));
                    }
                });
            });
        flag
    })
    .clone()
}
