//! The host reader's session fed what a device (or anything listening on the tap's socket)
//! may send: a HELLO, then any records, connections that drop and come back, cards that
//! grow. Everything in a record is the peer's choice; the reader must never panic, allocate
//! by a peer's count, or send a request it cannot encode.
//!
//! The records are built valid ([`dsproxy_wire::arbitrary`]: the decoder's own limits hold,
//! [`crate::wire::decode`] covers bytes that do not decode), with their stream and control
//! ids folded onto the card's so they reach the session's per-stream and per-control state.
//! Every record goes through the encoder and [`RecordReader`] on the way, as it does on the
//! socket.

use std::io;

use arbitrary::{Arbitrary, Result, Unstructured};
use dsproxy_host_reader::mixer_set::parse_mixer_arg;
use dsproxy_host_reader::session::{Flow, Session, SessionOptions};
use dsproxy_host_reader::source::Outlet;
use dsproxy_wire::arbitrary::{valid_hello, ValidRecord};
use dsproxy_wire::format::{FORMATS, RATES};
use dsproxy_wire::record::{Hello, Record};
use dsproxy_wire::{decode, RecordReader};

/// Records per input, at most (a session's worth; keeps an execution short).
const MAX_RECORDS: usize = 64;

/// Names a guest's mixer has: a `--mixer` finds its control by them.
const CONTROL_NAMES: &[&str] = &[
    "Master Playback Volume",
    "Master Playback Switch",
    "PCM Playback Volume",
    "PCM Playback Switch",
    "Capture Volume",
    "Capture Switch",
    "Master Mute",
];

/// `--mixer` arguments as users write them.
const MIXER_ARGS: &[&str] = &[
    "pcm=50",
    "vol=mute",
    "igain=30:30",
    "Master Playback Volume=1:2",
    "PCM Playback Switch#1=on",
    "Master Mute=-9223372036854775808",
];

/// Where the session's requests (SET_CONTROL) go: each must be one record that decodes.
struct CheckingOutlet;

impl Outlet for CheckingOutlet {
    fn request(&mut self, frame: &[u8]) -> io::Result<()> {
        let (rec, used) = decode(frame)
            .expect("the reader's request decodes")
            .expect("the reader's request is complete");
        assert_eq!(used, frame.len(), "one request, one record: {rec:?}");
        Ok(())
    }
    fn inject(&mut self, _stream: u32, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

fn options(u: &mut Unstructured<'_>) -> Result<SessionOptions> {
    let mut o = SessionOptions {
        english: u.arbitrary()?,
        records: u.arbitrary()?,
        once: u.arbitrary()?,
        ..SessionOptions::default()
    };
    o.watch.once = o.once;
    if u.ratio(1, 4)? {
        o.stream = Some(u.int_in_range(0..=4)?);
    }
    for arg in MIXER_ARGS {
        if u.ratio(1, 4)? {
            o.mixer.push(parse_mixer_arg(arg).expect("a valid --mixer"));
        }
    }
    o.mixer_only = !o.mixer.is_empty() && u.ratio(1, 4)?;
    Ok(o)
}

/// A card: ids in order (as the device numbers them), control names a `--mixer` can find.
fn card(u: &mut Unstructured<'_>) -> Result<Hello> {
    let mut hello = valid_hello(u)?;
    for (i, s) in hello.streams.iter_mut().enumerate() {
        s.id = i as u32;
    }
    for (i, c) in hello.controls.iter_mut().enumerate() {
        c.id = i as u32;
        if u.ratio(3, 4)? {
            c.name = u.choose(CONTROL_NAMES)?.to_string();
            c.index %= 2;
        }
    }
    Ok(hello)
}

/// A record from the device, its ids on the card (mostly) and its params (mostly) ones the
/// card could have.
fn record(u: &mut Unstructured<'_>, hello: &Hello) -> Result<Record> {
    let ValidRecord(mut rec) = ValidRecord::arbitrary(u)?;
    let streams = hello.streams.len().max(1) as u32;
    let controls = hello.controls.len().max(1) as u32;
    let on_card = u.ratio(7, 8)?;
    match &mut rec {
        Record::Params(p) => {
            if on_card {
                p.stream %= streams;
                p.format = u.choose(&FORMATS)?.code;
                p.rate = u.int_in_range(0..=RATES.len() as u8 - 1)?;
                p.channels %= 9;
            }
        }
        Record::Prepare { stream, .. }
        | Record::Start { stream, .. }
        | Record::Stop { stream, .. }
        | Record::Release { stream, .. }
        | Record::Pcm { stream, .. }
        | Record::Xrun { stream, .. }
        | Record::Gap { stream, .. }
        | Record::Inject { stream, .. } => {
            if on_card {
                *stream %= streams;
            }
        }
        Record::Control { id, .. } | Record::SetControl { id, .. } => {
            if on_card {
                *id %= controls;
            }
        }
        Record::Hello(h) => {
            if on_card {
                *h = card(u)?;
            }
        }
        Record::SnapshotEnd
        | Record::Frontend { .. }
        | Record::Notice { .. }
        | Record::Subscribe { .. } => {}
    }
    Ok(rec)
}

/// Encodes `rec` and reads it back as the reader's socket loop does.
fn through_the_socket(rec: &Record) -> Record {
    let bytes = rec.to_bytes().expect("a valid record encodes");
    RecordReader::new(&bytes[..])
        .next_record()
        .expect("an encoded record reads back")
        .expect("an encoded record is complete")
}

/// One run of the reader against a hostile device.
pub fn session(data: &[u8]) {
    let _ = run(&mut Unstructured::new(data));
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let grows = u.arbitrary()?;
    let mut s = Session::new(options(u)?, "fuzz".into(), None, None);
    let mut left = MAX_RECORDS;
    // Each pass is one connection: HELLO, records, then the connection ends (or the
    // session does).
    'connections: while left > 0 && !u.is_empty() {
        let mut hello = card(u)?;
        if s.plan(&hello, grows).is_err() {
            // The reader exits with a usage error (no such --stream, --mixer, …).
            break;
        }
        s.attach(&hello, Some(Box::new(CheckingOutlet)));
        while left > 0 && !u.is_empty() {
            left -= 1;
            if u.ratio(1, 32)? {
                // The socket closed: the connector detaches and connects again.
                if s.detach().is_err() {
                    break 'connections;
                }
                continue 'connections;
            }
            let rec = through_the_socket(&record(u, &hello)?);
            let flow = match rec {
                // A card that grows (QEMU opens a voice) says so with a new HELLO, which the
                // QEMU source hands over as a card change; on the tap it is a protocol error.
                Record::Hello(h) if grows => {
                    s.card_changed(&h);
                    hello = h;
                    Ok(Flow::Continue)
                }
                rec => s.handle(rec),
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) | Err(_) => break 'connections,
            }
        }
    }
    let _ = s.finish(false);
    Ok(())
}
