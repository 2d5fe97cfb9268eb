//! Control elements (VIRTIO_SND_F_CTLS): INFO, READ, WRITE, TLV, ENUM_ITEMS, bad ids and
//! values, what readers are told, and CTL_NOTIFY when a reader changes a control.

mod handlers_util;
use dsproxy_device::tap::TapRequest;
use dsproxy_device::CardConfig;
use dsproxy_wire::record::{ControlOrigin, Record};
use handlers_util::*;

const MASTER_VOL: u32 = 0;
const MASTER_SW: u32 = 1;
const PCM_VOL: u32 = 2;
const CAPTURE_VOL: u32 = 4;

fn still_serves(r: &mut Rig) {
    let (len, resp) = r.ctl(&ctl_hdr(CTL_READ, MASTER_SW), 4 + 512);
    assert_eq!((len, status_of(&resp)), (516, OK));
}

#[test]
fn info_lists_the_mixer() {
    let mut r = Rig::with_ctls();
    let (len, resp) = r.ctl(&query(CTL_INFO, 0, 6, 96), 4 + 6 * 96);
    assert_eq!(len, 4 + 6 * 96);
    assert_eq!(status_of(&resp), OK);
    let names: Vec<String> = (0..6)
        .map(|i| {
            let item = &resp[4 + 96 * i..4 + 96 * (i + 1)];
            let n = &item[24..68];
            String::from_utf8(n.iter().take_while(|&&b| b != 0).copied().collect()).unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "Master Playback Volume",
            "Master Playback Switch",
            "PCM Playback Volume",
            "PCM Playback Switch",
            "Capture Volume",
            "Capture Switch"
        ]
    );
    let vol = &resp[4..100];
    assert_eq!(u32_at(vol, 4), 1, "role VOLUME");
    assert_eq!(u32_at(vol, 8), 1, "type INTEGER");
    assert_eq!(u32_at(vol, 12), 0b1_0011, "read, write, TLV read");
    assert_eq!(u32_at(vol, 16), 2, "two channels");
    assert_eq!(&vol[68..72], &[0; 4], "padding before the union");
    assert_eq!(
        (u32_at(vol, 72), u32_at(vol, 76), u32_at(vol, 80)),
        (0, 100, 1)
    );
    let sw = &resp[100..196];
    assert_eq!(
        (u32_at(sw, 4), u32_at(sw, 8), u32_at(sw, 16)),
        (2, 0, 1),
        "MUTE BOOLEAN x1"
    );
    let cap = &resp[4 + 4 * 96..4 + 5 * 96];
    assert_eq!(u32_at(cap, 4), 3, "role GAIN");
    assert_eq!(u32_at(cap, 20), 0, "index 0");
}

#[test]
fn info_bad_ranges() {
    let mut r = Rig::with_ctls();
    for (start, count, size) in [(0, 7, 96), (6, 1, 96), (0, 1, 95), (u32::MAX, 2, 96)] {
        let (len, resp) = r.ctl(&query(CTL_INFO, start, count, size), 4 + 96);
        assert_eq!(
            (len, status_of(&resp)),
            (4, BAD_MSG),
            "{start} {count} {size}"
        );
        still_serves(&mut r);
    }
}

#[test]
fn read_and_write_values() {
    let mut r = Rig::with_ctls();
    let (_, resp) = r.ctl(&ctl_hdr(CTL_READ, MASTER_VOL), 516);
    assert_eq!(status_of(&resp), OK);
    assert_eq!(
        (u32_at(&resp, 4), u32_at(&resp, 8), u32_at(&resp, 12)),
        (100, 100, 0)
    );
    r.tap.take_records();

    assert_eq!(r.ctl_status(&ctl_write(PCM_VOL, &[40, 60])), OK);
    assert_eq!(
        r.tap.take_records(),
        vec![Record::Control {
            id: PCM_VOL,
            origin: ControlOrigin::Guest,
            values: vec![40, 60]
        }]
    );
    let (_, resp) = r.ctl(&ctl_hdr(CTL_READ, PCM_VOL), 516);
    assert_eq!((u32_at(&resp, 4), u32_at(&resp, 8)), (40, 60));

    // the same value again is not news to readers (the old dsproxy's fix)
    assert_eq!(r.ctl_status(&ctl_write(PCM_VOL, &[40, 60])), OK);
    assert!(r.tap.take_records().is_empty());

    assert_eq!(r.ctl_status(&ctl_write(MASTER_SW, &[0])), OK);
    assert_eq!(r.card.controls().get(MASTER_SW).unwrap().values, vec![0]);
}

#[test]
fn bad_values_are_bad_msg_and_change_nothing() {
    let mut r = Rig::with_ctls();
    r.tap.take_records();
    for (id, v) in [
        (MASTER_VOL, vec![101, 0]),
        (MASTER_VOL, vec![-1, 0]),
        (CAPTURE_VOL, vec![50, i32::MAX]),
        (MASTER_SW, vec![2]),
        (MASTER_SW, vec![-1]),
    ] {
        assert_eq!(r.ctl_status(&ctl_write(id, &v)), BAD_MSG, "{id} {v:?}");
        still_serves(&mut r);
    }
    assert_eq!(
        r.card.controls().get(MASTER_VOL).unwrap().values,
        vec![100, 100]
    );
    assert!(r.tap.take_records().is_empty());
}

#[test]
fn short_requests_and_responses() {
    let mut r = Rig::with_ctls();
    // CTL_WRITE without the full value
    let mut w = ctl_write(MASTER_VOL, &[1, 1]);
    w.truncate(8 + 100);
    assert_eq!(r.ctl_status(&w), BAD_MSG);
    // CTL_READ with no room for the value
    let (len, resp) = r.ctl(&ctl_hdr(CTL_READ, MASTER_VOL), 4 + 511);
    assert_eq!((len, status_of(&resp)), (4, BAD_MSG));
    // a header without the control id
    assert_eq!(r.ctl_status(&le(&[CTL_READ])), BAD_MSG);
    still_serves(&mut r);
}

#[test]
fn unknown_control_ids() {
    let mut r = Rig::with_ctls();
    for code in [
        CTL_READ,
        CTL_WRITE,
        CTL_TLV_READ,
        CTL_ENUM_ITEMS,
        CTL_TLV_WRITE,
    ] {
        let req = if code == CTL_WRITE {
            ctl_write(6, &[0])
        } else {
            ctl_hdr(code, 6)
        };
        let (len, resp) = r.ctl(&req, 4 + 512);
        assert_eq!((len, status_of(&resp)), (4, BAD_MSG), "{code:#x}");
        still_serves(&mut r);
    }
}

#[test]
fn tlv_read_gives_a_db_scale() {
    let mut r = Rig::with_ctls();
    let (p, used) = r.submit(
        CTL,
        &[D::R(ctl_hdr(CTL_TLV_READ, MASTER_VOL)), D::W(4), D::W(64)],
    );
    assert_eq!(used[0].len, 4 + 16);
    assert_eq!(r.read_u32(p.addr(1)), OK);
    let tlv = r.read(p.addr(2), 16);
    assert_eq!(u32_at(&tlv, 0), 1, "SNDRV_CTL_TLVT_DB_SCALE");
    assert_eq!(u32_at(&tlv, 4), 8);
    assert_eq!(u32_at(&tlv, 8) as i32, -5000, "-50.00 dB at 0");
    assert_eq!(
        u32_at(&tlv, 12),
        50 | 0x1_0000,
        "0.50 dB steps, muted at minimum"
    );
    // a switch has no TLV; a TLV buffer too small
    let (len, resp) = r.ctl(&ctl_hdr(CTL_TLV_READ, MASTER_SW), 64);
    assert_eq!((len, status_of(&resp)), (4, NOT_SUPP));
    let (len, resp) = r.ctl(&ctl_hdr(CTL_TLV_READ, MASTER_VOL), 4 + 15);
    assert_eq!((len, status_of(&resp)), (4, BAD_MSG));
}

#[test]
fn tlv_write_command_and_enum_items_are_refused() {
    let mut r = Rig::with_ctls();
    let mut w = ctl_hdr(CTL_TLV_WRITE, MASTER_VOL);
    w.extend_from_slice(&le(&[1, 8, 0, 0]));
    assert_eq!(r.ctl_status(&w), NOT_SUPP);
    assert_eq!(
        r.ctl_status(&ctl_hdr(CTL_TLV_COMMAND, MASTER_VOL)),
        NOT_SUPP
    );
    let (len, resp) = r.ctl(&ctl_hdr(CTL_ENUM_ITEMS, MASTER_VOL), 4 + 44);
    assert_eq!((len, status_of(&resp)), (4, BAD_MSG));
    still_serves(&mut r);
}

#[test]
fn without_negotiation_controls_are_not_supported() {
    let mut r = Rig::new(); // offered, but the driver did not ack VIRTIO_SND_F_CTLS
    for req in [
        query(CTL_INFO, 0, 1, 96),
        ctl_hdr(CTL_READ, 0),
        ctl_write(0, &[1, 1]),
    ] {
        let (len, resp) = r.ctl(&req, 4 + 512);
        assert_eq!((len, status_of(&resp)), (4, NOT_SUPP));
    }
    // --no-controls: even an ack does not enable them
    let mut r = Rig::with_config(CardConfig {
        controls: false,
        ..Default::default()
    });
    r.card.set_features(1);
    let (len, resp) = r.ctl(&ctl_hdr(CTL_READ, 0), 516);
    assert_eq!((len, status_of(&resp)), (4, NOT_SUPP));
}

#[test]
fn reader_change_notifies_the_guest() {
    let mut r = Rig::with_ctls();
    let ev = r.post_events(2);
    r.tap.take_records();
    r.tap.0.requests.borrow_mut().push(TapRequest::SetControl {
        id: PCM_VOL,
        values: vec![10, 20],
    });
    let used = r.notify_tap();
    assert_eq!(used.len(), 1);
    assert_eq!(
        (used[0].queue, used[0].head, used[0].len),
        (EVT, ev[0].head, 8)
    );
    let e = r.read(ev[0].addr(0), 8);
    assert_eq!(u32_at(&e, 0), EVT_CTL_NOTIFY);
    assert_eq!(u16::from_le_bytes([e[4], e[5]]) as u32, PCM_VOL);
    assert_eq!(u16::from_le_bytes([e[6], e[7]]), 1, "value changed");
    assert_eq!(
        r.tap.take_records(),
        vec![Record::Control {
            id: PCM_VOL,
            origin: ControlOrigin::Reader,
            values: vec![10, 20]
        }]
    );
    let (_, resp) = r.ctl(&ctl_hdr(CTL_READ, PCM_VOL), 516);
    assert_eq!((u32_at(&resp, 4), u32_at(&resp, 8)), (10, 20));
    // an out-of-range or unchanged request from a reader changes nothing, notifies nobody
    r.tap.0.requests.borrow_mut().extend([
        TapRequest::SetControl {
            id: PCM_VOL,
            values: vec![10, 200],
        },
        TapRequest::SetControl {
            id: PCM_VOL,
            values: vec![10, 20],
        },
        TapRequest::SetControl {
            id: 99,
            values: vec![1],
        },
    ]);
    assert!(r.notify_tap().is_empty());
    assert!(r.tap.take_records().is_empty());
    assert_eq!(r.card.events_posted(), 1);
}
