//! Small helpers for tests that look at tap records and device descriptions.

use dsproxy_wire::record::Record;

use crate::proto::CtlInfo;

/// The stream a device record is about, if any (INJECT is a reader's record, not counted).
pub fn record_stream(r: &Record) -> Option<u32> {
    match r {
        Record::Inject { .. } => None,
        _ => r.stream(),
    }
}

/// The lifecycle of `stream` as record kind names, with runs of PCM records collapsed into
/// one "PCM" and XRUN/GAP left out: e.g. `["PARAMS", "PREPARE", "START", "PCM", "STOP",
/// "RELEASE"]`.
pub fn lifecycle<'a>(records: impl Iterator<Item = &'a Record>, stream: u32) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in records {
        if record_stream(r) != Some(stream) {
            continue;
        }
        let k = r.kind_name();
        if k == "XRUN" || k == "GAP" {
            continue;
        }
        if k == "PCM" && out.last() == Some(&"PCM") {
            continue;
        }
        out.push(k);
    }
    out
}

/// The id of the control element called `name` with ALSA index `index`.
pub fn find_control(infos: &[CtlInfo], name: &str, index: u32) -> Option<u32> {
    infos
        .iter()
        .position(|i| i.name == name && i.index == index)
        .map(|p| p as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_collapses_pcm() {
        let recs = [
            Record::Prepare {
                stream: 0,
                time_ns: 1,
            },
            Record::Pcm {
                stream: 0,
                offset: 0,
                time_ns: 2,
                data: vec![1],
            },
            Record::Pcm {
                stream: 1,
                offset: 0,
                time_ns: 2,
                data: vec![1],
            },
            Record::Pcm {
                stream: 0,
                offset: 1,
                time_ns: 3,
                data: vec![2],
            },
            Record::Release {
                stream: 0,
                time_ns: 4,
            },
        ];
        assert_eq!(lifecycle(recs.iter(), 0), ["PREPARE", "PCM", "RELEASE"]);
        assert_eq!(lifecycle(recs.iter(), 1), ["PCM"]);
    }
}
