//! `--mixer NAME=LEFT[:RIGHT]`: the host changes the guest's mixer — the old dsproxy's
//! `/dev/mixer` passthrough in reverse.
//!
//! A `--mixer` is parsed on the command line ([`MixerArg`]), checked against the card's
//! controls when its HELLO arrives ([`resolve`]), and sent as SET_CONTROL once the snapshot
//! has told the reader every control's current value ([`MixerRequests`]). The device answers
//! a change by publishing a CONTROL record (origin reader) to every reader and notifying the
//! guest; that echo is the confirmation the reader waits for. A value the control already
//! holds changes nothing, so the device says nothing: such a request is done at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dsproxy_wire::record::{ControlDesc, Hello, Record, MAX_CONTROL_VALUES};

use crate::mixer::{self, ControlKind};

/// How long the device may take to confirm a change.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// One value of a `--mixer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixerValue {
    /// A number in the control's own range.
    Number(i64),
    /// `on`/`unmute` (true) or `off`/`mute` (false), for switches.
    Audible(bool),
}

/// A `--mixer NAME[#INDEX]=V[:V…]` as given, not yet checked against a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixerArg {
    /// The argument as written, for messages.
    pub text: String,
    pub name: String,
    /// `#INDEX` after a full control name.
    pub index: Option<u32>,
    pub values: Vec<MixerValue>,
}

impl std::fmt::Display for MixerArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `NAME[#INDEX]=LEFT[:RIGHT…]` (clap's value parser for `--mixer`).
pub fn parse_mixer_arg(s: &str) -> Result<MixerArg, String> {
    let (name, vals) = s.split_once('=').ok_or_else(|| {
        format!(
            "{s:?}: expected NAME=LEFT[:RIGHT], e.g. pcm=75:75 or \"Master Playback Switch=off\""
        )
    })?;
    let name = name.trim();
    let (name, index) = match name.rsplit_once('#') {
        Some((n, i)) => {
            let i = i
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?}: the index after '#' must be a number"))?;
            (n.trim(), Some(i))
        }
        None => (name, None),
    };
    if name.is_empty() {
        return Err(format!("{s:?}: no control name before '='"));
    }
    let values = vals
        .split(':')
        .map(|v| parse_value(v.trim()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            format!("{s:?}: values are numbers or on/off/mute/unmute, separated by ':'")
        })?;
    // No control has more.
    if values.len() > MAX_CONTROL_VALUES {
        return Err(format!("{s:?}: more than {MAX_CONTROL_VALUES} values"));
    }
    Ok(MixerArg {
        text: s.to_string(),
        name: name.to_string(),
        index,
        values,
    })
}

fn parse_value(v: &str) -> Option<MixerValue> {
    let word = |w: &str| v.eq_ignore_ascii_case(w);
    if word("on") || word("unmute") {
        Some(MixerValue::Audible(true))
    } else if word("off") || word("mute") {
        Some(MixerValue::Audible(false))
    } else {
        v.parse::<i64>().ok().map(MixerValue::Number)
    }
}

/// A `--mixer` checked against a card: the control and the full set of values to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixerSet {
    pub arg: MixerArg,
    pub desc: ControlDesc,
    pub values: Vec<i64>,
}

impl MixerSet {
    pub fn record(&self) -> Record {
        Record::SetControl {
            id: self.desc.id,
            values: self.values.clone(),
        }
    }
}

/// Finds the control a `--mixer` names on this card and turns its values into the control's
/// own: an OSS channel name takes the channel's volume for numbers and its switch for
/// on/off/mute/unmute; a full name (with `#INDEX`, default 0) takes that control. One value
/// sets every channel of the control. The error is one line, naming what the card has.
pub fn resolve(arg: &MixerArg, controls: &[ControlDesc]) -> Result<MixerSet, String> {
    let wants_switch = arg
        .values
        .iter()
        .any(|v| matches!(v, MixerValue::Audible(_)));
    let desc = match (arg.index, mixer::oss_channel_named(&arg.name)) {
        (None, Some(ch)) => {
            let kinds: &[ControlKind] = if wants_switch {
                &[ControlKind::Switch]
            } else {
                &[ControlKind::Volume, ControlKind::Switch]
            };
            kinds
                .iter()
                .find_map(|&k| mixer::channel_control(ch, controls, k))
                .ok_or_else(|| {
                    let what = if wants_switch { "switch" } else { "control" };
                    format!(
                        "--mixer {arg}: the card has no \"{}\" {what} (OSS channel {}); {}",
                        ch.base,
                        ch.name,
                        available(controls)
                    )
                })?
        }
        _ => {
            let index = arg.index.unwrap_or(0);
            controls
                .iter()
                .find(|c| c.name == arg.name && c.index == index)
                .or_else(|| {
                    controls
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(&arg.name) && c.index == index)
                })
                .ok_or_else(|| {
                    format!(
                        "--mixer {arg}: the card has no such control; {}",
                        available(controls)
                    )
                })?
        }
    };
    let values = control_values(arg, desc)?;
    Ok(MixerSet {
        arg: arg.clone(),
        desc: desc.clone(),
        values,
    })
}

/// The values of `arg` in `desc`'s terms, checked against its range and value count.
fn control_values(arg: &MixerArg, desc: &ControlDesc) -> Result<Vec<i64>, String> {
    let name = display_name(desc);
    let switch = mixer::is_switch(desc);
    let range = if switch {
        format!("{}/{}, on/off, mute/unmute", desc.min, desc.max)
    } else {
        format!("{}..{}", desc.min, desc.max)
    };
    let mut out = Vec::with_capacity(arg.values.len());
    for v in &arg.values {
        let raw = match *v {
            MixerValue::Audible(audible) if switch => {
                if mixer::switch_is_audible(desc, desc.max) == audible {
                    desc.max
                } else {
                    desc.min
                }
            }
            MixerValue::Audible(_) => {
                return Err(format!(
                    "--mixer {arg}: {name} is not a switch; give a number in {range}"
                ))
            }
            MixerValue::Number(n) => {
                let on_step =
                    desc.step <= 1 || (n as i128 - desc.min as i128) % desc.step as i128 == 0;
                if n < desc.min || n > desc.max || !on_step {
                    let step = if desc.step > 1 {
                        format!(" in steps of {}", desc.step)
                    } else {
                        String::new()
                    };
                    return Err(format!(
                        "--mixer {arg}: {n} is out of range for {name} ({range}{step})"
                    ));
                }
                n
            }
        };
        out.push(raw);
    }
    let count = desc.count as usize;
    if count == 0 {
        return Err(format!("--mixer {arg}: {name} has no values to set"));
    }
    // The count is the device's word, and a value is sent for each.
    if count > MAX_CONTROL_VALUES {
        return Err(format!(
            "--mixer {arg}: {name} claims {count} values, more than a control has \
             ({MAX_CONTROL_VALUES})"
        ));
    }
    match out.len() {
        1 => Ok(vec![out[0]; count]),
        n if n == count => Ok(out),
        // `igain=30:30` on a mono control: what OSS programs write, and unambiguous.
        _ if out.iter().all(|&v| v == out[0]) => Ok(vec![out[0]; count]),
        n => Err(format!(
            "--mixer {arg}: {name} has {count} value{}; give 1{} (got {n})",
            if count == 1 { "" } else { "s" },
            if count == 1 {
                String::new()
            } else {
                format!(" or {count}")
            }
        )),
    }
}

/// `"PCM Playback Volume"`, or `"PCM Playback Volume#1"` for an index other than 0.
pub fn display_name(desc: &ControlDesc) -> String {
    if desc.index == 0 {
        format!("\"{}\"", desc.name)
    } else {
        format!("\"{}#{}\"", desc.name, desc.index)
    }
}

/// "available: vol, pcm, igain (OSS channels); "Master Playback Volume", …": what `--mixer`
/// can name on this card.
pub fn available(controls: &[ControlDesc]) -> String {
    if controls.is_empty() {
        return "the card has no mixer controls".into();
    }
    let oss: Vec<&str> = mixer::OSS_CHANNELS
        .iter()
        .filter(|ch| {
            [ControlKind::Volume, ControlKind::Switch]
                .iter()
                .any(|&k| mixer::channel_control(ch, controls, k).is_some())
        })
        .map(|ch| ch.label)
        .collect();
    let full: Vec<String> = controls.iter().map(display_name).collect();
    let mut s = String::from("available: ");
    if !oss.is_empty() {
        s += &format!("{} (OSS channels); ", oss.join(", "));
    }
    s + &full.join(", ")
}

/// Where a request stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not sent (yet, or again after a lost connection).
    Unsent,
    /// Sent; waiting for the device to report the values.
    Pending {
        since: Instant,
    },
    Done,
}

/// What became of a request when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Sent; the device will confirm.
    Changing(MixerSet),
    /// Sent, but the control already holds these values: the device will say nothing.
    AlreadySo(MixerSet),
}

/// Every `--mixer` of the command line and where each stands.
#[derive(Debug, Default)]
pub struct MixerRequests {
    args: Vec<MixerArg>,
    sets: Vec<Option<MixerSet>>,
    states: Vec<State>,
    /// Control values as the device last reported them on this connection.
    known: HashMap<u32, Vec<i64>>,
}

impl MixerRequests {
    pub fn new(args: Vec<MixerArg>) -> MixerRequests {
        let n = args.len();
        MixerRequests {
            args,
            sets: vec![None; n],
            states: vec![State::Unsent; n],
            known: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// A new card: checks the requests still to be sent against its controls.
    pub fn plan(&mut self, hello: &Hello) -> Result<(), String> {
        self.known.clear();
        for (i, arg) in self.args.iter().enumerate() {
            if self.states[i] == State::Unsent {
                self.sets[i] = Some(resolve(arg, &hello.controls)?);
            }
        }
        Ok(())
    }

    /// The connection is gone: what was not confirmed is sent again after the next snapshot
    /// (the device may or may not have applied it).
    pub fn connection_lost(&mut self) {
        self.known.clear();
        for s in &mut self.states {
            if matches!(s, State::Pending { .. }) {
                *s = State::Unsent;
            }
        }
    }

    /// The snapshot is complete: every request not sent yet, in command-line order, marked
    /// as sent at `now`. The caller sends their records.
    pub fn take_unsent(&mut self, now: Instant) -> Vec<Sent> {
        // What each control will hold once the earlier requests are applied.
        let mut will_hold = self.known.clone();
        let mut out = Vec::new();
        for (i, state) in self.states.iter_mut().enumerate() {
            if *state != State::Unsent {
                continue;
            }
            let Some(set) = self.sets[i].clone() else {
                continue;
            };
            let id = set.desc.id;
            if will_hold.get(&id) == Some(&set.values) {
                *state = State::Done;
                out.push(Sent::AlreadySo(set));
            } else {
                will_hold.insert(id, set.values.clone());
                *state = State::Pending { since: now };
                out.push(Sent::Changing(set));
            }
        }
        out
    }

    /// A CONTROL record: the device's report of a control's values. If it confirms a pending
    /// request (the values it asked for), that request is done and returned.
    pub fn on_control(&mut self, id: u32, values: &[i64]) -> Option<MixerSet> {
        self.known.insert(id, values.to_vec());
        let i = self.states.iter().enumerate().position(|(i, s)| {
            matches!(s, State::Pending { .. })
                && self.sets[i]
                    .as_ref()
                    .is_some_and(|set| set.desc.id == id && set.values == values)
        })?;
        self.states[i] = State::Done;
        self.sets[i].clone()
    }

    /// Requests sent longer than [`CONFIRM_TIMEOUT`] before `now` without a confirmation;
    /// they are given up (marked done).
    pub fn take_timed_out(&mut self, now: Instant) -> Vec<MixerSet> {
        let mut out = Vec::new();
        for (i, s) in self.states.iter_mut().enumerate() {
            if let State::Pending { since } = *s {
                if now.saturating_duration_since(since) >= CONFIRM_TIMEOUT {
                    *s = State::Done;
                    out.extend(self.sets[i].clone());
                }
            }
        }
        out
    }

    /// Every request was sent and confirmed (or found already so, or given up).
    pub fn all_done(&self) -> bool {
        self.states.iter().all(|s| *s == State::Done)
    }

    /// The requests not done, as written on the command line.
    pub fn unfinished(&self) -> Vec<&MixerArg> {
        self.args
            .iter()
            .zip(&self.states)
            .filter(|(_, s)| **s != State::Done)
            .map(|(a, _)| a)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(id: u32, name: &str, index: u32, ctype: u32, count: u32, max: i64) -> ControlDesc {
        ControlDesc {
            id,
            name: name.into(),
            index,
            role: if ctype == 0 { 2 } else { 1 },
            ctype,
            count,
            min: 0,
            max,
            step: 1,
            db_min: 0,
            db_step: 0,
        }
    }

    /// dsproxy-device's mixer for two outputs and one input.
    fn card() -> Vec<ControlDesc> {
        vec![
            ctl(0, "Master Playback Volume", 0, 1, 2, 100),
            ctl(1, "Master Playback Switch", 0, 0, 1, 1),
            ctl(2, "PCM Playback Volume", 0, 1, 2, 100),
            ctl(3, "PCM Playback Switch", 0, 0, 1, 1),
            ctl(4, "PCM Playback Volume", 1, 1, 2, 100),
            ctl(5, "PCM Playback Switch", 1, 0, 1, 1),
            ctl(6, "Capture Volume", 0, 1, 2, 100),
            ctl(7, "Capture Switch", 0, 0, 1, 1),
        ]
    }

    fn arg(s: &str) -> MixerArg {
        parse_mixer_arg(s).unwrap()
    }

    fn set(s: &str) -> (u32, Vec<i64>) {
        let r = resolve(&arg(s), &card()).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.desc.id, r.values)
    }

    fn err(s: &str) -> String {
        resolve(&arg(s), &card()).unwrap_err()
    }

    #[test]
    fn parsing() {
        assert_eq!(
            arg("pcm=75:50"),
            MixerArg {
                text: "pcm=75:50".into(),
                name: "pcm".into(),
                index: None,
                values: vec![MixerValue::Number(75), MixerValue::Number(50)],
            }
        );
        let a = arg("PCM Playback Volume#1=10");
        assert_eq!((a.name.as_str(), a.index), ("PCM Playback Volume", Some(1)));
        assert_eq!(arg("vol=MUTE").values, vec![MixerValue::Audible(false)]);
        assert_eq!(
            arg("x=on:Off:unmute:-3").values,
            vec![
                MixerValue::Audible(true),
                MixerValue::Audible(false),
                MixerValue::Audible(true),
                MixerValue::Number(-3)
            ]
        );
        for bad in [
            "pcm", "=5", "pcm=", "pcm=5:", "pcm=loud", "x#y=1", "pcm=1.5", "#1=1",
        ] {
            assert!(parse_mixer_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oss_names_map_through_the_one_table() {
        for (n, id) in [
            ("vol", 0),
            ("VOLUME", 0),
            ("Volume", 0),
            ("pcm", 2),
            ("PCM", 2),
            ("pcm2", 4),
            ("altpcm", 4),
            ("igain", 6),
            ("IGAIN", 6),
            ("reclev", 6),
            ("rec", 6),
        ] {
            assert_eq!(set(&format!("{n}=50")).0, id, "{n}");
        }
        // Words go to the channel's switch, numbers to its volume.
        assert_eq!(set("vol=mute"), (1, vec![0]));
        assert_eq!(set("pcm=on"), (3, vec![1]));
        assert_eq!(set("igain=off"), (7, vec![0]));
        assert_eq!(set("pcm2=unmute"), (5, vec![1]));
        assert_eq!(set("pcm=75:25"), (2, vec![75, 25]));
        assert_eq!(set("pcm=75"), (2, vec![75, 75]));
    }

    #[test]
    fn full_names_with_and_without_index() {
        assert_eq!(set("Master Playback Switch=0"), (1, vec![0]));
        assert_eq!(set("master playback switch=on"), (1, vec![1]));
        assert_eq!(set("PCM Playback Volume=20:30"), (2, vec![20, 30]));
        assert_eq!(set("PCM Playback Volume#0=20"), (2, vec![20, 20]));
        assert_eq!(set("PCM Playback Volume#1=20"), (4, vec![20, 20]));
        // A mono switch accepts OSS's habit of left:right when both agree.
        assert_eq!(set("Capture Switch=1:1"), (7, vec![1]));
    }

    #[test]
    fn a_mute_role_boolean_not_named_switch_is_inverted() {
        let mut m = ctl(0, "Master Mute", 0, 0, 1, 1);
        m.role = 2;
        let r = resolve(&arg("Master Mute=mute"), &[m.clone()]).unwrap();
        assert_eq!(r.values, vec![1]);
        let r = resolve(&arg("Master Mute=on"), &[m]).unwrap();
        assert_eq!(r.values, vec![0]);
    }

    #[test]
    fn errors_say_what_the_card_has() {
        let e = err("bass=50");
        assert_eq!(
            e,
            "--mixer bass=50: the card has no \"Tone Control - Bass\" control (OSS channel \
             BASS); available: vol, pcm, pcm2, igain (OSS channels); \"Master Playback \
             Volume\", \"Master Playback Switch\", \"PCM Playback Volume\", \"PCM Playback \
             Switch\", \"PCM Playback Volume#1\", \"PCM Playback Switch#1\", \"Capture \
             Volume\", \"Capture Switch\""
        );
        let e = err("Loudness=1");
        assert!(
            e.starts_with("--mixer Loudness=1: the card has no such control; available: vol,"),
            "{e}"
        );
        assert!(err("PCM Playback Volume#2=1").contains("no such control"));
        assert_eq!(
            err("pcm=101"),
            "--mixer pcm=101: 101 is out of range for \"PCM Playback Volume\" (0..100)"
        );
        assert_eq!(
            err("pcm=-1:50"),
            "--mixer pcm=-1:50: -1 is out of range for \"PCM Playback Volume\" (0..100)"
        );
        assert_eq!(
            err("Master Playback Switch=2"),
            "--mixer Master Playback Switch=2: 2 is out of range for \"Master Playback Switch\" \
             (0/1, on/off, mute/unmute)"
        );
        assert_eq!(
            err("PCM Playback Volume#1=on"),
            "--mixer PCM Playback Volume#1=on: \"PCM Playback Volume#1\" is not a switch; give a \
             number in 0..100"
        );
        assert_eq!(
            err("pcm=1:2:3"),
            "--mixer pcm=1:2:3: \"PCM Playback Volume\" has 2 values; give 1 or 2 (got 3)"
        );
        assert_eq!(
            err("Capture Switch=1:0"),
            "--mixer Capture Switch=1:0: \"Capture Switch\" has 1 value; give 1 (got 2)"
        );
        let e = resolve(&arg("vol=50"), &[]).unwrap_err();
        assert!(e.ends_with("the card has no mixer controls"), "{e}");
        let mut stepped = ctl(0, "Wave Volume", 0, 1, 1, 100);
        stepped.step = 10;
        assert!(resolve(&arg("Wave Volume=30"), &[stepped.clone()]).is_ok());
        assert_eq!(
            resolve(&arg("Wave Volume=35"), &[stepped]).unwrap_err(),
            "--mixer Wave Volume=35: 35 is out of range for \"Wave Volume\" (0..100 in steps of 10)"
        );
    }

    /// The device says how many values a control has; the reader sends no more than a
    /// control can have, whatever it says.
    #[test]
    fn a_control_claiming_too_many_values_is_refused() {
        for count in [MAX_CONTROL_VALUES as u32 + 1, 1_000_000] {
            let huge = ctl(0, "PCM Playback Volume", 0, 1, count, 100);
            let e = resolve(&arg("pcm=50"), &[huge]).unwrap_err();
            assert!(e.contains(&format!("claims {count} values")), "{e}");
        }
        let most = ctl(
            0,
            "PCM Playback Volume",
            0,
            1,
            MAX_CONTROL_VALUES as u32,
            100,
        );
        let r = resolve(&arg("pcm=50"), &[most]).unwrap();
        assert_eq!(r.values.len(), MAX_CONTROL_VALUES);
    }

    fn hello() -> Hello {
        Hello {
            version: 1,
            time_ns: 0,
            name: "t".into(),
            jacks: 0,
            chmaps: 0,
            streams: vec![],
            controls: card(),
        }
    }

    #[test]
    fn requests_are_sent_once_confirmed_by_the_echo_and_resent_after_a_lost_connection() {
        let mut r = MixerRequests::new(vec![arg("pcm=50"), arg("vol=mute"), arg("pcm=50")]);
        r.plan(&hello()).unwrap();
        // The snapshot: PCM at 100, the master switch already off.
        assert_eq!(r.on_control(2, &[100, 100]), None);
        assert_eq!(r.on_control(1, &[0]), None);
        let t0 = Instant::now();
        let sent = r.take_unsent(t0);
        let kinds: Vec<(bool, u32)> = sent
            .iter()
            .map(|s| match s {
                Sent::Changing(m) => (true, m.desc.id),
                Sent::AlreadySo(m) => (false, m.desc.id),
            })
            .collect();
        // The second pcm=50 finds PCM as the first will leave it.
        assert_eq!(kinds, vec![(true, 2), (false, 1), (false, 2)]);
        assert!(r.take_unsent(t0).is_empty());
        assert!(!r.all_done());
        assert_eq!(r.unfinished().len(), 1);
        // Another value is no confirmation; the asked-for one is.
        assert_eq!(r.on_control(2, &[60, 60]), None);
        r.connection_lost();
        assert_eq!(r.take_unsent(t0).len(), 1);
        assert_eq!(r.on_control(2, &[50, 50]).map(|s| s.desc.id), Some(2));
        assert!(r.all_done());
        assert!(r.unfinished().is_empty());
    }

    #[test]
    fn unconfirmed_requests_time_out() {
        let mut r = MixerRequests::new(vec![arg("igain=30")]);
        r.plan(&hello()).unwrap();
        let t0 = Instant::now();
        assert_eq!(r.take_unsent(t0).len(), 1);
        assert!(r.take_timed_out(t0 + CONFIRM_TIMEOUT / 2).is_empty());
        let gone = r.take_timed_out(t0 + CONFIRM_TIMEOUT);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].arg.text, "igain=30");
        assert!(r.all_done());
        // An unknown name fails the plan.
        let mut r = MixerRequests::new(vec![arg("treble=3")]);
        assert!(r.plan(&hello()).is_err());
    }
}
