//! Mixer controls as a guest's OSS programs see them, and as host playback applies them.
//!
//! Linux's virtio_snd turns each control element into an ALSA control with the element's
//! name; snd-mixer-oss then builds `/dev/mixer` channels from names of the form
//! `<base> [Playback|Capture] [Volume|Switch]` (ALSA's OSS-emulation document has the table
//! reproduced in [`OSS_CHANNELS`]). This module runs that mapping backwards so `-e` can say
//! `SOUND_MIXER_WRITE_PCM => 75:75` for a change of "PCM Playback Volume", and forwards so
//! `--mixer pcm=75` finds that control.

use dsproxy_wire::record::ControlDesc;

/// An OSS mixer channel and the ALSA control snd-mixer-oss puts behind it by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OssChannel {
    /// The channel's constant without `SOUND_MIXER_` (`VOLUME`, `PCM`, `IGAIN`, …).
    pub name: &'static str,
    /// Its name in soundcard.h's `SOUND_DEVICE_NAMES` (`vol`, `pcm`, `igain`, …): what OSS
    /// mixer programs call it.
    pub label: &'static str,
    /// The ALSA control base name and index behind it.
    pub base: &'static str,
    pub index: u32,
}

const fn ch(name: &'static str, label: &'static str, base: &'static str, index: u32) -> OssChannel {
    OssChannel {
        name,
        label,
        base,
        index,
    }
}

/// The OSS channels snd-mixer-oss assigns by default (ALSA's OSS-emulation document), in
/// channel number order. RECLEV (11) is not assigned by snd-mixer-oss; see [`oss_channel_named`].
pub const OSS_CHANNELS: &[OssChannel] = &[
    ch("VOLUME", "vol", "Master", 0),
    ch("BASS", "bass", "Tone Control - Bass", 0),
    ch("TREBLE", "treble", "Tone Control - Treble", 0),
    ch("SYNTH", "synth", "Synth", 0),
    ch("PCM", "pcm", "PCM", 0),
    ch("SPEAKER", "speaker", "PC Speaker", 0),
    ch("LINE", "line", "Line", 0),
    ch("MIC", "mic", "Mic", 0),
    ch("CD", "cd", "CD", 0),
    ch("IMIX", "mix", "Monitor Mix", 0),
    ch("ALTPCM", "pcm2", "PCM", 1),
    ch("IGAIN", "igain", "Capture", 0),
    ch("OGAIN", "ogain", "Playback", 0),
    ch("LINE1", "line1", "Aux", 0),
    ch("LINE2", "line2", "Aux", 1),
    ch("LINE3", "line3", "Aux", 2),
    ch("DIGITAL1", "dig1", "Digital", 0),
    ch("DIGITAL2", "dig2", "Digital", 1),
    ch("DIGITAL3", "dig3", "Digital", 2),
    ch("PHONEIN", "phin", "Phone", 0),
    ch("PHONEOUT", "phout", "Phone", 1),
    ch("VIDEO", "video", "Video", 0),
    ch("RADIO", "radio", "Radio", 0),
    ch("MONITOR", "monitor", "Monitor", 0),
];

/// The OSS channel a name given by a user stands for: a channel constant (`VOLUME`, `PCM`,
/// …) or its `SOUND_DEVICE_NAMES` label (`vol`, `pcm`, …), in any case. RECLEV (`reclev`,
/// `rec`), the OSS recording level, is taken as IGAIN: snd-mixer-oss leaves RECLEV
/// unassigned, and on a virtio card the recording level is the Capture control.
pub fn oss_channel_named(name: &str) -> Option<&'static OssChannel> {
    let name = if name.eq_ignore_ascii_case("reclev") || name.eq_ignore_ascii_case("rec") {
        "IGAIN"
    } else {
        name
    };
    OSS_CHANNELS
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name) || c.label.eq_ignore_ascii_case(name))
}

/// Whether a control is a level or an on/off switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Volume,
    Switch,
}

/// Which direction a control name says it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlDir {
    Playback,
    Capture,
    /// `<base> Volume` / `<base> Switch` with no direction word.
    Global,
}

/// An ALSA control name taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName<'a> {
    pub base: &'a str,
    pub dir: ControlDir,
    pub kind: ControlKind,
}

/// Splits `"<base> [Playback|Capture] <Volume|Switch>"`. `"Capture Volume"` has the base
/// "Capture" and no direction word, which is how snd-mixer-oss reads it too.
pub fn parse_name(name: &str) -> Option<ParsedName<'_>> {
    const SUFFIXES: [(&str, ControlDir, ControlKind); 6] = [
        (
            " Playback Volume",
            ControlDir::Playback,
            ControlKind::Volume,
        ),
        (
            " Playback Switch",
            ControlDir::Playback,
            ControlKind::Switch,
        ),
        (" Capture Volume", ControlDir::Capture, ControlKind::Volume),
        (" Capture Switch", ControlDir::Capture, ControlKind::Switch),
        (" Volume", ControlDir::Global, ControlKind::Volume),
        (" Switch", ControlDir::Global, ControlKind::Switch),
    ];
    SUFFIXES.iter().find_map(|&(suffix, dir, kind)| {
        let base = name.strip_suffix(suffix)?;
        (!base.is_empty()).then_some(ParsedName { base, dir, kind })
    })
}

/// The OSS mixer channel name (`VOLUME`, `PCM`, `IGAIN`, …) a control feeds, if any.
pub fn oss_channel(name: &str, index: u32) -> Option<&'static str> {
    let p = parse_name(name)?;
    OSS_CHANNELS
        .iter()
        .find(|c| c.base == p.base && c.index == index)
        .map(|c| c.name)
}

/// The control behind an OSS channel on a card: of the controls named `<base> … <kind>` with
/// the channel's base and index, the Playback one, else the direction-less one, else the
/// Capture one (snd-mixer-oss's order for a channel's volume).
pub fn channel_control<'a>(
    ch: &OssChannel,
    controls: &'a [ControlDesc],
    kind: ControlKind,
) -> Option<&'a ControlDesc> {
    let rank = |d: ControlDir| match d {
        ControlDir::Playback => 0,
        ControlDir::Global => 1,
        ControlDir::Capture => 2,
    };
    controls
        .iter()
        .filter(|c| c.index == ch.index)
        .filter_map(|c| {
            let p = parse_name(&c.name)?;
            (p.base == ch.base && p.kind == kind).then(|| (rank(p.dir), c))
        })
        .min_by_key(|(r, _)| *r)
        .map(|(_, c)| c)
}

/// Whether a control is an on/off switch: a boolean, or named `… Switch`.
pub fn is_switch(desc: &ControlDesc) -> bool {
    desc.ctype == 0 || parse_name(&desc.name).map(|p| p.kind) == Some(ControlKind::Switch)
}

/// A value as an OSS percentage, rounded as snd-mixer-oss does:
/// `((v - min) * 100 + range / 2) / range`.
pub fn to_percent(value: i64, min: i64, max: i64) -> u32 {
    if max <= min {
        return 0;
    }
    let range = (max as i128) - (min as i128);
    let v = (value as i128).clamp(min as i128, max as i128) - min as i128;
    ((v * 100 + range / 2) / range) as u32
}

/// Whether a boolean control's value lets sound through. ALSA switches are "on" = audible;
/// a boolean the device gave the mute role without a `Switch` name is taken to mean
/// "1 = muted".
pub fn switch_is_audible(desc: &ControlDesc, value: i64) -> bool {
    let is_switch_name = parse_name(&desc.name).map(|p| p.kind) == Some(ControlKind::Switch);
    if desc.role == 2 && !is_switch_name {
        value == 0
    } else {
        value != 0
    }
}

/// The linear gain a volume control's value stands for: from its dB scale when it has one,
/// otherwise proportional to the value's place in the range.
pub fn gain(desc: &ControlDesc, value: i64) -> f32 {
    if desc.max <= desc.min {
        return 1.0;
    }
    // In i128: the range is the device's, and `max - min` of i64s need not fit an i64.
    let min = desc.min as i128;
    let v = (value as i128).clamp(min, desc.max as i128) - min;
    if desc.db_step != 0 {
        let steps = v / desc.step.max(1) as i128;
        let centi_db = desc.db_min as f64 + steps as f64 * desc.db_step as f64;
        10f64.powf(centi_db / 2000.0).min(1.0) as f32
    } else {
        (v as f64 / (desc.max as i128 - min) as f64) as f32
    }
}

/// Whether a control applies to host playback of the output stream with output index
/// `out_index` (0 for the card's first output stream): the Master playback controls, and the
/// PCM playback controls of that stream.
pub fn affects_playback(desc: &ControlDesc, out_index: u32) -> bool {
    match parse_name(&desc.name) {
        Some(p) if p.dir != ControlDir::Capture => match p.base {
            "Master" => true,
            "PCM" => desc.index == out_index,
            _ => false,
        },
        _ => false,
    }
}

/// Per-channel gains for playback of a stream with `channels` channels, from the current
/// values of the controls that affect it.
pub fn playback_gains<'a>(
    controls: impl Iterator<Item = (&'a ControlDesc, &'a [i64])>,
    out_index: u32,
    channels: usize,
) -> Vec<f32> {
    let mut g = vec![1.0f32; channels];
    for (desc, values) in controls {
        if !affects_playback(desc, out_index) || values.is_empty() {
            continue;
        }
        let kind = parse_name(&desc.name).map(|p| p.kind);
        for (c, gc) in g.iter_mut().enumerate() {
            let v = values[c.min(values.len() - 1)];
            *gc *= match (kind, desc.ctype) {
                (Some(ControlKind::Switch), _) | (_, 0) => {
                    if switch_is_audible(desc, v) {
                        1.0
                    } else {
                        0.0
                    }
                }
                _ => gain(desc, v),
            };
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(name: &str, index: u32, ctype: u32, min: i64, max: i64) -> ControlDesc {
        ControlDesc {
            id: 0,
            name: name.into(),
            index,
            role: if ctype == 0 { 2 } else { 1 },
            ctype,
            count: 2,
            min,
            max,
            step: 1,
            db_min: 0,
            db_step: 0,
        }
    }

    #[test]
    fn names_map_to_oss_channels() {
        assert_eq!(oss_channel("Master Playback Volume", 0), Some("VOLUME"));
        assert_eq!(oss_channel("Master Playback Switch", 0), Some("VOLUME"));
        assert_eq!(oss_channel("PCM Playback Volume", 0), Some("PCM"));
        assert_eq!(oss_channel("PCM Playback Volume", 1), Some("ALTPCM"));
        assert_eq!(oss_channel("Capture Volume", 0), Some("IGAIN"));
        assert_eq!(oss_channel("Capture Switch", 0), Some("IGAIN"));
        assert_eq!(oss_channel("Mic Capture Volume", 0), Some("MIC"));
        assert_eq!(oss_channel("Line Playback Volume", 0), Some("LINE"));
        assert_eq!(oss_channel("Aux Playback Volume", 2), Some("LINE3"));
        assert_eq!(oss_channel("Master Volume", 0), Some("VOLUME"));
        assert_eq!(oss_channel("Wave Playback Volume", 0), None);
        assert_eq!(oss_channel("PCM", 0), None);
        assert_eq!(oss_channel(" Volume", 0), None);
        assert_eq!(oss_channel("Master Playback Volume", 3), None);
    }

    #[test]
    fn percent_rounds_like_snd_mixer_oss() {
        assert_eq!(to_percent(0, 0, 255), 0);
        assert_eq!(to_percent(255, 0, 255), 100);
        assert_eq!(to_percent(191, 0, 255), 75);
        assert_eq!(to_percent(-30, -60, 0), 50);
        assert_eq!(to_percent(1000, 0, 100), 100);
        assert_eq!(to_percent(5, 3, 3), 0);
    }

    /// A device may give a control the whole i64 range.
    #[test]
    fn gains_of_extreme_ranges() {
        let mut wide = ctl("PCM Playback Volume", 0, 1, i64::MIN, i64::MAX);
        assert_eq!(gain(&wide, i64::MIN), 0.0);
        assert_eq!(gain(&wide, 0), 0.5);
        assert_eq!(gain(&wide, i64::MAX), 1.0);
        wide.db_min = -6000;
        wide.db_step = 1;
        wide.step = i64::MAX;
        assert!((gain(&wide, i64::MIN) - 0.001).abs() < 1e-6);
        assert!(gain(&wide, i64::MAX) < 0.002);
        assert_eq!(to_percent(i64::MAX, i64::MIN, i64::MAX), 100);
    }

    #[test]
    fn gains() {
        let lin = ctl("PCM Playback Volume", 0, 1, 0, 100);
        assert_eq!(gain(&lin, 50), 0.5);
        let mut db = ctl("Master Playback Volume", 0, 1, 0, 100);
        db.db_min = -6000;
        db.db_step = 60; // 0.6 dB per step: max = 0 dB
        assert!((gain(&db, 100) - 1.0).abs() < 1e-6);
        assert!((gain(&db, 0) - 0.001).abs() < 1e-6);

        let master = ctl("Master Playback Volume", 0, 1, 0, 100);
        let sw = ctl("Master Playback Switch", 0, 0, 0, 1);
        let pcm1 = ctl("PCM Playback Volume", 1, 1, 0, 100);
        let cap = ctl("Capture Volume", 0, 1, 0, 100);
        let vals: [(&ControlDesc, &[i64]); 4] = [
            (&master, &[100, 50]),
            (&sw, &[1, 0]),
            (&pcm1, &[0, 0]),
            (&cap, &[0, 0]),
        ];
        assert_eq!(playback_gains(vals.iter().copied(), 0, 2), vec![1.0, 0.0]);
        assert_eq!(playback_gains(vals.iter().copied(), 1, 2), vec![0.0, 0.0]);
        // A stereo control applied to a 4-channel stream: the last value repeats.
        assert_eq!(
            playback_gains([(&master, &[100i64, 50][..])].into_iter(), 0, 4),
            vec![1.0, 0.5, 0.5, 0.5]
        );
        // A mute-role boolean not named Switch: 1 means muted.
        let mut mute = ctl("Master Mute", 0, 0, 0, 1);
        mute.role = 2;
        assert!(!switch_is_audible(&mute, 1));
        assert!(switch_is_audible(&sw, 1));
    }
}
