//! Control elements: the card's mixer (virtio 1.3 control elements, VIRTIO_SND_F_CTLS).
//!
//! Names follow ALSA's conventions so the guest's OSS mixer emulation (snd-mixer-oss) maps
//! them onto /dev/mixer: "Master" → VOLUME, "PCM" → PCM (index 1 → ALTPCM), "Capture" → IGAIN.
//! Volumes start at 100 (0 dB) and switches on, so a capture is bit-exact with what the guest
//! wrote whatever the mixer says; readers apply the volumes when they play on the host.
//!
//! The mixer is card state, like a real mixer's: the daemon creates it once, publishes every
//! element's starting value to the tap (so the snapshot of any reader, however early, has a
//! value for every control), and keeps it across frontend connections and driver resets. A
//! VM that reboots or a QEMU that reconnects finds the volumes where the guest or a reader
//! left them, and a host-side volume set by a reader does not jump back to 0 dB behind the
//! readers' backs (nothing would tell them: the mixer did not change as far as they know).

use dsproxy_wire::record::{ControlDesc, ControlOrigin, Record};

use crate::error::RequestError;
use crate::spec::{ctl, size, LeBuf};

/// A dB scale: the value `min` is `min_cdb` hundredths of a dB, each step adds `step_cdb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbScale {
    pub min_cdb: i32,
    pub step_cdb: i32,
    pub mute_at_min: bool,
}

/// One control element and its current values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlElem {
    pub name: String,
    pub index: u32,
    pub role: u32,
    pub ctype: u32,
    pub access: u32,
    pub count: u32,
    pub min: i64,
    pub max: i64,
    pub step: i64,
    pub db: Option<DbScale>,
    pub values: Vec<i64>,
}

/// The volume range: 0..=100, -50.00 dB at 0 (muted), 0.50 dB a step, 0 dB at 100.
const VOLUME_MAX: i64 = 100;
const VOLUME_DB: DbScale = DbScale {
    min_cdb: -5000,
    step_cdb: 50,
    mute_at_min: true,
};

impl ControlElem {
    fn volume(name: &str, index: u32, role: u32) -> ControlElem {
        ControlElem {
            name: name.to_owned(),
            index,
            role,
            ctype: ctl::TYPE_INTEGER,
            access: ctl::ACCESS_READ | ctl::ACCESS_WRITE | ctl::ACCESS_TLV_READ,
            count: 2,
            min: 0,
            max: VOLUME_MAX,
            step: 1,
            db: Some(VOLUME_DB),
            values: vec![VOLUME_MAX; 2],
        }
    }

    fn switch(name: &str, index: u32) -> ControlElem {
        ControlElem {
            name: name.to_owned(),
            index,
            role: ctl::ROLE_MUTE,
            ctype: ctl::TYPE_BOOLEAN,
            access: ctl::ACCESS_READ | ctl::ACCESS_WRITE,
            count: 1,
            min: 0,
            max: 1,
            step: 1,
            db: None,
            values: vec![1],
        }
    }

    /// Checks a full set of new values against the element's range.
    fn check(&self, id: u32, values: &[i64]) -> Result<(), RequestError> {
        if values.len() != self.count as usize {
            return Err(RequestError::BadControlValue {
                id,
                why: format!("{} values for a {}-value control", values.len(), self.count),
            });
        }
        for (i, &v) in values.iter().enumerate() {
            let in_range = v >= self.min && v <= self.max;
            // In i128: `v - min` of i64s need not fit an i64 (v comes from the guest or a
            // reader, and is checked against the range only here).
            let on_step = self.step <= 1 || (v as i128 - self.min as i128) % self.step as i128 == 0;
            if !in_range || !on_step {
                return Err(RequestError::BadControlValue {
                    id,
                    why: format!(
                        "value[{i}] = {v} outside {}..={} step {}",
                        self.min, self.max, self.step
                    ),
                });
            }
        }
        Ok(())
    }
}

/// All control elements of the card, numbered by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controls {
    elems: Vec<ControlElem>,
}

impl Controls {
    /// The mixer of a card with `outputs` playback and `inputs` capture streams.
    pub fn new(outputs: u32, inputs: u32) -> Controls {
        let mut elems = Vec::new();
        if outputs > 0 {
            elems.push(ControlElem::volume(
                "Master Playback Volume",
                0,
                ctl::ROLE_VOLUME,
            ));
            elems.push(ControlElem::switch("Master Playback Switch", 0));
        }
        for i in 0..outputs {
            elems.push(ControlElem::volume(
                "PCM Playback Volume",
                i,
                ctl::ROLE_VOLUME,
            ));
            elems.push(ControlElem::switch("PCM Playback Switch", i));
        }
        for j in 0..inputs {
            elems.push(ControlElem::volume("Capture Volume", j, ctl::ROLE_GAIN));
            elems.push(ControlElem::switch("Capture Switch", j));
        }
        Controls { elems }
    }

    /// How many elements `new(outputs, inputs)` has.
    pub fn count_for(outputs: u32, inputs: u32) -> u32 {
        let master = if outputs > 0 { 2 } else { 0 };
        master + 2 * outputs + 2 * inputs
    }

    pub fn len(&self) -> u32 {
        self.elems.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    pub fn get(&self, id: u32) -> Result<&ControlElem, RequestError> {
        self.elems
            .get(id as usize)
            .ok_or(RequestError::UnknownControl(id))
    }

    fn get_mut(&mut self, id: u32) -> Result<&mut ControlElem, RequestError> {
        self.elems
            .get_mut(id as usize)
            .ok_or(RequestError::UnknownControl(id))
    }

    /// The `virtio_snd_ctl_info` of element `id` (96 bytes).
    pub fn info_bytes(&self, id: u32) -> Result<Vec<u8>, RequestError> {
        let e = self.get(id)?;
        let mut b = LeBuf::with_capacity(size::CTL_INFO);
        b.u32(0) // hda_fn_nid
            .u32(e.role)
            .u32(e.ctype)
            .u32(e.access)
            .u32(e.count)
            .u32(e.index);
        let mut name = [0u8; ctl::NAME_LEN];
        let n = e.name.len().min(ctl::NAME_LEN - 1);
        name[..n].copy_from_slice(&e.name.as_bytes()[..n]);
        b.bytes(&name).zeros(4); // the value union is 8-aligned
        if e.ctype == ctl::TYPE_INTEGER {
            b.u32(e.min as u32).u32(e.max as u32).u32(e.step as u32);
        }
        let pad = size::CTL_INFO - b.len();
        b.zeros(pad);
        Ok(b.into_vec())
    }

    /// The `virtio_snd_ctl_value` of element `id` (512 bytes; booleans and integers as le32).
    pub fn value_bytes(&self, id: u32) -> Result<Vec<u8>, RequestError> {
        let e = self.get(id)?;
        let mut b = LeBuf::with_capacity(size::CTL_VALUE);
        for &v in &e.values {
            b.u32(v as i32 as u32);
        }
        let pad = size::CTL_VALUE - b.len();
        b.zeros(pad);
        Ok(b.into_vec())
    }

    /// Applies a guest CTL_WRITE. Returns the new values if they changed (an unchanged write
    /// is not news to readers).
    pub fn write_value_bytes(
        &mut self,
        id: u32,
        value: &[u8],
    ) -> Result<Option<Vec<i64>>, RequestError> {
        let e = self.get(id)?;
        if e.access & ctl::ACCESS_WRITE == 0 {
            return Err(RequestError::NotSupported("control is read-only"));
        }
        let mut values = Vec::with_capacity(e.count as usize);
        for i in 0..e.count as usize {
            let raw = crate::spec::le32(value, i * 4).ok_or(RequestError::ShortRequest {
                got: value.len() as u64,
                need: ((i + 1) * 4) as u64,
            })?;
            values.push(raw as i32 as i64);
        }
        self.set_values(id, &values)
            .map(|changed| changed.then_some(values))
    }

    /// Sets element `id` to `values` (from the guest or a reader). Returns whether anything
    /// changed.
    pub fn set_values(&mut self, id: u32, values: &[i64]) -> Result<bool, RequestError> {
        let e = self.get_mut(id)?;
        e.check(id, values)?;
        if e.values == values {
            return Ok(false);
        }
        e.values = values.to_vec();
        Ok(true)
    }

    /// The TLV of element `id` (a DB_SCALE), as the guest reads it with CTL_TLV_READ.
    pub fn tlv_bytes(&self, id: u32) -> Result<Vec<u8>, RequestError> {
        let e = self.get(id)?;
        let db = match (e.access & ctl::ACCESS_TLV_READ != 0, e.db) {
            (true, Some(db)) => db,
            _ => return Err(RequestError::NotSupported("control has no TLV")),
        };
        let mut step_mute = (db.step_cdb as u32) & 0xffff;
        if db.mute_at_min {
            step_mute |= ctl::TLV_DB_SCALE_MUTE;
        }
        let mut b = LeBuf::with_capacity(16);
        b.u32(ctl::TLVT_DB_SCALE)
            .u32(8)
            .u32(db.min_cdb as u32)
            .u32(step_mute);
        Ok(b.into_vec())
    }

    /// One CONTROL record per element with its current values and origin `Initial`: what the
    /// daemon publishes when it starts, so the tap's snapshot can replay every control.
    pub fn value_records(&self) -> Vec<Record> {
        self.elems
            .iter()
            .enumerate()
            .map(|(id, e)| Record::Control {
                id: id as u32,
                origin: ControlOrigin::Initial,
                values: e.values.clone(),
            })
            .collect()
    }

    /// What readers are told about the elements.
    pub fn descs(&self) -> Vec<ControlDesc> {
        self.elems
            .iter()
            .enumerate()
            .map(|(id, e)| ControlDesc {
                id: id as u32,
                name: e.name.clone(),
                index: e.index,
                role: e.role,
                ctype: e.ctype,
                count: e.count,
                min: e.min,
                max: e.max,
                step: e.step,
                db_min: e.db.map_or(0, |d| d.min_cdb),
                db_step: e.db.map_or(0, |d| d.step_cdb),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_info() {
        let c = Controls::new(1, 1);
        assert_eq!(c.len(), Controls::count_for(1, 1));
        let info = c.info_bytes(0).unwrap();
        assert_eq!(info.len(), 96);
        assert_eq!(&info[4..8], &ctl::ROLE_VOLUME.to_le_bytes());
        assert_eq!(&info[8..12], &ctl::TYPE_INTEGER.to_le_bytes());
        assert_eq!(&info[16..20], &2u32.to_le_bytes());
        assert_eq!(&info[24..46], b"Master Playback Volume");
        // union at offset 72: min, max, step
        assert_eq!(&info[72..76], &0u32.to_le_bytes());
        assert_eq!(&info[76..80], &100u32.to_le_bytes());
        assert_eq!(&info[80..84], &1u32.to_le_bytes());
        assert!(matches!(
            c.info_bytes(99),
            Err(RequestError::UnknownControl(99))
        ));
    }

    #[test]
    fn writes_are_checked_and_deduplicated() {
        let mut c = Controls::new(1, 0);
        let mut v = vec![0u8; 512];
        v[0..4].copy_from_slice(&50u32.to_le_bytes());
        v[4..8].copy_from_slice(&60u32.to_le_bytes());
        assert_eq!(c.write_value_bytes(0, &v).unwrap(), Some(vec![50, 60]));
        assert_eq!(c.write_value_bytes(0, &v).unwrap(), None);
        v[0..4].copy_from_slice(&101u32.to_le_bytes());
        assert!(c.write_value_bytes(0, &v).is_err());
        v[0..4].copy_from_slice(&(-1i32 as u32).to_le_bytes());
        assert!(c.write_value_bytes(0, &v).is_err());
        assert_eq!(c.get(0).unwrap().values, vec![50, 60]);
        assert!(c.set_values(1, &[2]).is_err());
        assert!(c.set_values(1, &[0, 0]).is_err());
        assert!(c.set_values(1, &[0]).unwrap());
        let tlv = c.tlv_bytes(0).unwrap();
        assert_eq!(&tlv[8..12], &(-5000i32 as u32).to_le_bytes());
        assert_eq!(&tlv[12..16], &(50u32 | 0x10000).to_le_bytes());
        assert!(c.tlv_bytes(1).is_err());
    }

    /// The step check of a value far outside the range, or of a range wider than i64.
    #[test]
    fn step_checks_do_not_overflow() {
        let elem = |min, max, step| ControlElem {
            min,
            max,
            step,
            count: 1,
            values: vec![min],
            ..ControlElem::volume("Wave Playback Volume", 0, ctl::ROLE_VOLUME)
        };
        let mut c = Controls {
            elems: vec![elem(-10, 10, 2), elem(i64::MIN, i64::MAX, 3)],
        };
        assert!(c.set_values(0, &[i64::MAX]).is_err());
        assert!(c.set_values(0, &[i64::MIN]).is_err());
        assert!(c.set_values(0, &[4]).unwrap());
        assert!(c.set_values(0, &[5]).is_err());
        assert!(c.set_values(1, &[i64::MAX - 1]).is_err());
        assert!(c.set_values(1, &[i64::MAX]).unwrap());
        assert!(c.set_values(1, &[i64::MIN + 3]).unwrap());
    }

    #[test]
    fn value_records_cover_every_element() {
        let mut c = Controls::new(2, 1);
        c.set_values(0, &[10, 20]).unwrap();
        let recs = c.value_records();
        assert_eq!(recs.len() as u32, c.len());
        for (i, r) in recs.iter().enumerate() {
            let Record::Control { id, origin, values } = r else {
                panic!("{r:?}");
            };
            assert_eq!(*id, i as u32);
            assert_eq!(*origin, ControlOrigin::Initial);
            assert_eq!(values, &c.get(*id).unwrap().values);
        }
        assert!(Controls::new(0, 0).value_records().is_empty());
    }
}
