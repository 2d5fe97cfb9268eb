//! `-i`: every record, one line each, with its kind, stream and fields. PCM is summarized
//! (offset and length), never dumped.

use dsproxy_wire::record::{ControlOrigin, Direction, Record};
use dsproxy_wire::{PcmFormat, PcmRate};

/// The `-i` lines for one record (a HELLO adds a line per stream and control).
pub fn lines(rec: &Record) -> Vec<String> {
    let name = rec.kind_name();
    let one = |fields: String| vec![format!("{name} {fields}")];
    match rec {
        Record::Hello(h) => {
            let mut v = vec![format!(
                "{name} version={} time={} name={:?} jacks={} chmaps={} streams={} controls={}",
                h.version,
                secs(h.time_ns),
                h.name,
                h.jacks,
                h.chmaps,
                h.streams.len(),
                h.controls.len()
            )];
            for s in &h.streams {
                v.push(format!(
                    "  stream={} {} channels={}..{} formats={} rates={}",
                    s.id,
                    match s.direction {
                        Direction::Output => "output",
                        Direction::Input => "input",
                    },
                    s.channels_min,
                    s.channels_max,
                    format_mask(s.formats),
                    rate_mask(s.rates)
                ));
            }
            for c in &h.controls {
                v.push(format!(
                    "  control={} name={:?} index={} role={} type={} count={} range={}..{} \
                     step={} db_min={} db_step={}",
                    c.id,
                    c.name,
                    c.index,
                    c.role,
                    c.ctype,
                    c.count,
                    c.min,
                    c.max,
                    c.step,
                    c.db_min,
                    c.db_step
                ));
            }
            v
        }
        Record::Params(p) => one(format!(
            "stream={} buffer={} period={} features={:#x} channels={} format={} rate={}",
            p.stream,
            p.buffer_bytes,
            p.period_bytes,
            p.features,
            p.channels,
            PcmFormat::from_code(p.format)
                .map(|f| f.to_string())
                .unwrap_or_else(|| format!("?{}", p.format)),
            PcmRate::from_code(p.rate)
                .map(|r| r.hz().to_string())
                .unwrap_or_else(|| format!("?{}", p.rate)),
        )),
        Record::Prepare { stream, time_ns }
        | Record::Start { stream, time_ns }
        | Record::Release { stream, time_ns } => {
            one(format!("stream={stream} time={}", secs(*time_ns)))
        }
        Record::Stop {
            stream,
            time_ns,
            drained,
            discarded_bytes,
        } => one(format!(
            "stream={stream} time={} drained={} discarded={discarded_bytes}",
            secs(*time_ns),
            *drained as u8
        )),
        Record::Pcm {
            stream,
            offset,
            time_ns,
            data,
        } => one(format!(
            "stream={stream} offset={offset} time={} len={}",
            secs(*time_ns),
            data.len()
        )),
        Record::Control { id, origin, values } => one(format!(
            "id={id} origin={} values={}",
            match origin {
                ControlOrigin::Initial => "initial",
                ControlOrigin::Guest => "guest",
                ControlOrigin::Reader => "reader",
            },
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )),
        Record::Xrun {
            stream,
            time_ns,
            duration_ns,
        } => one(format!(
            "stream={stream} time={} duration={}",
            secs(*time_ns),
            secs(*duration_ns)
        )),
        Record::Gap {
            stream,
            offset,
            bytes,
            time_ns,
        } => one(format!(
            "stream={stream} offset={offset} bytes={bytes} time={}",
            secs(*time_ns)
        )),
        Record::SnapshotEnd => vec![name.to_string()],
        Record::Frontend { connected, time_ns } => one(format!(
            "connected={} time={}",
            *connected as u8,
            secs(*time_ns)
        )),
        Record::Notice {
            time_ns,
            level,
            text,
        } => one(format!(
            "time={} level={} text={text:?}",
            secs(*time_ns),
            level.name()
        )),
        Record::Subscribe { flags, streams } => {
            one(format!("flags={flags:#x} streams={streams:#x}"))
        }
        Record::SetControl { id, values } => one(format!("id={id} values={values:?}")),
        Record::Inject { stream, data } => one(format!("stream={stream} len={}", data.len())),
    }
}

/// Nanoseconds as seconds with nine decimals.
fn secs(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn format_mask(mask: u64) -> String {
    let names: Vec<String> = (0..64u8)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| {
            PcmFormat::from_code(b)
                .map(|f| f.to_string())
                .unwrap_or_else(|| format!("?{b}"))
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

fn rate_mask(mask: u64) -> String {
    let names: Vec<String> = (0..64u8)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| {
            PcmRate::from_code(b)
                .map(|r| r.hz().to_string())
                .unwrap_or_else(|| format!("?{b}"))
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::record::{Hello, Params, StreamDesc};

    #[test]
    fn record_lines() {
        assert_eq!(
            lines(&Record::Pcm {
                stream: 0,
                offset: 8192,
                time_ns: 1_500_000_000,
                data: vec![0; 4096]
            }),
            vec!["PCM stream=0 offset=8192 time=1.500000000 len=4096"]
        );
        assert_eq!(
            lines(&Record::Params(Params {
                stream: 1,
                buffer_bytes: 16384,
                period_bytes: 4096,
                features: 0,
                channels: 2,
                format: 5,
                rate: 7
            })),
            vec![
                "PARAMS stream=1 buffer=16384 period=4096 features=0x0 channels=2 \
                 format=S16_LE rate=48000"
            ]
        );
        assert_eq!(
            lines(&Record::Stop {
                stream: 0,
                time_ns: 2,
                drained: false,
                discarded_bytes: 100
            }),
            vec!["STOP stream=0 time=0.000000002 drained=0 discarded=100"]
        );
        assert_eq!(lines(&Record::SnapshotEnd), vec!["SNAPSHOT_END"]);
        let h = Hello {
            version: 1,
            time_ns: 0,
            name: "card".into(),
            jacks: 0,
            chmaps: 1,
            streams: vec![StreamDesc {
                id: 0,
                direction: Direction::Output,
                channels_min: 1,
                channels_max: 2,
                formats: PcmFormat::S16.mask_bit() | PcmFormat::U8.mask_bit(),
                rates: PcmRate::R44100.mask_bit() | PcmRate::R48000.mask_bit(),
            }],
            controls: vec![],
        };
        assert_eq!(
            lines(&Record::Hello(h)),
            vec![
                "HELLO version=1 time=0.000000000 name=\"card\" jacks=0 chmaps=1 streams=1 \
                 controls=0",
                "  stream=0 output channels=1..2 formats=U8,S16_LE rates=44100,48000",
            ]
        );
    }
}
