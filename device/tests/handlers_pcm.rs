//! The PCM state machine over the control queue: every transition, allowed and refused,
//! SET_PARAMS checking, the records readers get, and buffers returned on RELEASE.

mod handlers_util;
use dsproxy_device::pcm::StreamState;
use dsproxy_wire::record::{Params, Record};
use handlers_util::*;

const ALL: [u32; 5] = [
    PCM_SET_PARAMS,
    PCM_PREPARE,
    PCM_START,
    PCM_STOP,
    PCM_RELEASE,
];

fn request(r: &mut Rig, code: u32, id: u32) -> u32 {
    if code == PCM_SET_PARAMS {
        r.ctl_status(&set_params(id, 4096, 1024, 2, FMT_S16, RATE_48000))
    } else {
        r.ctl_status(&pcm_hdr(code, id))
    }
}

/// Drives stream 0 into `state` from a fresh card.
fn reach(state: StreamState) -> Rig {
    let mut r = Rig::new();
    let path: &[u32] = match state {
        StreamState::Idle => &[],
        StreamState::ParamsSet => &[PCM_SET_PARAMS],
        StreamState::Prepared => &[PCM_SET_PARAMS, PCM_PREPARE],
        StreamState::Running => &[PCM_SET_PARAMS, PCM_PREPARE, PCM_START],
        StreamState::Stopped => &[PCM_SET_PARAMS, PCM_PREPARE, PCM_START, PCM_STOP],
        StreamState::Released => &[PCM_SET_PARAMS, PCM_PREPARE, PCM_RELEASE],
    };
    for &c in path {
        assert_eq!(request(&mut r, c, 0), OK);
    }
    assert_eq!(r.card.stream_state(0), Some(state));
    r.tap.take_records();
    r
}

#[test]
fn every_transition_allowed_or_refused_per_spec() {
    use StreamState::*;
    let table: [(StreamState, [Option<StreamState>; 5]); 6] = [
        //               SET_PARAMS        PREPARE          START          STOP           RELEASE
        (Idle, [Some(ParamsSet), None, None, None, None]),
        (
            ParamsSet,
            [Some(ParamsSet), Some(Prepared), None, None, Some(Released)],
        ),
        (
            Prepared,
            [
                Some(ParamsSet),
                Some(Prepared),
                Some(Running),
                None,
                Some(Released),
            ],
        ),
        (Running, [None, None, None, Some(Stopped), None]),
        (Stopped, [None, None, Some(Running), None, Some(Released)]),
        (
            Released,
            [Some(ParamsSet), Some(Prepared), None, None, None],
        ),
    ];
    for (from, outcomes) in table {
        for (code, want) in ALL.iter().zip(outcomes) {
            let mut r = reach(from);
            let status = request(&mut r, *code, 0);
            match want {
                Some(to) => {
                    assert_eq!(status, OK, "{code:#x} from {from:?}");
                    assert_eq!(r.card.stream_state(0), Some(to), "{code:#x} from {from:?}");
                }
                None => {
                    assert_eq!(status, BAD_MSG, "{code:#x} from {from:?} must be refused");
                    assert_eq!(r.card.stream_state(0), Some(from), "state unchanged");
                    assert!(r.tap.take_records().is_empty(), "nothing published");
                    // and the card still works: PCM_INFO answers
                    let (len, resp) = r.ctl(&query(PCM_INFO, 0, 1, 32), 36);
                    assert_eq!((len, status_of(&resp)), (36, OK));
                }
            }
        }
    }
}

#[test]
fn a_full_life_publishes_its_records() {
    let mut r = Rig::new();
    r.now = EPOCH + 5_000;
    assert_eq!(request(&mut r, PCM_SET_PARAMS, 0), OK);
    assert_eq!(request(&mut r, PCM_PREPARE, 0), OK);
    r.now = EPOCH + 7_000;
    assert_eq!(request(&mut r, PCM_START, 0), OK);
    assert_eq!(request(&mut r, PCM_STOP, 0), OK);
    assert_eq!(request(&mut r, PCM_RELEASE, 0), OK);
    assert_eq!(
        r.tap.take_records(),
        vec![
            Record::Params(Params {
                stream: 0,
                buffer_bytes: 4096,
                period_bytes: 1024,
                features: 0,
                channels: 2,
                format: FMT_S16,
                rate: RATE_48000,
            }),
            Record::Prepare {
                stream: 0,
                time_ns: 5_000
            },
            Record::Start {
                stream: 0,
                time_ns: 7_000
            },
            Record::Stop {
                stream: 0,
                time_ns: 7_000,
                drained: true,
                discarded_bytes: 0
            },
            Record::Release {
                stream: 0,
                time_ns: 7_000
            },
        ]
    );
}

#[test]
fn unknown_stream_is_bad_msg() {
    let mut r = Rig::new();
    for code in ALL {
        assert_eq!(request(&mut r, code, 2), BAD_MSG, "{code:#x}");
        assert_eq!(request(&mut r, code, u32::MAX), BAD_MSG, "{code:#x}");
    }
    assert!(r.tap.take_records().is_empty());
    assert_eq!(
        request(&mut r, PCM_SET_PARAMS, 1),
        OK,
        "input stream 1 exists"
    );
}

#[test]
fn set_params_is_checked() {
    let mut r = Rig::new();
    let bad: Vec<Vec<u8>> = vec![
        set_params(0, 4096, 1024, 0, FMT_S16, RATE_48000), // no channels
        set_params(0, 4096, 1024, 9, FMT_S16, RATE_48000), // too many
        set_params(1, 4096, 1024, 3, FMT_S16, RATE_48000), // input max 2
        set_params(0, 4096, 1024, 2, 0, RATE_48000),       // ADPCM
        set_params(0, 4096, 1024, 2, 25, RATE_48000),      // no such format
        set_params(0, 4096, 1024, 2, FMT_S16, 0),          // 5512 Hz not offered
        set_params(0, 4096, 1024, 2, FMT_S16, 14),         // no such rate
        set_params(0, 4096, 0, 2, FMT_S16, RATE_48000),    // zero period
        set_params(0, 0, 1024, 2, FMT_S16, RATE_48000),    // zero buffer
        set_params(0, 4096, 1022, 2, FMT_S16, RATE_48000), // period not whole frames
        set_params(0, 4094, 1024, 2, FMT_S16, RATE_48000), // buffer not whole frames
        set_params(0, 1024, 4096, 2, FMT_S16, RATE_48000), // period > buffer
        set_params(0, 32 << 20, 4096, 2, FMT_S16, RATE_48000), // over 16 MiB
    ];
    for b in &bad {
        assert_eq!(r.ctl_status(b), BAD_MSG, "{b:?}");
        assert_eq!(r.card.stream_state(0), Some(StreamState::Idle));
    }
    // features: none offered
    let mut f = set_params(0, 4096, 1024, 2, FMT_S16, RATE_48000);
    f[16] = 1;
    assert_eq!(r.ctl_status(&f), NOT_SUPP);
    assert!(r.tap.take_records().is_empty());
    // U8 mono 8 kHz works: 1-byte frames
    assert_eq!(r.ctl_status(&set_params(0, 800, 80, 1, FMT_U8, 1)), OK);
    let recs = r.tap.take_records();
    assert!(matches!(recs.as_slice(), [Record::Params(p)] if p.format == FMT_U8 && p.rate == 1));
}

#[test]
fn release_returns_every_queued_buffer_unplayed() {
    let mut r = Rig::new();
    r.setup_stream(0, 1024, false);
    let a = r.tx(0, &[1u8; 1024]).0;
    let b = r.tx(0, &[2u8; 1024]).0;
    assert_eq!(r.card.queued_buffers(0), Some(2), "held while prepared");
    // start, then stop with both still queued (the clock has not reached them)
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    r.tap.take_records();
    let (p, used) = r.submit(CTL, &[D::R(pcm_hdr(PCM_RELEASE, 0)), D::W(4)]);
    // the two TX buffers come back first, then the RELEASE answer
    let tx: Vec<_> = used
        .iter()
        .filter(|u| u.queue == TX)
        .map(|u| (u.head, u.len))
        .collect();
    assert_eq!(tx, vec![(a.head, 8), (b.head, 8)]);
    assert_eq!(r.pcm_status(a.last()), (OK, 0));
    assert_eq!(r.pcm_status(b.last()), (OK, 0));
    assert_eq!(r.read_u32(p.addr(1)), OK);
    assert_eq!(r.card.queued_buffers(0), Some(0));
    assert!(r.tap.take_pcm().is_empty(), "nothing was played");
    assert!(matches!(
        r.tap.take_records().as_slice(),
        [Record::Release { stream: 0, .. }]
    ));
}

#[test]
fn stop_reports_what_was_still_queued() {
    let mut r = Rig::new();
    r.setup_stream(0, 1024, true);
    r.tx(0, &[0u8; 1024]);
    r.tx(0, &[0u8; 512]);
    r.tap.take_records();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    assert!(matches!(
        r.tap.take_records().as_slice(),
        [Record::Stop {
            stream: 0,
            drained: false,
            discarded_bytes: 1536,
            ..
        }]
    ));
}

#[test]
fn stopped_stream_keeps_its_buffers_for_the_next_start() {
    let mut r = Rig::new();
    r.setup_stream(0, 1920, true); // 1920 bytes = 10 ms at 48 kHz S16 stereo
    let t0 = r.now;
    let a = r.tx(0, &[5u8; 1920]).0;
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    assert!(
        r.at(t0 + 50_000_000).is_empty(),
        "a stopped clock completes nothing"
    );
    // a buffer queued while stopped is kept too
    let (b, used) = r.tx(0, &[6u8; 1920]);
    assert!(used.is_empty());
    assert_eq!(r.card.queued_buffers(0), Some(2));
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let used = r.advance(10_000_000);
    assert_eq!(
        used.iter().map(|u| u.head).collect::<Vec<_>>(),
        vec![a.head]
    );
    let used = r.advance(10_000_000);
    assert_eq!(
        used.iter().map(|u| u.head).collect::<Vec<_>>(),
        vec![b.head]
    );
    let pcm = r.tap.take_pcm();
    assert_eq!(pcm.len(), 2);
    assert_eq!((pcm[0].offset, pcm[1].offset), (0, 1920));
    assert_eq!(pcm[1].data, vec![6u8; 1920]);
}

#[test]
fn new_params_while_prepared_return_prequeued_buffers() {
    let mut r = Rig::new();
    r.setup_stream(0, 1024, false);
    let a = r.tx(0, &[1u8; 1024]).0;
    let (_, used) = r.submit(
        CTL,
        &[
            D::R(set_params(0, 8192, 2048, 2, FMT_S16, RATE_44100)),
            D::W(4),
        ],
    );
    assert!(used
        .iter()
        .any(|u| u.queue == TX && u.head == a.head && u.len == 8));
    assert_eq!(r.card.stream_state(0), Some(StreamState::ParamsSet));
    assert_eq!(r.card.queued_buffers(0), Some(0));
}

#[test]
fn prepare_resets_the_byte_offset() {
    let mut r = Rig::new();
    r.setup_stream(0, 192, true); // 1 ms periods
    r.tx(0, &[1u8; 192]);
    r.advance(1_000_000);
    assert_eq!(r.tap.take_pcm()[0].offset, 0);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_RELEASE, 0)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 0)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    r.tx(0, &[2u8; 192]);
    r.advance(1_000_000);
    let pcm = r.tap.take_pcm();
    assert_eq!(pcm.len(), 1);
    assert_eq!(pcm[0].offset, 0);
}

#[test]
fn streams_are_independent() {
    let mut r = Rig::with_config(dsproxy_device::CardConfig {
        outputs: 2,
        inputs: 1,
        ..Default::default()
    });
    r.setup_stream(0, 1024, true);
    assert_eq!(r.card.stream_state(1), Some(StreamState::Idle));
    assert_eq!(request(&mut r, PCM_START, 1), BAD_MSG);
    assert_eq!(request(&mut r, PCM_SET_PARAMS, 1), OK);
    assert_eq!(r.card.stream_state(0), Some(StreamState::Running));
    assert_eq!(request(&mut r, PCM_SET_PARAMS, 2), OK);
    assert_eq!(request(&mut r, PCM_SET_PARAMS, 3), BAD_MSG);
}

/// Valid requests are the guest's to send as often as it likes: each is logged at debug
/// level only, and the one info line per use of a stream — its summary at RELEASE — comes
/// a few times a second at most, the rest counted.
#[test]
fn valid_requests_in_a_loop_do_not_flood_the_log() {
    use dsproxy_device::reject_log::LINES_PER_WINDOW;
    logcap::start();
    let mut r = Rig::with_ctls();
    // one real use: played 2 buffers of 10 ms, 1 left queued at RELEASE
    r.setup_stream(0, 1920, true);
    let t0 = r.now;
    r.tx(0, &[0u8; 1920]);
    r.tx(0, &[0u8; 1920]);
    r.tx(0, &[0u8; 1920]);
    r.at(t0 + 20 * 1_000_000);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    let (_, used) = r.submit(CTL, &[D::R(pcm_hdr(PCM_RELEASE, 0)), D::W(4)]);
    assert_eq!(used.len(), 2, "the status and the returned buffer");
    let card = logcap::lines("dsproxy_device::card");
    let summaries: Vec<_> = card
        .iter()
        .filter(|(lv, m)| *lv == log::Level::Info && m.contains("released"))
        .collect();
    assert_eq!(summaries.len(), 1, "{card:?}");
    let line = &summaries[0].1;
    assert!(
        line.contains("3840 bytes played (20.0 ms of 48000 Hz")
            && line.contains("20 ms running over 1 start(s)")
            && line.contains("0 underrun(s)")
            && line.contains("1920 queued bytes left unused"),
        "{line}"
    );
    // a hostile guest loops valid requests, all within one second (a new one)
    logcap::start();
    r.now += 1_000_000_000;
    let n = 200;
    for i in 0..n {
        assert_eq!(
            r.ctl_status(&set_params(0, 7680, 1920, 2, FMT_S16, RATE_48000)),
            OK
        );
        assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 0)), OK);
        assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
        assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
        assert_eq!(r.ctl_status(&pcm_hdr(PCM_RELEASE, 0)), OK);
        assert_eq!(r.ctl_status(&ctl_write(0, &[i % 100, i % 100])), OK);
    }
    let info: Vec<_> = [
        "dsproxy_device::card",
        "dsproxy_device::ctl_queue",
        "dsproxy_device::pcm",
    ]
    .iter()
    .flat_map(|t| logcap::lines(t))
    .filter(|(lv, _)| *lv <= log::Level::Info)
    .collect();
    assert_eq!(
        info.len(),
        LINES_PER_WINDOW as usize,
        "{n} loops of 6 requests: {info:?}"
    );
    let debug = logcap::lines("dsproxy_device::pcm")
        .into_iter()
        .filter(|(lv, m)| *lv == log::Level::Debug && m.contains("started"))
        .count();
    assert_eq!(
        debug, n as usize,
        "every request still logged at debug level"
    );
    // a second later, the next summary says how many were held back
    logcap::start();
    r.now += 1_000_000_000;
    r.setup_stream(0, 1920, false);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_RELEASE, 0)), OK);
    let card = logcap::lines("dsproxy_device::card");
    let held_back = (n - LINES_PER_WINDOW as i32).to_string();
    assert!(
        card.iter().any(|(lv, m)| *lv == log::Level::Info
            && m.contains(&format!(
                "({held_back} earlier summaries at debug level only)"
            ))),
        "{card:?}"
    );
}

/// A guest can also reset its device in a loop (each reset restarts every ring from 0):
/// the lines about it are budgeted like the stream summaries.
#[test]
fn a_guest_resetting_its_device_in_a_loop_does_not_flood_the_log() {
    use dsproxy_device::reject_log::LINES_PER_WINDOW;
    logcap::start();
    let mut r = Rig::new();
    let n = 100;
    for _ in 0..n {
        r.setup_stream(0, 1920, true);
        r.tx(0, &[0u8; 1920]);
        let now = r.now;
        for q in [CTL, EVT, TX, RX] {
            r.card.stop_queue(q, now);
        }
        for q in [EVT, TX, RX, CTL] {
            r.card.restart_queue(r.mem, q, true, now);
        }
        assert!(r.flush().is_empty());
    }
    let info = logcap::lines("dsproxy_device::card")
        .into_iter()
        .filter(|(lv, _)| *lv <= log::Level::Info)
        .count();
    // driver/ring lines and stream summaries: each at most a budget per second
    assert!(
        info <= 2 * LINES_PER_WINDOW as usize,
        "{info} info lines for {n} resets"
    );
    let resets: Vec<log::Level> = logcap::lines("dsproxy_device::card")
        .into_iter()
        .filter(|(_, m)| m.contains("the driver reset the device"))
        .map(|(lv, _)| lv)
        .collect();
    assert_eq!(resets.len(), n, "every reset still logged");
    assert!(
        resets.iter().filter(|lv| **lv <= log::Level::Info).count() <= LINES_PER_WINDOW as usize,
        "the rest at debug level"
    );
    r.card.finish_reject_log();
    let last = logcap::lines("dsproxy_device::card");
    assert!(
        last.iter()
            .any(|(_, m)| m.contains("more driver/ring lines logged at debug level only")),
        "{last:?}"
    );
}
