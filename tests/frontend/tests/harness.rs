//! The harness's own tests, against a minimal virtio-snd backend built in-process on
//! vhost-user-backend (so they run anywhere): what the frontend puts in guest memory is what a
//! backend reads through the rust-vmm queue code, and what the backend writes back is what
//! the frontend reports.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dsproxy_testfront::proto::*;
use dsproxy_testfront::{signal, FrontendOpts, SndFrontend, TempDir};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

/// What the mock saw.
#[derive(Default)]
struct Seen {
    ctl_requests: Vec<Vec<u8>>,
    played: Vec<u8>,
    tx_buffers: usize,
}

/// A virtio-snd backend reduced to what the harness needs checking: answers every control
/// request OK (query replies zero-filled), consumes TX buffers at once, fills RX buffers with
/// 0x11, and sends a CTL_NOTIFY for control 3 when asked with request code 0x0999.
struct MockSnd {
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    event_idx: bool,
    seen: Arc<Mutex<Seen>>,
    /// Event buffers posted by the driver: (head, writable address).
    events: Vec<(u16, GuestAddress)>,
}

const TRIGGER_EVENT: u32 = 0x0999;
/// A request code the mock never answers.
const IGNORE: u32 = 0x0998;

impl MockSnd {
    fn process(&mut self, q: usize, vrings: &[VringRwLock]) -> std::io::Result<()> {
        let Some(atomic) = self.mem.clone() else {
            return Ok(());
        };
        let mem = atomic.memory();
        let vring = &vrings[q];
        loop {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            if q == EVENT_QUEUE {
                let addr = chain
                    .clone()
                    .find(|d| d.is_write_only())
                    .map(|d| d.addr())
                    .expect("event buffer is writable");
                self.events.push((head, addr));
                continue;
            }
            let mut reader = chain.clone().reader(&mem).expect("reader");
            let mut writer = chain.clone().writer(&mem).expect("writer");
            let mut readable = vec![0u8; reader.available_bytes()];
            reader.read_exact(&mut readable).expect("read");
            let wlen = writer.available_bytes();
            let used = match q {
                CONTROL_QUEUE => {
                    let code = u32::from_le_bytes(readable[..4].try_into().unwrap());
                    if code == IGNORE {
                        continue;
                    }
                    self.seen
                        .lock()
                        .unwrap()
                        .ctl_requests
                        .push(readable.clone());
                    let mut reply = vec![0u8; wlen];
                    reply[..4].copy_from_slice(&S_OK.to_le_bytes());
                    writer.write_all(&reply).expect("write");
                    if code == TRIGGER_EVENT {
                        if let Some((h, a)) = self.events.pop() {
                            let mut ev = EVT_CTL_NOTIFY.to_le_bytes().to_vec();
                            ev.extend_from_slice(&3u16.to_le_bytes());
                            ev.extend_from_slice(&1u16.to_le_bytes());
                            vm_memory::Bytes::write_slice(&*mem, &ev, a).unwrap();
                            vrings[EVENT_QUEUE].add_used(h, 8).unwrap();
                            vrings[EVENT_QUEUE].signal_used_queue().unwrap();
                        }
                    }
                    wlen as u32
                }
                TX_QUEUE => {
                    let mut s = self.seen.lock().unwrap();
                    s.played.extend_from_slice(&readable[4..]);
                    s.tx_buffers += 1;
                    let mut status = writer.split_at(wlen - 8).expect("status at the end");
                    status.write_all(&S_OK.to_le_bytes()).unwrap();
                    status.write_all(&0u32.to_le_bytes()).unwrap();
                    8
                }
                RX_QUEUE => {
                    let mut data = vec![0x11u8; wlen - 8];
                    data.extend_from_slice(&S_OK.to_le_bytes());
                    data.extend_from_slice(&0u32.to_le_bytes());
                    writer.write_all(&data).unwrap();
                    wlen as u32
                }
                _ => 0,
            };
            vring.add_used(head, used).unwrap();
        }
        vring.signal_used_queue()
    }
}

impl VhostUserBackendMut for MockSnd {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VHOST_USER_F_PROTOCOL_FEATURES
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_SND_F_CTLS
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg: Vec<u8> = [0u32, 2, 0, 4]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        cfg.get(offset as usize..(offset + size) as usize)
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let q = device_event as usize;
        if q >= NUM_QUEUES {
            return Ok(());
        }
        loop {
            if self.event_idx {
                vrings[q].disable_notification().unwrap();
            }
            self.process(q, vrings)?;
            if !self.event_idx || !vrings[q].enable_notification().unwrap() {
                break;
            }
        }
        Ok(())
    }
}

/// Runs the mock on a fresh socket; returns what it saw and the socket directory.
fn mock() -> (Arc<Mutex<Seen>>, TempDir, std::path::PathBuf) {
    let dir = TempDir::new("mock").unwrap();
    let sock = dir.path().join("mock.sock");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let backend = Arc::new(RwLock::new(MockSnd {
        mem: None,
        event_idx: false,
        seen: seen.clone(),
        events: Vec::new(),
    }));
    let mut daemon = VhostUserDaemon::new(
        "mock-snd".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .unwrap();
    let path = sock.clone();
    std::thread::spawn(move || {
        let _ = daemon.serve(path);
    });
    (seen, dir, sock)
}

#[test]
fn negotiation_config_and_control_requests() {
    let (seen, _dir, sock) = mock();
    let mut fe = SndFrontend::connect(&sock, FrontendOpts::default()).expect("connect");
    assert!(fe.ctls());
    assert_ne!(fe.acked_features() & VIRTIO_RING_F_EVENT_IDX, 0);
    assert!(fe
        .protocol_features()
        .contains(VhostUserProtocolFeatures::REPLY_ACK));
    assert_eq!(
        fe.config(),
        SndConfig {
            jacks: 0,
            streams: 2,
            chmaps: 0,
            controls: Some(4)
        }
    );
    let st = fe.set_params(1, 8192, 2048, 2, 5, 7).unwrap();
    assert_eq!(st, S_OK);
    assert_eq!(fe.params(1).unwrap().period_bytes, 2048);
    assert_eq!(fe.pcm_info().unwrap().len(), 2);
    assert_eq!(fe.ctl_write(2, &[5, -6]).unwrap(), S_OK);

    let s = seen.lock().unwrap();
    // The requests arrived exactly as the spec lays them out.
    assert_eq!(s.ctl_requests[0], set_params(1, &fe.params(1).unwrap()));
    assert_eq!(
        s.ctl_requests[1],
        query_info(R_PCM_INFO, 0, 2, PCM_INFO_LEN as u32)
    );
    let w = &s.ctl_requests[2];
    assert_eq!(w.len(), 8 + CTL_VALUE_LEN);
    assert_eq!(&w[..8], &ctl_hdr(R_CTL_WRITE, 2)[..]);
    assert_eq!(ctl_value_to_i32(&w[8..], 2), vec![5, -6]);
    drop(s);
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

#[test]
fn tx_data_split_across_descriptors_arrives_in_order() {
    for split in [4096, 100, 7] {
        // The mock serves one connection per socket.
        let (seen, _dir, sock) = mock();
        let opts = FrontendOpts {
            desc_split: split,
            queue_size: 256,
            ..FrontendOpts::default()
        };
        let mut fe = SndFrontend::connect(&sock, opts).expect("connect");
        assert_eq!(fe.set_params(0, 4096, 1024, 2, 5, 7).unwrap(), S_OK);
        let data = signal::lcg_bytes(split as u64, 1024 * 6);
        let rep = dsproxy_testfront::play(&mut fe, 0, &data, 1024).expect("play");
        assert_eq!(rep.completions.len(), 6);
        assert!(rep.bad_statuses().is_empty());
        let s = seen.lock().unwrap();
        assert!(s.played == data, "split {split}: data differs");
        assert_eq!(s.tx_buffers, 6);
        drop(s);
        let r = fe.disconnect().unwrap();
        for q in [CONTROL_QUEUE, TX_QUEUE] {
            assert_eq!(r.vring_bases[q], Ok(r.next_avail[q] as u32), "{r:?}");
        }
        assert_eq!(r.still_in_flight[TX_QUEUE], 0);
    }
}

#[test]
fn indirect_tables_and_per_queue_sizes_reach_the_backend_intact() {
    let (seen, _dir, sock) = mock();
    let opts = FrontendOpts {
        desc_split: 7,
        queue_sizes: Some([64, 64, 256, 64]),
        want_indirect: true,
        indirect: true,
        ..FrontendOpts::default()
    };
    let mut fe = SndFrontend::connect(&sock, opts).expect("connect");
    assert!(fe.indirect_negotiated());
    assert_eq!(
        (0..NUM_QUEUES)
            .map(|q| fe.queue_size(q))
            .collect::<Vec<_>>(),
        [64, 64, 256, 64]
    );
    // A control request (two descriptors: through a table) and a TX buffer split at odd
    // places (about 300 descriptors in one table: more than the 256-entry ring could hold).
    assert_eq!(fe.set_params(0, 8192, 2048, 2, 5, 7).unwrap(), S_OK);
    let data = signal::lcg_bytes(9, 2048 * 3);
    let rep = dsproxy_testfront::play(&mut fe, 0, &data, 2048).expect("play");
    assert!(rep.bad_statuses().is_empty());
    assert!(seen.lock().unwrap().played == data);
    let t = fe.push_rx(1, 333).unwrap();
    let c = fe.wait_token(t, Duration::from_secs(2)).unwrap();
    assert_eq!((c.status, c.len), (S_OK, 333 + 8));
    assert_eq!(c.data, vec![0x11; 333]);
    // SET_PARAMS, START, 3 TX buffers, STOP, 1 RX buffer went through tables; the event
    // buffers, single descriptors, were posted directly.
    assert_eq!(fe.indirect_chains(), 7);
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
    let r = fe.disconnect().unwrap();
    assert_eq!(r.still_in_flight[TX_QUEUE], 0);
}

#[test]
fn splits_at_odd_boundaries_and_rx_and_events() {
    let (seen, _dir, sock) = mock();
    let opts = FrontendOpts {
        desc_split: 7,
        queue_size: 256,
        ..FrontendOpts::default()
    };
    let mut fe = SndFrontend::connect(&sock, opts).expect("connect");
    let data = signal::lcg_bytes(3, 999);
    let t = fe.push_tx(0, &data).unwrap();
    let c = fe.wait_token(t, Duration::from_secs(2)).unwrap();
    assert_eq!((c.status, c.len, c.stream), (S_OK, 8, Some(0)));
    assert!(seen.lock().unwrap().played == data);

    let t = fe.push_rx(1, 333).unwrap();
    let c = fe.wait_token(t, Duration::from_secs(2)).unwrap();
    assert_eq!(c.status, S_OK);
    assert_eq!(c.len, 333 + 8);
    assert_eq!(c.data, vec![0x11; 333]);

    // An event in response to a request, and the buffer is posted again.
    let before = fe.in_flight()[EVENT_QUEUE];
    fe.ctl_request(&TRIGGER_EVENT.to_le_bytes(), &[4]).unwrap();
    let ev = fe
        .wait_event(Duration::from_secs(2), |e| {
            matches!(e, SndEvent::CtlNotify { .. })
        })
        .unwrap()
        .expect("event");
    assert_eq!(
        ev.event,
        SndEvent::CtlNotify {
            control: 3,
            mask: 1
        }
    );
    assert_eq!(
        fe.in_flight()[EVENT_QUEUE],
        before,
        "event buffer re-posted"
    );
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

#[test]
fn a_control_request_that_is_never_answered_times_out() {
    let (_seen, _dir, sock) = mock();
    let mut fe = SndFrontend::connect(
        &sock,
        FrontendOpts {
            ctl_timeout: Duration::from_millis(300),
            ..FrontendOpts::default()
        },
    )
    .unwrap();
    let r = fe.ctl_request(&IGNORE.to_le_bytes(), &[4]);
    assert!(
        matches!(r, Err(dsproxy_testfront::FrontError::Timeout { .. })),
        "{r:?}"
    );
    // The queue goes on; the abandoned request is not mistaken for a later one.
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.in_flight()[CONTROL_QUEUE], 1);
}

#[test]
fn rings_stop_and_restart_where_the_device_left_off() {
    let (seen, _dir, sock) = mock();
    let mut fe = SndFrontend::connect(&sock, FrontendOpts::default()).expect("connect");
    assert_eq!(fe.set_params(0, 4096, 1024, 2, 5, 7).unwrap(), S_OK);
    let first = signal::lcg_bytes(1, 1024 * 3);
    dsproxy_testfront::play(&mut fe, 0, &first, 1024).expect("play before the stop");

    let stop = fe.stop_rings().expect("stop");
    // Event buffers are posted without waiting for the device, which may not have taken
    // them all when the ring stops; everything else it has answered.
    for q in [CONTROL_QUEUE, TX_QUEUE, RX_QUEUE] {
        assert_eq!(stop.bases[q], Ok(fe_next_avail(&fe, q)), "{stop:?}");
    }
    assert_eq!(stop.still_in_flight[TX_QUEUE], 0);
    let bases: Vec<u16> = stop
        .bases
        .iter()
        .map(|b| *b.as_ref().unwrap() as u16)
        .collect();
    fe.restart_rings(&bases).expect("restart");
    assert!(
        fe.restart_rings(&bases).is_err(),
        "restart of running rings"
    );

    // The device goes on from where it was: control requests and PCM are served, nothing
    // is read twice.
    assert_eq!(fe.set_params(0, 4096, 1024, 2, 5, 7).unwrap(), S_OK);
    let second = signal::lcg_bytes(2, 1024 * 3);
    dsproxy_testfront::play(&mut fe, 0, &second, 1024).expect("play after the restart");
    let s = seen.lock().unwrap();
    assert!(s.played == [first, second].concat(), "played data differs");
    assert_eq!(s.tx_buffers, 6);
    let set_params = s
        .ctl_requests
        .iter()
        .filter(|r| r.get(..4) == Some(&R_PCM_SET_PARAMS.to_le_bytes()[..]))
        .count();
    assert_eq!(set_params, 2, "a control request was read twice or lost");
    drop(s);
    let rep = fe.disconnect().unwrap();
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
}

/// What GET_VRING_BASE must say once the device has taken every chain of queue `q`.
fn fe_next_avail(fe: &SndFrontend, q: usize) -> u32 {
    fe.next_avail(q).into()
}
