//! Indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC, which the card offers and aero's
//! Windows 7 driver uses for every submission): the good shapes work on every queue, and the
//! hostile ones — a table too long, nested, misaligned, unmapped, pointing past itself, one
//! huge table shared by every available entry — are refused without reading past a bound,
//! and the next good buffer is still served.

mod handlers_util;
use dsproxy_device::chain::MAX_DESCRIPTORS;
use handlers_util::*;
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// Output stream 0 started, S16 stereo 48 kHz, 10 ms periods.
fn rig() -> Rig {
    let mut r = Rig::new();
    r.setup_stream(0, 1920, true);
    r
}

/// A good TX buffer, indirect, is taken and played.
fn still_serves(r: &mut Rig) {
    let p = r.post_indirect(
        TX,
        &[
            D::R(0u32.to_le_bytes().to_vec()),
            D::R(vec![9; 1920]),
            D::W(8),
        ],
    );
    assert!(r.kick(TX).is_empty(), "a good buffer is held");
    let used = r.advance(20_000_000);
    assert!(
        used.iter().any(|u| u.head == p.head && u.len == 8),
        "{used:?}"
    );
    assert_eq!(r.pcm_status(p.last()), (OK, 0));
}

/// Kicks TX and expects one chain returned with nothing written and one more rejection.
fn refused_empty(r: &mut Rig, head: u16) {
    let rejected = r.card.rejected();
    let used = r.kick(TX);
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!((used[0].head, used[0].len), (head, 0));
    assert_eq!(r.card.rejected(), rejected + 1);
    r.tap.take_pcm();
}

#[test]
fn a_long_indirect_chain_under_the_cap_plays_in_order() {
    let mut r = rig();
    // Header, 1000 readable descriptors of 4 bytes (one frame each), status.
    let mut parts = vec![D::R(0u32.to_le_bytes().to_vec())];
    let mut want = Vec::new();
    for i in 0..1000u32 {
        parts.push(D::R(i.to_le_bytes().to_vec()));
        want.extend_from_slice(&i.to_le_bytes());
    }
    parts.push(D::W(8));
    let p = r.post_indirect(TX, &parts);
    assert!(r.kick(TX).is_empty());
    let used = r.advance(30_000_000);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    let got: Vec<u8> = r.tap.take_pcm().into_iter().flat_map(|p| p.data).collect();
    assert_eq!(got, want);
}

#[test]
fn a_table_longer_than_the_cap_is_refused() {
    let mut r = rig();
    let hdr = r.buf(&0u32.to_le_bytes());
    let frame = r.buf(&[1, 2, 3, 4]);
    let status = r.buf(&[0xee; 8]);
    let n = MAX_DESCRIPTORS + 10;
    let mut descs = vec![(hdr, 4, NEXT, 1u16)];
    for i in 1..n - 1 {
        descs.push((frame, 4, NEXT, (i + 1) as u16));
    }
    descs.push((status, 8, WRITE, 0));
    let table = r.write_table(&descs);
    let head = r.post_indirect_raw(TX, table, 16 * n as u32);
    // The status descriptor lies past the cap, so there is nowhere to write BAD_MSG.
    refused_empty(&mut r, head);
    assert_eq!(r.read(status, 8), vec![0xee; 8], "nothing written");
    still_serves(&mut r);
}

#[test]
fn nested_indirect_tables_are_refused() {
    let mut r = rig();
    let hdr = r.buf(&0u32.to_le_bytes());
    let inner = r.write_table(&[(hdr, 4, 0, 0)]);
    let outer = r.write_table(&[(hdr, 4, NEXT, 1), (inner, 16, INDIRECT, 0)]);
    let head = r.post_indirect_raw(TX, outer, 32);
    refused_empty(&mut r, head);
    still_serves(&mut r);
}

#[test]
fn misaligned_unmapped_and_self_escaping_tables_are_refused() {
    let mut r = rig();
    let hdr = r.buf(&0u32.to_le_bytes());
    let pcm = r.buf(&[5; 1920]);
    let status = r.buf(&[0xee; 8]);
    let table = r.write_table(&[
        (hdr, 4, NEXT, 1),
        (pcm, 1920, NEXT, 2),
        (status, 8, WRITE, 0),
    ]);
    // A length that is not a whole number of descriptors.
    let head = r.post_indirect_raw(TX, table, 40);
    refused_empty(&mut r, head);
    // A table outside guest memory.
    let head = r.post_indirect_raw(TX, UNMAPPED, 48);
    refused_empty(&mut r, head);
    // A `next` pointing past the table's end: the chain stops there (header only).
    let escaping = r.write_table(&[(hdr, 4, NEXT, 7), (status, 8, WRITE, 0)]);
    let head = r.post_indirect_raw(TX, escaping, 32);
    refused_empty(&mut r, head);
    // An empty table.
    let head = r.post_indirect_raw(TX, table, 0);
    refused_empty(&mut r, head);
    still_serves(&mut r);
}

#[test]
fn one_huge_table_behind_every_available_entry_costs_a_bounded_walk() {
    let mut r = rig();
    let hdr = r.buf(&0u32.to_le_bytes());
    let frame = r.buf(&[1, 2, 3, 4]);
    // The largest table a descriptor can name: 65535 entries (1 MiB), a loop of frames.
    let n = 65535usize;
    let mut descs = vec![(hdr, 4, NEXT, 1u16)];
    for i in 1..n {
        descs.push((frame, 4, NEXT, if i + 1 < n { (i + 1) as u16 } else { 1 }));
    }
    let table = r.write_table(&descs);
    let heads: Vec<u16> = (0..64)
        .map(|_| r.post_indirect_raw(TX, table, 16 * n as u32))
        .collect();
    let rejected = r.card.rejected();
    let t = std::time::Instant::now();
    let used = r.kick(TX);
    let took = t.elapsed();
    assert_eq!(used.len(), heads.len());
    assert!(used.iter().all(|u| u.len == 0));
    assert_eq!(r.card.rejected(), rejected + heads.len() as u64);
    // Each chain is read up to the cap, not to the table's 65535 entries: 64 chains walk at
    // most 64 x 4101 descriptors. Generous, for debug builds on a loaded machine.
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    r.tap.take_pcm();
    still_serves(&mut r);
}

#[test]
fn indirect_control_event_and_rx_chains_work() {
    let mut r = rig();
    // Control: PCM_INFO through an indirect table.
    let p = r.post_indirect(CTL, &[D::R(query(PCM_INFO, 0, 2, 32)), D::W(4 + 64)]);
    let used = r.kick(CTL);
    assert_eq!((used[0].head, used[0].len), (p.head, 68));
    assert_eq!(r.read_u32(p.addr(1)), OK);
    // RX: stream 1 (input) prepared and started, one indirect buffer filled.
    r.setup_stream(1, 1920, true);
    let p = r.post_indirect(
        RX,
        &[D::R(1u32.to_le_bytes().to_vec()), D::W(1920), D::W(8)],
    );
    assert!(r.kick(RX).is_empty());
    let used = r.advance(20_000_000);
    let u = used.iter().find(|u| u.queue == RX).expect("rx completed");
    assert_eq!((u.head, u.len), (p.head, 1928));
    // Event queue: an indirect event buffer is kept for an event (a refused one would be
    // returned at once).
    r.post_indirect(EVT, &[D::W(8)]);
    assert!(
        r.kick(EVT).is_empty(),
        "an indirect event buffer is kept for an event"
    );
}
