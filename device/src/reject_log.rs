//! Rate-limited logging of refused guest requests (and [`LineBudget`], the same limit for
//! other lines a guest can cause at will).
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

/// At most [`LINES_PER_WINDOW`] lines per [`WINDOW_NS`] for one kind of line a guest can
/// cause with valid requests (stream summaries: a guest looping PREPARE/RELEASE). The lines
/// over budget go to debug level; the next line logged says how many.
#[derive(Debug, Clone, Default)]
pub struct LineBudget {
    window_start: u64,
    used: u32,
    /// Lines held back since the last one logged.
    held_back: u64,
}

impl LineBudget {
    /// Whether a line may be logged at `now`: Some(number of lines held back since the last
    /// one logged), or None if this one is over budget (and counted).
    pub fn take(&mut self, now: u64) -> Option<u64> {
        if self.used == 0 || now.saturating_sub(self.window_start) >= WINDOW_NS {
            self.window_start = now;
            self.used = 0;
        }
        if self.used < LINES_PER_WINDOW {
            self.used += 1;
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back = self.held_back.saturating_add(1);
            None
        }
    }

    /// Lines held back and not yet mentioned; forgets them (the caller logs the number).
    pub fn take_held_back(&mut self) -> u64 {
        std::mem::take(&mut self.held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_a_second_and_the_rest_counted() {
        let mut b = LineBudget::default();
        let t0 = 7 * WINDOW_NS;
        for i in 0..LINES_PER_WINDOW as u64 {
            assert_eq!(b.take(t0 + i), Some(0));
        }
        assert_eq!(b.take(t0 + 10), None);
        assert_eq!(b.take(t0 + 20), None);
        // a new window: the next line says how many were held back
        assert_eq!(b.take(t0 + WINDOW_NS), Some(2));
        assert_eq!(b.take(t0 + WINDOW_NS + 1), Some(0));
        for _ in 0..LINES_PER_WINDOW {
            b.take(t0 + WINDOW_NS + 2);
        }
        assert_eq!(b.take_held_back(), 2);
        assert_eq!(b.take_held_back(), 0);
    }
}
