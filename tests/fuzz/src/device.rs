//! The card driven by a hostile driver, as rust-vmm fuzzes virtio-queue: guest memory, the
//! four split virtqueues written from the driver's side (virtio-queue's `MockSplitQueue`),
//! descriptor tables and available rings holding whatever the input says, popped with
//! virtio-queue's own iterator and handed to the card as the backend does
//! (`backend.rs`). Between chains the clock moves, readers come and go and set controls,
//! the frontend stops and restarts rings and resets the device.
//!
//! The three targets share this bench and differ in where most chains go: [`ctl`] the
//! control queue, [`xfer`] TX and RX (after the control requests that set a stream up),
//! [`event`] the event queue (with what makes events: periods, xruns, control changes).
//!
//! Beyond "never panics", every used entry is checked: the card returns only chains it was
//! given, each once, with a used length no larger than the chain's device-writable bytes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use arbitrary::{Result, Unstructured};
use dsproxy_device::card::{Card, CardTap, PcmFill};
use dsproxy_device::chain::Chain;
use dsproxy_device::config::{CardConfig, Pacing};
use dsproxy_device::spec::{code, size, CONTROL_QUEUE, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use dsproxy_device::tap::TapRequest;
use dsproxy_device::RequestError;
use dsproxy_wire::record::Record;
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Ring size: small, so that arbitrary heads and `next` indices land in the table often.
const QSIZE: u16 = 16;
/// Where each queue's rings are (queue `q` at `q * RING_STRIDE`).
const RING_STRIDE: u64 = 0x1000;
/// Guest memory: two regions with a hole between them, so chains can cross a region
/// boundary or point at nothing.
const REGION_A: (u64, usize) = (0, 0x3_0000);
const REGION_B: (u64, usize) = (0x3_8000, 0x1_0000);
/// Buffers go from here to a little past the end of memory.
const DATA_BASE: u64 = 0x1_0000;
const DATA_END: u64 = 0x4_9000;
/// Steps per input, at most.
const MAX_STEPS: usize = 64;
/// CLOCK_MONOTONIC at daemon start, and where the bench's clock starts.
const EPOCH: u64 = 1_000_000_000;

thread_local! {
    /// The guest memory of this thread's runs: mapped once (a run is short; mapping a fresh
    /// megabyte each time would be most of it), zeroed at the start of each run.
    static MEMORY: &'static GuestMemoryMmap<()> = Box::leak(Box::new(
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(REGION_A.0), REGION_A.1),
            (GuestAddress(REGION_B.0), REGION_B.1),
        ])
        .expect("the bench's memory maps"),
    ));
}

/// This thread's guest memory, zeroed.
fn guest_memory() -> &'static GuestMemoryMmap<()> {
    let mem = MEMORY.with(|m| *m);
    for (start, len) in [REGION_A, REGION_B] {
        mem.write_slice(&vec![0u8; len], GuestAddress(start))
            .expect("the bench's memory is mapped");
    }
    mem
}

/// `DSPROXY_FUZZ_TRACE=1`: print each step of a run and the card's log on stderr (to see
/// what a crashing input does: `cargo fuzz run ctl <input>`, or the corpus test).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var_os("DSPROXY_FUZZ_TRACE").is_some_and(|v| v != "0");
        if on {
            let _ = log::set_logger(&StderrLog);
            log::set_max_level(log::LevelFilter::Trace);
        }
        on
    })
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!("fuzz: {}", format!($($arg)*));
        }
    };
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        eprintln!("card {}: {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

/// Which queue most chains go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Focus {
    Control,
    Transfer,
    Event,
}

/// Control requests: the control queue's parser.
pub fn ctl(data: &[u8]) {
    run(data, Focus::Control);
}

/// TX and RX transfers: the PCM header and the data/status layout of a chain.
pub fn xfer(data: &[u8]) {
    run(data, Focus::Transfer);
}

/// Event buffers, and the events that fill them.
pub fn event(data: &[u8]) {
    run(data, Focus::Event);
}

fn run(data: &[u8], focus: Focus) {
    let mut u = Unstructured::new(data);
    let Ok(cfg) = config(&mut u) else { return };
    let mut bench = Bench::new(cfg);
    let _ = bench.play(&mut u, focus);
    bench.finish();
}

/// The card's shape: a few of the daemon's options.
fn config(u: &mut Unstructured<'_>) -> Result<CardConfig> {
    let mut cfg = CardConfig {
        outputs: u.int_in_range(0..=2)?,
        inputs: u.int_in_range(0..=2)?,
        controls: u.arbitrary()?,
        pacing: if u.ratio(1, 4)? {
            Pacing::None
        } else {
            Pacing::Realtime
        },
        wait_for_reader: u.ratio(1, 8)?,
        ..CardConfig::default()
    };
    if u.ratio(1, 8)? {
        cfg.max_buffer_bytes = u.int_in_range(1..=0x4_0000)?;
    }
    if cfg.outputs + cfg.inputs == 0 {
        cfg.outputs = 1;
    }
    Ok(cfg)
}

/// What the card's tap reports, set by the input; what it publishes is checked and dropped.
#[derive(Default)]
struct TapState {
    readers: Cell<bool>,
    accept: Cell<bool>,
    no_pacing: Cell<bool>,
    requests: RefCell<Vec<TapRequest>>,
    inject: Cell<u8>,
}

#[derive(Clone, Default)]
struct FuzzTap(Rc<TapState>);

impl CardTap for FuzzTap {
    fn publish(&self, rec: &Record) {
        // Every record the card publishes goes to readers as bytes: it must encode.
        if let Err(e) = rec.to_bytes() {
            panic!("the card published a record that does not encode ({e}): {rec:?}");
        }
    }
    fn publish_pcm(
        &self,
        _stream: u32,
        _offset: u64,
        _time_ns: u64,
        len: usize,
        fill: &mut PcmFill<'_>,
    ) -> std::result::Result<(), RequestError> {
        // Filled a piece at a time as the real tap fills its records, the pieces of an odd
        // size so that they start inside guest-memory segments.
        const PIECE: usize = 1000;
        let mut piece = [0u8; PIECE];
        for at in (0..len).step_by(PIECE) {
            let n = PIECE.min(len - at);
            fill(at, &mut piece[..n])?;
        }
        Ok(())
    }
    fn has_readers(&self) -> bool {
        self.0.readers.get()
    }
    fn can_accept(&self) -> bool {
        self.0.accept.get()
    }
    fn no_pacing_requested(&self) -> bool {
        self.0.no_pacing.get()
    }
    fn take_requests(&self) -> Vec<TapRequest> {
        std::mem::take(&mut *self.0.requests.borrow_mut())
    }
    fn read_inject(&self, _stream: u32, out: &mut [u8]) -> usize {
        out.fill(self.0.inject.get());
        out.len()
    }
}

/// Guest memory, the driver's side of the four queues, the card, and what is in flight.
struct Bench {
    mem: &'static GuestMemoryMmap<()>,
    mocks: Vec<MockSplitQueue<'static, GuestMemoryMmap<()>>>,
    queues: Vec<Queue>,
    /// The driver's next free descriptor per queue (chains it writes itself).
    next_desc: [u16; 4],
    card: Card<FuzzTap>,
    tap: FuzzTap,
    now: u64,
    /// Chains handed to the card and not returned: (queue, head) -> writable bytes of each.
    in_flight: HashMap<(u16, u16), Vec<u64>>,
}

impl Bench {
    fn new(cfg: CardConfig) -> Bench {
        let mem = guest_memory();
        let mut mocks = Vec::new();
        let mut queues = Vec::new();
        for q in 0..4u64 {
            let m = MockSplitQueue::create(mem, GuestAddress(q * RING_STRIDE), QSIZE);
            queues.push(m.create_queue::<Queue>().expect("the mock queue is valid"));
            mocks.push(m);
        }
        let tap = FuzzTap::default();
        tap.0.readers.set(true);
        tap.0.accept.set(true);
        let card = Card::new(cfg, tap.clone(), EPOCH);
        Bench {
            mem,
            mocks,
            queues,
            next_desc: [0; 4],
            card,
            tap,
            now: EPOCH + 1_000_000_000,
            in_flight: HashMap::new(),
        }
    }

    /// Ends the run as the daemon does when the frontend goes away.
    fn finish(mut self) {
        self.card
            .reset::<GuestMemoryMmap<()>>(None, self.now, "fuzz run over");
        let _ = self.card.take_used();
    }

    fn play(&mut self, u: &mut Unstructured<'_>, focus: Focus) -> Result<()> {
        if u.arbitrary()? {
            self.card.set_features(u.arbitrary()?);
        }
        if focus == Focus::Transfer {
            // A stream set up the way a driver does it, so that transfers reach the data path.
            let stream = u.int_in_range(0..=3)?;
            for req in [
                set_params(u, stream)?,
                pcm_hdr(code::PCM_PREPARE, stream),
                pcm_hdr(code::PCM_START, stream),
            ] {
                self.post_request(u, &req)?;
            }
        }
        for _ in 0..MAX_STEPS {
            if u.is_empty() {
                break;
            }
            match u.int_in_range(0u8..=15)? {
                0..=7 => {
                    let q = queue_for(u, focus)?;
                    self.post_chain(u, q)?;
                }
                8 => {
                    // A descriptor anywhere in a table, whatever it says.
                    let q = u.int_in_range(0..=3)?;
                    let index = u.int_in_range(0..=QSIZE - 1)?;
                    let desc = raw_descriptor(u)?;
                    self.store(q, index, desc);
                }
                9 => {
                    // Any head in the available ring (out of range ones too).
                    let q = queue_for(u, focus)?;
                    let head = if u.ratio(3, 4)? {
                        u.int_in_range(0..=QSIZE - 1)?
                    } else {
                        u.arbitrary()?
                    };
                    self.make_available(q, head);
                    self.kick(q);
                }
                10 => {
                    // The driver changes a buffer the device may still hold.
                    let addr = data_addr(u)?;
                    let n = u.int_in_range(0..=64)?;
                    let bytes = u.bytes(n)?;
                    let _ = self.mem.write_slice(bytes, GuestAddress(addr));
                }
                11 | 12 => {
                    let dt = if u.ratio(1, 8)? {
                        u.int_in_range(0..=5_000_000_000)?
                    } else {
                        u.int_in_range(0..=50_000_000)?
                    };
                    self.now += dt;
                    trace!("clock +{dt} ns");
                    self.card.service_all(self.mem, self.now);
                }
                13 => self.tap_step(u)?,
                14 => {
                    if focus == Focus::Event || u.ratio(1, 4)? {
                        // A reader changes a control: a CTL_NOTIFY event for the guest.
                        let id = u.int_in_range(0..=8)?;
                        let n = u.int_in_range(0..=3)?;
                        let values = (0..n)
                            .map(|_| {
                                Ok(if u.arbitrary()? {
                                    u.int_in_range(0..=101)?
                                } else {
                                    u.arbitrary()?
                                })
                            })
                            .collect::<Result<Vec<i64>>>()?;
                        trace!("reader sets control {id} to {values:?}");
                        self.tap
                            .0
                            .requests
                            .borrow_mut()
                            .push(TapRequest::SetControl { id, values });
                        self.card.on_tap_notify(self.mem, self.now);
                    }
                }
                _ => self.frontend_step(u)?,
            }
            self.flush();
        }
        Ok(())
    }

    fn tap_step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let t = &self.tap.0;
        t.readers.set(u.arbitrary()?);
        t.accept.set(u.arbitrary()?);
        t.no_pacing.set(u.arbitrary()?);
        t.inject.set(u.arbitrary()?);
        trace!(
            "tap: readers {} accept {} no_pacing {}",
            t.readers.get(),
            t.accept.get(),
            t.no_pacing.get()
        );
        self.card.on_tap_notify(self.mem, self.now);
        Ok(())
    }

    /// What the frontend (QEMU) does to the rings: stop and restart one, reset the device.
    fn frontend_step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let q = u.int_in_range(0..=3)?;
        let what = u.int_in_range(0u8..=3)?;
        trace!(
            "frontend: {} queue {q}",
            ["stop", "restart", "fresh restart", "reset"][what as usize]
        );
        match what {
            0 => self.card.stop_queue(q, self.now),
            1 => self.card.restart_queue(self.mem, q, false, self.now),
            2 => {
                // The driver reset the device: the ring starts again from index 0, and
                // what the card held of it is nobody's.
                self.card.stop_queue(q, self.now);
                self.card.restart_queue(self.mem, q, true, self.now);
                self.fresh_ring(q);
            }
            _ => {
                self.card.reset(Some(self.mem), self.now, "fuzz reset");
            }
        }
        Ok(())
    }

    /// Zeroes queue `q`'s ring indices and forgets what the card had of it.
    fn fresh_ring(&mut self, q: u16) {
        let m = &self.mocks[q as usize];
        let _ = self.mem.write_obj(0u16, GuestAddress(m.avail_addr().0 + 2));
        let _ = self.mem.write_obj(0u16, GuestAddress(m.used_addr().0 + 2));
        self.queues[q as usize] = m.create_queue::<Queue>().expect("the mock queue is valid");
        self.next_desc[q as usize] = 0;
        self.in_flight.retain(|(qq, _), _| *qq != q);
    }

    /// A control request in a well-formed chain: request, then a response buffer.
    fn post_request(&mut self, u: &mut Unstructured<'_>, req: &[u8]) -> Result<()> {
        let resp = response_len(u)?;
        let descs = [Buf::Read(req.to_vec()), Buf::Write(resp)];
        self.write_chain(u, CONTROL_QUEUE, &descs)
    }

    /// A chain the driver writes (its layout mostly as the queue expects) and kicks.
    fn post_chain(&mut self, u: &mut Unstructured<'_>, q: u16) -> Result<()> {
        let mut descs = Vec::new();
        match q {
            CONTROL_QUEUE => {
                descs.push(Buf::Read(control_request(u)?));
                descs.push(Buf::Write(response_len(u)?));
            }
            EVENT_QUEUE => descs.push(Buf::Write(if u.ratio(7, 8)? {
                size::EVENT as u32
            } else {
                u.int_in_range(0..=64)?
            })),
            _ => {
                let stream: u32 = if u.ratio(7, 8)? {
                    u.int_in_range(0..=3)?
                } else {
                    u.arbitrary()?
                };
                let mut hdr = stream.to_le_bytes().to_vec();
                if u.ratio(1, 8)? {
                    // aero's 8-byte header, or junk after the header.
                    hdr.extend_from_slice(&some_bytes(u, 8)?);
                }
                descs.push(Buf::Read(hdr));
                let pcm = pcm_len(u)?;
                if q == TX_QUEUE {
                    let mut data = u.bytes(pcm.min(u.len()))?.to_vec();
                    data.resize(pcm, 0);
                    descs.push(Buf::Read(data));
                } else {
                    descs.push(Buf::Write(pcm as u32));
                }
                descs.push(Buf::Write(size::PCM_STATUS as u32));
            }
        }
        // Now and then the layout is wrong: a piece split, dropped, duplicated or raw.
        if u.ratio(1, 4)? {
            let at = u.int_in_range(0..=descs.len())?;
            descs.insert(at, buf(u)?);
        }
        if u.ratio(1, 8)? && !descs.is_empty() {
            let at = u.int_in_range(0..=descs.len() - 1)?;
            descs.remove(at);
        }
        self.write_chain(u, q, &descs)
    }

    /// Writes `descs` as a chain (directly in the ring's table, or through an indirect
    /// table), makes it available and kicks.
    fn write_chain(&mut self, u: &mut Unstructured<'_>, q: u16, descs: &[Buf]) -> Result<()> {
        let indirect = u.ratio(1, 8)?;
        let mut alloc = Alloc::new(u)?;
        let mut raws = Vec::with_capacity(descs.len());
        for (i, d) in descs.iter().enumerate() {
            let (addr, len, mut flags) = match d {
                Buf::Read(bytes) => {
                    let a = alloc.take(bytes.len() as u64);
                    let _ = self.mem.write_slice(bytes, GuestAddress(a));
                    (a, bytes.len() as u32, 0u16)
                }
                Buf::Write(len) => (alloc.take(*len as u64), *len, VRING_DESC_F_WRITE as u16),
                Buf::Raw(raw) => {
                    raws.push(*raw);
                    continue;
                }
            };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            raws.push(RawDescriptor::from(SplitDescriptor::new(
                addr, len, flags, 0,
            )));
        }
        if raws.is_empty() {
            return Ok(());
        }
        let head = if indirect {
            let table = alloc.take(16 * raws.len() as u64);
            for (i, raw) in raws.iter().enumerate() {
                let d = SplitDescriptor::from(*raw);
                let next = if d.flags() & VRING_DESC_F_NEXT as u16 != 0 {
                    i as u16 + 1
                } else {
                    d.next()
                };
                let d = SplitDescriptor::new(d.addr().0, d.len(), d.flags(), next);
                let _ = self
                    .mem
                    .write_obj(RawDescriptor::from(d), GuestAddress(table + 16 * i as u64));
            }
            let len = if u.ratio(7, 8)? {
                16 * raws.len() as u32
            } else {
                u.arbitrary()?
            };
            let head = self.take_slots(q, 1);
            let d = SplitDescriptor::new(table, len, VRING_DESC_F_INDIRECT as u16, 0);
            self.store(q, head, RawDescriptor::from(d));
            head
        } else {
            let n = raws.len() as u16;
            let start = self.take_slots(q, n);
            for (i, raw) in raws.iter().enumerate() {
                let d = SplitDescriptor::from(*raw);
                let next = if d.flags() & VRING_DESC_F_NEXT as u16 != 0 {
                    (start + i as u16 + 1) % QSIZE
                } else {
                    d.next()
                };
                let d = SplitDescriptor::new(d.addr().0, d.len(), d.flags(), next);
                self.store(q, (start + i as u16) % QSIZE, RawDescriptor::from(d));
            }
            start
        };
        self.make_available(q, head);
        self.kick(q);
        Ok(())
    }

    /// `n` consecutive descriptor slots of queue `q` (wrapping: the driver reuses slots
    /// whatever the device still holds; a careful driver would not, a hostile one does).
    fn take_slots(&mut self, q: u16, n: u16) -> u16 {
        let start = self.next_desc[q as usize];
        self.next_desc[q as usize] = (start + n % QSIZE) % QSIZE;
        start
    }

    fn store(&mut self, q: u16, index: u16, desc: RawDescriptor) {
        let _ = self.mocks[q as usize].desc_table().store(index, desc);
    }

    /// Puts `head` in queue `q`'s available ring.
    fn make_available(&mut self, q: u16, head: u16) {
        let avail = self.mocks[q as usize].avail_addr().0;
        let Ok(idx) = self.mem.read_obj::<u16>(GuestAddress(avail + 2)) else {
            return;
        };
        let slot = avail + 4 + 2 * (idx % QSIZE) as u64;
        let _ = self.mem.write_obj(head, GuestAddress(slot));
        let _ = self
            .mem
            .write_obj(idx.wrapping_add(1), GuestAddress(avail + 2));
    }

    /// The device is notified: every available chain of `q` goes to the card.
    fn kick(&mut self, q: u16) {
        let mem = self.mem;
        let Ok(iter) = self.queues[q as usize].iter(mem) else {
            return;
        };
        let chains: Vec<Chain> = iter.map(Chain::from_desc_chain).collect();
        for c in chains {
            trace!("queue {q}: chain {c:?}");
            self.in_flight
                .entry((q, c.head))
                .or_default()
                .push(c.writable_len());
            self.card.handle_chain(mem, q, c, self.now);
        }
        // As the backend does after each kick.
        self.flush();
    }

    /// Puts the card's used entries in the used rings, checking each against what the card
    /// was given.
    fn flush(&mut self) {
        for used in self.card.take_used() {
            trace!("used {used:?}");
            let q = used.queue;
            assert!(
                (q as usize) < self.queues.len(),
                "used entry on queue {q}: {used:?}"
            );
            let Some(given) = self.in_flight.get_mut(&(q, used.head)) else {
                panic!("the card returned a chain it does not hold: {used:?}");
            };
            // The driver may post a head the card still holds: of the chains with this head,
            // the one with the fewest writable bytes that fit (what one may use, a larger one
            // may too, so this never fails a later entry that another choice would pass).
            let fits = given
                .iter()
                .enumerate()
                .filter(|(_, &w)| used.len as u64 <= w)
                .min_by_key(|(_, &w)| w);
            let Some((at, _)) = fits else {
                panic!(
                    "used length {} beyond the device-writable bytes of every chain with \
                     head {} ({given:?}): {used:?}",
                    used.len, used.head
                );
            };
            given.swap_remove(at);
            if given.is_empty() {
                self.in_flight.remove(&(q, used.head));
            }
            // A head past the ring (the driver put it in the available ring) cannot go back:
            // the backend logs virtio-queue's refusal and drops it, as here.
            let added = self.queues[q as usize].add_used(self.mem, used.head, used.len);
            assert!(
                added.is_ok() || used.head >= QSIZE,
                "a used entry the bench has checked fits the ring: {used:?}: {added:?}"
            );
        }
    }
}

/// One buffer of a chain the driver writes.
#[derive(Debug, Clone)]
enum Buf {
    /// Device-readable, holding these bytes.
    Read(Vec<u8>),
    /// Device-writable, this long.
    Write(u32),
    /// A descriptor as the input has it (its NEXT flag decides whether the chain goes on).
    Raw(RawDescriptor),
}

fn buf(u: &mut Unstructured<'_>) -> Result<Buf> {
    Ok(match u.int_in_range(0u8..=2)? {
        0 => Buf::Read(some_bytes(u, 32)?),
        1 => Buf::Write(u.int_in_range(0..=1024)?),
        _ => Buf::Raw(raw_descriptor(u)?),
    })
}

/// Where the buffers of one chain go: one after the other from an address the input picks
/// (so they may run into the hole, the end of memory, or the rings).
struct Alloc {
    next: u64,
}

impl Alloc {
    fn new(u: &mut Unstructured<'_>) -> Result<Alloc> {
        Ok(Alloc {
            next: if u.ratio(7, 8)? {
                DATA_BASE + 64 * u.int_in_range(0..=0x800)?
            } else {
                data_addr(u)?
            },
        })
    }
    fn take(&mut self, len: u64) -> u64 {
        let a = self.next;
        self.next = self.next.wrapping_add(len.max(1)).wrapping_add(63) & !63;
        a
    }
}

fn data_addr(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(if u.ratio(15, 16)? {
        u.int_in_range(0..=DATA_END)?
    } else {
        u.arbitrary()?
    })
}

fn raw_descriptor(u: &mut Unstructured<'_>) -> Result<RawDescriptor> {
    let addr = data_addr(u)?;
    let len = if u.ratio(7, 8)? {
        u.int_in_range(0..=4096)?
    } else {
        u.arbitrary()?
    };
    let flags = if u.ratio(3, 4)? {
        u.int_in_range(0..=7)?
    } else {
        u.arbitrary()?
    };
    let next = if u.ratio(3, 4)? {
        u.int_in_range(0..=QSIZE - 1)?
    } else {
        u.arbitrary()?
    };
    Ok(RawDescriptor::from(SplitDescriptor::new(
        addr, len, flags, next,
    )))
}

fn queue_for(u: &mut Unstructured<'_>, focus: Focus) -> Result<u16> {
    let mine = match focus {
        Focus::Control => CONTROL_QUEUE,
        Focus::Event => EVENT_QUEUE,
        Focus::Transfer => {
            if u.arbitrary()? {
                TX_QUEUE
            } else {
                RX_QUEUE
            }
        }
    };
    Ok(if u.ratio(3, 4)? {
        mine
    } else {
        u.int_in_range(0..=3)?
    })
}

fn response_len(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.int_in_range(0..=16)?,
        1 => u.int_in_range(0..=4096)?,
        2 => (size::HDR + size::CTL_VALUE) as u32,
        3 => (size::HDR + size::CTL_INFO) as u32,
        4 => (size::HDR + 4 * size::PCM_INFO) as u32,
        _ => size::HDR as u32,
    })
}

fn pcm_len(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.int_in_range(0..=0x1_0000)?,
        1 => 0,
        _ => 16 * u.int_in_range(0..=256)?,
    })
}

/// Up to `max` bytes of the input.
fn some_bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}

fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn pcm_hdr(code: u32, stream: u32) -> Vec<u8> {
    le(&[code, stream])
}

/// A number as drivers send it (small) or as a hostile one does (anything).
fn small(u: &mut Unstructured<'_>, max: u32) -> Result<u32> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(0..=max)?
    } else {
        u.arbitrary()?
    })
}

fn set_params(u: &mut Unstructured<'_>, stream: u32) -> Result<Vec<u8>> {
    let period: u32 = 16 * u.int_in_range(1..=512)?;
    let periods: u32 = u.int_in_range(1..=8)?;
    let buffer = if u.ratio(7, 8)? {
        period * periods
    } else {
        u.arbitrary()?
    };
    let mut v = le(&[code::PCM_SET_PARAMS, stream, buffer, period, small(u, 1)?]);
    v.extend_from_slice(&[
        u.int_in_range(0..=9)?,  // channels
        u.int_in_range(0..=25)?, // format
        u.int_in_range(0..=14)?, // rate
        0,
    ]);
    Ok(v)
}

/// A control request: a known code with plausible fields, or anything.
fn control_request(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    const QUERIES: [u32; 4] = [
        code::JACK_INFO,
        code::PCM_INFO,
        code::CHMAP_INFO,
        code::CTL_INFO,
    ];
    const PCM: [u32; 4] = [
        code::PCM_PREPARE,
        code::PCM_RELEASE,
        code::PCM_START,
        code::PCM_STOP,
    ];
    const CTL: [u32; 6] = [
        code::CTL_ENUM_ITEMS,
        code::CTL_READ,
        code::CTL_WRITE,
        code::CTL_TLV_READ,
        code::CTL_TLV_WRITE,
        code::CTL_TLV_COMMAND,
    ];
    let mut req = match u.int_in_range(0u8..=6)? {
        0 => {
            let sizes = [
                size::JACK_INFO,
                size::PCM_INFO,
                size::CHMAP_INFO,
                size::CTL_INFO,
            ];
            let i = u.int_in_range(0..=3)?;
            let item = if u.ratio(7, 8)? {
                sizes[i] as u32
            } else {
                u.arbitrary()?
            };
            le(&[QUERIES[i], small(u, 4)?, small(u, 4)?, item])
        }
        1 => pcm_hdr(*u.choose(&PCM)?, small(u, 4)?),
        2 => {
            let stream = small(u, 4)?;
            set_params(u, stream)?
        }
        3 => le(&[code::JACK_REMAP, small(u, 2)?, small(u, 2)?, small(u, 4)?]),
        4 => {
            let mut v = le(&[*u.choose(&CTL)?, small(u, 10)?]);
            let n = u.int_in_range(0..=4)?;
            for _ in 0..n {
                let x = if u.arbitrary()? {
                    u.int_in_range(0..=101)?
                } else {
                    u.arbitrary()?
                };
                v.extend_from_slice(&u32::to_le_bytes(x));
            }
            if u.ratio(3, 4)? {
                v.resize(size::CTL_HDR + size::CTL_VALUE, 0);
            }
            v
        }
        _ => some_bytes(u, 64)?,
    };
    if u.ratio(1, 16)? {
        req.truncate(u.int_in_range(0..=req.len())?);
    }
    Ok(req)
}
