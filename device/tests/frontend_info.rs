//! The running daemon, seen through a real vhost-user frontend: feature negotiation, the
//! config space, and the answers to JACK/PCM/CHMAP/CTL info queries.

use std::time::Duration;

use dsproxy_testfront::check::find_control;
use dsproxy_testfront::proto::*;
use dsproxy_testfront::{Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::{PcmFormat, PcmRate};

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn connect(d: &Daemon, opts: FrontendOpts) -> SndFrontend {
    SndFrontend::connect(&d.socket, opts)
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

const CTL_NAMES: [(&str, u32); 6] = [
    ("Master Playback Volume", CTL_TYPE_INTEGER),
    ("Master Playback Switch", CTL_TYPE_BOOLEAN),
    ("PCM Playback Volume", CTL_TYPE_INTEGER),
    ("PCM Playback Switch", CTL_TYPE_BOOLEAN),
    ("Capture Volume", CTL_TYPE_INTEGER),
    ("Capture Switch", CTL_TYPE_BOOLEAN),
];

#[test]
fn default_card_describes_itself() {
    let d = daemon(&[]);
    let mut fe = connect(&d, FrontendOpts::default());
    let offered = fe.offered_features();
    assert_ne!(offered & VIRTIO_F_VERSION_1, 0);
    assert_ne!(
        offered & VIRTIO_SND_F_CTLS,
        0,
        "controls are offered by default"
    );
    assert!(fe.ctls());

    // One output and one input stream, a jack and a channel map each, and the mixer.
    let cfg = fe.config();
    assert_eq!(
        cfg,
        SndConfig {
            jacks: 2,
            streams: 2,
            chmaps: 2,
            controls: Some(6)
        }
    );

    let pcm = fe.pcm_info().expect("PCM_INFO");
    assert_eq!(pcm.len(), 2);
    let (out, inp) = (pcm[0], pcm[1]);
    assert_eq!(out.direction, D_OUTPUT);
    assert_eq!(inp.direction, D_INPUT);
    assert_eq!((out.channels_min, out.channels_max), (1, 8));
    assert_eq!((inp.channels_min, inp.channels_max), (1, 2));
    for f in [
        PcmFormat::U8,
        PcmFormat::S16,
        PcmFormat::S24,
        PcmFormat::S32,
        PcmFormat::FLOAT,
        PcmFormat::MU_LAW,
        PcmFormat::A_LAW,
    ] {
        assert_ne!(out.formats & f.mask_bit(), 0, "output lacks {f}");
        assert_ne!(inp.formats & f.mask_bit(), 0, "input lacks {f}");
    }
    assert_eq!(out.formats & 1, 0, "IMA ADPCM cannot be clocked by bytes");
    for hz in [
        8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000,
    ] {
        let r = PcmRate::from_hz(hz).unwrap();
        assert_ne!(out.rates & r.mask_bit(), 0, "output lacks {hz} Hz");
    }
    assert_eq!(
        out.features, 0,
        "no shared-memory or message-polling features"
    );

    let jacks = fe.jack_info().expect("JACK_INFO");
    assert_eq!(jacks.len(), 2);
    assert!(jacks.iter().all(|j| j.connected == 1), "{jacks:?}");

    let maps = fe.chmap_info().expect("CHMAP_INFO");
    assert_eq!(maps.len(), 2);
    assert_eq!((maps[0].direction, maps[0].channels), (D_OUTPUT, 8));
    assert_eq!(&maps[0].positions[..2], &[CHMAP_FL, CHMAP_FR]);
    assert_eq!((maps[1].direction, maps[1].channels), (D_INPUT, 2));
    assert_eq!(maps[1].positions, vec![CHMAP_FL, CHMAP_FR]);

    let ctls = fe.ctl_info().expect("CTL_INFO");
    assert_eq!(ctls.len(), 6);
    for (name, ty) in CTL_NAMES {
        let id = find_control(&ctls, name, 0)
            .unwrap_or_else(|| panic!("no control {name:?} in {ctls:#?}"));
        let c = &ctls[id as usize];
        assert_eq!(c.ctype, ty, "{name}");
        assert_ne!(c.access & CTL_ACCESS_READ, 0, "{name} readable");
        assert_ne!(c.access & CTL_ACCESS_WRITE, 0, "{name} writable");
        if ty == CTL_TYPE_INTEGER {
            assert_eq!((c.count, c.min, c.max, c.step), (2, 0, 100, 1), "{name}");
            assert_ne!(c.access & CTL_ACCESS_TLV_READ, 0, "{name} has a dB scale");
            // Unity gain at start, so captures are bit-exact whatever the mixer says.
            assert_eq!(fe.ctl_read(id, 2).unwrap(), vec![100, 100], "{name}");
            let (st, tlv) = fe.ctl_tlv_read(id, 64).expect("TLV_READ");
            assert_eq!(st, S_OK, "{name} TLV_READ {}", status_name(st));
            assert_eq!(tlv[0], TLV_DB_SCALE, "{name} TLV type");
            assert_eq!(tlv[1], 8, "{name} TLV length");
            assert_eq!(tlv[2] as i32, -5000, "{name}: -50.00 dB at 0");
            assert_eq!(tlv[3] & 0xffff, 50, "{name}: 0.50 dB per step");
            assert_ne!(tlv[3] & 0x10000, 0, "{name}: muted at minimum");
        } else {
            assert_eq!(c.count, 1, "{name}");
            assert_eq!(fe.ctl_read(id, 1).unwrap(), vec![1], "{name} starts on");
        }
    }
    let roles: Vec<u32> = ctls.iter().map(|c| c.role).collect();
    assert!(roles.contains(&CTL_ROLE_VOLUME) && roles.contains(&CTL_ROLE_MUTE));
    assert!(roles.contains(&CTL_ROLE_GAIN), "capture volume is a gain");

    // The tap's greeting describes the same card.
    let tap = TapReader::connect(&d.tap, 0, 0, Duration::from_secs(5)).expect("tap");
    assert_eq!(tap.hello.streams.len(), 2);
    assert_eq!(tap.hello.jacks, 2);
    assert_eq!(tap.hello.chmaps, 2);
    assert_eq!(tap.hello.controls.len(), 6);
    for (i, c) in tap.hello.controls.iter().enumerate() {
        assert_eq!(
            c.name, ctls[i].name,
            "control {i} named alike on both sides"
        );
    }
    assert_eq!(tap.hello.streams[0].formats, out.formats);
    assert_eq!(tap.hello.streams[1].rates, inp.rates);

    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

#[test]
fn card_shape_follows_the_command_line() {
    let d = daemon(&["--outputs", "2", "--inputs", "1", "--channels-max", "6"]);
    let mut fe = connect(&d, FrontendOpts::default());
    let cfg = fe.config();
    assert_eq!((cfg.jacks, cfg.streams, cfg.chmaps), (3, 3, 3));
    // Master pair + a PCM pair per output + a Capture pair per input.
    assert_eq!(cfg.controls, Some(2 + 2 * 2 + 2));
    let pcm = fe.pcm_info().unwrap();
    let dirs: Vec<u8> = pcm.iter().map(|p| p.direction).collect();
    assert_eq!(dirs, vec![D_OUTPUT, D_OUTPUT, D_INPUT]);
    assert_eq!(pcm[1].channels_max, 6);
    let ctls = fe.ctl_info().unwrap();
    assert!(
        find_control(&ctls, "PCM Playback Volume", 1).is_some(),
        "{ctls:#?}"
    );
    assert!(find_control(&ctls, "PCM Playback Switch", 1).is_some());
    let maps = fe.chmap_info().unwrap();
    assert_eq!(maps[0].channels, 6);
}

#[test]
fn without_controls_the_config_has_no_controls_field() {
    let d = daemon(&["--no-controls"]);
    let fe = connect(&d, FrontendOpts::default());
    assert_eq!(fe.offered_features() & VIRTIO_SND_F_CTLS, 0);
    assert_eq!(fe.config().controls, None);
    drop(fe);

    // A driver that does not know control elements, on a card that has them.
    let d = daemon(&[]);
    let mut fe = connect(
        &d,
        FrontendOpts {
            want_ctls: false,
            ..FrontendOpts::default()
        },
    );
    assert!(!fe.ctls());
    assert_eq!(fe.config().streams, 2);
    assert_eq!(fe.pcm_info().unwrap().len(), 2);
}

#[test]
fn bad_queries_get_bad_msg_and_the_queue_keeps_working() {
    let d = daemon(&[]);
    let mut fe = connect(&d, FrontendOpts::default());
    let cases: [(&str, u32, u32, u32, u32); 6] = [
        ("start past the end", R_PCM_INFO, 2, 1, PCM_INFO_LEN as u32),
        ("count past the end", R_PCM_INFO, 1, 2, PCM_INFO_LEN as u32),
        (
            "start+count overflows",
            R_PCM_INFO,
            1,
            u32::MAX,
            PCM_INFO_LEN as u32,
        ),
        ("item size too small", R_PCM_INFO, 0, 1, 16),
        ("jack past the end", R_JACK_INFO, 5, 1, JACK_INFO_LEN as u32),
        ("chmap size too small", R_CHMAP_INFO, 0, 2, 8),
    ];
    for (what, code, start, count, size) in cases {
        // The reply buffer is sized for what can reasonably be asked; the overflowing count
        // gets a small one.
        let body = (count.min(4) * size) as usize;
        let req = query_info(code, start, count, size);
        let r = fe
            .ctl_request(&req, &[4, body.max(1)])
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", d.log_tail(20)));
        assert_eq!(r.status, S_BAD_MSG, "{what}: got {}", status_name(r.status));
        // The next good request is served.
        assert_eq!(fe.pcm_info().unwrap().len(), 2, "after {what}");
    }
    // A reply buffer too small for the items asked for.
    let r = fe
        .ctl_request(&query_info(R_PCM_INFO, 0, 2, PCM_INFO_LEN as u32), &[4, 40])
        .unwrap();
    assert_eq!(
        r.status,
        S_BAD_MSG,
        "short reply buffer: {}",
        status_name(r.status)
    );
    // A bigger item size than the structure is fine: each item is padded.
    let r = fe.query_raw(R_PCM_INFO, 0, 2, 40).unwrap();
    assert_eq!(r.status, S_OK, "oversized items: {}", status_name(r.status));
    let items = &r.bufs[1];
    assert_eq!(items[24], D_OUTPUT);
    assert_eq!(items[40 + 24], D_INPUT);

    // Unknown request codes are refused, not ignored.
    let r = fe.ctl_request(&0x0999u32.to_le_bytes(), &[4]).unwrap();
    assert!(
        r.status == S_NOT_SUPP || r.status == S_BAD_MSG,
        "unknown request answered {}",
        status_name(r.status)
    );
    // Jacks cannot be remapped.
    let st = fe.jack_remap(0, 0, 0).unwrap();
    assert!(
        st == S_NOT_SUPP || st == S_BAD_MSG,
        "JACK_REMAP {}",
        status_name(st)
    );
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}
