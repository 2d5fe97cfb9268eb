//! Control-queue requests over mock virtqueues: the info queries, jacks, and every way a
//! control message can be malformed — each answered with the right status, and the next
//! good request still served.

mod handlers_util;
use handlers_util::*;

/// A good request that must work after any rejection.
fn still_serves(r: &mut Rig) {
    let (len, resp) = r.ctl(&query(PCM_INFO, 0, 2, 32), 4 + 64);
    assert_eq!(len, 68);
    assert_eq!(status_of(&resp), OK);
    assert_eq!(resp[4 + 24], 0, "stream 0 is an output");
    assert_eq!(resp[4 + 32 + 24], 1, "stream 1 is an input");
}

#[test]
fn jack_info_describes_one_connected_jack_per_stream() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&query(JACK_INFO, 0, 2, 24), 4 + 48);
    assert_eq!(len, 52);
    assert_eq!(status_of(&resp), OK);
    for j in 0..2 {
        let item = &resp[4 + 24 * j..4 + 24 * (j + 1)];
        assert_eq!(
            u32_at(item, 0),
            0,
            "hda_fn_nid: both streams are function 0"
        );
        assert_eq!(u32_at(item, 4), 0, "no jack features");
        assert_eq!(item[16], 1, "connected");
        assert_eq!(&item[17..24], &[0; 7]);
    }
    assert_eq!(
        u32_at(&resp[4..], 12) & 0x10,
        0x10,
        "output jack is output-capable"
    );
    assert_eq!(
        u32_at(&resp[28..], 12) & 0x20,
        0x20,
        "input jack is input-capable"
    );
}

#[test]
fn pcm_info_reports_formats_rates_and_channels() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&query(PCM_INFO, 1, 1, 32), 4 + 32);
    assert_eq!(len, 36);
    assert_eq!(status_of(&resp), OK);
    let item = &resp[4..];
    let formats = u64::from_le_bytes(item[8..16].try_into().unwrap());
    let rates = u64::from_le_bytes(item[16..24].try_into().unwrap());
    for f in [1u8, 2, 4, 5, 15, 17, 19] {
        assert_ne!(formats & (1 << f), 0, "format {f} offered");
    }
    assert_eq!(formats & 1, 0, "IMA ADPCM not offered");
    for rate in 1..=12 {
        assert_ne!(rates & (1 << rate), 0, "rate code {rate} offered");
    }
    assert_eq!(
        (item[24], item[25], item[26]),
        (1, 1, 2),
        "input, 1..2 channels"
    );
}

#[test]
fn chmap_info_gives_standard_positions() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&query(CHMAP_INFO, 0, 2, 24), 4 + 48);
    assert_eq!(len, 52);
    assert_eq!(status_of(&resp), OK);
    let out = &resp[4..28];
    assert_eq!((out[4], out[5]), (0, 8));
    assert_eq!(
        &out[6..14],
        &[3, 4, 5, 6, 7, 8, 9, 10],
        "FL FR RL RR FC LFE SL SR"
    );
    let inp = &resp[28..52];
    assert_eq!((inp[4], inp[5]), (1, 2));
    assert_eq!(&inp[6..9], &[3, 4, 0]);
}

#[test]
fn larger_item_size_is_padded_with_zeros() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&query(PCM_INFO, 0, 2, 40), 4 + 80);
    assert_eq!(len, 84);
    assert_eq!(status_of(&resp), OK);
    assert_eq!(&resp[4 + 32..4 + 40], &[0; 8]);
    assert_eq!(resp[4 + 40 + 24], 1, "second item at a 40-byte stride");
}

#[test]
fn zero_count_query_is_just_a_status() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&query(JACK_INFO, 2, 0, 24), 4);
    assert_eq!((len, status_of(&resp)), (4, OK));
}

#[test]
fn bad_query_ranges_and_sizes_are_bad_msg() {
    let mut r = Rig::new();
    for (code, start, count, size) in [
        (JACK_INFO, 0, 3, 24),       // past the end
        (JACK_INFO, 2, 1, 24),       // start past the end
        (PCM_INFO, 1, u32::MAX, 32), // start + count overflows
        (PCM_INFO, u32::MAX, 1, 32), // start + count overflows
        (PCM_INFO, 0, 1, 31),        // item smaller than the struct
        (CHMAP_INFO, 0, 1, 0),       // zero size
        (JACK_INFO, 0, 1, 1 << 20),  // absurd stride
        (CHMAP_INFO, 0, 2, 23),
    ] {
        let (len, resp) = r.ctl(&query(code, start, count, size), 4 + 64);
        assert_eq!(len, 4, "{code:#x} {start} {count} {size}");
        assert_eq!(
            status_of(&resp),
            BAD_MSG,
            "{code:#x} {start} {count} {size}"
        );
        assert_eq!(resp[4], 0xEE, "nothing written after the status");
        still_serves(&mut r);
    }
}

#[test]
fn response_buffer_too_small_is_bad_msg() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&query(PCM_INFO, 0, 2, 32), 4 + 63);
    assert_eq!((len, status_of(&resp)), (4, BAD_MSG));
    still_serves(&mut r);
}

#[test]
fn response_scattered_over_several_descriptors() {
    let mut r = Rig::new();
    let (p, used) = r.submit(
        CTL,
        &[
            D::R(query(JACK_INFO, 0, 2, 24)),
            D::W(4),
            D::W(30),
            D::W(18),
        ],
    );
    assert_eq!(used[0].len, 52);
    assert_eq!(r.read_u32(p.addr(1)), OK);
    // jack 0's `connected` byte is byte 16 of the payload: in the second descriptor.
    assert_eq!(r.read(p.addr(2) + 16, 1), vec![1]);
    // jack 1 starts at payload byte 24: 6 bytes into descriptor 3... its connected byte
    // is payload byte 40 = third descriptor offset 10.
    assert_eq!(r.read(p.addr(3) + 10, 1), vec![1]);
}

#[test]
fn request_split_over_several_descriptors() {
    let mut r = Rig::new();
    let q = query(PCM_INFO, 0, 1, 32);
    let (p, used) = r.submit(
        CTL,
        &[
            D::R(q[..3].to_vec()),
            D::R(q[3..11].to_vec()),
            D::R(q[11..].to_vec()),
            D::W(36),
        ],
    );
    assert_eq!(used[0].len, 36);
    assert_eq!(r.read_u32(p.addr(3)), OK);
}

#[test]
fn indirect_chain_is_served() {
    let mut r = Rig::new();
    let p = r.post_indirect(CTL, &[D::R(query(PCM_INFO, 0, 1, 32)), D::W(36)]);
    let used = r.kick(CTL);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].head, p.head);
    assert_eq!(used[0].len, 36);
    assert_eq!(r.read_u32(p.addr(1)), OK);
}

#[test]
fn short_header_is_bad_msg() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&[1, 0], 4);
    assert_eq!((len, status_of(&resp)), (4, BAD_MSG));
    // a query header cut short after the code
    let (len, resp) = r.ctl(&le(&[PCM_INFO, 0, 1]), 4 + 32);
    assert_eq!((len, status_of(&resp)), (4, BAD_MSG));
    // SET_PARAMS and PREPARE without their fields
    assert_eq!(r.ctl_status(&le(&[PCM_SET_PARAMS, 0, 4096, 1024])), BAD_MSG);
    assert_eq!(r.ctl_status(&le(&[PCM_PREPARE])), BAD_MSG);
    still_serves(&mut r);
}

#[test]
fn no_readable_part_is_bad_msg() {
    let mut r = Rig::new();
    let (p, used) = r.submit(CTL, &[D::W(4)]);
    assert_eq!(used[0].len, 4);
    assert_eq!(r.read_u32(p.addr(0)), BAD_MSG);
    still_serves(&mut r);
}

#[test]
fn no_room_for_status_returns_empty() {
    let mut r = Rig::new();
    // no writable descriptor at all
    let (_, used) = r.submit(CTL, &[D::R(query(PCM_INFO, 0, 1, 32))]);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].len, 0);
    // a 3-byte writable descriptor
    let (p, used) = r.submit(CTL, &[D::R(query(PCM_INFO, 0, 1, 32)), D::W(3)]);
    assert_eq!(used[0].len, 0);
    assert_eq!(r.read(p.addr(1), 3), vec![0xEE; 3], "nothing written");
    still_serves(&mut r);
}

#[test]
fn readable_after_writable_is_bad_msg() {
    let mut r = Rig::new();
    let (p, used) = r.submit(CTL, &[D::W(36), D::R(query(PCM_INFO, 0, 1, 32))]);
    assert_eq!(used[0].len, 4);
    assert_eq!(r.read_u32(p.addr(0)), BAD_MSG);
    still_serves(&mut r);
}

#[test]
fn unmapped_request_is_bad_msg() {
    let mut r = Rig::new();
    let (p, used) = r.submit(CTL, &[D::RawR(UNMAPPED, 16), D::W(36)]);
    assert_eq!(used[0].len, 4);
    assert_eq!(r.read_u32(p.addr(1)), BAD_MSG);
    // a response buffer straddling the end of memory: nothing can be written
    let (_, used) = r.submit(
        CTL,
        &[
            D::R(query(PCM_INFO, 0, 1, 32)),
            D::RawW(32 * 1024 * 1024 - 2, 36),
        ],
    );
    assert_eq!(used[0].len, 0);
    still_serves(&mut r);
}

#[test]
fn unknown_request_code_is_not_supp() {
    let mut r = Rig::new();
    assert_eq!(r.ctl_status(&le(&[0x0999, 0, 0, 0])), NOT_SUPP);
    assert_eq!(r.ctl_status(&le(&[0, 0])), NOT_SUPP);
    still_serves(&mut r);
}

#[test]
fn jack_remap_is_not_supported_and_bad_ids_are_bad_msg() {
    let mut r = Rig::new();
    assert_eq!(r.ctl_status(&le(&[JACK_REMAP, 0, 0, 0])), NOT_SUPP);
    assert_eq!(r.ctl_status(&le(&[JACK_REMAP, 2, 0, 0])), BAD_MSG);
    assert_eq!(r.ctl_status(&le(&[JACK_REMAP, 0])), BAD_MSG, "short");
    still_serves(&mut r);
}

#[test]
fn many_requests_in_one_kick_each_get_an_answer() {
    let mut r = Rig::new();
    let good = r.post(CTL, &[D::R(query(PCM_INFO, 0, 1, 32)), D::W(36)]);
    let bad = r.post(CTL, &[D::R(vec![7]), D::W(4)]);
    let good2 = r.post(CTL, &[D::R(query(JACK_INFO, 1, 1, 24)), D::W(28)]);
    let used = r.kick(CTL);
    assert_eq!(
        used.iter().map(|u| (u.head, u.len)).collect::<Vec<_>>(),
        vec![(good.head, 36), (bad.head, 4), (good2.head, 28)]
    );
    assert_eq!(r.read_u32(good.addr(1)), OK);
    assert_eq!(r.read_u32(bad.addr(1)), BAD_MSG);
    assert_eq!(r.read_u32(good2.addr(1)), OK);
    assert!(r.card.rejected() >= 1);
}

#[test]
fn each_rejection_is_one_structured_log_line() {
    use dsproxy_device::error::REJECT_TARGET;
    let mut r = Rig::new();
    logcap::start();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 5)), BAD_MSG);
    let lines = logcap::lines(REJECT_TARGET);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (level, text) = &lines[0];
    assert_eq!(*level, log::Level::Warn);
    for part in [
        "queue=control",
        "request=PCM_START",
        "code=0x0104",
        "stream=5",
        "status=BAD_MSG",
        "reason=\"unknown stream id 5\"",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    // a TX buffer for a stream in the wrong state, and a status-less one
    logcap::start();
    r.tx(0, &[0u8; 4]);
    r.submit(TX, &[D::R(vec![0; 8])]);
    let lines = logcap::lines(REJECT_TARGET);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].1.contains("queue=tx") && lines[0].1.contains("stream=0"));
    assert!(
        lines[0].1.contains("status=BAD_MSG") && lines[0].1.contains("not allowed in state IDLE")
    );
    assert!(lines[1].1.contains("status=none"), "{}", lines[1].1);
    // good requests log no rejection
    logcap::start();
    still_serves(&mut r);
    assert!(logcap::lines(REJECT_TARGET).is_empty());
}

#[test]
fn a_flood_of_rejections_is_logged_a_few_lines_a_second_and_counted_exactly() {
    use dsproxy_device::error::REJECT_TARGET;
    use dsproxy_device::reject_log::{LINES_PER_WINDOW, WINDOW_NS};
    let mut r = Rig::new();
    logcap::start();
    // 100 requests for an unknown stream within one second, and 2 of another class.
    let t0 = r.now;
    for i in 0..100u64 {
        r.now = t0 + i * (WINDOW_NS / 200);
        assert_eq!(
            r.ctl_status(&pcm_hdr(PCM_START, 5)),
            BAD_MSG,
            "every one answered"
        );
    }
    for _ in 0..2 {
        assert_eq!(r.ctl_status(&[0x99, 0, 0, 0]), NOT_SUPP);
    }
    still_serves(&mut r);
    let lines = logcap::lines(REJECT_TARGET);
    let unknown = lines
        .iter()
        .filter(|(_, l)| l.contains("unknown stream id 5"))
        .count();
    assert_eq!(unknown, LINES_PER_WINDOW as usize, "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|(_, l)| l.contains("unknown request code"))
            .count(),
        2,
        "another class has its own budget: {lines:?}"
    );
    assert!(!lines.iter().any(|(_, l)| l.contains("suppressed")));
    assert_eq!(r.card.rejected(), 102, "counted exactly");
    assert_eq!(r.card.rejections().count("control", "unknown_stream"), 100);

    // The second is over: the next event logs the summary, and the class has lines again.
    logcap::start();
    r.now = t0 + WINDOW_NS + 1;
    r.card.flush_reject_log(r.now);
    let lines = logcap::lines(REJECT_TARGET);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, log::Level::Warn);
    let want = format!(
        "suppressed {} similar rejections queue=control class=unknown_stream",
        100 - LINES_PER_WINDOW
    );
    assert!(lines[0].1.contains(&want), "{}", lines[0].1);
    r.card.flush_reject_log(r.now + WINDOW_NS);
    assert_eq!(logcap::lines(REJECT_TARGET).len(), 1, "summed up once");
    logcap::start();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 5)), BAD_MSG);
    assert_eq!(logcap::lines(REJECT_TARGET).len(), 1);

    // A flood cut short by the frontend going away is summed up then, with the counts.
    for _ in 0..20 {
        r.ctl_status(&pcm_hdr(PCM_START, 5));
    }
    logcap::start();
    r.card.finish_reject_log();
    let lines = logcap::lines(REJECT_TARGET);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0]
        .1
        .contains(&format!("suppressed {} similar", 21 - LINES_PER_WINDOW)));
    assert!(
        lines[1].1.contains("123 guest requests rejected")
            && lines[1].1.contains("control/unknown_stream=121")
            && lines[1].1.contains("control/unknown_code=2"),
        "{}",
        lines[1].1
    );
}
