//! The command line. The one-letter flags are those of the original dsproxy_reader
//! (0.2.17), so its users feel at home; the long options are new.

use std::path::PathBuf;

use clap::Parser;
use dsproxy_wire::PcmFormat;

use crate::convert::AudioShape;
use crate::mixer_set::{parse_mixer_arg, MixerArg};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "dsproxy-host-reader",
    version,
    about = "Record, pipe, log and play what a dsproxy guest plays",
    after_help = "Examples:\n  \
        dsproxy-host-reader -e -f out.wav\n  \
        dsproxy-host-reader -s -x | lame -r -s 44.1 - out.mp3\n  \
        dsproxy-host-reader -n vmhost -e\n  \
        dsproxy-host-reader -x --inject speech.wav -f out.wav\n  \
        dsproxy-host-reader -x --mixer pcm=50:50 --mixer vol=unmute\n  \
        dsproxy-host-reader --check out.wav --expect golden.wav --plot out.png"
)]
pub struct Cli {
    /// Attach to the device's unix tap socket [default: $XDG_RUNTIME_DIR/dsproxy.sock,
    /// or /tmp/dsproxy-$UID.sock]
    #[arg(
        short = 'u',
        long = "unix",
        value_name = "PATH",
        conflicts_with = "net"
    )]
    pub unix: Option<PathBuf>,

    /// Attach to the device over TCP (default port 9138)
    #[arg(short = 'n', long = "net", value_name = "HOST[:PORT]")]
    pub net: Option<String>,

    /// Record QEMU's own emulated cards (Intel HDA, AC97, virtio-sound-pci...: what Windows
    /// guests drive) through QEMU's D-Bus audio, attaching at QEMU's QMP socket PATH. QEMU
    /// needs -audiodev dbus,id=snd0,out.mixing-engine=off -display dbus,p2p=yes,audiodev=snd0
    /// -qmp unix:PATH,server=on,wait=off. With out.mixing-engine=off each voice comes in the
    /// guest's own format, bit-exact; with QEMU's default (on) the reader gets QEMU's mix,
    /// resampled to the audiodev's out.* format (virtio-sound-pci needs that, with out.*
    /// equal to the guest's format: with the engine off QEMU 10 drops its audio). QEMU paces
    /// these cards itself: -d and --live do not apply, and --mixer has no way in
    #[arg(
        long = "qmp",
        value_name = "PATH",
        conflicts_with_all = ["unix", "net", "no_pacing", "live", "mixer"]
    )]
    pub qmp: Option<PathBuf>,

    /// Write the audio to FILE: *.wav → a WAV file (RF64 past 4 GiB), anything else → raw
    /// PCM as the guest wrote it. One file per output stream (out.wav, out.1.wav, …); a
    /// format change starts a new segment (out.seg2.wav, …)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Write raw PCM of the main output stream to stdout
    #[arg(short = 's', long = "stdout")]
    pub stdout: bool,

    /// Log parameter, mixer and stream changes to stderr in English (OSS ioctl names)
    #[arg(short = 'e', long = "english")]
    pub english: bool,

    /// Log every record (kind, stream, fields) to stderr
    #[arg(short = 'i', long = "records")]
    pub records: bool,

    /// Do not play on the host's sound device
    #[arg(short = 'x', long = "no-play")]
    pub no_play: bool,

    /// Reopen the host sound device when the guest resets the stream
    #[arg(short = 'r', long = "reopen")]
    pub reopen: bool,

    /// Disable pacing: ask the device to release the guest's buffers as fast as the reader
    /// takes them (faster-than-real-time capture; best with -x). dsproxy-device only: QEMU
    /// paces its own cards (--qmp)
    #[arg(short = 'd', long = "no-pacing")]
    pub no_pacing: bool,

    /// Record (and play) only this output stream; it also becomes the main stream for -s
    #[arg(long, value_name = "N")]
    pub stream: Option<u32>,

    /// Exit once the guest, having played, keeps the device closed for --idle seconds, or
    /// the VM goes away
    #[arg(long)]
    pub once: bool,

    /// Feed FILE (WAV, or raw in the input stream's params) to the guest's capture stream
    #[arg(long, value_name = "FILE")]
    pub inject: Option<PathBuf>,

    /// The input stream to inject into [default: the card's first input stream]
    #[arg(long, value_name = "N", requires = "inject")]
    pub inject_stream: Option<u32>,

    /// Shape of a raw --inject file, converted to the input stream's params, e.g.
    /// S16_LE:44100:2 [default: already in the input stream's params]
    #[arg(long, value_name = "FORMAT:RATE:CHANNELS", requires = "inject", value_parser = parse_shape)]
    pub inject_raw: Option<AudioShape>,

    /// Set a guest mixer control once attached: NAME is an OSS channel (vol, pcm, igain, …)
    /// or a control's full name from the card (e.g. "Master Playback Switch", "PCM Playback
    /// Volume#1"); values in the control's own range (0..100 for dsproxy-device's volumes),
    /// on/off/mute/unmute for switches. Repeatable. Alone with -x: set, wait for the device
    /// to confirm, exit
    #[arg(long = "mixer", value_name = "NAME=LEFT[:RIGHT]", value_parser = parse_mixer_arg)]
    pub mixer: Vec<MixerArg>,

    /// When the device goes away, keep trying to reattach and continue into a new segment
    #[arg(long)]
    pub reconnect: bool,

    /// Never hold the guest back: audio the reader cannot take in time is dropped by the
    /// device, reported as a gap and recorded as silence
    #[arg(long)]
    pub live: bool,

    /// Host output device to play on (a cpal device id such as alsa:default)
    /// [default: the default output device]
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,

    #[command(flatten)]
    pub watch: crate::watch::WatchArgs,

    #[command(flatten)]
    pub verdict: crate::verdict::args::VerdictArgs,
}

/// Where the tap is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Cli {
    /// `--mixer` is the only job: nothing recorded, logged, injected or played. The reader
    /// sets the mixer, waits for the device to confirm and exits.
    pub fn mixer_only(&self) -> bool {
        !self.mixer.is_empty()
            && self.no_play
            && self.file.is_none()
            && !self.stdout
            && !self.english
            && !self.records
            && self.inject.is_none()
    }

    /// The tap to attach to.
    pub fn target(&self) -> Result<Target, String> {
        match (&self.net, &self.unix) {
            (Some(n), _) => parse_host_port(n),
            (None, Some(p)) => Ok(Target::Unix(p.clone())),
            (None, None) => Ok(Target::Unix(dsproxy_wire::default_tap_path())),
        }
    }
}

/// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address.
pub fn parse_host_port(s: &str) -> Result<Target, String> {
    let bad = || format!("-n {s:?}: expected HOST or HOST:PORT");
    let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, dsproxy_wire::DEFAULT_TCP_PORT),
            _ => (h, port_of(after.strip_prefix(':').ok_or_else(bad)?)?),
        }
    } else if s.matches(':').count() > 1 {
        (s, dsproxy_wire::DEFAULT_TCP_PORT)
    } else if let Some((h, p)) = s.split_once(':') {
        (h, port_of(p)?)
    } else {
        (s, dsproxy_wire::DEFAULT_TCP_PORT)
    };
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Target::Tcp {
        host: host.to_string(),
        port,
    })
}

/// `FORMAT:RATE:CHANNELS`, e.g. `S16_LE:44100:2`.
pub fn parse_shape(s: &str) -> Result<AudioShape, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [f, r, c] = parts[..] else {
        return Err(format!(
            "{s:?}: expected FORMAT:RATE:CHANNELS, e.g. S16_LE:44100:2"
        ));
    };
    let format = PcmFormat::from_name(f).ok_or_else(|| format!("unknown sample format {f:?}"))?;
    if !crate::convert::is_convertible(format) {
        return Err(format!("{format} files cannot be converted"));
    }
    let rate_hz: u32 = r
        .parse()
        .ok()
        .filter(|&r| (1000..=768_000).contains(&r))
        .ok_or_else(|| format!("bad rate {r:?} (1000..768000 Hz)"))?;
    let channels: u16 = c
        .parse()
        .ok()
        .filter(|&c| (1..=255).contains(&c))
        .ok_or_else(|| format!("bad channel count {c:?} (1..255)"))?;
    Ok(AudioShape {
        format,
        rate_hz,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(h: &str, p: u16) -> Target {
        Target::Tcp {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn host_port() {
        assert_eq!(parse_host_port("vm"), Ok(tcp("vm", 9138)));
        assert_eq!(parse_host_port("vm:1234"), Ok(tcp("vm", 1234)));
        assert_eq!(parse_host_port("[::1]:99"), Ok(tcp("::1", 99)));
        assert_eq!(parse_host_port("[::1]"), Ok(tcp("::1", 9138)));
        assert_eq!(parse_host_port("fe80::1"), Ok(tcp("fe80::1", 9138)));
        assert!(parse_host_port("vm:").is_err());
        assert!(parse_host_port("vm:99999").is_err());
        assert!(parse_host_port(":80").is_err());
        assert!(parse_host_port("[::1]x").is_err());
        assert_eq!(tcp("::1", 5).to_string(), "[::1]:5");
    }

    #[test]
    fn shapes() {
        assert_eq!(
            parse_shape("s16_le:44100:2"),
            Ok(AudioShape {
                format: PcmFormat::S16,
                rate_hz: 44100,
                channels: 2
            })
        );
        assert!(parse_shape("S16_LE:44100").is_err());
        assert!(parse_shape("XX:44100:2").is_err());
        assert!(parse_shape("S16:0:2").is_err());
        assert!(parse_shape("S16:8000:0").is_err());
        assert!(parse_shape("DSD_U8:8000:1").is_err());
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from([
            "r", "-e", "-i", "-x", "-r", "-d", "-s", "-f", "o.wav", "-u", "/s", "--once",
        ])
        .unwrap();
        assert!(c.english && c.records && c.no_play && c.reopen && c.no_pacing && c.stdout);
        assert_eq!(c.target(), Ok(Target::Unix("/s".into())));
        assert!(Cli::try_parse_from(["r", "-u", "/s", "-n", "h"]).is_err());
        assert!(Cli::try_parse_from(["r", "--inject-stream", "1"]).is_err());
        assert!(Cli::try_parse_from(["r", "-q"]).is_err());
        let c =
            Cli::try_parse_from(["r", "-x", "--mixer", "pcm=50", "--mixer", "vol=mute"]).unwrap();
        assert_eq!(c.mixer.len(), 2);
        assert_eq!(c.mixer[1].name, "vol");
        assert!(c.mixer_only());
        for more in [["-e"], ["-i"], ["-s"]] {
            let c = Cli::try_parse_from(["r", "-x", "--mixer", "pcm=50", more[0]]).unwrap();
            assert!(!c.mixer_only());
        }
        assert!(!Cli::try_parse_from(["r", "--mixer", "pcm=50"])
            .unwrap()
            .mixer_only());
        assert!(
            !Cli::try_parse_from(["r", "-x", "-f", "o.wav", "--mixer", "pcm=5"])
                .unwrap()
                .mixer_only()
        );
        assert!(Cli::try_parse_from(["r", "--mixer", "pcm"]).is_err());
        assert!(Cli::try_parse_from(["r", "--mixer", "pcm=loud"]).is_err());
        Cli::command_for_tests().debug_assert();
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
