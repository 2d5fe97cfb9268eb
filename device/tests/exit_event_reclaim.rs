//! The exit-event workaround closes exactly what vhost-user-backend 0.24 leaks. Its own test
//! binary, so no other test opens or closes fds while this one counts them.

use std::os::fd::IntoRawFd;

use dsproxy_device::exit_event::ExitEvents;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn leaked_consumers_are_closed_and_nothing_else() {
    let events = ExitEvents::default();
    let before = open_fds();
    for _ in 0..10 {
        let (consumer, notifier) = events.create().unwrap();
        // What VringEpollHandler::new does: the consumer's fd is taken and never closed.
        let _ = consumer.into_raw_fd();
        drop(notifier);
    }
    // 10 leaked consumers and 10 witnesses.
    assert_eq!(open_fds(), before + 20);
    assert_eq!(events.reclaim(), 10);
    assert_eq!(open_fds(), before);
    // A second reclaim has nothing left to do.
    assert_eq!(events.reclaim(), 0);
}
