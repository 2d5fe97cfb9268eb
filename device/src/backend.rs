//! The vhost-user backend around the card (vhost-user-backend 0.24).
//!
//! One worker thread serves all four queues (`queues_per_thread = [0b1111]`), plus extra
//! listeners on its epoll: the tap's notifier and one timerfd per stream, armed to the
//! stream's next deadline. The card sits behind one mutex: the worker takes it for every
//! event; the frontend thread takes it only for vring stops, resets and feature changes.
//! Lock order is always card, then a vring.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use dsproxy_wire::record::{NoticeLevel, Record};
use log::{debug, error, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::QueueOwnedT;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::card::Card;
use crate::chain::Chain;
use crate::clock::{monotonic_ns, MonotonicTimer};
use crate::config::CardConfig;
use crate::controls::Controls;
use crate::exit_event::ExitEvents;
use crate::guest_memory;
use crate::guest_poll::{GuestPoll, EPISODE_MAX_NS};
use crate::reject_log::LineBudget;
use crate::spec::{EVENT_QUEUE, NUM_QUEUES, TX_QUEUE, VIRTIO_SND_F_CTLS};
use crate::tap::TapHandle;
use crate::vring::CheckedVring;
use crate::Used;

/// What the daemon and every reader say when QEMU's line lacks `controls=on`.
pub const MISSING_CONTROLS_ON: &str = "the frontend's virtio-snd config space is 12 bytes: \
    its QEMU line has -device vhost-user-snd-pci without controls=on, but this card offers \
    mixer controls (VIRTIO_SND_F_CTLS), so a guest driver that uses them (Linux 6.9 or later) \
    fails to probe (-12) and the guest has no sound card. Fix: add controls=on to \
    -device vhost-user-snd-pci, or start dsproxy-device with --no-controls (no mixer)";

/// What is said when the driver is seen not to take the controls behind such a line.
pub const DRIVER_WITHOUT_CONTROLS: &str = "the frontend's virtio-snd config space is 12 bytes \
    (no controls=on on -device vhost-user-snd-pci), but this guest's driver did not negotiate \
    mixer controls, so it is not affected: it plays, with no mixer. A driver that uses them \
    (Linux 6.9 or later) would fail to probe: add controls=on to the QEMU line, or start \
    dsproxy-device with --no-controls";

/// The guest memory as vhost-user-backend shares it.
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Epoll ids of the extra listeners. 0-3 are the queues; 4 is vhost-user-backend's own.
pub const TAP_EVENT: u16 = 5;
/// Stream `i`'s timer is `TIMER_EVENT_BASE + i`.
pub const TIMER_EVENT_BASE: u16 = 6;

struct Inner {
    card: Card<TapHandle>,
    timers: Vec<MonotonicTimer>,
    /// The worker's vrings, kept from its first event so a vring stop (which arrives on the
    /// frontend thread) can put returned buffers in the used ring.
    vrings: Vec<CheckedVring>,
    /// The guest memory last found to lie within its files (see [`crate::guest_memory`]).
    /// Kept as the very object checked, so a new table is always noticed.
    checked_mem: Option<Arc<GuestMemoryMmap<()>>>,
    /// Queues the driver broke (a chain head past the queue size): left alone, as a device
    /// needing reset, until the driver resets the device.
    needs_reset: [bool; NUM_QUEUES],
    /// Queues whose refused size (see [`CheckedVring`]) was already logged.
    refusal_logged: [bool; NUM_QUEUES],
    /// Used entries the ring refused (a frontend can shrink a queue under held buffers):
    /// a few lines a second, the rest counted.
    used_refusals: LineBudget,
    /// Without pacing, how long to poll the TX ring for the guest's next buffer.
    guest_poll: GuestPoll,
    /// Per queue: its used flags may say "do not kick" (VRING_USED_F_NO_NOTIFY): the worker
    /// set it and has not cleared it (see [`SndBackend::settle_kicks`]; only the TX and the
    /// event queue). While it does, every event first takes what the driver added to that
    /// queue without kicking. It stays set when the ring was stopped before it could be
    /// cleared (a stopped ring is never written); the ring's next event clears it (QEMU
    /// signals a restarted ring's kick eventfd, see [`SndBackend::stop_vring`]).
    kicks_off: [bool; NUM_QUEUES],
}

/// The sound card as a vhost-user backend. One per frontend connection.
pub struct SndBackend {
    inner: Mutex<Inner>,
    mem: GuestMem,
    tap: TapHandle,
    config_space: Vec<u8>,
    features: u64,
    queue_size: usize,
    exit_events: ExitEvents,
    /// The short-config misconfiguration was reported for this connection.
    short_config: Mutex<ShortConfig>,
}

/// What is known of a frontend that exposes the config without `controls` (see
/// [`SndBackend::check_config_size`]).
#[derive(Default)]
struct ShortConfig {
    /// The features the driver acknowledged last (QEMU sends them when the driver starts
    /// the device, i.e. after it read the config; a test frontend may send them first).
    acked: Option<u64>,
    /// The short config was seen.
    seen: bool,
    /// The error was reported (a driver that takes controls would fail).
    error_reported: bool,
    /// The all-clear was reported (this driver does not take controls).
    clear_reported: bool,
}

impl SndBackend {
    /// The card of one frontend connection, its mixer starting as `controls` (the mixer
    /// outlives connections: see [`controls`](Self::controls)).
    pub fn new(
        cfg: CardConfig,
        tap: TapHandle,
        epoch_ns: u64,
        mem: GuestMem,
        controls: Controls,
    ) -> io::Result<SndBackend> {
        let timers = (0..cfg.num_streams())
            .map(|_| MonotonicTimer::new())
            .collect::<io::Result<Vec<_>>>()?;
        let mut features = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if cfg.controls {
            features |= VIRTIO_SND_F_CTLS;
        }
        let config_space = cfg.config_space();
        let queue_size = cfg.queue_size as usize;
        let exit_events = ExitEvents::default();
        exit_events.prepare()?;
        Ok(SndBackend {
            inner: Mutex::new(Inner {
                card: Card::with_controls(cfg, tap.clone(), epoch_ns, controls),
                timers,
                vrings: Vec::new(),
                checked_mem: None,
                needs_reset: [false; NUM_QUEUES],
                refusal_logged: [false; NUM_QUEUES],
                used_refusals: LineBudget::default(),
                guest_poll: GuestPoll::default(),
                kicks_off: [false; NUM_QUEUES],
            }),
            mem,
            tap,
            config_space,
            features,
            queue_size,
            exit_events,
            short_config: Mutex::new(ShortConfig::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug; the state is still the best we have.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fds to register on the worker's epoll, with their ids.
    pub fn listeners(&self) -> Vec<(RawFd, u16)> {
        let inner = self.lock();
        let mut v = vec![(self.tap.notifier_fd(), TAP_EVENT)];
        for (i, t) in inner.timers.iter().enumerate() {
            v.push((t.as_raw_fd(), TIMER_EVENT_BASE + i as u16));
        }
        v
    }

    /// Closes the exit-event fds vhost-user-backend leaked (see [`crate::exit_event`]). Call
    /// after the `VhostUserDaemon` built on this backend has been dropped.
    pub fn reclaim_exit_events(&self) -> usize {
        self.exit_events.reclaim()
    }

    /// The guest memory, if it may be touched: a table not checked yet is checked here, so
    /// the card never reads a region the frontend lied about, even in the moment between
    /// vhost-user-backend publishing a new table and [`update_memory`](VhostUserBackend::update_memory)
    /// being called with it. A table that fails is replaced by an empty one.
    fn checked_memory(&self, inner: &mut Inner) -> Option<Arc<GuestMemoryMmap<()>>> {
        let mem = self.mem.memory().into_inner();
        if inner
            .checked_mem
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &mem))
        {
            return Some(mem);
        }
        match guest_memory::check_backing(&mem) {
            Ok(()) => {
                inner.checked_mem = Some(mem.clone());
                Some(mem)
            }
            Err(e) => {
                error!("guest memory table refused: {e}");
                match self.mem.lock() {
                    Ok(guard) => guard.replace(GuestMemoryMmap::new()),
                    Err(_) => error!("cannot drop the refused memory table: its lock is poisoned"),
                }
                inner.checked_mem = None;
                None
            }
        }
    }

    /// Reports a frontend whose config space ends before `controls` while the card offers
    /// VIRTIO_SND_F_CTLS: QEMU's vhost-user-snd-pci without `controls=on`.
    ///
    /// QEMU passes every feature the daemon offers on to the guest but sizes the config
    /// space by its own `controls` property; a driver that negotiates control elements then
    /// reads `controls` past the end (0xffffffff) and fails to probe — Linux's virtio_snd
    /// with -ENOMEM — and the guest simply has no sound card. QEMU asks for the config only
    /// when the guest's driver reads it, after the guest has chosen its features (checked:
    /// at realize QEMU 10.0 sends GET_FEATURES and nothing else), so the daemon cannot adapt
    /// in time: it can only say, once per connection, loudly, what to change. A driver that
    /// does not know control elements (Linux 5.13–6.8) is not affected, which is why this is
    /// reported rather than refused.
    fn check_config_size(&self, offset: u32, size: u32) {
        let end = u64::from(offset) + u64::from(size);
        let ctls_at = crate::spec::size::CONFIG_NO_CTLS as u64;
        if self.features & VIRTIO_SND_F_CTLS == 0 || offset != 0 || end > ctls_at {
            return;
        }
        self.note_short_config(Some(()), None);
    }

    /// Reports, once each, what a short config means for the driver at hand: an error while
    /// its features are unknown or include controls (it fails to probe), an all-clear once
    /// it is seen to have left the controls out (it plays, without a mixer).
    fn note_short_config(&self, short_seen: Option<()>, acked: Option<u64>) {
        let (level, text) = {
            let mut sc = self.short_config.lock().unwrap_or_else(|p| p.into_inner());
            if short_seen.is_some() {
                sc.seen = true;
            }
            if acked.is_some() {
                sc.acked = acked;
            }
            if !sc.seen {
                return;
            }
            let without_ctls = sc.acked.is_some_and(|f| f & VIRTIO_SND_F_CTLS == 0);
            if without_ctls {
                if std::mem::replace(&mut sc.clear_reported, true) {
                    return;
                }
                (NoticeLevel::Info, DRIVER_WITHOUT_CONTROLS.to_string())
            } else {
                if std::mem::replace(&mut sc.error_reported, true) {
                    return;
                }
                (NoticeLevel::Error, MISSING_CONTROLS_ON.to_string())
            }
        };
        match level {
            NoticeLevel::Error => error!("{text}"),
            _ => info!("{text}"),
        }
        let time_ns = self.lock().card.tap_time(monotonic_ns());
        self.tap.publish(&Record::Notice {
            time_ns,
            level,
            text,
        });
    }

    /// The mixer as it is now, for the next connection's card.
    pub fn controls(&self) -> Controls {
        self.lock().card.controls().clone()
    }

    /// The frontend connected.
    pub fn connected(&self) {
        let now = monotonic_ns();
        let inner = self.lock();
        let time_ns = inner.card.tap_time(now);
        self.tap.publish(&Record::Frontend {
            connected: true,
            time_ns,
        });
    }

    /// The frontend went away: every stream is released (its buffers are gone with the
    /// rings), readers are told.
    pub fn disconnected(&self) {
        let now = monotonic_ns();
        let mut inner = self.lock();
        inner.card.finish_reject_log();
        inner
            .card
            .reset::<GuestMemoryMmap<()>>(None, now, "frontend disconnected");
        inner.vrings.clear();
        for t in inner.timers.iter_mut() {
            if let Err(e) = t.set(None) {
                warn!("cannot disarm a stream timer: {e}");
            }
        }
        let time_ns = inner.card.tap_time(now);
        self.tap.publish(&Record::Frontend {
            connected: false,
            time_ns,
        });
    }

    /// Pops every available chain of queue `q` and hands it to the card.
    fn drain_queue(
        &self,
        inner: &mut Inner,
        q: u16,
        vring: &CheckedVring,
        mem: &GuestMemoryMmap<()>,
        now: u64,
    ) {
        let qi = q as usize;
        if let Some(size) = vring.refused_size() {
            if !std::mem::replace(&mut inner.refusal_logged[qi], true) {
                error!("queue {q}: not served, its size {size} was refused (SET_VRING_NUM)");
            }
            return;
        }
        inner.refusal_logged[qi] = false;
        if inner.needs_reset[qi] {
            return;
        }
        if inner.card.queue_stopped(q) {
            // After a vring stop the frontend restores the ring where it was; a driver that
            // reset the device starts it again from 0.
            let from_zero = vring.get_ref().get_queue().next_avail() == 0;
            inner.card.restart_queue(mem, q, from_zero, now);
        }
        let (chains, queue_size): (Vec<Chain>, u16) = {
            let mut state = vring.get_mut();
            let queue = state.get_queue_mut();
            let size = queue.size();
            match queue.iter(mem) {
                Ok(it) => (it.map(Chain::from_desc_chain).collect(), size),
                Err(e) => {
                    debug!("queue {q} not ready: {e}");
                    (Vec::new(), size)
                }
            }
        };
        inner.card.set_ring_size(q, queue_size);
        for c in chains {
            if c.head >= queue_size {
                // The driver put a head in the available ring that no descriptor has (virtio
                // 1.2 §2.7.13: "MUST NOT"). It cannot be returned — the used ring would name a
                // descriptor that does not exist — and the ring is no longer what the driver
                // thinks it is, so the device stops using the queue, as one needing reset.
                error!(
                    "queue {q}: the driver made head {} available, past the queue size \
                     {queue_size}; the queue is not served until the driver resets the device",
                    c.head
                );
                inner.needs_reset[qi] = true;
                return;
            }
            inner.card.handle_chain(mem, q, c, now);
        }
    }
}

impl SndBackend {
    /// Without pacing, the card waits for the guest's next TX buffer: poll the TX ring for
    /// it, within the adaptive budget, and complete what it lets complete, until the guest
    /// is slower than the budget or the episode's bound is reached (see
    /// [`crate::guest_poll`]). The card's lock is held only to hand it what arrived.
    ///
    /// While it polls, the driver is asked not to kick: the worker looks anyway. The flag is
    /// cleared when the episode ends ([`settle_kicks`](Self::settle_kicks)).
    fn poll_guest(&self, vrings: &[CheckedVring], mem: &GuestMemoryMmap<()>) {
        let Some(tx) = vrings.get(TX_QUEUE as usize) else {
            return;
        };
        let start = monotonic_ns();
        let budget = {
            let mut inner = self.lock();
            inner.guest_poll.wait_from(start);
            let budget = inner.guest_poll.budget_ns();
            if budget > 0
                && !inner.kicks_off[TX_QUEUE as usize]
                && set_kicks(tx, TX_QUEUE, mem, false) == KickFlag::Written
            {
                inner.kicks_off[TX_QUEUE as usize] = true;
            }
            budget
        };
        if budget == 0 {
            // A slow guest: the worker sleeps until its kick (which adjusts the budget).
            return;
        }
        self.poll_episode(tx, mem, start, start.saturating_add(budget));
        let mut inner = self.lock();
        if let Some(current) = self.checked_memory(&mut inner) {
            self.settle_kicks(&mut inner, &current);
            inner.flush();
        }
    }

    /// Asks the driver not to kick the TX and the event queue, or to kick them again, as
    /// the card's state says (virtio 1.2 §2.7.10, VRING_USED_F_NO_NOTIFY, which Linux's
    /// virtqueue_kick honours). A kick is a VM exit for the guest and a wake-up for the
    /// worker; the worker does without while it will look at the ring before it needs what
    /// the guest adds: TX while it polls (see [`poll_guest`](Self::poll_guest)) and at
    /// real-time pacing while every running output stream has a buffer behind its head and a
    /// deadline armed, the event queue while the card holds an event buffer
    /// ([`Card::kicks_unneeded`]) — every event first takes what the driver added
    /// ([`take_unkicked`](Self::take_unkicked)). Kicks are allowed again with
    /// `enable_notification`'s race check: chains added before the driver could see the
    /// change are taken at once. Call before [`Inner::flush`], so the driver, woken by the
    /// used entries, already reads the new flag.
    fn settle_kicks(&self, inner: &mut Inner, mem: &GuestMemoryMmap<()>) {
        for q in [TX_QUEUE, EVENT_QUEUE] {
            let Some(vring) = inner.vrings.get(q as usize).cloned() else {
                continue;
            };
            // Twice at most: allowing kicks may take chains that let the card do without
            // again.
            for _ in 0..2 {
                let off = inner.card.kicks_unneeded(q);
                if off == inner.kicks_off[q as usize] {
                    break;
                }
                match set_kicks(&vring, q, mem, !off) {
                    KickFlag::Written => {
                        inner.kicks_off[q as usize] = off;
                        break;
                    }
                    // Retried at the ring's next event.
                    KickFlag::NotReady => break,
                    KickFlag::Pending => {
                        // The driver added chains after the worker's last look and did not
                        // kick.
                        inner.kicks_off[q as usize] = false;
                        let now = monotonic_ns();
                        self.drain_queue(inner, q, &vring, mem, now);
                        inner.card.flush_reject_log(now);
                        inner.arm_timers();
                    }
                }
            }
        }
    }

    /// Takes what the driver added without kicking to the queues whose kicks are off
    /// (see [`settle_kicks`](Self::settle_kicks)), except `skip` (the queue whose own event
    /// is being handled: drained then anyway).
    fn take_unkicked(&self, inner: &mut Inner, mem: &GuestMemoryMmap<()>, skip: u16, now: u64) {
        for q in [TX_QUEUE, EVENT_QUEUE] {
            if inner.kicks_off[q as usize] && skip != q {
                if let Some(vring) = inner.vrings.get(q as usize).cloned() {
                    self.drain_queue(inner, q, &vring, mem, now);
                }
            }
        }
    }

    /// The polls of one episode: see [`poll_guest`](Self::poll_guest).
    fn poll_episode(
        &self,
        tx: &CheckedVring,
        mem: &GuestMemoryMmap<()>,
        start: u64,
        mut until: u64,
    ) {
        let episode_end = start.saturating_add(EPISODE_MAX_NS);
        let _deferred = self.tap.defer_wakes();
        loop {
            let now = monotonic_ns();
            if has_new_chains(tx, mem) {
                let mut inner = self.lock();
                let current = self.checked_memory(&mut inner);
                if !current.is_some_and(|c| std::ptr::eq(&*c, mem)) {
                    // The frontend sent a new memory table meanwhile: the next event reads
                    // the ring through it.
                    return;
                }
                inner.guest_poll.arrived(now);
                let taken_from = next_avail(tx);
                self.take_unkicked(&mut inner, mem, TX_QUEUE, now);
                self.drain_queue(&mut inner, TX_QUEUE, tx, mem, now);
                inner.card.flush_reject_log(now);
                inner.flush();
                inner.arm_timers();
                if next_avail(tx) == taken_from {
                    // Nothing taken: a queue the driver broke or sized wrongly is not served
                    // (drain_queue logged it). Polling it again would only spin.
                    return;
                }
                if !inner.card.awaits_guest() || now >= episode_end {
                    // Back to epoll: the kick that came with these chains wakes it at once
                    // if the guest is still sending.
                    return;
                }
                inner.guest_poll.wait_from(now);
                until = now.saturating_add(inner.guest_poll.budget_ns());
                continue;
            }
            if now >= until {
                // The guest's kick wakes the worker; its delay adjusts the budget then.
                return;
            }
            std::thread::yield_now();
        }
    }
}

/// What [`set_kicks`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KickFlag {
    /// The used ring's flags now say what was asked, and nothing waits to be taken.
    Written,
    /// Kicks are allowed again, and chains the driver made available are not taken yet.
    Pending,
    /// The ring is stopped (or not set up): nothing was written.
    NotReady,
}

/// Asks the driver to kick (`allow`) or not to, in the ring's used flags. Written under the
/// ring's lock and only while the ring is ready, so a ring the frontend stopped is never
/// touched.
fn set_kicks(vring: &CheckedVring, q: u16, mem: &GuestMemoryMmap<()>, allow: bool) -> KickFlag {
    let mut state = vring.get_mut();
    let queue = state.get_queue_mut();
    if !queue.ready() {
        return KickFlag::NotReady;
    }
    let written = if allow {
        queue.enable_notification(mem).map(|pending| {
            if pending {
                KickFlag::Pending
            } else {
                KickFlag::Written
            }
        })
    } else {
        queue.disable_notification(mem).map(|()| KickFlag::Written)
    };
    written.unwrap_or_else(|e| {
        debug!("queue {q}: cannot write the used ring's flags: {e}");
        KickFlag::NotReady
    })
}

/// The index of the next available-ring entry the device will take.
fn next_avail(vring: &CheckedVring) -> u16 {
    vring.get_ref().get_queue().next_avail()
}

/// Whether the driver has made chains available that the device has not taken yet.
fn has_new_chains(vring: &CheckedVring, mem: &GuestMemoryMmap<()>) -> bool {
    let state = vring.get_ref();
    let queue = state.get_queue();
    queue.ready()
        && queue
            .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
            .is_ok_and(|avail| avail.0 != queue.next_avail())
}

impl Inner {
    /// Puts the card's used entries in the rings and signals the guest.
    fn flush(&mut self) {
        let used: Vec<Used> = self.card.take_used();
        if used.is_empty() {
            return;
        }
        let mut touched = [false; NUM_QUEUES];
        for u in used {
            let Some(vring) = self.vrings.get(u.queue as usize) else {
                warn!("used entry for queue {} with no vring: dropped", u.queue);
                continue;
            };
            if let Err(e) = vring.add_used(u.head, u.len) {
                if let Some(held_back) = self.used_refusals.take(monotonic_ns()) {
                    warn!(
                        "queue {}: cannot return chain {}: {e} ({held_back} such lines held \
                         back)",
                        u.queue, u.head
                    );
                }
                continue;
            }
            if let Some(t) = touched.get_mut(u.queue as usize) {
                *t = true;
            }
        }
        for (q, t) in touched.iter().enumerate() {
            if *t {
                if let Some(v) = self.vrings.get(q) {
                    if let Err(e) = v.signal_used_queue() {
                        warn!("queue {q}: cannot signal the guest: {e}");
                    }
                }
            }
        }
    }

    /// Arms each stream's timer to its next deadline.
    fn arm_timers(&mut self) {
        for i in 0..self.timers.len() {
            let d = self.card.next_deadline(i);
            if let Some(t) = self.timers.get_mut(i) {
                if let Err(e) = t.set(d) {
                    warn!("stream {i}: cannot arm its timer: {e}");
                }
            }
        }
    }
}

impl VhostUserBackend for SndBackend {
    type Bitmap = ();
    type Vring = CheckedVring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        self.queue_size
    }

    fn features(&self) -> u64 {
        debug!("GET_FEATURES: offering {:#x}", self.features);
        self.features
    }

    fn acked_features(&self, features: u64) {
        let mut inner = self.lock();
        inner.card.set_features(features);
        // QEMU sends the features at every ring start, and a guest can reset its device in a
        // loop: rate-limited like the card's other driver/ring lines.
        let line = format!(
            "driver acknowledged features {features:#x} (controls {})",
            if features & VIRTIO_SND_F_CTLS != 0 {
                "on"
            } else {
                "off"
            }
        );
        inner.card.log_device_event(monotonic_ns(), &line);
        drop(inner);
        self.note_short_config(None, Some(features));
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn reset_device(&self) {
        let now = monotonic_ns();
        let mut inner = self.lock();
        inner.needs_reset = [false; NUM_QUEUES];
        for v in &inner.vrings {
            v.clear_refusal();
        }
        match self.checked_memory(&mut inner) {
            Some(mem) => inner.card.reset(Some(&*mem), now, "device reset"),
            None => inner
                .card
                .reset::<GuestMemoryMmap<()>>(None, now, "device reset"),
        }
        inner.flush();
        inner.arm_timers();
    }

    fn set_event_idx(&self, _enabled: bool) {
        // VIRTIO_RING_F_EVENT_IDX is not offered: every used buffer is signalled.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        debug!("GET_CONFIG offset {offset} size {size}");
        self.check_config_size(offset, size);
        // vhost-user config spaces are at most 256 bytes; anything larger is not a real read.
        if size > 256 {
            warn!("config read of {size} bytes refused");
            return Vec::new();
        }
        let start = offset as usize;
        let end = start.saturating_add(size as usize);
        if start > self.config_space.len() || end > self.config_space.len() {
            warn!(
                "config read {offset}+{size} outside the {}-byte config space",
                self.config_space.len()
            );
            // Bytes past the end read as zero (a frontend with a larger idea of the config).
            let mut v = vec![0u8; size as usize];
            if let Some(src) = self.config_space.get(start..) {
                let n = src.len().min(v.len());
                v[..n].copy_from_slice(&src[..n]);
            }
            return v;
        }
        self.config_space[start..end].to_vec()
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the virtio-snd config space is read-only",
        ))
    }

    fn update_memory(&self, _mem: GuestMem) -> io::Result<()> {
        // The atomic handle given to the daemon is the one we hold; it already sees the
        // new regions. They are checked now, before anything touches them (and again at
        // each event if a table slipped in between: see `checked_memory`).
        let mut inner = self.lock();
        match self.checked_memory(&mut inner) {
            Some(_) => {
                debug!("guest memory updated");
                Ok(())
            }
            // The frontend gets an error reply (with REPLY_ACK) or a closed connection; the
            // daemon serves the next one.
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a guest memory region lies past the end of its file",
            )),
        }
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        vec![(1u64 << NUM_QUEUES) - 1]
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match self.exit_events.take() {
            Ok(pair) => Some(pair),
            Err(e) => {
                warn!("cannot create the worker's exit event: {e}");
                None
            }
        }
    }

    /// GET_VRING_BASE: the frontend stops ring `queue_index` and learns where the device is
    /// in its available ring (vhost-user-backend replies with the ring's next_avail after
    /// this returns).
    ///
    /// Buffers the clock still holds stay held (see [`Card::stop_queue`]): the reply counts
    /// them as taken, they are not put in the used ring while the ring is stopped, and they
    /// complete, re-anchored, after the ring restarts. Why not the alternatives:
    ///
    /// - Completing them here (the old behaviour, and the "drain" the vhost-user spec allows)
    ///   puts them in the used ring while QEMU is tearing the ring's interrupt path down
    ///   (vhost_dev_stop, then the guest notifiers are unbound), so the guest may never hear
    ///   of them: the Linux driver, which counts each TX message as one period, stalled after
    ///   `stop`/`cont` (seen with QEMU). It also plays the audio early.
    /// - Reporting the index of the first held buffer instead ("un-popping" them, so they are
    ///   read again after the restart): QEMU's vhost_virtqueue_stop stores the reply as the
    ///   ring's last_avail_idx and vhost_virtqueue_start sends it back with SET_VRING_BASE,
    ///   so the device would re-read every chain from there on. One index cannot describe
    ///   "these are taken, those are not" when several streams share the tx queue (stream 1's
    ///   buffers behind stream 0's held one have completed and may already be reused by the
    ///   driver — they would be completed twice); and once the driver has posted `size`
    ///   chains past a held one, its avail slot is overwritten. The Linux driver keeps the
    ///   held messages in flight over a pause and never resubmits them, which is exactly
    ///   what keeping them matches.
    ///
    /// Holding them is safe across a memory remap (a SET_MEM_TABLE between stop and start):
    /// the card keeps guest addresses, not host pointers, and reads them through the current
    /// memory map when they complete (an address that no longer maps completes with IO_ERR).
    /// Migration is not offered (no VHOST_F_LOG_ALL), so held buffers never need to move to
    /// another backend. A ring restarted from index 0 is a driver reset: the held buffers
    /// are forgotten then (see [`Card::restart_queue`]). QEMU creates the rings' host
    /// notifiers signalled on every start, so the restart is noticed at once (in
    /// `drain_queue`, on the ring's first event).
    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let now = monotonic_ns();
        let mut inner = self.lock();
        let Ok(q) = u16::try_from(queue_index) else {
            return Ok(());
        };
        // What the card completed before the stop still goes in; after it, nothing.
        inner.flush();
        inner.card.stop_queue(q, now);
        inner.arm_timers();
        debug!("queue {q} stopped");
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[CheckedVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        if !evset.contains(EventSet::IN) {
            debug!("event {device_event}: {evset:?} ignored");
            return Ok(());
        }
        let now = monotonic_ns();
        let mut inner = self.lock();
        if inner.vrings.len() != vrings.len() {
            inner.vrings = vrings.to_vec();
        }
        // A table that was just refused is replaced by an empty one: the card sees no
        // memory (every access fails cleanly) until the frontend sends a good table.
        let mem = self
            .checked_memory(&mut inner)
            .unwrap_or_else(|| Arc::new(GuestMemoryMmap::new()));
        // The driver may have added buffers without a kick (see `settle_kicks`): the card
        // sees them before anything else happens (a deadline, a START, a reader).
        self.take_unkicked(&mut inner, &mem, device_event, now);
        match device_event {
            q if (q as usize) < NUM_QUEUES => {
                if q == TX_QUEUE {
                    inner.guest_poll.arrived(now);
                }
                if let Some(vring) = vrings.get(q as usize) {
                    self.drain_queue(&mut inner, q, vring, &mem, now);
                }
            }
            TAP_EVENT => {
                self.tap.clear_notifier();
                inner.card.on_tap_notify(&*mem, now);
            }
            t if t >= TIMER_EVENT_BASE => {
                let idx = (t - TIMER_EVENT_BASE) as usize;
                if let Some(timer) = inner.timers.get_mut(idx) {
                    timer.clear();
                }
                inner.card.service_stream(&*mem, idx, now);
            }
            other => debug!("unexpected event id {other}"),
        }
        // Errors here are the guest's or the frontend's, already logged: the worker must
        // keep serving, so nothing is returned as an error.
        inner.card.flush_reject_log(now);
        inner.arm_timers();
        self.settle_kicks(&mut inner, &mem);
        inner.flush();
        if inner.card.awaits_guest() {
            drop(inner);
            self.poll_guest(vrings, &mem);
        } else {
            inner.guest_poll.forget();
        }
        Ok(())
    }
}
