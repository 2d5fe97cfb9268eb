//! The card's clock, driven with made-up times: which buffers complete when, the deadlines
//! and device timestamps, latency, starvation, backpressure, --wait-for-reader, --pacing
//! none, capture filling, period and xrun events, vring stop and reset. Correctness, not
//! timing: no test sleeps.

mod handlers_util;
use dsproxy_device::config::Pacing;
use dsproxy_device::pcm::StreamState;
use dsproxy_device::CardConfig;
use dsproxy_wire::record::Record;
use handlers_util::*;

const MS: u64 = 1_000_000;
/// 48 kHz S16 stereo: 192000 bytes/s, so 1920 bytes last exactly 10 ms.
const P10: u32 = 1920;

fn heads(u: &[Used]) -> Vec<u16> {
    u.iter().map(|u| u.head).collect()
}
use dsproxy_device::Used;

#[test]
fn buffers_complete_at_deadlines_from_the_start_instant() {
    let mut r = Rig::new();
    // 44.1 kHz S16 stereo (176400 B/s) with 1000-byte buffers: 5668934.24 ns each, so a
    // clock that added rounded durations would drift; deadlines come from the anchor.
    assert_eq!(
        r.ctl_status(&set_params(0, 4000, 1000, 2, FMT_S16, RATE_44100)),
        OK
    );
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 0)), OK);
    let posted: Vec<_> = (0..4).map(|i| r.tx(0, &[i as u8; 1000]).0).collect();
    let t0 = r.now;
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let mut next = 4u8;
    let mut queue: std::collections::VecDeque<_> = posted.into_iter().collect();
    for k in 1..=441u64 {
        let deadline = t0 + (k * 1000 * 1_000_000_000).div_ceil(176_400);
        assert_eq!(r.card.next_deadline(0), Some(deadline), "buffer {k}");
        assert!(r.at(deadline - 1).is_empty(), "buffer {k} not early");
        let used = r.at(deadline);
        let p = queue.pop_front().unwrap();
        assert_eq!(heads(&used), vec![p.head], "buffer {k}");
        // three more buffers still queued behind it
        assert_eq!(
            r.pcm_status(p.last()),
            (OK, 3000),
            "latency_bytes of buffer {k}"
        );
        let pcm = r.tap.take_pcm();
        assert_eq!(pcm.len(), 1);
        assert_eq!(
            pcm[0].time_ns,
            deadline - EPOCH,
            "device timestamp = deadline"
        );
        assert_eq!(pcm[0].offset, (k - 1) * 1000);
        // the driver refills the ring right away
        queue.push_back(r.tx(0, &[next; 1000]).0);
        next = next.wrapping_add(1);
    }
    // 441 buffers of 1000 bytes at 176400 B/s: exactly 2.5 s after START
    assert_eq!(r.now, t0 + 2_500_000_000);
}

#[test]
fn a_late_worker_completes_everything_due_with_true_timestamps() {
    let mut r = Rig::new();
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    let p: Vec<_> = (0..4).map(|_| r.tx(0, &[0u8; P10 as usize]).0).collect();
    let used = r.at(t0 + 35 * MS);
    assert_eq!(heads(&used), vec![p[0].head, p[1].head, p[2].head]);
    let times: Vec<u64> = r.tap.take_pcm().iter().map(|x| x.time_ns).collect();
    assert_eq!(
        times,
        vec![
            t0 + 10 * MS - EPOCH,
            t0 + 20 * MS - EPOCH,
            t0 + 30 * MS - EPOCH
        ]
    );
    let lat: Vec<u32> = p[..3].iter().map(|x| r.pcm_status(x.last()).1).collect();
    assert_eq!(lat, vec![3 * P10, 2 * P10, P10]);
    assert_eq!(r.card.next_deadline(0), Some(t0 + 40 * MS));
}

#[test]
fn short_starvation_continues_long_starvation_is_an_xrun() {
    let mut r = Rig::new();
    let ev = r.post_events(4);
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    r.tx(0, &[0u8; P10 as usize]);
    r.at(t0 + 10 * MS);
    assert_eq!(r.card.next_deadline(0), None, "nothing queued");
    r.tap.take_records();
    // back 3 ms late (< one 10 ms period): the clock goes on from its anchor
    r.now = t0 + 13 * MS;
    r.tx(0, &[0u8; P10 as usize]);
    assert_eq!(r.card.next_deadline(0), Some(t0 + 20 * MS));
    r.at(t0 + 20 * MS);
    assert!(r.tap.take_records().is_empty(), "no xrun");
    // back 50 ms late: an xrun of 50 ms for readers, the clock re-anchors
    r.now = t0 + 70 * MS;
    r.tx(0, &[0u8; P10 as usize]);
    assert_eq!(
        r.tap.take_records(),
        vec![Record::Xrun {
            stream: 0,
            time_ns: t0 + 70 * MS - EPOCH,
            duration_ns: 50 * MS
        }]
    );
    assert_eq!(
        r.card.next_deadline(0),
        Some(t0 + 80 * MS),
        "no burst to catch up"
    );
    // playback starvation is not reported to the guest (its ALSA sees its own underrun);
    // only period events were sent
    for e in &ev {
        let (code, _) = event_at(&r, e);
        assert_ne!(code, EVT_PCM_XRUN);
    }
}

#[test]
fn a_full_reader_holds_the_clock_and_nothing_is_lost() {
    let mut r = Rig::new();
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    let a = r.tx(0, &[1u8; P10 as usize]).0;
    let b = r.tx(0, &[2u8; P10 as usize]).0;
    r.tap.0.accept.set(false);
    assert!(r.at(t0 + 10 * MS).is_empty(), "held at the deadline");
    assert_eq!(r.card.next_deadline(0), None, "no timer while held");
    assert!(r.at(t0 + 500 * MS).is_empty());
    // control requests are answered at once while buffers are held
    let (len, resp) = r.ctl(&query(PCM_INFO, 0, 1, 32), 36);
    assert_eq!((len, status_of(&resp)), (36, OK));
    // the reader drains: the clock restarts from now
    r.tap.0.accept.set(true);
    assert!(r.notify_tap().is_empty());
    assert_eq!(r.card.next_deadline(0), Some(t0 + 510 * MS));
    assert_eq!(heads(&r.at(t0 + 510 * MS)), vec![a.head]);
    assert_eq!(heads(&r.at(t0 + 520 * MS)), vec![b.head]);
    let pcm = r.tap.take_pcm();
    assert_eq!(pcm.len(), 2);
    assert_eq!((pcm[0].data[0], pcm[1].data[0]), (1, 2));
    assert_eq!((pcm[0].offset, pcm[1].offset), (0, P10 as u64));
}

#[test]
fn wait_for_reader_keeps_the_clock_stopped() {
    let mut r = Rig::with_config(CardConfig {
        wait_for_reader: true,
        ..Default::default()
    });
    r.tap.0.readers.set(false);
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    let a = r.tx(0, &[7u8; P10 as usize]).0;
    assert!(r.at(t0 + 10 * MS).is_empty());
    assert!(
        r.at(t0 + 5_000 * MS).is_empty(),
        "held for as long as nobody listens"
    );
    assert_eq!(
        r.ctl_status(&pcm_hdr(PCM_STOP, 0)),
        OK,
        "controls still answered"
    );
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    r.tap.0.readers.set(true);
    r.notify_tap();
    let used = r.at(r.now + 10 * MS);
    assert_eq!(heads(&used), vec![a.head]);
    assert_eq!(r.tap.take_pcm()[0].data, vec![7u8; P10 as usize]);
}

#[test]
fn without_readers_the_card_keeps_time_and_discards() {
    let mut r = Rig::new();
    r.tap.0.readers.set(false);
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    let a = r.tx(0, &[0u8; P10 as usize]).0;
    assert!(r.at(t0 + 9 * MS).is_empty());
    assert_eq!(heads(&r.at(t0 + 10 * MS)), vec![a.head]);
    assert_eq!(r.pcm_status(a.last()), (OK, 0));
    assert!(
        r.tap.take_pcm().is_empty(),
        "nothing published without readers"
    );
}

#[test]
fn pacing_none_completes_as_soon_as_readers_take_it() {
    let mut r = Rig::with_config(CardConfig {
        pacing: Pacing::None,
        ..Default::default()
    });
    r.setup_stream(0, P10, false);
    let pre = r.tx(0, &[1u8; P10 as usize]).0;
    assert_eq!(
        r.card.queued_buffers(0),
        Some(1),
        "held until START even unpaced"
    );
    let (p, used) = r.submit(CTL, &[D::R(pcm_hdr(PCM_START, 0)), D::W(4)]);
    assert_eq!(r.read_u32(p.addr(1)), OK);
    // The stream keeps two periods queued: the only buffer waits for two more (or its 10 ms).
    assert!(!used.iter().any(|u| u.queue == TX), "{used:?}");
    assert_eq!(r.card.next_deadline(0), Some(r.now + 10 * MS));
    let (b, used) = r.tx(0, &[2u8; P10 as usize]);
    assert!(used.is_empty(), "one period behind it is not enough");
    let (c, used) = r.tx(0, &[3u8; P10 as usize]);
    assert_eq!(
        heads(&used),
        vec![pre.head],
        "completed once two were behind it"
    );
    assert_eq!(
        r.pcm_status(pre.last()),
        (OK, 2 * P10),
        "latency: the reserve"
    );
    // a full reader holds everything, and no timer runs meanwhile
    r.tap.0.accept.set(false);
    let (d, used) = r.tx(0, &[4u8; P10 as usize]);
    assert!(used.is_empty());
    assert_eq!(r.card.next_deadline(0), None);
    r.now += 50 * MS;
    r.tap.0.accept.set(true);
    assert_eq!(heads(&r.notify_tap()), vec![b.head]);
    // c waits from when it became the head; then d from when c completed
    let t = r.now;
    assert_eq!(r.card.next_deadline(0), Some(t + 10 * MS));
    assert!(r.at(t + 10 * MS - 1).is_empty());
    assert_eq!(heads(&r.at(t + 10 * MS)), vec![c.head]);
    assert_eq!(heads(&r.at(t + 20 * MS)), vec![d.head]);
    let pcm = r.tap.take_pcm();
    assert_eq!(
        pcm.iter()
            .map(|p| (p.offset, p.data[0]))
            .collect::<Vec<_>>(),
        vec![(0, 1), (1920, 2), (3840, 3), (5760, 4)]
    );
    assert_eq!(pcm[3].time_ns, t + 20 * MS - EPOCH);
}

#[test]
fn a_reader_asking_for_no_pacing_and_leaving_again() {
    let mut r = Rig::new();
    r.setup_stream(0, P10, true);
    r.tap.0.no_pacing.set(true);
    let a = r.tx(0, &[0u8; P10 as usize]).0;
    let b = r.tx(0, &[0u8; P10 as usize]).0;
    let (c, used) = r.tx(0, &[0u8; P10 as usize]);
    assert_eq!(
        heads(&used),
        vec![a.head],
        "the reserve of two periods stays"
    );
    r.tap.0.no_pacing.set(false);
    let t1 = r.now + 3 * MS;
    r.now = t1;
    let d = r.tx(0, &[0u8; P10 as usize]).0;
    // back on the clock, re-anchored: no burst
    assert_eq!(r.card.next_deadline(0), Some(t1 + 10 * MS));
    assert_eq!(heads(&r.at(t1 + 10 * MS)), vec![b.head]);
    assert_eq!(heads(&r.at(t1 + 20 * MS)), vec![c.head]);
    assert_eq!(heads(&r.at(t1 + 30 * MS)), vec![d.head]);
}

fn unpaced_rig() -> Rig {
    Rig::with_config(CardConfig {
        pacing: Pacing::None,
        ..Default::default()
    })
}

#[test]
fn unpaced_start_completes_all_but_two_periods_of_a_prefilled_ring() {
    let mut r = unpaced_rig();
    r.setup_stream(0, P10, false);
    let p: Vec<_> = (0..4)
        .map(|i| r.tx(0, &[i as u8; P10 as usize]).0)
        .collect();
    let t0 = r.now;
    let (_, used) = r.submit(CTL, &[D::R(pcm_hdr(PCM_START, 0)), D::W(4)]);
    let tx: Vec<u16> = used
        .iter()
        .filter(|u| u.queue == TX)
        .map(|u| u.head)
        .collect();
    assert_eq!(tx, vec![p[0].head, p[1].head]);
    let lat: Vec<u32> = p[..2].iter().map(|x| r.pcm_status(x.last()).1).collect();
    assert_eq!(lat, vec![3 * P10, 2 * P10]);
    // the guest still sees two periods in flight; the head waits from START
    assert_eq!(r.card.queued_buffers(0), Some(2));
    assert_eq!(r.card.next_deadline(0), Some(t0 + 10 * MS));
}

#[test]
fn unpaced_the_head_waits_for_two_periods_behind_it_or_its_duration() {
    let mut r = unpaced_rig();
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    let a = r.tx(0, &[1u8; P10 as usize]).0;
    assert_eq!(r.card.next_deadline(0), Some(t0 + 10 * MS));
    // one more 4 ms later: not enough, a still waits from t0
    r.now = t0 + 4 * MS;
    let b = r.tx(0, &[2u8; P10 as usize]).0;
    assert_eq!(r.card.next_deadline(0), Some(t0 + 10 * MS));
    assert!(r.at(t0 + 10 * MS - 1).is_empty());
    // the program is slow: a completes after its 10 ms, b starts waiting then
    assert_eq!(heads(&r.at(t0 + 10 * MS)), vec![a.head]);
    assert_eq!(r.pcm_status(a.last()), (OK, P10));
    assert_eq!(r.card.next_deadline(0), Some(t0 + 20 * MS));
    // two more arrive: b completes at once, c waits from then
    r.now = t0 + 12 * MS;
    let c = r.tx(0, &[3u8; P10 as usize]).0;
    assert!(r.flush().is_empty());
    r.now = t0 + 13 * MS;
    let (d, used) = r.tx(0, &[4u8; P10 as usize]);
    assert_eq!(heads(&used), vec![b.head]);
    assert_eq!(r.card.next_deadline(0), Some(t0 + 23 * MS));
    // nothing more comes: c, then d, each after its own duration; the queue runs dry
    assert_eq!(heads(&r.at(t0 + 23 * MS)), vec![c.head]);
    assert_eq!(heads(&r.at(t0 + 33 * MS)), vec![d.head]);
    assert_eq!(r.card.next_deadline(0), None);
    // back within a period of the queue running dry: no underrun
    r.now = t0 + 40 * MS;
    let e = r.tx(0, &[5u8; P10 as usize]).0;
    assert_eq!(heads(&r.at(t0 + 50 * MS)), vec![e.head]);
    assert!(
        !r.tap
            .take_records()
            .iter()
            .any(|x| matches!(x, Record::Xrun { .. })),
        "no xrun"
    );
    // back 50 ms after it ran dry: an underrun of 50 ms, counted from then (not from START)
    r.now = t0 + 100 * MS;
    let f = r.tx(0, &[6u8; P10 as usize]).0;
    assert_eq!(
        r.tap.take_records(),
        vec![Record::Xrun {
            stream: 0,
            time_ns: t0 + 100 * MS - EPOCH,
            duration_ns: 50 * MS
        }]
    );
    assert_eq!(heads(&r.at(t0 + 110 * MS)), vec![f.head]);
    let pcm = r.tap.take_pcm();
    assert_eq!(
        pcm.iter()
            .map(|p| (p.offset, p.data[0]))
            .collect::<Vec<_>>(),
        (0..6u8)
            .map(|i| (i as u64 * P10 as u64, i + 1))
            .collect::<Vec<_>>()
    );
}

#[test]
fn unpaced_drain_ends_with_a_drained_stop_and_nothing_lost() {
    let mut r = unpaced_rig();
    r.post_events(8);
    r.setup_stream(0, P10, false);
    let data: Vec<u8> = (0..6 * P10).map(|i| (i * 7 % 251) as u8).collect();
    let mut chunks = data.chunks(P10 as usize);
    for _ in 0..4 {
        r.tx(0, chunks.next().unwrap());
    }
    let (p, used) = r.submit(CTL, &[D::R(pcm_hdr(PCM_START, 0)), D::W(4)]);
    assert_eq!(r.read_u32(p.addr(1)), OK);
    assert_eq!(used.iter().filter(|u| u.queue == TX).count(), 2);
    for c in chunks {
        r.now += MS;
        r.tx(0, c);
    }
    // the program is done writing; the driver drains: it waits for the last completions,
    // which come as the last two periods would play
    assert_eq!(r.card.queued_buffers(0), Some(2));
    let t = r.now;
    assert_eq!(r.card.next_deadline(0), Some(t + 10 * MS));
    assert_eq!(
        r.at(t + 10 * MS).iter().filter(|u| u.queue == TX).count(),
        1
    );
    assert_eq!(r.card.next_deadline(0), Some(t + 20 * MS));
    assert_eq!(
        r.at(t + 20 * MS).iter().filter(|u| u.queue == TX).count(),
        1
    );
    r.tap.take_records();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    assert!(matches!(
        r.tap.take_records().as_slice(),
        [Record::Stop {
            drained: true,
            discarded_bytes: 0,
            ..
        }]
    ));
    let got: Vec<u8> = r.tap.take_pcm().into_iter().flat_map(|p| p.data).collect();
    assert!(got == data, "PCM differs");
    // every period was reported to the guest
    assert_eq!(r.card.events_posted(), 8 - 6);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_RELEASE, 0)), OK);
}

#[test]
fn unpaced_stop_keeps_the_waiting_buffers_and_they_wait_afresh_after_start() {
    let mut r = unpaced_rig();
    r.setup_stream(0, P10, true);
    let a = r.tx(0, &[1u8; P10 as usize]).0;
    let b = r.tx(0, &[2u8; P10 as usize]).0;
    r.now += 5 * MS;
    r.tap.take_records();
    // ALSA pause (or a drop): STOP with the reserve queued
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    assert!(matches!(
        r.tap.take_records().as_slice(),
        [Record::Stop { drained: false, discarded_bytes, .. }] if *discarded_bytes == 2 * P10 as u64
    ));
    assert_eq!(r.card.next_deadline(0), None);
    assert!(r.at(r.now + 100 * MS).is_empty(), "kept while stopped");
    // pause release: the head's wait starts again at START
    let t1 = r.now;
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    assert_eq!(r.card.next_deadline(0), Some(t1 + 10 * MS));
    assert_eq!(heads(&r.at(t1 + 10 * MS)), vec![a.head]);
    // and a release returns what is still queued
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
    let (p, used) = r.submit(CTL, &[D::R(pcm_hdr(PCM_RELEASE, 0)), D::W(4)]);
    assert_eq!(r.read_u32(p.addr(1)), OK);
    assert!(used.iter().any(|u| u.queue == TX && u.head == b.head));
}

#[test]
fn unpaced_a_stopped_vring_restarts_the_wait() {
    let mut r = unpaced_rig();
    r.setup_stream(0, P10, true);
    let a = r.tx(0, &[1u8; P10 as usize]).0;
    let t0 = r.now;
    r.card.stop_queue(TX, t0 + 5 * MS);
    assert_eq!(r.card.next_deadline(0), None);
    assert!(r.at(t0 + 3_000 * MS).is_empty());
    let t1 = t0 + 3_000 * MS;
    r.card.restart_queue(r.mem, TX, false, t1);
    assert!(r.flush().is_empty(), "not completed at the restart");
    assert_eq!(r.card.next_deadline(0), Some(t1 + 10 * MS));
    assert_eq!(heads(&r.at(t1 + 10 * MS)), vec![a.head]);
}

/// What snd-pcm-oss keeps ahead of the hardware (data or silence): a period and 16 frames
/// (16 frames of S16 stereo are 64 bytes). Less in flight after a completion, and it writes
/// silence where the program may be writing its next period.
const OSS_SILENCE_THRESHOLD: u32 = P10 + 64;

/// A driver like Linux's virtio_snd under the OSS emulation, at simulated times: the stream
/// starts once the first period is written, the driver keeps up to 4 periods in flight, and
/// the program writes 1 to 3 periods every 0.05 to 2 ms (never instant, but keeping up).
/// With pacing off, every completion must leave more than the OSS silence threshold in
/// flight while the program still has data (so its ring never runs dry and no silence is
/// written where it writes), and 5 s of audio must take far less than 5 s, bit-exact.
#[test]
fn unpaced_a_linux_like_player_never_sees_its_ring_drained() {
    let mut r = unpaced_rig();
    r.post_events(16);
    r.setup_stream(0, P10, false);
    let data: Vec<u8> = (0..5 * 192_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let periods: Vec<&[u8]> = data.chunks(P10 as usize).collect();
    let mut next = 0usize;
    let mut in_flight: std::collections::VecDeque<u16> = std::collections::VecDeque::new();
    let mut min_after_completion = u32::MAX;
    // the driver's completion handler
    let mut complete = |used: &[Used], in_flight: &mut std::collections::VecDeque<u16>, next| {
        for u in used.iter().filter(|u| u.queue == TX) {
            assert_eq!(in_flight.pop_front(), Some(u.head), "completion order");
            if next < periods.len() {
                let bytes = in_flight.len() as u32 * P10;
                min_after_completion = min_after_completion.min(bytes);
                assert!(
                    bytes >= OSS_SILENCE_THRESHOLD,
                    "{bytes} bytes in flight after a completion, at period {next} of {}",
                    periods.len()
                );
            }
        }
    };
    let (first, _) = r.tx(0, periods[next]);
    in_flight.push_back(first.head);
    next += 1;
    let t0 = r.now;
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let mut lcg = 12345u64;
    while next < periods.len() || !in_flight.is_empty() {
        lcg = lcg
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if next < periods.len() {
            // the program's delay before its next write: 0.05 .. 2 ms
            let used = r.advance(50_000 + (lcg >> 33) % 1_950_000);
            complete(&used, &mut in_flight, next);
            assert!(!in_flight.is_empty(), "the ring ran dry at period {next}");
            let burst = 1 + (lcg >> 20) % 3;
            for _ in 0..burst {
                if in_flight.len() == 4 || next == periods.len() {
                    break;
                }
                let (p, used) = r.tx(0, periods[next]);
                next += 1;
                in_flight.push_back(p.head);
                complete(&used, &mut in_flight, next);
            }
        } else {
            // draining: what is left completes on its own, as it would play
            let d = r.card.next_deadline(0).expect("a deadline while draining");
            let used = r.at(d);
            complete(&used, &mut in_flight, next);
        }
    }
    assert_eq!(min_after_completion, 2 * P10);
    let took = r.now - t0;
    assert!(
        took < 2_000 * MS,
        "5 s of audio took {} ms of simulated time",
        took / MS
    );
    let recs = r.tap.take_records();
    assert!(
        !recs.iter().any(|x| matches!(x, Record::Xrun { .. })),
        "no underrun: {recs:?}"
    );
    let got: Vec<u8> = r.tap.take_pcm().into_iter().flat_map(|p| p.data).collect();
    assert!(got == data, "PCM differs");
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 0)), OK);
}

#[test]
fn capture_is_filled_at_the_rate_with_injected_audio_then_silence() {
    let mut r = Rig::new();
    assert_eq!(r.ctl_status(&set_params(1, 400, 100, 2, FMT_U8, 1)), OK); // 8 kHz U8 stereo
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 1)), OK);
    let a = r.rx(1, 100).0;
    let b = r.rx(1, 100).0;
    let t0 = r.now;
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 1)), OK);
    // 16000 B/s: 100 bytes = 6.25 ms. A reader injected 151 bytes (75.5 frames).
    r.tap
        .inject(1, &(1..=151).map(|x| x as u8).collect::<Vec<_>>());
    assert!(r.at(t0 + 6_249_999).is_empty());
    let used = r.at(t0 + 6_250_000);
    assert_eq!(used.len(), 1);
    assert_eq!(
        (used[0].queue, used[0].head, used[0].len),
        (RX, a.head, 108)
    );
    assert_eq!(
        r.read(a.addr(1), 100),
        (1..=100).map(|x| x as u8).collect::<Vec<_>>()
    );
    assert_eq!(r.pcm_status(a.addr(2)), (OK, 0));
    let used = r.at(t0 + 12_500_000);
    assert_eq!((used[0].head, used[0].len), (b.head, 108));
    // 51 bytes were left: 25 whole frames (50 bytes), then U8 silence (0x80)
    let got = r.read(b.addr(1), 100);
    assert_eq!(
        &got[..50],
        &(101..=150).map(|x| x as u8).collect::<Vec<_>>()[..]
    );
    assert!(got[50..].iter().all(|&x| x == 0x80), "{got:?}");
}

#[test]
fn capture_overrun_is_an_xrun_event_for_the_guest() {
    let mut r = Rig::new();
    let ev = r.post_events(8);
    r.setup_stream(1, P10, true);
    let t0 = r.now;
    r.rx(1, P10);
    r.at(t0 + 10 * MS);
    r.tap.take_records();
    // nothing queued for 30 ms: captured audio was lost
    r.now = t0 + 40 * MS;
    let (_, used) = r.rx(1, P10);
    let xrun_events: Vec<_> = used
        .iter()
        .filter(|u| u.queue == EVT)
        .filter_map(|u| ev.iter().find(|e| e.head == u.head))
        .map(|e| event_at(&r, e))
        .filter(|(code, _)| *code == EVT_PCM_XRUN)
        .collect();
    assert_eq!(xrun_events, vec![(EVT_PCM_XRUN, 1)]);
    assert!(matches!(
        r.tap.take_records().as_slice(),
        [Record::Xrun { stream: 1, duration_ns, .. }] if *duration_ns == 30 * MS
    ));
}

#[test]
fn period_elapsed_events_follow_the_bytes() {
    let mut r = Rig::new();
    let ev = r.post_events(3);
    // period 960 bytes (5 ms), buffers of two periods
    assert_eq!(
        r.ctl_status(&set_params(0, 3840, 960, 2, FMT_S16, RATE_48000)),
        OK
    );
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 0)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let t0 = r.now;
    let a = r.tx(0, &[0u8; 1920]).0;
    let used = r.at(t0 + 10 * MS);
    assert_eq!(
        used.iter()
            .map(|u| (u.queue, u.head, u.len))
            .collect::<Vec<_>>(),
        vec![(TX, a.head, 8), (EVT, ev[0].head, 8), (EVT, ev[1].head, 8)]
    );
    assert_eq!(event_at(&r, &ev[0]), (EVT_PCM_PERIOD_ELAPSED, 0));
    assert_eq!(event_at(&r, &ev[1]), (EVT_PCM_PERIOD_ELAPSED, 0));
    // one buffer left: two more periods, one event delivered, one counted as undelivered
    r.tx(0, &[0u8; 1920]);
    let used = r.at(t0 + 20 * MS);
    assert_eq!(used.iter().filter(|u| u.queue == EVT).count(), 1);
    assert_eq!(r.card.events_undelivered(), 1);
    assert_eq!(r.card.events_posted(), 0);
}

#[test]
fn bad_event_buffers_are_returned_empty() {
    let mut r = Rig::new();
    let (p, used) = r.submit(EVT, &[D::W(7)]);
    assert_eq!((used[0].head, used[0].len), (p.head, 0));
    let (_, used) = r.submit(EVT, &[D::R(vec![0; 8]), D::W(8)]);
    assert_eq!(used[0].len, 0);
    let (_, used) = r.submit(EVT, &[D::RawW(UNMAPPED, 8)]);
    assert_eq!(used[0].len, 0);
    assert_eq!(r.card.events_posted(), 0);
    r.post_events(1);
    assert_eq!(r.card.events_posted(), 1);
}

#[test]
fn a_stopped_vring_holds_its_buffers_and_plays_on_after_restart() {
    let mut r = Rig::new();
    let ev = r.post_events(4);
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    let a = r.tx(0, &[1u8; P10 as usize]).0;
    let b = r.tx(0, &[2u8; P10 as usize]).0;
    // the VM pauses 5 ms into the first buffer: event queue first, then tx (QEMU's order)
    r.card.stop_queue(EVT, t0 + 5 * MS);
    r.card.stop_queue(TX, t0 + 5 * MS);
    assert_eq!(r.card.next_deadline(0), None, "no timer while stopped");
    assert!(
        r.at(t0 + 3_000 * MS).is_empty(),
        "nothing written to a stopped ring"
    );
    assert!(r.tap.take_pcm().is_empty());
    assert_eq!(r.card.queued_buffers(0), Some(2));
    // the VM resumes 3 s later: the ring comes back where it was (not fresh)
    let t1 = t0 + 3_000 * MS;
    r.card.restart_queue(r.mem, EVT, false, t1);
    r.card.restart_queue(r.mem, TX, false, t1);
    assert!(r.flush().is_empty());
    assert_eq!(
        r.card.next_deadline(0),
        Some(t1 + 10 * MS),
        "re-anchored, no burst"
    );
    let used = r.at(t1 + 10 * MS);
    assert_eq!(
        used.iter().map(|u| (u.queue, u.head)).collect::<Vec<_>>(),
        vec![(TX, a.head), (EVT, ev[0].head)]
    );
    assert_eq!(heads(&r.at(t1 + 20 * MS)), vec![b.head, ev[1].head]);
    let pcm = r.tap.take_pcm();
    assert_eq!(
        pcm.iter().map(|p| p.data[0]).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(pcm[0].time_ns, t1 + 10 * MS - EPOCH);
}

#[test]
fn no_event_goes_to_a_stopped_event_queue() {
    let mut r = Rig::new();
    r.post_events(4);
    r.setup_stream(0, P10, true);
    let t0 = r.now;
    r.tx(0, &[0u8; P10 as usize]);
    r.card.stop_queue(EVT, t0);
    let used = r.at(t0 + 10 * MS);
    assert_eq!(used.iter().map(|u| u.queue).collect::<Vec<_>>(), vec![TX]);
    assert_eq!(r.card.events_undelivered(), 1);
    assert_eq!(r.card.events_posted(), 4);
}

#[test]
fn a_ring_restarted_from_zero_forgets_what_the_old_one_held() {
    let mut r = Rig::new();
    r.post_events(3);
    r.setup_stream(0, P10, true);
    r.setup_stream(1, P10, true);
    r.tx(0, &[0u8; P10 as usize]);
    r.rx(1, P10);
    r.tap.take_records();
    let now = r.now;
    for q in [CTL, EVT, TX, RX] {
        r.card.stop_queue(q, now);
    }
    // the driver reset the device: every ring starts again from 0. The new driver posts
    // event buffers before its first control request.
    r.card.restart_queue(r.mem, EVT, true, now + MS);
    assert_eq!(r.card.events_posted(), 0);
    r.post_events(2);
    r.card.restart_queue(r.mem, TX, true, now + MS);
    r.card.restart_queue(r.mem, RX, true, now + MS);
    r.card.restart_queue(r.mem, CTL, true, now + MS);
    assert!(
        r.flush().is_empty(),
        "old descriptors are not returned into new rings"
    );
    assert_eq!(r.card.queued_buffers(0), Some(0));
    assert_eq!(r.card.stream_state(0), Some(StreamState::Idle));
    assert_eq!(r.card.stream_state(1), Some(StreamState::Idle));
    assert_eq!(
        r.card.events_posted(),
        2,
        "the new driver's event buffers are kept"
    );
    let recs = r.tap.take_records();
    assert_eq!(
        recs.iter().map(|x| x.kind_name()).collect::<Vec<_>>(),
        vec!["STOP", "RELEASE", "STOP", "RELEASE"]
    );
    // and the new driver can use the card
    r.setup_stream(0, P10, true);
}

#[test]
fn reset_releases_everything() {
    let mut r = Rig::new();
    r.post_events(3);
    r.setup_stream(0, P10, true);
    r.setup_stream(1, P10, false);
    let a = r.tx(0, &[0u8; P10 as usize]).0;
    let b = r.rx(1, P10).0;
    r.tap.take_records();
    let now = r.now;
    r.card.reset(Some(r.mem), now, "test");
    let used = r.flush();
    let mut got: Vec<_> = used.iter().map(|u| (u.queue, u.head)).collect();
    got.sort();
    assert_eq!(got, vec![(TX, a.head), (RX, b.head)]);
    assert_eq!(
        r.tap.take_records(),
        vec![
            Record::Stop {
                stream: 0,
                time_ns: now - EPOCH,
                drained: false,
                discarded_bytes: P10 as u64
            },
            Record::Release {
                stream: 0,
                time_ns: now - EPOCH
            },
            Record::Release {
                stream: 1,
                time_ns: now - EPOCH
            },
        ]
    );
    assert_eq!(r.card.stream_state(0), Some(StreamState::Idle));
    assert_eq!(r.card.events_posted(), 0);
    // a disconnect (no memory) forgets instead of returning, and publishes only once
    r.setup_stream(0, P10, true);
    r.tx(0, &[0u8; P10 as usize]);
    r.tap.take_records();
    r.card
        .reset::<vm_memory::GuestMemoryMmap<()>>(None, now, "disconnect");
    assert!(r.flush().is_empty());
    assert_eq!(r.tap.take_records().len(), 2);
    r.card
        .reset::<vm_memory::GuestMemoryMmap<()>>(None, now, "again");
    assert!(r.tap.take_records().is_empty());
    // and the card works afterwards
    r.setup_stream(0, P10, true);
}

#[test]
fn a_one_byte_period_does_not_flood() {
    let mut r = Rig::new();
    let ev = r.post_events(3);
    // U8 mono 8 kHz, 1-byte periods, 64 KiB buffer: 8000 periods in one second of audio
    assert_eq!(r.ctl_status(&set_params(0, 65536, 1, 1, FMT_U8, 1)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 0)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let t0 = r.now;
    let a = r.tx(0, &vec![0x80u8; 8000]).0;
    let used = r.at(t0 + 1_000_000_000);
    assert_eq!(
        used.iter()
            .filter(|u| u.queue == TX)
            .map(|u| u.head)
            .collect::<Vec<_>>(),
        vec![a.head]
    );
    assert_eq!(used.iter().filter(|u| u.queue == EVT).count(), 3);
    assert_eq!(event_at(&r, &ev[2]), (EVT_PCM_PERIOD_ELAPSED, 0));
    assert_eq!(r.card.events_undelivered(), 8000 - 3);
}

#[test]
fn the_worker_may_poll_for_the_guest_only_while_an_unpaced_head_waits_for_it() {
    let mut r = unpaced_rig();
    r.setup_stream(0, P10, false);
    assert!(!r.card.awaits_guest(), "nothing queued, not started");
    r.tx(0, &[1u8; P10 as usize]);
    assert!(
        !r.card.awaits_guest(),
        "prepared, not running: START comes first"
    );
    let (_, _) = r.submit(CTL, &[D::R(pcm_hdr(PCM_START, 0)), D::W(4)]);
    assert!(
        r.card.awaits_guest(),
        "the head waits for two periods behind it"
    );
    r.tap.0.accept.set(false);
    assert!(
        !r.card.awaits_guest(),
        "a full reader holds the stream: its notifier, not the guest, ends the wait"
    );
    r.tap.0.accept.set(true);
    // Its own duration passes: it completes and the queue is empty — nothing waits.
    let t = r.now;
    r.at(t + 10 * MS);
    assert_eq!(r.card.queued_buffers(0), Some(0));
    assert!(
        !r.card.awaits_guest(),
        "an empty queue: the guest may be done"
    );

    // At real-time pacing the clock decides, never the guest.
    let mut paced = Rig::new();
    paced.setup_stream(0, P10, true);
    paced.tx(0, &[1u8; P10 as usize]);
    assert!(!paced.card.awaits_guest());
}

#[test]
fn at_real_time_kicks_are_unneeded_only_while_every_running_stream_has_a_buffer_behind_its_head() {
    let mut r = Rig::with_config(CardConfig {
        outputs: 2,
        ..Default::default()
    });
    r.setup_stream(0, P10, false);
    r.tx(0, &[1u8; P10 as usize]);
    r.tx(0, &[2u8; P10 as usize]);
    assert!(
        !r.card.tx_kicks_unneeded(),
        "prepared, not running: START comes first"
    );
    let (_, _) = r.submit(CTL, &[D::R(pcm_hdr(PCM_START, 0)), D::W(4)]);
    assert!(
        r.card.tx_kicks_unneeded(),
        "running, one buffer behind the head, its deadline armed"
    );
    // A second stream starts with a single buffer: it could run dry without a kick.
    r.setup_stream(1, P10, false);
    r.tx(1, &[3u8; P10 as usize]);
    let (_, _) = r.submit(CTL, &[D::R(pcm_hdr(PCM_START, 1)), D::W(4)]);
    assert!(
        !r.card.tx_kicks_unneeded(),
        "stream 1 has nothing behind its head"
    );
    r.tx(1, &[4u8; P10 as usize]);
    assert!(r.card.tx_kicks_unneeded());
    // The heads play: one buffer left on each, the guest's next one is needed in time.
    let t = r.now;
    r.at(t + 10 * MS);
    assert_eq!(r.card.queued_buffers(0), Some(1));
    assert!(
        !r.card.tx_kicks_unneeded(),
        "the last buffer of a stream is playing"
    );
    r.tx(0, &[5u8; P10 as usize]);
    r.tx(1, &[6u8; P10 as usize]);
    assert!(r.card.tx_kicks_unneeded());
    // A full reader holds the clock: its notifier, not a deadline, wakes the worker.
    r.tap.0.accept.set(false);
    assert!(!r.card.tx_kicks_unneeded(), "held");
    r.tap.0.accept.set(true);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_STOP, 1)), OK);
    assert!(r.card.tx_kicks_unneeded(), "a stopped stream has no say");

    // Without pacing the worker polls instead (and only then asks for no TX kicks).
    let mut unpaced = unpaced_rig();
    unpaced.setup_stream(0, P10, false);
    unpaced.tx(0, &[1u8; P10 as usize]);
    unpaced.tx(0, &[2u8; P10 as usize]);
    unpaced.tx(0, &[3u8; P10 as usize]);
    let (_, _) = unpaced.submit(CTL, &[D::R(pcm_hdr(PCM_START, 0)), D::W(4)]);
    assert!(!unpaced.card.tx_kicks_unneeded());
}

#[test]
fn event_queue_kicks_are_unneeded_only_while_the_card_holds_an_event_buffer() {
    let mut r = Rig::new();
    assert!(
        !r.card.kicks_unneeded(EVT),
        "no event buffer: the next one is needed"
    );
    r.post_events(1);
    assert!(r.card.kicks_unneeded(EVT));
    // A period elapses: its event takes the buffer.
    r.setup_stream(0, P10, true);
    r.tx(0, &[1u8; P10 as usize]);
    let t = r.now;
    let used = r.at(t + 10 * MS);
    assert_eq!(used.iter().filter(|u| u.queue == EVT).count(), 1);
    assert!(
        !r.card.kicks_unneeded(EVT),
        "the driver's re-post is needed now"
    );
}
