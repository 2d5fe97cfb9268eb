//! A test bench for the card's request handlers: guest memory, four mock split virtqueues
//! (virtio-queue's `MockSplitQueue`, the driver's view), a recording tap, and a hand on the
//! clock. Chains are written the way a driver would, popped with virtio-queue's own
//! iterator, handed to the card, and the used entries it returns are put in the used rings.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use dsproxy_device::card::{Card, CardTap, PcmFill};
use dsproxy_device::chain::Chain;
use dsproxy_device::config::CardConfig;
use dsproxy_device::error::RequestError;
use dsproxy_device::tap::TapRequest;
use dsproxy_device::Used;
use dsproxy_wire::record::Record;
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const OK: u32 = 0x8000;
pub const BAD_MSG: u32 = 0x8001;
pub const NOT_SUPP: u32 = 0x8002;
pub const IO_ERR: u32 = 0x8003;

pub const CTL: u16 = 0;
pub const EVT: u16 = 1;
pub const TX: u16 = 2;
pub const RX: u16 = 3;

pub const QSIZE: u16 = 256;
pub const MEM_SIZE: usize = 32 << 20;
const BUF_BASE: u64 = 0x10_0000;
/// An address no memory region covers.
pub const UNMAPPED: u64 = 0x4000_0000;

/// One PCM byte published to the tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmRec {
    pub stream: u32,
    pub offset: u64,
    pub time_ns: u64,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct TapState {
    pub records: RefCell<Vec<Record>>,
    pub pcm: RefCell<Vec<PcmRec>>,
    pub readers: Cell<bool>,
    pub accept: Cell<bool>,
    pub no_pacing: Cell<bool>,
    pub requests: RefCell<Vec<TapRequest>>,
    pub inject: RefCell<HashMap<u32, VecDeque<u8>>>,
}

/// The bytes [`TestTap`] asks the card for at a time.
pub const FILL_PIECE: usize = 1001;

/// A tap that records what the card publishes, with knobs for what it reports.
#[derive(Clone)]
pub struct TestTap(pub Rc<TapState>);

impl TestTap {
    pub fn new() -> TestTap {
        let s = TapState::default();
        s.readers.set(true);
        s.accept.set(true);
        TestTap(Rc::new(s))
    }
    pub fn take_records(&self) -> Vec<Record> {
        std::mem::take(&mut *self.0.records.borrow_mut())
    }
    pub fn take_pcm(&self) -> Vec<PcmRec> {
        std::mem::take(&mut *self.0.pcm.borrow_mut())
    }
    pub fn inject(&self, stream: u32, data: &[u8]) {
        self.0
            .inject
            .borrow_mut()
            .entry(stream)
            .or_default()
            .extend(data.iter().copied());
    }
}

impl CardTap for TestTap {
    fn publish(&self, rec: &Record) {
        self.0.records.borrow_mut().push(rec.clone());
    }
    fn publish_pcm(
        &self,
        stream: u32,
        offset: u64,
        time_ns: u64,
        len: usize,
        fill: &mut PcmFill<'_>,
    ) -> Result<(), RequestError> {
        // Filled in pieces, as the real tap fills one record at a time, but of an odd size
        // so that pieces start inside guest-memory segments and frames.
        let mut data = vec![0; len];
        for (k, piece) in data.chunks_mut(FILL_PIECE).enumerate() {
            fill(k * FILL_PIECE, piece)?;
        }
        self.0.pcm.borrow_mut().push(PcmRec {
            stream,
            offset,
            time_ns,
            data,
        });
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
    fn read_inject(&self, stream: u32, out: &mut [u8]) -> usize {
        let mut m = self.0.inject.borrow_mut();
        let Some(q) = m.get_mut(&stream) else {
            return 0;
        };
        let n = out.len().min(q.len());
        for (o, b) in out.iter_mut().zip(q.drain(..n)) {
            *o = b;
        }
        n
    }
}

/// A descriptor as the test describes it.
#[derive(Debug, Clone)]
pub enum D {
    /// Device-readable, holding these bytes.
    R(Vec<u8>),
    /// Device-writable, this long (filled with 0xEE so untouched bytes show).
    W(u32),
    /// Device-readable at an arbitrary address.
    RawR(u64, u32),
    /// Device-writable at an arbitrary address.
    RawW(u64, u32),
}

/// Where a posted chain's descriptors are.
#[derive(Debug, Clone)]
pub struct Posted {
    pub head: u16,
    pub bufs: Vec<(u64, u32)>,
}

impl Posted {
    /// The address of descriptor `i`.
    pub fn addr(&self, i: usize) -> u64 {
        self.bufs[i].0
    }
    /// The last descriptor's address.
    pub fn last(&self) -> u64 {
        self.bufs.last().unwrap().0
    }
}

pub struct Rig {
    pub mem: &'static GuestMemoryMmap<()>,
    mocks: Vec<MockSplitQueue<'static, GuestMemoryMmap<()>>>,
    queues: Vec<Queue>,
    next_desc: [u16; 4],
    alloc: u64,
    pub card: Card<TestTap>,
    pub tap: TestTap,
    /// CLOCK_MONOTONIC stand-in, ns.
    pub now: u64,
}

/// The epoch the card's tap timestamps count from, and where the rig's clock starts.
pub const EPOCH: u64 = 1_000_000_000;

impl Rig {
    pub fn new() -> Rig {
        Rig::with_config(CardConfig::default())
    }

    pub fn with_config(cfg: CardConfig) -> Rig {
        let mem: &'static GuestMemoryMmap<()> = Box::leak(Box::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
        ));
        let mut mocks = Vec::new();
        let mut queues = Vec::new();
        for q in 0..4u64 {
            let m = MockSplitQueue::create(mem, GuestAddress(q * 0x1_0000), QSIZE);
            queues.push(m.create_queue::<Queue>().unwrap());
            mocks.push(m);
        }
        let tap = TestTap::new();
        let card = Card::new(cfg, tap.clone(), EPOCH);
        Rig {
            mem,
            mocks,
            queues,
            next_desc: [0; 4],
            alloc: BUF_BASE,
            card,
            tap,
            now: EPOCH + 1_000_000_000,
        }
    }

    /// A card whose driver negotiated VIRTIO_SND_F_CTLS.
    pub fn with_ctls() -> Rig {
        let mut r = Rig::new();
        r.card.set_features(1);
        r
    }

    fn alloc(&mut self, len: u32) -> u64 {
        let a = self.alloc;
        self.alloc += (len as u64 + 63) & !63;
        self.alloc += 64;
        assert!(self.alloc < MEM_SIZE as u64, "rig out of buffer memory");
        a
    }

    /// Writes a chain into queue `q` and makes it available (no kick yet).
    pub fn post(&mut self, q: u16, descs: &[D]) -> Posted {
        let n = descs.len() as u16;
        let start = self.next_desc[q as usize];
        let start = if start + n > QSIZE { 0 } else { start };
        self.next_desc[q as usize] = start + n;
        let mut raw = Vec::new();
        let mut bufs = Vec::new();
        for (i, d) in descs.iter().enumerate() {
            let (addr, len, mut flags) = match d {
                D::R(data) => {
                    let a = self.alloc(data.len() as u32);
                    self.mem.write_slice(data, GuestAddress(a)).unwrap();
                    (a, data.len() as u32, 0u16)
                }
                D::W(len) => {
                    let a = self.alloc(*len);
                    self.mem
                        .write_slice(&vec![0xEE; *len as usize], GuestAddress(a))
                        .unwrap();
                    (a, *len, VRING_DESC_F_WRITE as u16)
                }
                D::RawR(a, l) => (*a, *l, 0),
                D::RawW(a, l) => (*a, *l, VRING_DESC_F_WRITE as u16),
            };
            let next = if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
                start + i as u16 + 1
            } else {
                0
            };
            raw.push(RawDescriptor::from(SplitDescriptor::new(
                addr, len, flags, next,
            )));
            bufs.push((addr, len));
        }
        for (i, d) in raw.iter().enumerate() {
            self.mocks[q as usize]
                .desc_table()
                .store(start + i as u16, *d)
                .unwrap();
        }
        self.make_available(q, start);
        Posted { head: start, bufs }
    }

    /// Puts `head` in the available ring. (The mock's own `add_desc_chains` does not wrap
    /// around the ring, and long tests go round it many times.)
    fn make_available(&mut self, q: u16, head: u16) {
        let avail = self.mocks[q as usize].avail_addr();
        let idx: u16 = self.mem.read_obj(GuestAddress(avail.0 + 2)).unwrap();
        let slot = avail.0 + 4 + 2 * (idx % QSIZE) as u64;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(avail.0 + 2))
            .unwrap();
    }

    /// Posts a chain whose head is an indirect descriptor pointing at a table of `descs`.
    pub fn post_indirect(&mut self, q: u16, descs: &[D]) -> Posted {
        let table = self.alloc(16 * descs.len() as u32);
        let mut bufs = Vec::new();
        for (i, d) in descs.iter().enumerate() {
            let (addr, len, mut flags) = match d {
                D::R(data) => {
                    let a = self.alloc(data.len() as u32);
                    self.mem.write_slice(data, GuestAddress(a)).unwrap();
                    (a, data.len() as u32, 0u16)
                }
                D::W(len) => (self.alloc(*len), *len, VRING_DESC_F_WRITE as u16),
                D::RawR(a, l) => (*a, *l, 0),
                D::RawW(a, l) => (*a, *l, VRING_DESC_F_WRITE as u16),
            };
            let next = if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
                i as u16 + 1
            } else {
                0
            };
            let raw = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            self.mem
                .write_obj(raw, GuestAddress(table + 16 * i as u64))
                .unwrap();
            bufs.push((addr, len));
        }
        let start = self.next_desc[q as usize];
        let start = if start + 1 > QSIZE { 0 } else { start };
        self.next_desc[q as usize] = start + 1;
        let head = RawDescriptor::from(SplitDescriptor::new(
            table,
            16 * descs.len() as u32,
            virtio_bindings::bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        self.mocks[q as usize]
            .desc_table()
            .store(start, head)
            .unwrap();
        self.make_available(q, start);
        Posted { head: start, bufs }
    }

    /// Writes `data` into fresh guest memory; returns its address.
    pub fn buf(&mut self, data: &[u8]) -> u64 {
        let a = self.alloc(data.len() as u32);
        self.mem.write_slice(data, GuestAddress(a)).unwrap();
        a
    }

    /// Writes a descriptor table of raw (addr, len, flags, next) entries; returns its address.
    pub fn write_table(&mut self, descs: &[(u64, u32, u16, u16)]) -> u64 {
        let table = self.alloc(16 * descs.len() as u32);
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let raw = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            self.mem
                .write_obj(raw, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        table
    }

    /// Posts a chain whose head is an indirect descriptor {table, len}, whatever they are.
    pub fn post_indirect_raw(&mut self, q: u16, table: u64, len: u32) -> u16 {
        let start = self.next_desc[q as usize];
        let start = if start + 1 > QSIZE { 0 } else { start };
        self.next_desc[q as usize] = start + 1;
        let head = RawDescriptor::from(SplitDescriptor::new(
            table,
            len,
            virtio_bindings::bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        self.mocks[q as usize]
            .desc_table()
            .store(start, head)
            .unwrap();
        self.make_available(q, start);
        start
    }

    /// The device notices queue `q`: every available chain goes to the card. Returns the
    /// used entries produced (already put in the used rings).
    pub fn kick(&mut self, q: u16) -> Vec<Used> {
        let mem = self.mem;
        let chains: Vec<Chain> = self.queues[q as usize]
            .iter(mem)
            .unwrap()
            .map(Chain::from_desc_chain)
            .collect();
        for c in chains {
            self.card.handle_chain(mem, q, c, self.now);
        }
        self.flush()
    }

    /// Puts the card's used entries into the used rings.
    pub fn flush(&mut self) -> Vec<Used> {
        let used = self.card.take_used();
        for u in &used {
            self.queues[u.queue as usize]
                .add_used(self.mem, u.head, u.len)
                .unwrap();
        }
        used
    }

    /// Posts a chain and kicks its queue.
    pub fn submit(&mut self, q: u16, descs: &[D]) -> (Posted, Vec<Used>) {
        let p = self.post(q, descs);
        let u = self.kick(q);
        (p, u)
    }

    /// Sets the clock to `t` and lets the card complete what is due.
    pub fn at(&mut self, t: u64) -> Vec<Used> {
        self.now = t;
        self.card.service_all(self.mem, t);
        self.flush()
    }

    /// Advances the clock by `dt` ns.
    pub fn advance(&mut self, dt: u64) -> Vec<Used> {
        self.at(self.now + dt)
    }

    pub fn notify_tap(&mut self) -> Vec<Used> {
        self.card.on_tap_notify(self.mem, self.now);
        self.flush()
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    pub fn read_u32(&self, addr: u64) -> u32 {
        let b = self.read(addr, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A control request with one readable and one writable descriptor: returns the used
    /// length and the response bytes.
    pub fn ctl(&mut self, req: &[u8], resp_len: u32) -> (u32, Vec<u8>) {
        let (p, used) = self.submit(CTL, &[D::R(req.to_vec()), D::W(resp_len)]);
        assert_eq!(
            used.len(),
            1,
            "one control request, one used entry: {used:?}"
        );
        assert_eq!(used[0].head, p.head);
        assert_eq!(used[0].queue, CTL);
        (used[0].len, self.read(p.addr(1), resp_len as usize))
    }

    /// A control request answered by status alone: returns the status.
    pub fn ctl_status(&mut self, req: &[u8]) -> u32 {
        let (len, resp) = self.ctl(req, 4);
        assert_eq!(len, 4, "a status-only response is 4 bytes");
        u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]])
    }

    /// Posts `n` 8-byte event buffers.
    pub fn post_events(&mut self, n: usize) -> Vec<Posted> {
        let v = (0..n).map(|_| self.post(EVT, &[D::W(8)])).collect();
        assert!(self.kick(EVT).is_empty());
        v
    }

    /// Sets params, prepares and (optionally) starts stream `id` as S16 stereo 48 kHz with
    /// `period` bytes per period and 4 periods.
    pub fn setup_stream(&mut self, id: u32, period: u32, start: bool) {
        assert_eq!(
            self.ctl_status(&set_params(id, period * 4, period, 2, FMT_S16, RATE_48000)),
            OK
        );
        assert_eq!(self.ctl_status(&pcm_hdr(PCM_PREPARE, id)), OK);
        if start {
            assert_eq!(self.ctl_status(&pcm_hdr(PCM_START, id)), OK);
        }
    }

    /// Queues a TX buffer: header, PCM, 8-byte status. Returns the posting.
    pub fn tx(&mut self, stream: u32, pcm: &[u8]) -> (Posted, Vec<Used>) {
        self.submit(
            TX,
            &[
                D::R(stream.to_le_bytes().to_vec()),
                D::R(pcm.to_vec()),
                D::W(8),
            ],
        )
    }

    /// Queues an RX buffer of `len` PCM bytes.
    pub fn rx(&mut self, stream: u32, len: u32) -> (Posted, Vec<Used>) {
        self.submit(
            RX,
            &[D::R(stream.to_le_bytes().to_vec()), D::W(len), D::W(8)],
        )
    }

    /// The (status, latency_bytes) written at `addr`.
    pub fn pcm_status(&self, addr: u64) -> (u32, u32) {
        (self.read_u32(addr), self.read_u32(addr + 4))
    }
}

// Request codes.
pub const JACK_INFO: u32 = 1;
pub const JACK_REMAP: u32 = 2;
pub const PCM_INFO: u32 = 0x100;
pub const PCM_SET_PARAMS: u32 = 0x101;
pub const PCM_PREPARE: u32 = 0x102;
pub const PCM_RELEASE: u32 = 0x103;
pub const PCM_START: u32 = 0x104;
pub const PCM_STOP: u32 = 0x105;
pub const CHMAP_INFO: u32 = 0x200;
pub const CTL_INFO: u32 = 0x300;
pub const CTL_ENUM_ITEMS: u32 = 0x301;
pub const CTL_READ: u32 = 0x302;
pub const CTL_WRITE: u32 = 0x303;
pub const CTL_TLV_READ: u32 = 0x304;
pub const CTL_TLV_WRITE: u32 = 0x305;
pub const CTL_TLV_COMMAND: u32 = 0x306;
pub const EVT_PCM_PERIOD_ELAPSED: u32 = 0x1100;
pub const EVT_PCM_XRUN: u32 = 0x1101;
pub const EVT_CTL_NOTIFY: u32 = 0x1200;

pub const FMT_U8: u8 = 4;
pub const FMT_S16: u8 = 5;
pub const RATE_48000: u8 = 7;
pub const RATE_44100: u8 = 6;

pub fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub fn query(code: u32, start: u32, count: u32, size: u32) -> Vec<u8> {
    le(&[code, start, count, size])
}

pub fn pcm_hdr(code: u32, stream: u32) -> Vec<u8> {
    le(&[code, stream])
}

pub fn set_params(
    stream: u32,
    buffer: u32,
    period: u32,
    channels: u8,
    format: u8,
    rate: u8,
) -> Vec<u8> {
    let mut v = le(&[PCM_SET_PARAMS, stream, buffer, period, 0]);
    v.extend_from_slice(&[channels, format, rate, 0]);
    v
}

pub fn ctl_hdr(code: u32, id: u32) -> Vec<u8> {
    le(&[code, id])
}

pub fn ctl_write(id: u32, values: &[i32]) -> Vec<u8> {
    let mut v = ctl_hdr(CTL_WRITE, id);
    let mut value = vec![0u8; 512];
    for (i, x) in values.iter().enumerate() {
        value[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&value);
    v
}

pub fn status_of(resp: &[u8]) -> u32 {
    u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]])
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Event (code, data) in an event buffer.
pub fn event_at(r: &Rig, p: &Posted) -> (u32, u32) {
    (r.read_u32(p.addr(0)), r.read_u32(p.addr(0) + 4))
}

/// Log lines captured on this thread (the card runs on the test's thread).
pub mod logcap {
    use std::cell::RefCell;
    use std::sync::Once;

    thread_local! {
        static LINES: RefCell<Vec<(String, log::Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            LINES.with(|l| {
                l.borrow_mut()
                    .push((r.target().to_owned(), r.level(), r.args().to_string()))
            });
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;
    static INIT: Once = Once::new();

    /// Starts capturing (idempotent) and forgets what this thread logged so far.
    pub fn start() {
        INIT.call_once(|| {
            let _ = log::set_logger(&CAPTURE);
            log::set_max_level(log::LevelFilter::Trace);
        });
        LINES.with(|l| l.borrow_mut().clear());
    }

    /// The lines logged to `target` since `start`.
    pub fn lines(target: &str) -> Vec<(log::Level, String)> {
        LINES.with(|l| {
            l.borrow()
                .iter()
                .filter(|(t, _, _)| t == target)
                .map(|(_, lv, m)| (*lv, m.clone()))
                .collect()
        })
    }
}
