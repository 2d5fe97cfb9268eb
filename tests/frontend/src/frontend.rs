//! `SndFrontend`: QEMU's vhost-user side and the Linux virtio_snd driver in one object.
//!
//! Connecting does what QEMU's `vhost-user-snd-pci` does when the guest driver binds:
//! feature and protocol-feature negotiation, GET_CONFIG, SET_MEM_TABLE with a memfd, and for
//! each of the four queues SET_VRING_NUM/BASE/ADDR/KICK/CALL and SET_VRING_ENABLE. After that
//! the object behaves like the driver: requests on the control queue (with the same
//! descriptor layout Linux uses), PCM buffers on the tx/rx queues (header, PCM split at page
//! boundaries, status), event buffers on the event queue.
//!
//! Everything runs on the caller's thread: completions are collected whenever the caller
//! waits, and kept until asked for, so a control request can be answered while PCM buffers
//! complete around it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};
use vm_memory::GuestAddress;

use crate::dialect::Dialect;
use crate::error::FrontError;
use crate::memory::{Alloc, GuestRam, GUEST_RAM_BASE};
use crate::proto::*;
use crate::vring::{Desc, DriverRing, RingLayout};

/// Identifies a chain the harness submitted.
pub type Token = u64;

/// How the frontend behaves.
#[derive(Debug, Clone)]
pub struct FrontendOpts {
    /// Entries per virtqueue (a power of two; the device's maximum must allow it).
    pub queue_size: u16,
    /// Entries of each virtqueue (control, event, tx, rx), overriding `queue_size`: aero's
    /// Windows 7 driver requires 64/64/256/64.
    pub queue_sizes: Option<[u16; NUM_QUEUES]>,
    /// Bytes of guest RAM.
    pub mem_size: usize,
    /// Negotiate VIRTIO_SND_F_CTLS if the device offers it (QEMU's `controls=on` and a
    /// driver that knows control elements).
    pub want_ctls: bool,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX if offered (Linux does).
    pub want_event_idx: bool,
    /// Negotiate VIRTIO_RING_F_INDIRECT_DESC if offered.
    pub want_indirect: bool,
    /// Submit every chain of more than one descriptor through an indirect table (when
    /// INDIRECT_DESC was negotiated), as aero's driver does.
    pub indirect: bool,
    /// How the driver encodes status codes, PCM headers and PCM_INFO requests.
    pub dialect: Dialect,
    /// Bytes of config space read (GET_CONFIG), as QEMU's device sizes it: with
    /// `controls=on` 16 whatever the driver negotiates. None: 16 when VIRTIO_SND_F_CTLS was
    /// negotiated, else 12.
    pub config_len: Option<usize>,
    /// How long a control request may take before the driver gives up. Linux gives up
    /// after about a second.
    pub ctl_timeout: Duration,
    /// PCM data descriptors end at multiples of this guest-address boundary, as Linux's
    /// vmalloc'ed ALSA buffer is described page by page. Buffers are placed at 64-byte
    /// alignment, so splits fall at arbitrary points of a frame.
    pub desc_split: u32,
    /// Event buffers posted right after connecting (and re-posted after each event, as
    /// Linux does).
    pub event_buffers: usize,
    /// How long to keep retrying the connection while the socket does not exist yet.
    pub connect_timeout: Duration,
}

impl Default for FrontendOpts {
    fn default() -> Self {
        FrontendOpts {
            queue_size: 64,
            queue_sizes: None,
            mem_size: 16 << 20,
            want_ctls: true,
            want_event_idx: true,
            want_indirect: false,
            indirect: false,
            dialect: Dialect::Spec,
            config_len: None,
            ctl_timeout: Duration::from_secs(2),
            desc_split: 4096,
            event_buffers: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A finished chain.
#[derive(Debug, Clone)]
pub struct Completion {
    pub token: Token,
    pub queue: usize,
    /// The stream of a PCM buffer pushed with `push_tx`/`push_rx`.
    pub stream: Option<u32>,
    /// The virtio-snd status the device wrote (for PCM buffers: the status descriptor at the
    /// end; for raw chains on the control queue: the first writable word). 0xffff_ffff if the
    /// device wrote nothing there.
    pub status: u32,
    /// `latency_bytes` of a PCM status.
    pub latency_bytes: u32,
    /// The used length the device reported.
    pub len: u32,
    /// RX: the PCM area; raw chains: every writable byte, concatenated; TX: empty.
    pub data: Vec<u8>,
    pub submitted_at: Instant,
    /// When the harness saw the chain in the used ring.
    pub completed_at: Instant,
}

/// The reply to a control request.
#[derive(Debug, Clone)]
pub struct CtlReply {
    /// The status word as the device wrote it.
    pub status: u32,
    /// Whether that is OK in the frontend's dialect.
    pub is_ok: bool,
    /// The writable buffers, as the device left them (status header first).
    pub bufs: Vec<Vec<u8>>,
    pub len: u32,
    /// Time from submission to completion.
    pub latency: Duration,
}

impl CtlReply {
    pub fn ok(&self) -> bool {
        self.is_ok
    }
}

/// An event with the time the harness received it.
#[derive(Debug, Clone, Copy)]
pub struct TimedEvent {
    pub event: SndEvent,
    pub at: Instant,
}

/// What stopping the vrings found (QEMU's vhost_dev_stop, as on `stop` or before a
/// migration): the connection stays up, and chains the device still holds stay in flight, as
/// the Linux driver keeps them over a VM pause.
#[derive(Debug, Clone)]
pub struct RingStop {
    /// GET_VRING_BASE replies (the device's next available index) per queue, or the error.
    pub bases: Vec<Result<u32, String>>,
    /// How long each GET_VRING_BASE took to be answered.
    pub latency: Vec<Duration>,
    /// Chains still held by the device after every vring was stopped, per queue.
    pub still_in_flight: Vec<usize>,
}

/// What tearing down the connection found.
#[derive(Debug, Clone)]
pub struct DisconnectReport {
    /// GET_VRING_BASE replies (the device's next available index) per queue, or the error.
    pub vring_bases: Vec<Result<u32, String>>,
    /// How long each GET_VRING_BASE took to be answered.
    pub stop_latency: Vec<Duration>,
    /// Rule breaches the harness noticed over the whole connection (see
    /// [`SndFrontend::violations`]).
    pub violations: Vec<String>,
    /// Our own next available index per queue.
    pub next_avail: Vec<u16>,
    /// Chains the device returned while its vrings were being stopped.
    pub returned: Vec<Completion>,
    /// Chains still held by the device after every vring was stopped, per queue.
    pub still_in_flight: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainKind {
    /// A control request issued by a helper that waits for it.
    Control,
    Event,
    Tx(u32),
    Rx(u32),
    Raw,
}

struct InFlight {
    token: Token,
    kind: ChainKind,
    allocs: Vec<Alloc>,
    /// The writable descriptors, in chain order.
    writable: Vec<Desc>,
    submitted_at: Instant,
}

/// One part of a chain to build.
enum Part<'a> {
    /// Device-readable bytes in one descriptor.
    Read(&'a [u8]),
    /// Device-readable bytes, split at `desc_split` boundaries.
    ReadSplit(&'a [u8]),
    /// Device-writable bytes in one descriptor, pre-filled with a poison byte.
    Write(usize),
    /// Device-writable bytes, split at `desc_split` boundaries.
    WriteSplit(usize),
    /// Device-writable bytes in one descriptor with given initial contents.
    WriteInit(&'a [u8]),
}

/// How long the harness sleeps on the call eventfds before re-scanning the used rings anyway.
/// A completion found by such a re-scan was never signalled: a lost notification.
const LOST_NOTIFY_SLICE: Duration = Duration::from_millis(200);

/// What the harness fills writable buffers with, so unwritten bytes show.
pub const POISON: u8 = 0xa5;

/// The frontend: QEMU plus the guest driver.
pub struct SndFrontend {
    vu: Frontend,
    ram: GuestRam,
    rings: Vec<DriverRing>,
    in_flight: Vec<HashMap<u16, InFlight>>,
    next_token: Token,
    opts: FrontendOpts,
    acked_features: u64,
    offered_features: u64,
    protocol_features: VhostUserProtocolFeatures,
    config: SndConfig,
    /// Completions of non-internal chains, oldest first.
    done: VecDeque<Completion>,
    /// Completions of internal control requests, by token.
    done_ctl: HashMap<Token, Completion>,
    /// Control requests we stopped waiting for.
    abandoned: HashSet<Token>,
    events: VecDeque<TimedEvent>,
    repost_events: bool,
    params: HashMap<u32, PcmParams>,
    violations: Vec<String>,
    /// Completions found by a timed re-scan without their call eventfd having been signalled.
    late_notifications: u64,
    /// Per queue: stopped with GET_VRING_BASE and not started again. The device must not
    /// touch such a ring's used ring.
    stopped: Vec<bool>,
    /// Chains submitted through an indirect descriptor table.
    indirect_chains: u64,
    /// Queues whose call eventfd the last poll found signalled and no collect has read yet.
    /// Only these are read: reading every queue's on every wake-up cost the load generator
    /// three failed reads per completion, time a guest driver (one interrupt per queue) does
    /// not spend. A call that arrives after the poll stays readable and wakes the next one.
    calls_ready: Vec<bool>,
    /// Per queue: kicks left out because the device set VRING_USED_F_NO_NOTIFY.
    kicks_suppressed: [u64; NUM_QUEUES],
}

/// Sets up vring `ring` as QEMU's vhost_virtqueue_start does: SET_VRING_NUM,
/// SET_VRING_BASE (where the device is to go on in the available ring), SET_VRING_ADDR,
/// SET_VRING_KICK, SET_VRING_CALL. The ring is enabled separately.
fn start_vring(
    vu: &Frontend,
    ram: &GuestRam,
    ring: &DriverRing,
    base: u16,
) -> Result<(), FrontError> {
    let q = ring.index;
    vu.set_vring_num(q, ring.size)?;
    vu.set_vring_base(q, base)?;
    let l = ring.layout;
    vu.set_vring_addr(
        q,
        &VringConfigData {
            queue_max_size: ring.size,
            queue_size: ring.size,
            flags: 0,
            desc_table_addr: ram.host_addr(l.desc)?,
            used_ring_addr: ram.host_addr(l.used)?,
            avail_ring_addr: ram.host_addr(l.avail)?,
            log_addr: None,
        },
    )?;
    vu.set_vring_kick(q, &ring.kick)?;
    vu.set_vring_call(q, &ring.call)?;
    Ok(())
}

impl SndFrontend {
    /// Connects to a vhost-user-snd backend and sets the device up as QEMU and the driver do.
    pub fn connect(
        socket: impl AsRef<Path>,
        opts: FrontendOpts,
    ) -> Result<SndFrontend, FrontError> {
        let socket = socket.as_ref();
        let deadline = Instant::now() + opts.connect_timeout;
        // A daemon between two sessions may not be listening yet, or may still hold the
        // previous session's listener, which then closes our connection unanswered: like
        // QEMU's reconnect-ms, try again until the deadline.
        let (mut vu, offered) = loop {
            let attempt = Frontend::connect(socket, NUM_QUEUES as u64)
                .and_then(|f| Ok((f.get_features()?, f)));
            match attempt {
                Ok((features, f)) => break (f, features),
                Err(e) if Instant::now() < deadline => {
                    log::debug!("connect {}: {e}; retrying", socket.display());
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(FrontError::Vhost(e)),
            }
        };
        if offered & VIRTIO_F_VERSION_1 == 0 {
            return Err(FrontError::Missing("VIRTIO_F_VERSION_1"));
        }
        if offered & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            return Err(FrontError::Missing("VHOST_USER_F_PROTOCOL_FEATURES"));
        }
        let offered_proto = vu.get_protocol_features()?;
        if !offered_proto.contains(VhostUserProtocolFeatures::CONFIG) {
            return Err(FrontError::Missing(
                "VHOST_USER_PROTOCOL_F_CONFIG (QEMU reads the config space through it)",
            ));
        }
        let proto = offered_proto
            & (VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK);
        vu.set_protocol_features(proto)?;
        if proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every request waits for the backend's verdict, so a refused request fails here
            // rather than silently.
            vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if proto.contains(VhostUserProtocolFeatures::MQ) {
            let n = vu.get_queue_num()?;
            if n < NUM_QUEUES as u64 {
                return Err(FrontError::Protocol(format!(
                    "device has {n} queues, virtio-snd needs {NUM_QUEUES}"
                )));
            }
        }
        vu.set_owner()?;

        let mut acked = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;
        if opts.want_ctls {
            acked |= offered & VIRTIO_SND_F_CTLS;
        }
        if opts.want_event_idx {
            acked |= offered & VIRTIO_RING_F_EVENT_IDX;
        }
        if opts.want_indirect {
            acked |= offered & VIRTIO_RING_F_INDIRECT_DESC;
        }
        vu.set_features(acked)?;

        let cfg_len = opts
            .config_len
            .unwrap_or(if acked & VIRTIO_SND_F_CTLS != 0 {
                CONFIG_LEN
            } else {
                CONFIG_LEN_NO_CTLS
            });
        let zero = vec![0u8; cfg_len];
        let (_, cfg) = vu.get_config(0, cfg_len as u32, VhostUserConfigFlags::empty(), &zero)?;
        let config = SndConfig::parse(&cfg);

        let sizes = opts.queue_sizes.unwrap_or([opts.queue_size; NUM_QUEUES]);
        let rings_bytes: u64 = sizes.iter().map(|&n| RingLayout::footprint(n)).sum();
        let ram = GuestRam::new(opts.mem_size, rings_bytes)?;
        vu.set_mem_table(&[ram.region_info()?])?;

        let mut rings = Vec::with_capacity(NUM_QUEUES);
        let mut at = GUEST_RAM_BASE;
        for (q, &size) in sizes.iter().enumerate() {
            let base = GuestAddress(at);
            at += RingLayout::footprint(size);
            let mut ring = DriverRing::new(&ram, q, size, base)?;
            ring.set_event_idx(acked & VIRTIO_RING_F_EVENT_IDX != 0);
            start_vring(&vu, &ram, &ring, 0)?;
            rings.push(ring);
        }
        for q in 0..NUM_QUEUES {
            vu.set_vring_enable(q, true)?;
        }

        let mut fe = SndFrontend {
            vu,
            ram,
            rings,
            in_flight: (0..NUM_QUEUES).map(|_| HashMap::new()).collect(),
            next_token: 1,
            acked_features: acked,
            offered_features: offered,
            protocol_features: proto,
            config,
            done: VecDeque::new(),
            done_ctl: HashMap::new(),
            abandoned: HashSet::new(),
            events: VecDeque::new(),
            repost_events: true,
            params: HashMap::new(),
            violations: Vec::new(),
            late_notifications: 0,
            stopped: vec![false; NUM_QUEUES],
            indirect_chains: 0,
            calls_ready: vec![false; NUM_QUEUES],
            kicks_suppressed: [0; NUM_QUEUES],
            opts,
        };
        let n = fe.opts.event_buffers;
        fe.post_event_buffers(n)?;
        Ok(fe)
    }

    pub fn opts(&self) -> &FrontendOpts {
        &self.opts
    }

    /// The device configuration space as read at connect time.
    pub fn config(&self) -> SndConfig {
        self.config
    }

    /// Reads the configuration space again (GET_CONFIG).
    pub fn read_config(&mut self) -> Result<SndConfig, FrontError> {
        let len = self.opts.config_len.unwrap_or(if self.ctls() {
            CONFIG_LEN
        } else {
            CONFIG_LEN_NO_CTLS
        });
        let zero = vec![0u8; len];
        let (_, cfg) = self
            .vu
            .get_config(0, len as u32, VhostUserConfigFlags::empty(), &zero)?;
        Ok(SndConfig::parse(&cfg))
    }

    pub fn offered_features(&self) -> u64 {
        self.offered_features
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
    }

    /// The driver's message dialect.
    pub fn dialect(&self) -> Dialect {
        self.opts.dialect
    }

    /// The size of virtqueue `q`.
    pub fn queue_size(&self, q: usize) -> u16 {
        self.rings.get(q).map_or(0, |r| r.size)
    }

    /// How many chains went through an indirect descriptor table.
    pub fn indirect_chains(&self) -> u64 {
        self.indirect_chains
    }

    /// VIRTIO_RING_F_INDIRECT_DESC was negotiated.
    pub fn indirect_negotiated(&self) -> bool {
        self.acked_features & VIRTIO_RING_F_INDIRECT_DESC != 0
    }

    /// VIRTIO_SND_F_CTLS was negotiated.
    pub fn ctls(&self) -> bool {
        self.acked_features & VIRTIO_SND_F_CTLS != 0
    }

    /// Rule breaches the harness noticed in what the device did (bad used entries, used
    /// lengths beyond the buffer...). A correct device leaves this empty.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Completions found only by a timed re-scan (the device forgot to signal, or signalled
    /// late). Diagnostic.
    pub fn late_notifications(&self) -> u64 {
        self.late_notifications
    }

    /// The parameters of the last successful SET_PARAMS of a stream.
    pub fn params(&self, stream: u32) -> Option<PcmParams> {
        self.params.get(&stream).copied()
    }

    /// The index of queue `q`'s next available-ring slot: what GET_VRING_BASE reports once
    /// the device has taken every chain.
    pub fn next_avail(&self, q: usize) -> u16 {
        self.rings.get(q).map_or(0, |r| r.next_avail())
    }

    /// Chains submitted and not yet returned, per queue.
    pub fn in_flight(&self) -> Vec<usize> {
        self.in_flight.iter().map(|m| m.len()).collect()
    }

    // ----- chain submission ---------------------------------------------------------------

    fn submit(
        &mut self,
        queue: usize,
        parts: &[Part<'_>],
        kind: ChainKind,
    ) -> Result<Token, FrontError> {
        let mut descs = Vec::new();
        let mut allocs = Vec::new();
        let mut writable = Vec::new();
        let res = self.build_chain(parts, &mut descs, &mut allocs, &mut writable);
        if let Err(e) = res {
            for a in allocs {
                self.ram.free(a);
            }
            return Err(e);
        }
        self.submit_descs(queue, &descs, allocs, writable, kind)
    }

    fn build_chain(
        &mut self,
        parts: &[Part<'_>],
        descs: &mut Vec<Desc>,
        allocs: &mut Vec<Alloc>,
        writable: &mut Vec<Desc>,
    ) -> Result<(), FrontError> {
        for p in parts {
            let (len, split, is_writable) = match p {
                Part::Read(b) => (b.len(), false, false),
                Part::ReadSplit(b) => (b.len(), true, false),
                Part::Write(n) => (*n, false, true),
                Part::WriteSplit(n) => (*n, true, true),
                Part::WriteInit(b) => (b.len(), false, true),
            };
            let a = self.ram.alloc(len as u64, 64)?;
            allocs.push(a);
            match p {
                Part::Read(b) | Part::ReadSplit(b) | Part::WriteInit(b) => {
                    self.ram.write(a.addr, b)?
                }
                Part::Write(n) | Part::WriteSplit(n) => self.ram.fill(a.addr, *n, POISON)?,
            }
            let mut at = a.addr.0;
            let end = a.addr.0 + len as u64;
            loop {
                let stop = if split && self.opts.desc_split > 0 {
                    let b = self.opts.desc_split as u64;
                    ((at / b) + 1) * b
                } else {
                    end
                }
                .min(end);
                let d = Desc {
                    addr: GuestAddress(at),
                    len: (stop - at) as u32,
                    writable: is_writable,
                };
                descs.push(d);
                if is_writable {
                    writable.push(d);
                }
                at = stop;
                if at >= end {
                    break;
                }
            }
        }
        Ok(())
    }

    fn submit_descs(
        &mut self,
        queue: usize,
        descs: &[Desc],
        allocs: Vec<Alloc>,
        writable: Vec<Desc>,
        kind: ChainKind,
    ) -> Result<Token, FrontError> {
        self.submit_shaped(queue, descs, allocs, writable, kind, false)
    }

    /// `submit_descs`, optionally with the chain's end looped back to its head.
    fn submit_shaped(
        &mut self,
        queue: usize,
        descs: &[Desc],
        allocs: Vec<Alloc>,
        writable: Vec<Desc>,
        kind: ChainKind,
        looped: bool,
    ) -> Result<Token, FrontError> {
        let mut allocs = allocs;
        // As aero's driver: a chain of more than one descriptor goes in a table of its own,
        // and the ring gets one descriptor naming the table.
        let mut table = None;
        if !looped && self.opts.indirect && self.indirect_negotiated() && descs.len() > 1 {
            let t = match self.ram.alloc(16 * descs.len() as u64, 16) {
                Ok(t) => t,
                Err(e) => {
                    for a in allocs {
                        self.ram.free(a);
                    }
                    return Err(e);
                }
            };
            allocs.push(t);
            table = Some(t);
        }
        let ring = self
            .rings
            .get_mut(queue)
            .ok_or_else(|| FrontError::Usage(format!("no queue {queue}")))?;
        let added = if looped {
            ring.add_looped_chain(&self.ram, descs)
        } else if let Some(t) = table {
            self.indirect_chains += 1;
            ring.add_indirect(&self.ram, t.addr, descs)
        } else {
            ring.add_chain(&self.ram, descs)
        };
        let head = match added {
            Ok(h) => h,
            Err(e) => {
                for a in allocs {
                    self.ram.free(a);
                }
                return Err(e);
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        self.in_flight[queue].insert(
            head,
            InFlight {
                token,
                kind,
                allocs,
                writable,
                submitted_at: Instant::now(),
            },
        );
        self.notify(queue)?;
        Ok(token)
    }

    /// Kicks `queue` unless the device asked not to be (see [`DriverRing::notify`]).
    fn notify(&mut self, queue: usize) -> Result<(), FrontError> {
        if !self.rings[queue].notify(&self.ram)? {
            self.kicks_suppressed[queue] += 1;
        }
        Ok(())
    }

    /// Kicks left out because the device's used ring said not to kick, on every queue.
    pub fn kicks_suppressed(&self) -> u64 {
        self.kicks_suppressed.iter().sum()
    }

    /// Kicks left out on `queue`.
    pub fn kicks_suppressed_on(&self, queue: usize) -> u64 {
        self.kicks_suppressed.get(queue).copied().unwrap_or(0)
    }

    /// The flags the device last wrote in `queue`'s used ring.
    pub fn used_flags(&self, queue: usize) -> Result<u16, FrontError> {
        self.rings
            .get(queue)
            .ok_or_else(|| FrontError::Usage(format!("no queue {queue}")))?
            .used_flags(&self.ram)
    }

    /// Sends an arbitrary chain (for negative tests): each part is `(bytes, writable)`; a
    /// writable part starts out holding `bytes`. The completion carries every writable byte.
    pub fn send_raw_chain(
        &mut self,
        queue: usize,
        parts: &[(&[u8], bool)],
    ) -> Result<Token, FrontError> {
        let parts: Vec<Part<'_>> = parts
            .iter()
            .map(|(b, w)| {
                if *w {
                    Part::WriteInit(b)
                } else {
                    Part::Read(b)
                }
            })
            .collect();
        self.submit(queue, &parts, ChainKind::Raw)
    }

    /// Sends a chain of arbitrary descriptors (addresses that need not map, lengths that need
    /// not fit) for negative tests.
    pub fn send_raw_descs(&mut self, queue: usize, descs: &[Desc]) -> Result<Token, FrontError> {
        let writable = descs.iter().filter(|d| d.writable).copied().collect();
        self.submit_descs(queue, descs, Vec::new(), writable, ChainKind::Raw)
    }

    /// Like [`send_raw_descs`](Self::send_raw_descs), but the last descriptor's NEXT points
    /// back to the first: a chain with no end.
    pub fn send_looped_descs(&mut self, queue: usize, descs: &[Desc]) -> Result<Token, FrontError> {
        let writable = descs.iter().filter(|d| d.writable).copied().collect();
        self.submit_shaped(queue, descs, Vec::new(), writable, ChainKind::Raw, true)
    }

    /// Makes a head index available that names no descriptor chain (any value, e.g. one past
    /// the queue size), and kicks. Nothing is in flight for it.
    pub fn publish_bogus_head(&mut self, queue: usize, head: u16) -> Result<(), FrontError> {
        let ring = self
            .rings
            .get_mut(queue)
            .ok_or_else(|| FrontError::Usage(format!("no queue {queue}")))?;
        ring.publish_raw_head(&self.ram, head)?;
        ring.kick()
    }

    /// The head descriptor of chain `token`, if it is still in flight on `queue`.
    pub fn head_of(&self, queue: usize, token: Token) -> Option<u16> {
        self.in_flight
            .get(queue)?
            .iter()
            .find(|(_, f)| f.token == token)
            .map(|(&h, _)| h)
    }

    /// A hostile driver: makes `head` available `n` more times, without the device having
    /// returned it, and kicks. Nothing more is recorded as in flight, and the used entries the
    /// device writes for the copies are never read: after this, only
    /// [`disconnect`](Self::disconnect) makes sense.
    pub fn repost_head(&mut self, queue: usize, head: u16, n: u16) -> Result<(), FrontError> {
        let ring = self
            .rings
            .get_mut(queue)
            .ok_or_else(|| FrontError::Usage(format!("no queue {queue}")))?;
        for _ in 0..n {
            ring.publish_raw_head(&self.ram, head)?;
        }
        ring.kick()
    }

    /// Whether the device has not yet taken the last kick of `queue` (its kick eventfd is
    /// still readable): the device reads it before it walks the available ring.
    pub fn kick_pending(&self, queue: usize) -> Result<bool, FrontError> {
        let ring = self
            .rings
            .get(queue)
            .ok_or_else(|| FrontError::Usage(format!("no queue {queue}")))?;
        let mut pfd = libc::pollfd {
            fd: ring.kick.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(n > 0 && pfd.revents & libc::POLLIN != 0)
    }

    /// Allocates guest memory for a caller that builds descriptors by hand.
    pub fn alloc(&mut self, bytes: &[u8]) -> Result<Alloc, FrontError> {
        let a = self.ram.alloc(bytes.len() as u64, 64)?;
        self.ram.write(a.addr, bytes)?;
        Ok(a)
    }

    // ----- completions --------------------------------------------------------------------

    /// Takes whatever the device has finished, without waiting. Returns how many chains
    /// completed. `after_timeout`: we slept a full slice without any call eventfd firing, so
    /// completions found now were never signalled (counted as late notifications).
    fn collect(&mut self, after_timeout: bool) -> Result<usize, FrontError> {
        let mut n = 0;
        let mut repost = 0usize;
        for q in 0..NUM_QUEUES {
            let called = std::mem::take(&mut self.calls_ready[q]) && self.rings[q].take_call() > 0;
            let used = self.rings[q].take_used(&self.ram, &mut self.violations)?;
            if self.stopped[q] && !used.is_empty() {
                self.violations.push(format!(
                    "queue {q}: {} used entries written while the ring was stopped",
                    used.len()
                ));
            }
            if !used.is_empty() && !called && after_timeout {
                self.late_notifications += used.len() as u64;
            }
            let now = Instant::now();
            for u in used {
                let Some(fl) = self.in_flight[q].remove(&u.head) else {
                    continue;
                };
                n += 1;
                let total_w: u64 = fl.writable.iter().map(|d| d.len as u64).sum();
                if u.len as u64 > total_w {
                    self.violations.push(format!(
                        "queue {q}: used length {} exceeds the {} writable bytes of the chain",
                        u.len, total_w
                    ));
                }
                let mut wbytes = Vec::with_capacity(total_w as usize);
                for d in &fl.writable {
                    match self.ram.read(d.addr, d.len as usize) {
                        Ok(b) => wbytes.extend_from_slice(&b),
                        Err(_) => break,
                    }
                }
                for a in &fl.allocs {
                    self.ram.free(*a);
                }
                let status_tail = |w: &[u8]| {
                    if w.len() >= PCM_STATUS_LEN {
                        let s = &w[w.len() - PCM_STATUS_LEN..];
                        (le32(s, 0), le32(s, 4))
                    } else {
                        (u32::MAX, 0)
                    }
                };
                let (status, latency_bytes, data, stream) = match fl.kind {
                    ChainKind::Tx(s) => {
                        let (st, lat) = status_tail(&wbytes);
                        (st, lat, Vec::new(), Some(s))
                    }
                    ChainKind::Rx(s) => {
                        let (st, lat) = status_tail(&wbytes);
                        let keep = wbytes.len().saturating_sub(PCM_STATUS_LEN);
                        wbytes.truncate(keep);
                        (st, lat, wbytes, Some(s))
                    }
                    ChainKind::Raw if q == TX_QUEUE || q == RX_QUEUE => {
                        let (st, lat) = status_tail(&wbytes);
                        (st, lat, wbytes, None)
                    }
                    _ => {
                        let st = if wbytes.len() >= 4 {
                            le32(&wbytes, 0)
                        } else {
                            u32::MAX
                        };
                        (st, 0, wbytes, None)
                    }
                };
                let c = Completion {
                    token: fl.token,
                    queue: q,
                    stream,
                    status,
                    latency_bytes,
                    len: u.len,
                    data,
                    submitted_at: fl.submitted_at,
                    completed_at: now,
                };
                match fl.kind {
                    ChainKind::Event => {
                        if c.data.len() >= EVENT_LEN && (u.len as usize) >= EVENT_LEN {
                            self.events.push_back(TimedEvent {
                                event: SndEvent::parse(&c.data),
                                at: now,
                            });
                        } else {
                            self.violations.push(format!(
                                "event queue: event buffer returned with used length {}",
                                u.len
                            ));
                        }
                        if self.repost_events {
                            repost += 1;
                        }
                    }
                    ChainKind::Control => {
                        if !self.abandoned.remove(&c.token) {
                            self.done_ctl.insert(c.token, c);
                        }
                    }
                    _ => self.done.push_back(c),
                }
            }
        }
        if repost > 0 {
            self.post_event_buffers(repost)?;
        }
        Ok(n)
    }

    /// Waits (at most until `deadline`) until `cond` holds, collecting completions.
    /// Returns whether it holds.
    fn wait_until(
        &mut self,
        deadline: Instant,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> Result<bool, FrontError> {
        let mut timed_out = false;
        loop {
            self.collect(timed_out)?;
            if cond(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // Sleep on the call eventfds; wake at least every slice to re-scan the rings in
            // case a notification was lost (counted as late).
            let slice = (deadline - now).min(LOST_NOTIFY_SLICE);
            timed_out = !self.poll_calls(slice)? && slice == LOST_NOTIFY_SLICE;
        }
    }

    fn poll_calls(&mut self, timeout: Duration) -> Result<bool, FrontError> {
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|r| libc::pollfd {
                fd: r.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(FrontError::Io(e));
        }
        for (ready, fd) in self.calls_ready.iter_mut().zip(&fds) {
            *ready |= fd.revents & libc::POLLIN != 0;
        }
        Ok(rc > 0)
    }

    /// Waits up to `timeout` for at least one PCM/raw completion and returns every one
    /// collected so far (empty after a timeout).
    pub fn wait_used(&mut self, timeout: Duration) -> Result<Vec<Completion>, FrontError> {
        let deadline = Instant::now() + timeout;
        self.wait_until(deadline, |s| !s.done.is_empty())?;
        Ok(self.done.drain(..).collect())
    }

    /// Completions collected so far, without waiting.
    pub fn take_used(&mut self) -> Result<Vec<Completion>, FrontError> {
        self.collect(false)?;
        Ok(self.done.drain(..).collect())
    }

    /// Waits until every token in `tokens` has completed and returns their completions in
    /// `tokens` order; other completions stay queued.
    pub fn wait_tokens(
        &mut self,
        tokens: &[Token],
        timeout: Duration,
    ) -> Result<Vec<Completion>, FrontError> {
        let deadline = Instant::now() + timeout;
        let want: HashSet<Token> = tokens.iter().copied().collect();
        let ok = self.wait_until(deadline, |s| {
            s.done.iter().filter(|c| want.contains(&c.token)).count() == want.len()
        })?;
        if !ok {
            let got = self.done.iter().filter(|c| want.contains(&c.token)).count();
            return Err(FrontError::Timeout {
                what: format!("{} of {} chains to complete", want.len() - got, want.len()),
                after: timeout,
            });
        }
        let mut out = Vec::with_capacity(tokens.len());
        for t in tokens {
            if let Some(i) = self.done.iter().position(|c| c.token == *t) {
                out.push(self.done.remove(i).expect("index from position"));
            }
        }
        Ok(out)
    }

    /// Waits for one token.
    pub fn wait_token(
        &mut self,
        token: Token,
        timeout: Duration,
    ) -> Result<Completion, FrontError> {
        Ok(self.wait_tokens(&[token], timeout)?.remove(0))
    }

    // ----- control queue ------------------------------------------------------------------

    /// Sends a control request laid out as Linux does it: one readable descriptor with the
    /// request, one writable descriptor per entry of `resp_lens` (the first holds the status
    /// header). Waits up to `ctl_timeout`.
    pub fn ctl_request(&mut self, req: &[u8], resp_lens: &[usize]) -> Result<CtlReply, FrontError> {
        let mut parts = vec![Part::Read(req)];
        parts.extend(resp_lens.iter().map(|&n| Part::Write(n)));
        let lens: Vec<usize> = resp_lens.to_vec();
        let token = self.submit(CONTROL_QUEUE, &parts, ChainKind::Control)?;
        let timeout = self.opts.ctl_timeout;
        let deadline = Instant::now() + timeout;
        let ok = self.wait_until(deadline, |s| s.done_ctl.contains_key(&token))?;
        if !ok {
            self.abandoned.insert(token);
            return Err(FrontError::Timeout {
                what: format!("control request {:#06x} to be answered", le32(req, 0)),
                after: timeout,
            });
        }
        let c = self.done_ctl.remove(&token).expect("checked by wait");
        let mut bufs = Vec::with_capacity(lens.len());
        let mut at = 0;
        for n in lens {
            bufs.push(
                c.data
                    .get(at..at + n)
                    .map(|s| s.to_vec())
                    .unwrap_or_default(),
            );
            at += n;
        }
        Ok(CtlReply {
            status: c.status,
            is_ok: c.status == self.opts.dialect.ok(),
            bufs,
            len: c.len,
            latency: c.completed_at - c.submitted_at,
        })
    }

    fn expect_ok(what: impl Into<String>, r: CtlReply) -> Result<CtlReply, FrontError> {
        if r.ok() {
            Ok(r)
        } else {
            Err(FrontError::Status {
                what: what.into(),
                status: r.status,
            })
        }
    }

    /// A query request (JACK/PCM/CHMAP/CTL INFO) with its raw reply: the status header and a
    /// separate writable buffer of `count * size` bytes.
    pub fn query_raw(
        &mut self,
        code: u32,
        start: u32,
        count: u32,
        size: u32,
    ) -> Result<CtlReply, FrontError> {
        let req = query_info(code, start, count, size);
        let mut lens = vec![4usize];
        let body = count as usize * size as usize;
        if body > 0 {
            lens.push(body);
        }
        self.ctl_request(&req, &lens)
    }

    fn query_items(
        &mut self,
        what: &str,
        code: u32,
        count: u32,
        size: usize,
    ) -> Result<Vec<Vec<u8>>, FrontError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let r = Self::expect_ok(what, self.query_raw(code, 0, count, size as u32)?)?;
        let body = r.bufs.get(1).cloned().unwrap_or_default();
        Ok(body.chunks(size).map(|c| c.to_vec()).collect())
    }

    pub fn jack_info(&mut self) -> Result<Vec<JackInfo>, FrontError> {
        let n = self.config.jacks;
        Ok(self
            .query_items("JACK_INFO", R_JACK_INFO, n, JACK_INFO_LEN)?
            .iter()
            .map(|b| JackInfo::parse(b))
            .collect())
    }

    pub fn pcm_info(&mut self) -> Result<Vec<PcmInfo>, FrontError> {
        let n = self.config.streams;
        Ok(self
            .query_items("PCM_INFO", R_PCM_INFO, n, PCM_INFO_LEN)?
            .iter()
            .map(|b| PcmInfo::parse(b))
            .collect())
    }

    pub fn chmap_info(&mut self) -> Result<Vec<ChmapInfo>, FrontError> {
        let n = self.config.chmaps;
        Ok(self
            .query_items("CHMAP_INFO", R_CHMAP_INFO, n, CHMAP_INFO_LEN)?
            .iter()
            .map(|b| ChmapInfo::parse(b))
            .collect())
    }

    /// CTL_INFO for every control element (empty unless VIRTIO_SND_F_CTLS was negotiated).
    pub fn ctl_info(&mut self) -> Result<Vec<CtlInfo>, FrontError> {
        let n = self.config.controls.unwrap_or(0);
        Ok(self
            .query_items("CTL_INFO", R_CTL_INFO, n, CTL_INFO_LEN)?
            .iter()
            .map(|b| CtlInfo::parse(b))
            .collect())
    }

    /// JACK_REMAP; returns the status.
    pub fn jack_remap(
        &mut self,
        jack: u32,
        association: u32,
        sequence: u32,
    ) -> Result<u32, FrontError> {
        let mut req = pcm_hdr(R_JACK_REMAP, jack);
        req.extend_from_slice(&association.to_le_bytes());
        req.extend_from_slice(&sequence.to_le_bytes());
        Ok(self.ctl_request(&req, &[4])?.status)
    }

    /// SET_PARAMS; returns the status and remembers the parameters when it is OK.
    pub fn set_params(
        &mut self,
        stream: u32,
        buffer_bytes: u32,
        period_bytes: u32,
        channels: u8,
        format: u8,
        rate: u8,
    ) -> Result<u32, FrontError> {
        let p = PcmParams {
            buffer_bytes,
            period_bytes,
            features: 0,
            channels,
            format,
            rate,
        };
        self.set_params_full(stream, &p)
    }

    /// SET_PARAMS with every field under the caller's control (features included).
    pub fn set_params_full(&mut self, stream: u32, p: &PcmParams) -> Result<u32, FrontError> {
        let st = self.ctl_request(&set_params(stream, p), &[4])?.status;
        if st == self.opts.dialect.ok() {
            self.params.insert(stream, *p);
        }
        Ok(st)
    }

    fn pcm_simple(&mut self, code: u32, stream: u32) -> Result<u32, FrontError> {
        Ok(self.ctl_request(&pcm_hdr(code, stream), &[4])?.status)
    }

    pub fn prepare(&mut self, stream: u32) -> Result<u32, FrontError> {
        self.pcm_simple(R_PCM_PREPARE, stream)
    }

    pub fn start(&mut self, stream: u32) -> Result<u32, FrontError> {
        self.pcm_simple(R_PCM_START, stream)
    }

    pub fn stop(&mut self, stream: u32) -> Result<u32, FrontError> {
        self.pcm_simple(R_PCM_STOP, stream)
    }

    pub fn release(&mut self, stream: u32) -> Result<u32, FrontError> {
        self.pcm_simple(R_PCM_RELEASE, stream)
    }

    /// CTL_READ: the status and the 512-byte value.
    pub fn ctl_read_raw(&mut self, control: u32) -> Result<(u32, Vec<u8>), FrontError> {
        let r = self.ctl_request(&ctl_hdr(R_CTL_READ, control), &[4 + CTL_VALUE_LEN])?;
        let b = r.bufs.into_iter().next().unwrap_or_default();
        Ok((r.status, b.get(4..).map(|s| s.to_vec()).unwrap_or_default()))
    }

    /// CTL_READ of a BOOLEAN/INTEGER control: its first `count` values. Fails unless OK.
    pub fn ctl_read(&mut self, control: u32, count: usize) -> Result<Vec<i32>, FrontError> {
        let (st, v) = self.ctl_read_raw(control)?;
        if st != self.opts.dialect.ok() {
            return Err(FrontError::Status {
                what: format!("CTL_READ {control}"),
                status: st,
            });
        }
        Ok(ctl_value_to_i32(&v, count))
    }

    /// CTL_WRITE of le32 values; returns the status.
    pub fn ctl_write(&mut self, control: u32, values: &[i32]) -> Result<u32, FrontError> {
        self.ctl_write_raw(control, &ctl_value_i32(values))
    }

    pub fn ctl_write_raw(
        &mut self,
        control: u32,
        value: &[u8; CTL_VALUE_LEN],
    ) -> Result<u32, FrontError> {
        let mut req = ctl_hdr(R_CTL_WRITE, control);
        req.extend_from_slice(value);
        Ok(self.ctl_request(&req, &[4])?.status)
    }

    /// CTL_TLV_READ into a `size`-byte buffer: the status and the TLV as le32 words.
    pub fn ctl_tlv_read(
        &mut self,
        control: u32,
        size: usize,
    ) -> Result<(u32, Vec<u32>), FrontError> {
        let r = self.ctl_request(&ctl_hdr(R_CTL_TLV_READ, control), &[4, size])?;
        let words = r
            .bufs
            .get(1)
            .map(|b| b.chunks_exact(4).map(|w| le32(w, 0)).collect())
            .unwrap_or_default();
        Ok((r.status, words))
    }

    /// CTL_ENUM_ITEMS: the status and the item names.
    pub fn ctl_enum_items(
        &mut self,
        control: u32,
        items: usize,
    ) -> Result<(u32, Vec<String>), FrontError> {
        let r = self.ctl_request(
            &ctl_hdr(R_CTL_ENUM_ITEMS, control),
            &[4, items.max(1) * CTL_ENUM_ITEM_LEN],
        )?;
        let names = r
            .bufs
            .get(1)
            .map(|b| {
                b.chunks(CTL_ENUM_ITEM_LEN)
                    .take(items)
                    .map(|c| {
                        let end = c.iter().position(|&x| x == 0).unwrap_or(c.len());
                        String::from_utf8_lossy(&c[..end]).into_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((r.status, names))
    }

    // ----- PCM ----------------------------------------------------------------------------

    /// Queues a playback buffer: header {stream_id} (aero's dialect: {stream_id, 0}), the PCM
    /// split like a vmalloc'ed ALSA buffer, then the 8-byte writable status. Returns its
    /// token.
    pub fn push_tx(&mut self, stream: u32, pcm: &[u8]) -> Result<Token, FrontError> {
        let hdr = self.opts.dialect.xfer_header(stream);
        let mut parts = vec![Part::Read(&hdr)];
        if !pcm.is_empty() {
            parts.push(Part::ReadSplit(pcm));
        }
        parts.push(Part::Write(PCM_STATUS_LEN));
        self.submit(TX_QUEUE, &parts, ChainKind::Tx(stream))
    }

    /// Queues a capture buffer of `len` bytes: readable header, writable PCM area, status.
    pub fn push_rx(&mut self, stream: u32, len: usize) -> Result<Token, FrontError> {
        let hdr = self.opts.dialect.xfer_header(stream);
        let mut parts = vec![Part::Read(&hdr)];
        if len > 0 {
            parts.push(Part::WriteSplit(len));
        }
        parts.push(Part::Write(PCM_STATUS_LEN));
        self.submit(RX_QUEUE, &parts, ChainKind::Rx(stream))
    }

    /// Free descriptors of a queue.
    pub fn free_descs(&self, queue: usize) -> usize {
        self.rings.get(queue).map(|r| r.free_descs()).unwrap_or(0)
    }

    // ----- events -------------------------------------------------------------------------

    /// Posts `n` more 8-byte event buffers on the event queue.
    pub fn post_event_buffers(&mut self, n: usize) -> Result<(), FrontError> {
        for _ in 0..n {
            self.submit(EVENT_QUEUE, &[Part::Write(EVENT_LEN)], ChainKind::Event)?;
        }
        Ok(())
    }

    /// Whether consumed event buffers are posted again (default yes, as Linux does).
    pub fn set_repost_events(&mut self, on: bool) {
        self.repost_events = on;
    }

    /// Events received so far (taken).
    pub fn events(&mut self) -> Result<Vec<TimedEvent>, FrontError> {
        self.collect(false)?;
        Ok(self.events.drain(..).collect())
    }

    /// Waits for an event matching `pred`; earlier non-matching events are kept.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&SndEvent) -> bool,
    ) -> Result<Option<TimedEvent>, FrontError> {
        let deadline = Instant::now() + timeout;
        let mut found = None;
        self.wait_until(deadline, |s| {
            found = s.events.iter().position(|e| pred(&e.event));
            found.is_some()
        })?;
        Ok(found.and_then(|i| self.events.remove(i)))
    }

    // ----- teardown -----------------------------------------------------------------------

    /// Stops every vring as QEMU's vhost_dev_stop does (the VM pauses, migrates, resets or
    /// quits): SET_VRING_ENABLE 0 on each, then GET_VRING_BASE on each, timing the replies.
    /// What the device completed before its replies is collected as usual; from then on the
    /// device must leave the used rings alone until [`restart_rings`](Self::restart_rings)
    /// (anything it writes is a violation). Chains it still holds stay in flight.
    pub fn stop_rings(&mut self) -> Result<RingStop, FrontError> {
        for q in 0..NUM_QUEUES {
            // A refusal is noted, not fatal: the stop goes on as QEMU's does, and a backend
            // that went away shows in the GET_VRING_BASE replies.
            if let Err(e) = self.vu.set_vring_enable(q, false) {
                self.violations
                    .push(format!("queue {q}: SET_VRING_ENABLE 0 failed: {e}"));
            }
        }
        let mut bases = Vec::with_capacity(NUM_QUEUES);
        let mut latency = Vec::with_capacity(NUM_QUEUES);
        for q in 0..NUM_QUEUES {
            let t = Instant::now();
            bases.push(self.vu.get_vring_base(q).map_err(|e| e.to_string()));
            latency.push(t.elapsed());
        }
        // GET_VRING_BASE replied after the device stopped the ring, so anything it returned
        // is in the used rings now (the call fds are detached: scan directly).
        self.collect(false)?;
        self.stopped = vec![true; NUM_QUEUES];
        Ok(RingStop {
            bases,
            latency,
            still_in_flight: self.in_flight(),
        })
    }

    /// Starts the stopped vrings again as QEMU's vhost_dev_start does on `cont`:
    /// SET_FEATURES, SET_MEM_TABLE (the guest memory mapped anew), per ring SET_VRING_NUM,
    /// SET_VRING_BASE with `bases[q]` (normally what GET_VRING_BASE returned),
    /// SET_VRING_ADDR, SET_VRING_KICK and SET_VRING_CALL, then SET_VRING_ENABLE 1, then a
    /// kick on every ring (QEMU's host notifiers are created signalled, so the device looks
    /// at each ring at once).
    pub fn restart_rings(&mut self, bases: &[u16]) -> Result<(), FrontError> {
        if bases.len() != NUM_QUEUES {
            return Err(FrontError::Usage(format!(
                "{} ring bases for {NUM_QUEUES} rings",
                bases.len()
            )));
        }
        if !self.stopped.iter().all(|&s| s) {
            return Err(FrontError::Usage(
                "restart_rings without stop_rings first".into(),
            ));
        }
        self.vu.set_features(self.acked_features)?;
        self.vu.set_mem_table(&[self.ram.region_info()?])?;
        for (ring, &base) in self.rings.iter().zip(bases) {
            start_vring(&self.vu, &self.ram, ring, base)?;
        }
        for q in 0..NUM_QUEUES {
            self.vu.set_vring_enable(q, true)?;
        }
        self.stopped = vec![false; NUM_QUEUES];
        for ring in &self.rings {
            ring.kick()?;
        }
        Ok(())
    }

    /// Stops every vring as QEMU does when it stops the device before quitting
    /// ([`stop_rings`](Self::stop_rings)), collects what the device returned, and closes the
    /// connection.
    pub fn disconnect(mut self) -> Result<DisconnectReport, FrontError> {
        let stop = self.stop_rings()?;
        let mut returned: Vec<Completion> = self.done.drain(..).collect();
        returned.extend(self.done_ctl.drain().map(|(_, c)| c));
        // Event buffers may legitimately stay with the device; callers look at tx/rx.
        Ok(DisconnectReport {
            vring_bases: stop.bases,
            stop_latency: stop.latency,
            violations: std::mem::take(&mut self.violations),
            next_avail: self.rings.iter().map(|r| r.next_avail()).collect(),
            returned,
            still_in_flight: stop.still_in_flight,
        })
    }
}
