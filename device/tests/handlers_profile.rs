//! `--profile aero`: the dialect of the aero project's Windows 7 virtio-snd driver (12-byte
//! PCM_INFO requests, status codes 0-3, 8-byte PCM transfer headers, no jacks or channel
//! maps, hda_fn_nid = stream id), and the standard card refusing what is not virtio-snd.

mod handlers_util;
use dsproxy_device::config::CardConfig;
use dsproxy_device::profile::Profile;
use handlers_util::*;

// aero's status codes.
const A_OK: u32 = 0;
const A_BAD_MSG: u32 = 1;
const A_NOT_SUPP: u32 = 2;

fn aero() -> Rig {
    Rig::with_config(CardConfig {
        profile: Profile::Aero,
        controls: false,
        ..CardConfig::default()
    })
}

/// aero's PCM_INFO: {code, start_id, count}, one writable buffer for status + entries.
fn aero_pcm_info(r: &mut Rig) -> (u32, Vec<u8>) {
    r.ctl(&le(&[PCM_INFO, 0, 2]), 4 + 2 * 32)
}

#[test]
fn aero_pcm_info_without_size_gives_both_streams_with_their_ids() {
    let mut r = aero();
    let (len, resp) = aero_pcm_info(&mut r);
    assert_eq!(len, 68);
    assert_eq!(status_of(&resp), A_OK);
    let (s0, s1) = (&resp[4..36], &resp[36..68]);
    // The driver reads the first word as the stream id.
    assert_eq!((u32_at(s0, 0), u32_at(s1, 0)), (0, 1));
    assert_eq!((s0[24], s1[24]), (0, 1), "output, then input");
    assert!(s0[25] <= 2 && 2 <= s0[26], "stream 0 offers 2 channels");
    assert!(s1[25] <= 1 && 1 <= s1[26], "stream 1 offers 1 channel");
    let formats = u64::from_le_bytes(s0[8..16].try_into().unwrap());
    let rates = u64::from_le_bytes(s0[16..24].try_into().unwrap());
    assert_ne!(formats & (1 << FMT_S16), 0);
    assert_ne!(rates & (1 << RATE_48000), 0);
}

#[test]
fn the_standard_card_refuses_a_query_without_size() {
    let mut r = Rig::new();
    let (len, resp) = r.ctl(&le(&[PCM_INFO, 0, 2]), 4 + 2 * 32);
    assert_eq!((len, status_of(&resp)), (4, BAD_MSG));
    // ...and pairs output 0 and input 0 on node 0 (one ALSA device for Linux).
    let (_, resp) = r.ctl(&query(PCM_INFO, 0, 2, 32), 4 + 2 * 32);
    assert_eq!((u32_at(&resp, 4), u32_at(&resp, 36)), (0, 0));
}

#[test]
fn aero_status_codes_count_from_zero() {
    let mut r = aero();
    // A full-size query works too.
    let (_, resp) = r.ctl(&query(PCM_INFO, 0, 2, 32), 4 + 64);
    assert_eq!(status_of(&resp), A_OK);
    assert_eq!(
        r.ctl_status(&set_params(0, 7680, 1920, 2, FMT_S16, RATE_48000)),
        A_OK
    );
    assert_eq!(
        r.ctl_status(&set_params(0, 7680, 1921, 2, FMT_S16, RATE_48000)),
        A_BAD_MSG
    );
    assert_eq!(r.ctl_status(&le(&[0x0777, 0])), A_NOT_SUPP);
    // No jacks and no channel maps to ask about.
    let (_, resp) = r.ctl(&query(JACK_INFO, 0, 1, 24), 4 + 24);
    assert_eq!(status_of(&resp), A_BAD_MSG);
    let (_, resp) = r.ctl(&query(CHMAP_INFO, 0, 1, 24), 4 + 24);
    assert_eq!(status_of(&resp), A_BAD_MSG);
    assert_eq!(r.ctl_status(&le(&[JACK_REMAP, 0, 0, 0])), A_BAD_MSG);
}

#[test]
fn aero_tx_has_an_8_byte_header_and_only_the_pcm_reaches_the_tap() {
    let mut r = aero();
    assert_eq!(
        r.ctl_status(&set_params(0, 7680, 1920, 2, FMT_S16, RATE_48000)),
        A_OK
    );
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 0)), A_OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 0)), A_OK);
    let pcm: Vec<u8> = (0..1920u32).map(|i| (i * 7) as u8).collect();
    // The driver's SubmitPeriod layout: header and PCM in one descriptor, then the status.
    let mut first = le(&[0, 0]);
    first.extend_from_slice(&pcm);
    let (p1, used) = r.submit(TX, &[D::R(first), D::W(8)]);
    assert!(used.is_empty());
    // SubmitSg: the header alone, then the PCM in pieces, then the status.
    let (p2, used) = r.submit(
        TX,
        &[
            D::R(le(&[0, 0])),
            D::R(pcm[..1000].to_vec()),
            D::R(pcm[1000..].to_vec()),
            D::W(8),
        ],
    );
    assert!(used.is_empty());
    let used = r.advance(25_000_000);
    assert_eq!(used.len(), 2);
    assert_eq!(r.pcm_status(p1.last()).0, A_OK);
    assert_eq!(r.pcm_status(p2.last()).0, A_OK);
    let got: Vec<u8> = r.tap.take_pcm().into_iter().flat_map(|p| p.data).collect();
    assert_eq!(got, [pcm.clone(), pcm].concat());
}

#[test]
fn aero_rx_has_an_8_byte_header() {
    let mut r = aero();
    assert_eq!(
        r.ctl_status(&set_params(1, 3840, 960, 1, FMT_S16, RATE_48000)),
        A_OK
    );
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_PREPARE, 1)), A_OK);
    assert_eq!(r.ctl_status(&pcm_hdr(PCM_START, 1)), A_OK);
    r.tap.inject(1, &[0x42; 960]);
    let (p, used) = r.submit(RX, &[D::R(le(&[1, 0])), D::W(960), D::W(8)]);
    assert!(used.is_empty());
    let used = r.advance(20_000_000);
    assert_eq!((used[0].head, used[0].len), (p.head, 968));
    assert_eq!(r.read(p.addr(1), 960), vec![0x42; 960]);
    assert_eq!(r.pcm_status(p.addr(2)).0, A_OK);
    // A 4-byte (standard) header is a malformed request here: BAD_MSG, aero's code.
    let (p, used) = r.submit(RX, &[D::R(le(&[1])), D::W(960), D::W(8)]);
    assert_eq!((used[0].head, used[0].len), (p.head, 8));
    assert_eq!(r.pcm_status(p.addr(2)).0, A_BAD_MSG);
}

#[test]
fn the_standard_card_takes_aeros_header_as_pcm() {
    // Why the profile exists: on a standard card aero's 8-byte header puts its reserved
    // word into the audio (one extra frame per period), and its RX buffers are refused.
    let mut r = Rig::new();
    r.setup_stream(0, 1920, true);
    let mut first = le(&[0, 0]);
    first.extend_from_slice(&[7; 1920]);
    r.submit(TX, &[D::R(first), D::W(8)]);
    r.advance(25_000_000);
    let got: Vec<u8> = r.tap.take_pcm().into_iter().flat_map(|p| p.data).collect();
    assert_eq!(got.len(), 1924);
    assert_eq!(&got[..4], &[0, 0, 0, 0]);
}
