//! Rate-limited logging of refused guest requests.
//!
//! Every refused request is counted, exactly, but a guest that sends a flood of bad requests
//! must not flood the host's log: per class (queue and kind of error) at most
//! [`LINES_PER_WINDOW`] lines are logged per [`WINDOW_NS`]; the rest of the window's
//! rejections of that class are summed up in one line ("suppressed K similar rejections")
//! once the window is over, or when the frontend goes away. The counts by class are logged
//! then too.

use log::{info, warn};

use crate::error::{log_rejection, Rejected, RequestError, REJECT_TARGET};

/// Lines logged per class and window.
pub const LINES_PER_WINDOW: u32 = 5;
/// The window: one second.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// One class of rejections: a queue and a kind of error.
#[derive(Debug, Clone)]
struct Class {
    queue: &'static str,
    reason: &'static str,
    /// When the current window began.
    window_start: u64,
    /// Lines logged in the current window.
    logged: u32,
    /// Rejections not logged in the current window.
    suppressed: u64,
    /// Rejections of this class since the card was created.
    total: u64,
}

/// Counts refused guest requests and logs them, a few lines per class and second.
#[derive(Debug, Clone, Default)]
pub struct RejectLog {
    /// Few: 4 queues times the kinds of [`RequestError`]; looked up linearly.
    classes: Vec<Class>,
    total: u64,
}

impl RejectLog {
    /// Counts a refused request at `now` (CLOCK_MONOTONIC ns) and logs its line unless its
    /// class has used up the current window. Returns whether the line was logged.
    pub fn note(&mut self, r: &Rejected, e: &RequestError, now: u64) -> bool {
        self.total = self.total.saturating_add(1);
        self.flush_expired(now);
        let reason = e.class();
        let idx = match self
            .classes
            .iter()
            .position(|c| c.queue == r.queue && c.reason == reason)
        {
            Some(i) => i,
            None => {
                self.classes.push(Class {
                    queue: r.queue,
                    reason,
                    window_start: now,
                    logged: 0,
                    suppressed: 0,
                    total: 0,
                });
                self.classes.len() - 1
            }
        };
        let c = &mut self.classes[idx];
        c.total = c.total.saturating_add(1);
        if now.saturating_sub(c.window_start) >= WINDOW_NS {
            // flush_expired has summed up the old window.
            c.window_start = now;
            c.logged = 0;
        }
        if c.logged < LINES_PER_WINDOW {
            c.logged += 1;
            log_rejection(r, e);
            true
        } else {
            c.suppressed = c.suppressed.saturating_add(1);
            false
        }
    }

    /// Logs the summary of every class whose window is over with rejections left unlogged.
    /// Cheap when there are none: the worker calls it after every event.
    pub fn flush_expired(&mut self, now: u64) {
        for c in &mut self.classes {
            if c.suppressed > 0 && now.saturating_sub(c.window_start) >= WINDOW_NS {
                summarize(c);
            }
        }
    }

    /// Logs the summary of every class with rejections left unlogged, window over or not
    /// (the frontend goes away), then the counts by class.
    pub fn flush_all(&mut self) {
        for c in &mut self.classes {
            if c.suppressed > 0 {
                summarize(c);
            }
        }
        if self.total > 0 {
            let by_class: Vec<String> = self
                .classes
                .iter()
                .map(|c| format!("{}/{}={}", c.queue, c.reason, c.total))
                .collect();
            info!(
                target: REJECT_TARGET,
                "{} guest requests rejected in all ({})",
                self.total,
                by_class.join(" ")
            );
        }
    }

    /// Refused requests since the card was created, logged or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Refused requests of one class (queue, [`RequestError::class`]) so far.
    pub fn count(&self, queue: &str, reason: &str) -> u64 {
        self.classes
            .iter()
            .filter(|c| c.queue == queue && c.reason == reason)
            .map(|c| c.total)
            .sum()
    }
}

fn summarize(c: &mut Class) {
    warn!(
        target: REJECT_TARGET,
        "suppressed {} similar rejections queue={} class={} (at most {} lines a second)",
        c.suppressed,
        c.queue,
        c.reason,
        LINES_PER_WINDOW
    );
    c.suppressed = 0;
}
