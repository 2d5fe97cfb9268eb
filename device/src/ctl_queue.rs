//! The control queue: parse the request header, route it, write the status (and payload).
//!
//! Every control request is answered at once, whatever the clock is doing: the Linux driver
//! gives up on a control message after about a second.

use dsproxy_wire::record::{ControlOrigin, Record};
use log::{debug, warn};
use vm_memory::GuestMemory;

use crate::card::{Card, CardTap};
use crate::chain::Chain;
use crate::error::{Rejected, RequestError};
use crate::pcm::{PcmCommand, SetParams};
use crate::spec::{code, le32, size, Status, CONTROL_QUEUE};
use crate::{chmap, jack, pcm, Used};

impl<T: CardTap> Card<T> {
    pub(crate) fn handle_control<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        chain: Chain,
        now: u64,
    ) {
        let head = chain.head;
        if chain.writable_len() < size::HDR as u64 {
            self.reject(
                &Rejected {
                    queue: "control",
                    head,
                    request: None,
                    stream: None,
                    status: None,
                },
                &RequestError::ShortResponse {
                    got: chain.writable_len(),
                    need: size::HDR as u64,
                },
                now,
            );
            self.used.push(Used {
                queue: CONTROL_QUEUE,
                head,
                len: 0,
            });
            return;
        }
        let mut req_code = None;
        let result = self.control_request(mem, &chain, now, &mut req_code);
        let (status, payload) = match result {
            Ok(payload) => (Status::Ok, payload),
            Err((stream, e)) => {
                self.reject(
                    &Rejected {
                        queue: "control",
                        head,
                        request: req_code,
                        stream,
                        status: Some(e.status()),
                    },
                    &e,
                    now,
                );
                (e.status(), Vec::new())
            }
        };
        let mut len = size::HDR as u32;
        if !payload.is_empty() {
            match chain.write_at(mem, size::HDR as u64, &payload) {
                Ok(()) => len += payload.len() as u32,
                Err(e) => {
                    warn!("control request {head}: response unwritable: {e}");
                    let _ = chain.write_at(
                        mem,
                        0,
                        &self.cfg.profile.status_code(Status::IoErr).to_le_bytes(),
                    );
                    self.used.push(Used {
                        queue: CONTROL_QUEUE,
                        head,
                        len: size::HDR as u32,
                    });
                    return;
                }
            }
        }
        if let Err(e) = chain.write_at(mem, 0, &self.cfg.profile.status_code(status).to_le_bytes())
        {
            warn!("control request {head}: status unwritable: {e}");
            len = 0;
        }
        self.used.push(Used {
            queue: CONTROL_QUEUE,
            head,
            len,
        });
    }

    /// Reads the request and does it; returns the response bytes that follow the status
    /// header. Errors carry the stream the request was about, for the log line.
    fn control_request<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        chain: &Chain,
        now: u64,
        req_code: &mut Option<u32>,
    ) -> Result<Vec<u8>, (Option<u32>, RequestError)> {
        let plain = |e| (None, e);
        if chain.misordered {
            return Err(plain(RequestError::Misordered));
        }
        chain.check_mapped(mem).map_err(plain)?;
        let rlen = chain.readable_len();
        if rlen < size::HDR as u64 {
            return Err(plain(RequestError::ShortRequest {
                got: rlen,
                need: size::HDR as u64,
            }));
        }
        let c = read_request(mem, chain, size::HDR).map_err(plain)?;
        let c = le32(&c, 0).unwrap_or(0);
        *req_code = Some(c);
        let wlen = chain.writable_len();
        match c {
            code::JACK_INFO => {
                let cfg = &self.cfg;
                query(
                    mem,
                    chain,
                    cfg.profile.query_size_optional(),
                    cfg.jacks(),
                    size::JACK_INFO,
                    |id| jack::info_bytes(cfg, id),
                )
                .map_err(plain)
            }
            code::JACK_REMAP => {
                let r = read_request(mem, chain, size::JACK_REMAP).map_err(plain)?;
                let id = le32(&r, 4).unwrap_or(u32::MAX);
                jack::remap(&self.cfg, id)
                    .map(|()| Vec::new())
                    .map_err(|e| (Some(id), e))
            }
            code::PCM_INFO => {
                let cfg = &self.cfg;
                query(
                    mem,
                    chain,
                    cfg.profile.query_size_optional(),
                    cfg.num_streams(),
                    size::PCM_INFO,
                    |id| pcm::info_bytes(cfg, id).ok_or(RequestError::UnknownStream(id)),
                )
                .map_err(plain)
            }
            code::CHMAP_INFO => {
                let cfg = &self.cfg;
                query(
                    mem,
                    chain,
                    cfg.profile.query_size_optional(),
                    cfg.chmaps(),
                    size::CHMAP_INFO,
                    |id| chmap::info_bytes(cfg, id),
                )
                .map_err(plain)
            }
            code::PCM_SET_PARAMS => {
                let r = read_request(mem, chain, size::PCM_SET_PARAMS).map_err(plain)?;
                let p = SetParams::parse(&r).ok_or_else(|| {
                    plain(RequestError::ShortRequest {
                        got: rlen,
                        need: size::PCM_SET_PARAMS as u64,
                    })
                })?;
                self.set_params(mem, &p)
                    .map(|()| Vec::new())
                    .map_err(|e| (Some(p.stream), e))
            }
            code::PCM_PREPARE | code::PCM_START | code::PCM_STOP | code::PCM_RELEASE => {
                let r = read_request(mem, chain, size::PCM_HDR).map_err(plain)?;
                let id = le32(&r, 4).unwrap_or(u32::MAX);
                let cmd = PcmCommand::try_from(c).map_err(plain)?;
                self.stream_command(mem, cmd, id, now)
                    .map(|()| Vec::new())
                    .map_err(|e| (Some(id), e))
            }
            code::CTL_INFO
            | code::CTL_ENUM_ITEMS
            | code::CTL_READ
            | code::CTL_WRITE
            | code::CTL_TLV_READ
            | code::CTL_TLV_WRITE
            | code::CTL_TLV_COMMAND => {
                if !self.ctls_negotiated {
                    return Err(plain(RequestError::ControlsNotNegotiated));
                }
                self.control_element_request(mem, chain, c, wlen)
                    .map_err(plain)
            }
            other => Err(plain(RequestError::UnknownCode(other))),
        }
    }

    /// CTL_* requests.
    fn control_element_request<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        chain: &Chain,
        c: u32,
        wlen: u64,
    ) -> Result<Vec<u8>, RequestError> {
        if c == code::CTL_INFO {
            let controls = &self.controls;
            let size_optional = self.cfg.profile.query_size_optional();
            return query(
                mem,
                chain,
                size_optional,
                controls.len(),
                size::CTL_INFO,
                |id| controls.info_bytes(id),
            );
        }
        let r = read_request(mem, chain, size::CTL_HDR)?;
        let id = le32(&r, 4).unwrap_or(u32::MAX);
        // An unknown element is refused before its request is looked at further.
        self.controls.get(id)?;
        let need_out = |n: usize| {
            let need = (size::HDR + n) as u64;
            if wlen < need {
                Err(RequestError::ShortResponse { got: wlen, need })
            } else {
                Ok(())
            }
        };
        match c {
            code::CTL_ENUM_ITEMS => Err(RequestError::BadControlValue {
                id,
                why: "not an enumerated control".into(),
            }),
            code::CTL_READ => {
                need_out(size::CTL_VALUE)?;
                self.controls.value_bytes(id)
            }
            code::CTL_WRITE => {
                let r = read_request(mem, chain, size::CTL_HDR + size::CTL_VALUE)?;
                let value = r.get(size::CTL_HDR..).unwrap_or(&[]);
                if let Some(values) = self.controls.write_value_bytes(id, value)? {
                    debug!("guest set control {id} to {values:?}");
                    self.tap.publish(&Record::Control {
                        id,
                        origin: ControlOrigin::Guest,
                        values,
                    });
                } else {
                    debug!("guest wrote control {id} unchanged");
                }
                Ok(Vec::new())
            }
            code::CTL_TLV_READ => {
                let tlv = self.controls.tlv_bytes(id)?;
                need_out(tlv.len())?;
                Ok(tlv)
            }
            // The card's TLVs are read-only (no TLV write/command access bits).
            code::CTL_TLV_WRITE => Err(RequestError::NotSupported("TLV write")),
            code::CTL_TLV_COMMAND => Err(RequestError::NotSupported("TLV command")),
            other => Err(RequestError::UnknownCode(other)),
        }
    }
}

/// Reads the first `n` bytes of the request (the caller's fixed-size structure).
fn read_request<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: &Chain,
    n: usize,
) -> Result<Vec<u8>, RequestError> {
    let got = chain.readable_len();
    if got < n as u64 {
        return Err(RequestError::ShortRequest {
            got,
            need: n as u64,
        });
    }
    chain.read_vec(mem, 0, n)
}

/// A `virtio_snd_query_info` request over `items` items of at least `min_size` bytes each:
/// checks the range and the item size, and builds `count` items at a stride of `size`. A
/// profile that allows it may leave `size` out (a 12-byte request): `min_size` is meant.
fn query<M, F>(
    mem: &M,
    chain: &Chain,
    size_optional: bool,
    items: u32,
    min_size: usize,
    item: F,
) -> Result<Vec<u8>, RequestError>
where
    M: GuestMemory + ?Sized,
    F: Fn(u32) -> Result<Vec<u8>, RequestError>,
{
    let without_size = size::QUERY_INFO - 4;
    let r = if size_optional && chain.readable_len() == without_size as u64 {
        let mut r = read_request(mem, chain, without_size)?;
        r.extend_from_slice(&(min_size as u32).to_le_bytes());
        r
    } else {
        read_request(mem, chain, size::QUERY_INFO)?
    };
    let start = le32(&r, 4).unwrap_or(u32::MAX);
    let count = le32(&r, 8).unwrap_or(u32::MAX);
    let item_size = le32(&r, 12).unwrap_or(0);
    let bad = RequestError::BadQuery {
        start,
        count,
        items,
        size: item_size,
        min: min_size as u32,
    };
    let in_range = start.checked_add(count).is_some_and(|end| end <= items);
    let size_ok = (item_size as usize) >= min_size && (item_size as usize) <= size::MAX_QUERY_ITEM;
    if !in_range || !size_ok {
        return Err(bad);
    }
    // Both factors are bounded (items ≤ 64 streams or a few hundred controls, size ≤ 4 KiB).
    let need = (count as u64) * (item_size as u64) + size::HDR as u64;
    let wlen = chain.writable_len();
    if wlen < need {
        return Err(RequestError::ShortResponse { got: wlen, need });
    }
    let mut payload = Vec::with_capacity((need as usize).saturating_sub(size::HDR));
    for id in start..start + count {
        let mut b = item(id)?;
        b.resize(item_size as usize, 0);
        payload.extend_from_slice(&b);
    }
    Ok(payload)
}
