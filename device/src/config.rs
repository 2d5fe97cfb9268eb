//! The card's shape, from the command line: how many streams, which formats and rates, how
//! the clock runs; and the virtio config space and tap greeting derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use dsproxy_wire::format::{PcmFormat, PcmRate, RATES};
use dsproxy_wire::record::{Direction, Hello, StreamDesc, PROTOCOL_VERSION};

use crate::controls::Controls;
use crate::error::DeviceError;
use crate::profile::Profile;

/// How TX buffers are completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pacing {
    /// At the stream's real-time rate, like a DMA engine consuming a ring.
    Realtime,
    /// As soon as the attached readers have taken them (capture faster than real time), but
    /// two periods stay queued while the guest writes, so its driver never runs dry.
    None,
}

const QEMU_EXAMPLE: &str = "\
Run it with QEMU (10.0 or later; guest memory must be shared):
  dsproxy-device --socket /tmp/dsproxy-vhost.sock &
  qemu-system-x86_64 -accel tcg -cpu max -m 512M \\
    -object memory-backend-memfd,id=mem,size=512M,share=on \\
    -machine q35,memory-backend=mem \\
    -chardev socket,id=snd,path=/tmp/dsproxy-vhost.sock \\
    -device vhost-user-snd-pci,chardev=snd,controls=on \\
    -kernel vmlinuz -initrd initrd.img -append console=ttyS0 -nographic
Drop `controls=on` (and pass --no-controls) for a card without mixer controls.
Windows guests: the ACX driver viosnd works with the defaults; aero's Windows 7 driver needs
`--profile aero` (see the README's \"Windows guests\").
The daemon serves one QEMU after another on the same socket. (QEMU 10.0's
vhost-user-snd-pci does not wait for a `reconnect-ms` chardev to connect when it starts,
so leave that option off.)
Readers attach to the tap: dsproxy-host-reader -f out.wav

Logging: RUST_LOG=dsproxy_device=debug (levels error, warn, info, debug, trace).";

/// dsproxy-device: a virtio-snd sound card for QEMU guests (vhost-user backend) that relays
/// everything the guest plays to host readers.
#[derive(Debug, Parser)]
#[command(name = "dsproxy-device", version, after_help = QEMU_EXAMPLE)]
pub struct Cli {
    /// vhost-user socket QEMU connects to (`-chardev socket,path=...`).
    #[arg(long, value_name = "PATH", default_value = "/tmp/dsproxy-vhost.sock")]
    pub socket: PathBuf,
    /// Unix socket readers attach to (created mode 0600).
    /// [default: $XDG_RUNTIME_DIR/dsproxy.sock or /tmp/dsproxy-$UID.sock]
    #[arg(long, value_name = "PATH")]
    pub tap: Option<PathBuf>,
    /// Also accept readers over TCP at ADDR (e.g. 127.0.0.1:9138, or just a port for
    /// localhost). Off by default: the stream is unauthenticated.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Let TCP readers (--listen) set the guest's mixer and inject audio into its
    /// microphone. Off by default: TCP readers only listen (unix readers, behind the
    /// socket's 0600, always may).
    #[arg(long)]
    pub allow_tcp_control: bool,
    /// Output (playback) PCM streams.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub outputs: u32,
    /// Input (capture) PCM streams.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub inputs: u32,
    /// Most channels of an output stream (1-8).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub channels_max: u8,
    /// Most channels of an input stream (1-8).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub input_channels_max: u8,
    /// Sample formats offered, comma-separated (ALSA names: U8,S16,S24,S24_3LE,S32,FLOAT,
    /// MU_LAW,A_LAW,...).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "MU_LAW,A_LAW,S8,U8,S16,U16,S24_3LE,S24,S32,FLOAT,FLOAT64"
    )]
    pub formats: String,
    /// Sample rates offered in Hz, comma-separated, or "all" (5512-384000).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "8000,11025,16000,22050,32000,44100,48000,64000,88200,96000,176400,192000"
    )]
    pub rates: String,
    /// How playback buffers are completed: at the real-time rate, or as soon as readers
    /// have taken them (keeping the guest's last two periods until more arrive or they
    /// would have played).
    #[arg(long, value_enum, default_value_t = Pacing::Realtime)]
    pub pacing: Pacing,
    /// Keep the card's clock stopped (playback buffers held, nothing discarded) until a
    /// reader attaches.
    #[arg(long)]
    pub wait_for_reader: bool,
    /// Do not offer mixer control elements (VIRTIO_SND_F_CTLS).
    #[arg(long)]
    pub no_controls: bool,
    /// Bytes queued for one reader above which the card's clock waits for it.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub high_water: usize,
    /// Bytes of injected capture audio buffered per input stream.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub inject_limit: usize,
    /// Largest virtqueue size offered to the driver.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub queue_size: u16,
    /// Shape the card for a guest driver: `standard` (virtio-snd as specified: Linux, the
    /// Windows ACX driver viosnd) or `aero` (the aero project's Windows 7 driver and its
    /// dialect: one output and one input stream, no jacks or channel maps, 8-byte PCM
    /// transfer headers, PCM_INFO requests without `size`, status codes 0-3; spec drivers
    /// such as Linux's do not work with it).
    #[arg(long, value_enum, default_value_t = Profile::Standard)]
    pub profile: Profile,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>()
        .map_err(|e| format!("{s:?} is neither a port nor an address:port ({e})"))
}

/// The most streams a card may have (the tap's stream masks are 64 bits wide).
pub const MAX_STREAMS: u32 = 64;
/// The largest PCM buffer (`buffer_bytes`) the card accepts.
pub const MAX_BUFFER_BYTES: u32 = 16 << 20;

/// What the card is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardConfig {
    pub name: String,
    pub outputs: u32,
    pub inputs: u32,
    pub out_channels_max: u8,
    pub in_channels_max: u8,
    /// virtio-snd format mask.
    pub formats: u64,
    /// virtio-snd rate mask.
    pub rates: u64,
    pub pacing: Pacing,
    pub wait_for_reader: bool,
    /// Offer VIRTIO_SND_F_CTLS.
    pub controls: bool,
    pub max_buffer_bytes: u32,
    pub queue_size: u16,
    pub profile: Profile,
}

impl Default for CardConfig {
    fn default() -> Self {
        CardConfig {
            name: "dsproxy".to_owned(),
            outputs: 1,
            inputs: 1,
            out_channels_max: 8,
            in_channels_max: 2,
            formats: parse_formats("MU_LAW,A_LAW,S8,U8,S16,U16,S24_3LE,S24,S32,FLOAT,FLOAT64")
                .unwrap_or(0),
            rates: (1..=12).fold(0u64, |m, c| m | (1u64 << c)),
            pacing: Pacing::Realtime,
            wait_for_reader: false,
            controls: true,
            max_buffer_bytes: MAX_BUFFER_BYTES,
            queue_size: 1024,
            profile: Profile::Standard,
        }
    }
}

/// Parses a comma-separated list of format names into a virtio-snd format mask.
pub fn parse_formats(list: &str) -> Result<u64, DeviceError> {
    let mut mask = 0u64;
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let f = PcmFormat::from_name(name)
            .ok_or_else(|| DeviceError::Config(format!("unknown sample format {name:?}")))?;
        if f.sample_bytes().is_none() {
            return Err(DeviceError::Config(format!(
                "sample format {name} is not byte-addressed; the card cannot clock it"
            )));
        }
        mask |= f.mask_bit();
    }
    if mask == 0 {
        return Err(DeviceError::Config("no sample format given".into()));
    }
    Ok(mask)
}

/// Parses a comma-separated list of rates in Hz (or "all") into a virtio-snd rate mask.
pub fn parse_rates(list: &str) -> Result<u64, DeviceError> {
    if list.trim().eq_ignore_ascii_case("all") {
        return Ok((0..RATES.len()).fold(0u64, |m, c| m | (1u64 << c)));
    }
    let mut mask = 0u64;
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let hz: u32 = item
            .parse()
            .map_err(|_| DeviceError::Config(format!("rate {item:?} is not a number")))?;
        let r = PcmRate::from_hz(hz).ok_or_else(|| {
            DeviceError::Config(format!(
                "rate {hz} Hz is not a virtio-snd rate (one of {RATES:?})"
            ))
        })?;
        mask |= r.mask_bit();
    }
    if mask == 0 {
        return Err(DeviceError::Config("no sample rate given".into()));
    }
    Ok(mask)
}

impl CardConfig {
    /// Builds and checks the card from the command line.
    pub fn from_cli(cli: &Cli) -> Result<CardConfig, DeviceError> {
        let cfg = CardConfig {
            name: "dsproxy".to_owned(),
            outputs: cli.outputs,
            inputs: cli.inputs,
            out_channels_max: cli.channels_max,
            in_channels_max: cli.input_channels_max,
            formats: parse_formats(&cli.formats)?,
            rates: parse_rates(&cli.rates)?,
            pacing: cli.pacing,
            wait_for_reader: cli.wait_for_reader,
            controls: !cli.no_controls,
            max_buffer_bytes: MAX_BUFFER_BYTES,
            queue_size: cli.queue_size,
            profile: cli.profile,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), DeviceError> {
        let total = self.outputs.saturating_add(self.inputs);
        if total == 0 || total > MAX_STREAMS {
            return Err(DeviceError::Config(format!(
                "the card needs 1 to {MAX_STREAMS} streams, got {} outputs + {} inputs",
                self.outputs, self.inputs
            )));
        }
        for (what, ch) in [
            ("--channels-max", self.out_channels_max),
            ("--input-channels-max", self.in_channels_max),
        ] {
            if !(1..=8).contains(&ch) {
                return Err(DeviceError::Config(format!("{what} must be 1-8, got {ch}")));
            }
        }
        if self.queue_size == 0 || !self.queue_size.is_power_of_two() || self.queue_size > 32768 {
            return Err(DeviceError::Config(format!(
                "--queue-size must be a power of two up to 32768, got {}",
                self.queue_size
            )));
        }
        if self.formats == 0 || self.rates == 0 {
            return Err(DeviceError::Config("no formats or rates".into()));
        }
        if self.profile == Profile::Aero {
            self.validate_aero()?;
        }
        Ok(())
    }

    /// What aero's driver checks before it starts: streams 0 (output, 2 channels) and 1
    /// (input, 1 channel), both offering S16 at 48 kHz.
    fn validate_aero(&self) -> Result<(), DeviceError> {
        let bad = |what: &str| {
            Err(DeviceError::Config(format!(
                "--profile aero: aero's driver needs {what}"
            )))
        };
        if self.outputs != 1 || self.inputs != 1 {
            return bad("exactly one output and one input stream (--outputs 1 --inputs 1)");
        }
        if self.out_channels_max < 2 {
            return bad("a stereo output (--channels-max 2 or more)");
        }
        if self.formats & PcmFormat::S16.mask_bit() == 0 {
            return bad("S16 among the formats");
        }
        if self.rates & PcmRate::R48000.mask_bit() == 0 {
            return bad("48000 Hz among the rates");
        }
        Ok(())
    }

    pub fn num_streams(&self) -> u32 {
        self.outputs + self.inputs
    }

    /// Jacks in the config space: one per stream (same number), none with `--profile aero`.
    pub fn jacks(&self) -> u32 {
        if self.profile.jacks_and_chmaps() {
            self.num_streams()
        } else {
            0
        }
    }

    /// Channel maps in the config space: one per stream, none with `--profile aero`.
    pub fn chmaps(&self) -> u32 {
        self.jacks()
    }

    /// Streams are numbered outputs first, then inputs (jacks and channel maps follow the
    /// stream numbers: see [`jacks`](Self::jacks)).
    pub fn stream_direction(&self, id: u32) -> Option<Direction> {
        if id < self.outputs {
            Some(Direction::Output)
        } else if id < self.num_streams() {
            Some(Direction::Input)
        } else {
            None
        }
    }

    /// The stream's index among the streams of its direction; also its HDA function node, so
    /// that output i and input i form one ALSA PCM device (hw:N,i) in the Linux driver. With
    /// `--profile aero`, the stream id itself (see [`Profile::paired_nids`]).
    pub fn stream_nid(&self, id: u32) -> u32 {
        if !self.profile.paired_nids() || id < self.outputs {
            id
        } else {
            id - self.outputs
        }
    }

    pub fn channels_max(&self, id: u32) -> u8 {
        match self.stream_direction(id) {
            Some(Direction::Input) => self.in_channels_max,
            _ => self.out_channels_max,
        }
    }

    /// The virtio config space: `jacks`, `streams`, `chmaps` and, when control elements are
    /// offered, `controls` (le32 each).
    pub fn config_space(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        for x in [self.jacks(), self.num_streams(), self.chmaps()] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        if self.controls {
            v.extend_from_slice(&Controls::count_for(self.outputs, self.inputs).to_le_bytes());
        }
        v
    }

    /// The card's mixer as it starts: every element at its default (none with
    /// `--no-controls`).
    pub fn initial_controls(&self) -> Controls {
        if self.controls {
            Controls::new(self.outputs, self.inputs)
        } else {
            Controls::new(0, 0)
        }
    }

    /// What every reader is told first.
    pub fn hello(&self, time_ns: u64) -> Hello {
        let streams = (0..self.num_streams())
            .map(|id| StreamDesc {
                id,
                direction: self.stream_direction(id).unwrap_or(Direction::Output),
                channels_min: 1,
                channels_max: self.channels_max(id),
                formats: self.formats,
                rates: self.rates,
            })
            .collect();
        let controls = self.initial_controls().descs();
        Hello {
            version: PROTOCOL_VERSION,
            time_ns,
            name: self.name.clone(),
            jacks: self.jacks(),
            chmaps: self.chmaps(),
            streams,
            controls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse() {
        let m = parse_formats("S16, u8,FLOAT").unwrap();
        assert_eq!(
            m,
            PcmFormat::S16.mask_bit() | PcmFormat::U8.mask_bit() | PcmFormat::FLOAT.mask_bit()
        );
        assert!(parse_formats("IMA_ADPCM").is_err());
        assert!(parse_formats("bogus").is_err());
        assert!(parse_formats("").is_err());
        assert_eq!(
            parse_rates("48000,8000").unwrap(),
            PcmRate::R48000.mask_bit() | PcmRate::R8000.mask_bit()
        );
        assert!(parse_rates("44101").is_err());
        assert_eq!(parse_rates("all").unwrap().count_ones(), 14);
        assert_eq!(parse_listen("9138").unwrap().port(), 9138);
        assert!(parse_listen("nope").is_err());
    }

    #[test]
    fn config_space_and_streams() {
        let mut c = CardConfig {
            outputs: 2,
            inputs: 1,
            ..CardConfig::default()
        };
        c.validate().unwrap();
        let cs = c.config_space();
        assert_eq!(cs.len(), 16);
        assert_eq!(&cs[0..4], &3u32.to_le_bytes());
        assert_eq!(&cs[12..16], &(2u32 + 2 * 2 + 2).to_le_bytes());
        assert_eq!(c.stream_direction(1), Some(Direction::Output));
        assert_eq!(c.stream_direction(2), Some(Direction::Input));
        assert_eq!(c.stream_direction(3), None);
        assert_eq!(c.stream_nid(2), 0);
        c.controls = false;
        assert_eq!(c.config_space().len(), 12);
        c.outputs = 0;
        c.inputs = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn aero_profile() {
        let mut c = CardConfig {
            profile: Profile::Aero,
            controls: false,
            ..CardConfig::default()
        };
        c.validate().unwrap();
        let cs = c.config_space();
        assert_eq!(cs.len(), 12);
        // jacks 0, streams 2, chmaps 0: what the driver's config check accepts.
        assert_eq!(cs, [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((c.stream_nid(0), c.stream_nid(1)), (0, 1));
        let h = c.hello(0);
        assert_eq!((h.jacks, h.chmaps), (0, 0));
        c.outputs = 2;
        assert!(c.validate().is_err());
        c.outputs = 1;
        c.rates = PcmRate::R44100.mask_bit();
        assert!(c.validate().is_err());
        c.rates = PcmRate::R48000.mask_bit();
        c.formats = PcmFormat::U8.mask_bit();
        assert!(c.validate().is_err());
        c.formats = PcmFormat::S16.mask_bit();
        c.out_channels_max = 1;
        assert!(c.validate().is_err());
    }
}
