//! Progress bars on stderr for long work (listings, apps, deletions). Hidden
//! automatically when stderr is not a terminal.

use fleetsync::deps::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;

/// One bar per kind of work, created on first use.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, key: &str, total: Option<u64>) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(key.to_string()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>10} {bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(key.to_string());
            bar
        });
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.clone()
    }
}

impl Progress for Bars {
    fn listing(&self, source: &str, done: u64, total: Option<u64>) {
        let bar = self.bar(source, total);
        bar.set_position(done);
        bar.set_message("devices listed");
    }

    fn items(&self, what: &str, done: u64, total: u64) {
        let bar = self.bar(what, Some(total));
        bar.set_position(done);
    }

    fn finish(&self) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for (_, bar) in bars.drain() {
            bar.finish_and_clear();
        }
    }
}
