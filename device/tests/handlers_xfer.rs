//! TX and RX buffers: the good shapes (split over descriptors, indirect), and every
//! malformed one — each returned with BAD_MSG in its status (or empty when it has no room
//! for one), a count in `rejected`, and the next good buffer still served.

mod handlers_util;
use handlers_util::*;

/// Stream 0 (output) and 1 (input) are prepared, S16 stereo 48 kHz, 1920-byte (10 ms)
/// periods, 7680-byte buffers.
fn rig() -> Rig {
    let mut r = Rig::new();
    r.setup_stream(0, 1920, false);
    r.setup_stream(1, 1920, false);
    r
}

/// A good TX buffer is taken (held while prepared) and a good RX one too.
fn still_serves(r: &mut Rig) {
    let before_tx = r.card.queued_buffers(0).unwrap();
    let (_, used) = r.tx(0, &[1u8; 1920]);
    assert!(used.is_empty(), "a good TX buffer is held: {used:?}");
    assert_eq!(r.card.queued_buffers(0), Some(before_tx + 1));
    let before_rx = r.card.queued_buffers(1).unwrap();
    let (_, used) = r.rx(1, 1920);
    assert!(used.is_empty());
    assert_eq!(r.card.queued_buffers(1), Some(before_rx + 1));
}

/// Submits a TX chain that must be rejected with `status` written in its last descriptor.
fn tx_rejected(r: &mut Rig, descs: &[D], status: u32) {
    let rejected = r.card.rejected();
    let (p, used) = r.submit(TX, descs);
    assert_eq!(used.len(), 1, "{descs:?}");
    assert_eq!((used[0].queue, used[0].head), (TX, p.head));
    assert_eq!(used[0].len, 8, "{descs:?}");
    assert_eq!(r.pcm_status(p.last()), (status, 0), "{descs:?}");
    assert_eq!(r.card.rejected(), rejected + 1);
    still_serves(r);
}

fn rx_rejected(r: &mut Rig, descs: &[D], status: u32) {
    let (p, used) = r.submit(RX, descs);
    assert_eq!(used.len(), 1, "{descs:?}");
    assert_eq!(used[0].len, 8, "{descs:?}");
    let (addr, len) = *p.bufs.last().unwrap();
    assert_eq!(
        r.pcm_status(addr + len as u64 - 8),
        (status, 0),
        "{descs:?}"
    );
    still_serves(r);
}

fn hdr(stream: u32) -> D {
    D::R(stream.to_le_bytes().to_vec())
}

#[test]
fn good_tx_is_held_until_its_deadline() {
    let mut r = rig();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let t0 = r.now;
    let (p, used) = r.tx(0, &[9u8; 1920]);
    assert!(used.is_empty());
    assert!(r.at(t0 + 9_999_999).is_empty());
    let used = r.at(t0 + 10_000_000);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    assert_eq!(r.pcm_status(p.last()), (OK, 0));
}

#[test]
fn pcm_split_over_descriptors_and_header_sharing_a_descriptor() {
    let mut r = rig();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    // header and the first 100 PCM bytes in one descriptor, the rest in two more
    let pcm: Vec<u8> = (0..1920u32).map(|i| (i % 251) as u8).collect();
    let mut first = 0u32.to_le_bytes().to_vec();
    first.extend_from_slice(&pcm[..100]);
    r.submit(
        TX,
        &[
            D::R(first),
            D::R(pcm[100..1000].to_vec()),
            D::R(pcm[1000..].to_vec()),
            D::W(8),
        ],
    );
    r.advance(10_000_000);
    let got = r.tap.take_pcm();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, pcm);
}

#[test]
fn status_split_over_two_descriptors() {
    let mut r = rig();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let (p, _) = r.submit(TX, &[hdr(0), D::R(vec![0; 1920]), D::W(3), D::W(5)]);
    let used = r.advance(10_000_000);
    assert_eq!(used[0].len, 8);
    assert_eq!(r.read(p.addr(2), 3), OK.to_le_bytes()[..3].to_vec());
    assert_eq!(r.read(p.addr(3), 1), vec![OK.to_le_bytes()[3]]);
}

#[test]
fn indirect_tx_chain_works() {
    let mut r = rig();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let p = r.post_indirect(TX, &[hdr(0), D::R(vec![3; 1920]), D::W(8)]);
    assert!(r.kick(TX).is_empty());
    let used = r.advance(10_000_000);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    assert_eq!(r.tap.take_pcm()[0].data, vec![3; 1920]);
}

#[test]
fn short_header() {
    let mut r = rig();
    tx_rejected(&mut r, &[D::R(vec![0, 0, 0]), D::W(8)], BAD_MSG);
    rx_rejected(&mut r, &[D::R(vec![1, 0]), D::W(1928)], BAD_MSG);
}

#[test]
fn missing_status() {
    let mut r = rig();
    // no writable descriptor: nothing can be written, returned with length 0
    let (p, used) = r.submit(TX, &[hdr(0), D::R(vec![0; 1920])]);
    assert_eq!((used[0].head, used[0].len), (p.head, 0));
    // a status too short
    let (p, used) = r.submit(TX, &[hdr(0), D::R(vec![0; 1920]), D::W(4)]);
    assert_eq!(used[0].len, 0);
    assert_eq!(r.read(p.last(), 4), vec![0xEE; 4], "untouched");
    let (_, used) = r.submit(RX, &[hdr(1), D::W(7)]);
    assert_eq!(used[0].len, 0);
    still_serves(&mut r);
}

#[test]
fn wrong_direction_descriptors() {
    let mut r = rig();
    // TX with a writable PCM area (status is then the last 8 of 1928 writable bytes)
    let (p, used) = r.submit(TX, &[hdr(0), D::W(1928)]);
    assert_eq!(used[0].len, 8);
    assert_eq!(r.read_u32(p.last() + 1920), BAD_MSG);
    // TX whose status is readable: nothing writable at all
    let (_, used) = r.submit(TX, &[hdr(0), D::R(vec![0; 1920]), D::R(vec![0; 8])]);
    assert_eq!(used[0].len, 0);
    // readable after writable
    tx_rejected(
        &mut r,
        &[hdr(0), D::W(8), D::R(vec![0; 8]), D::W(8)],
        BAD_MSG,
    );
    // RX with PCM in readable descriptors
    rx_rejected(&mut r, &[hdr(1), D::R(vec![0; 1920]), D::W(8)], BAD_MSG);
    // RX whose header is writable: no readable header
    rx_rejected(&mut r, &[D::W(4), D::W(1920), D::W(8)], BAD_MSG);
}

#[test]
fn unknown_stream() {
    let mut r = rig();
    tx_rejected(&mut r, &[hdr(2), D::R(vec![0; 1920]), D::W(8)], BAD_MSG);
    tx_rejected(
        &mut r,
        &[hdr(u32::MAX), D::R(vec![0; 1920]), D::W(8)],
        BAD_MSG,
    );
    rx_rejected(&mut r, &[hdr(7), D::W(1920), D::W(8)], BAD_MSG);
}

#[test]
fn wrong_direction_stream() {
    let mut r = rig();
    // output stream 0 on the rx queue, input stream 1 on the tx queue
    rx_rejected(&mut r, &[hdr(0), D::W(1920), D::W(8)], BAD_MSG);
    tx_rejected(&mut r, &[hdr(1), D::R(vec![0; 1920]), D::W(8)], BAD_MSG);
}

#[test]
fn not_a_whole_number_of_frames() {
    let mut r = rig();
    for n in [1usize, 2, 3, 1921, 1918] {
        tx_rejected(&mut r, &[hdr(0), D::R(vec![0; n]), D::W(8)], BAD_MSG);
    }
    rx_rejected(&mut r, &[hdr(1), D::W(1922), D::W(8)], BAD_MSG);
}

#[test]
fn empty_buffer() {
    let mut r = rig();
    tx_rejected(&mut r, &[hdr(0), D::W(8)], BAD_MSG);
    rx_rejected(&mut r, &[hdr(1), D::W(8)], BAD_MSG);
}

#[test]
fn oversize_buffer() {
    let mut r = rig();
    // the stream's buffer is 7680 bytes
    tx_rejected(&mut r, &[hdr(0), D::R(vec![0; 7684]), D::W(8)], BAD_MSG);
    rx_rejected(&mut r, &[hdr(1), D::W(7684), D::W(8)], BAD_MSG);
    // exactly the buffer size is fine
    let (_, used) = r.tx(0, &vec![0; 7680]);
    assert!(used.is_empty());
}

#[test]
fn unmapped_pcm() {
    let mut r = rig();
    tx_rejected(&mut r, &[hdr(0), D::RawR(UNMAPPED, 1920), D::W(8)], BAD_MSG);
    rx_rejected(&mut r, &[hdr(1), D::RawW(UNMAPPED, 1920), D::W(8)], BAD_MSG);
    // header unmapped
    tx_rejected(
        &mut r,
        &[D::RawR(UNMAPPED, 4), D::R(vec![0; 1920]), D::W(8)],
        BAD_MSG,
    );
    // status unmapped: returned empty
    let (_, used) = r.submit(TX, &[hdr(0), D::R(vec![0; 1920]), D::RawW(UNMAPPED, 8)]);
    assert_eq!(used[0].len, 0);
    still_serves(&mut r);
}

#[test]
fn stream_not_ready_for_buffers() {
    let mut r = Rig::new();
    // idle: no params
    let (p, used) = r.tx(0, &[0u8; 4]);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    assert_eq!(r.pcm_status(p.last()), (BAD_MSG, 0));
    let (p, _) = r.rx(1, 4);
    assert_eq!(r.pcm_status(p.last()), (BAD_MSG, 0));
    // params set but not prepared
    assert_eq!(
        r.ctl_status(&set_params(0, 7680, 1920, 2, FMT_S16, RATE_48000)),
        OK
    );
    let (p, used) = r.tx(0, &[0u8; 1920]);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    assert_eq!(r.pcm_status(p.last()), (BAD_MSG, 0));
    // released
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 0)), OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_RELEASE, 0)), OK);
    let (p, _) = r.tx(0, &[0u8; 1920]);
    assert_eq!(r.pcm_status(p.last()), (BAD_MSG, 0));
}

#[test]
fn rx_with_extra_readable_bytes() {
    let mut r = rig();
    rx_rejected(&mut r, &[D::R(vec![1, 0, 0, 0, 0]), D::W(1928)], BAD_MSG);
}

#[test]
fn a_batch_mixing_good_and_bad_buffers() {
    let mut r = rig();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let good1 = r.post(TX, &[hdr(0), D::R(vec![1; 1920]), D::W(8)]);
    let bad = r.post(TX, &[hdr(0), D::R(vec![2; 3]), D::W(8)]);
    let good2 = r.post(TX, &[hdr(0), D::R(vec![3; 1920]), D::W(8)]);
    let used = r.kick(TX);
    assert_eq!(
        used.iter().map(|u| u.head).collect::<Vec<_>>(),
        vec![bad.head]
    );
    let used = r.advance(20_000_000);
    assert_eq!(
        used.iter().map(|u| u.head).collect::<Vec<_>>(),
        vec![good1.head, good2.head]
    );
    let pcm = r.tap.take_pcm();
    assert_eq!(
        pcm.iter().map(|p| p.data[0]).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!((pcm[0].offset, pcm[1].offset), (0, 1920));
}

/// A TX buffer whose PCM no longer maps when it completes (the memory table changed under
/// it) is returned with IO_ERR, and none of it reaches the readers, not even the part that
/// still maps.
#[test]
fn tx_buffer_unmapped_at_completion_is_io_err_and_publishes_nothing() {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let mut r = rig();
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), OK);
    let (p, used) = r.submit(
        TX,
        &[hdr(0), D::R(vec![1; 1920]), D::R(vec![2; 1920]), D::W(8)],
    );
    assert!(used.is_empty());
    // The new map has a hole where the second PCM descriptor was.
    let (hole, hole_len) = (p.addr(2), 1920);
    let remapped = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), hole as usize),
        (
            GuestAddress(hole + hole_len),
            MEM_SIZE - (hole + hole_len) as usize,
        ),
    ])
    .unwrap();
    r.card.service_all(&remapped, r.now + 20_000_000);
    let used = r.card.take_used();
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    let status: u32 = remapped.read_obj(GuestAddress(p.addr(3))).unwrap();
    assert_eq!(status, IO_ERR);
    assert!(r.tap.take_pcm().is_empty());
}

/// A stream holds at most twice its buffer (here 2 x 7680 bytes = 8 periods): the ninth
/// period is completed at once with IO_ERR, counted and logged as `hold_limit`; what was
/// held stays held, and RELEASE returns it.
#[test]
fn a_stream_holds_at_most_twice_its_buffer() {
    let mut r = rig();
    let mut held = Vec::new();
    for _ in 0..8 {
        let (p, used) = r.tx(0, &[1u8; 1920]);
        assert!(used.is_empty(), "a buffer within the limit is held");
        held.push(p);
    }
    let (p, used) = r.tx(0, &[2u8; 1920]);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    assert_eq!(r.pcm_status(p.last()), (IO_ERR, 0));
    assert_eq!(r.card.rejections().count("tx", "hold_limit"), 1);
    assert_eq!(r.card.queued_buffers(0), Some(8));
    // The input stream's buffers are another queue's: not affected.
    let (_, used) = r.rx(1, 1920);
    assert!(used.is_empty());
    let rel = r.post(CTL, &[D::R(pcm_hdr(PCM_RELEASE, 0)), D::W(4)]);
    let used = r.kick(CTL);
    assert_eq!(used.len(), 9, "RELEASE returns every held buffer: {used:?}");
    assert_eq!(r.read_u32(rel.last()), OK);
    for p in held {
        assert_eq!(r.pcm_status(p.last()), (OK, 0));
    }
}

/// A queue holds at most as many chains as its ring has entries (a driver has no more
/// descriptors): the same head made available again is refused beyond that.
#[test]
fn a_queue_holds_at_most_its_ring_size_in_chains() {
    let mut r = rig();
    r.card.set_ring_size(RX, 4);
    for _ in 0..4 {
        let (_, used) = r.rx(1, 4);
        assert!(used.is_empty());
    }
    let (p, used) = r.rx(1, 4);
    assert_eq!((used.len(), used[0].head, used[0].len), (1, p.head, 8));
    let (addr, len) = *p.bufs.last().unwrap();
    assert_eq!(r.pcm_status(addr + len as u64 - 8), (IO_ERR, 0));
    assert_eq!(r.card.rejections().count("rx", "hold_limit"), 1);
    assert_eq!(r.card.queued_buffers(1), Some(4));
}

/// Event buffers: at most the ring size posted; one more is returned at once, empty.
#[test]
fn event_buffers_are_held_up_to_the_ring_size() {
    let mut r = rig();
    r.card.set_ring_size(EVT, 2);
    r.post_events(2);
    assert_eq!(r.card.events_posted(), 2);
    let p = r.post(EVT, &[D::W(8)]);
    let used = r.kick(EVT);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].head, used[0].len), (p.head, 0));
    assert_eq!(r.card.events_posted(), 2);
    assert_eq!(r.card.rejections().count("event", "hold_limit"), 1);
}

/// Descriptors cost the daemon memory whatever the bytes they carry: a queue holds at most
/// 4 per ring entry plus one per page of what its streams may hold (here 4 x 4 + 15360 / 4096
/// rounded up = 20), so a buffer in 4-byte pieces is refused even though its bytes fit.
#[test]
fn a_queue_holds_a_bounded_number_of_descriptors() {
    let mut r = rig();
    r.card.set_ring_size(TX, 4);
    let mut pieces = vec![hdr(0)];
    pieces.extend((0..30).map(|i| D::R(vec![i as u8; 4])));
    pieces.push(D::W(8));
    let (p, used) = r.submit(TX, &pieces);
    assert_eq!((used.len(), used[0].head, used[0].len), (1, p.head, 8));
    assert_eq!(r.pcm_status(p.last()), (IO_ERR, 0));
    assert_eq!(r.card.rejections().count("tx", "hold_limit"), 1);
    // A buffer laid out like a driver's (a page or two) is still taken.
    let (_, used) = r.tx(0, &[1u8; 1920]);
    assert!(used.is_empty());
}
