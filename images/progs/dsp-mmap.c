/* dsp-mmap: plays or records through the OSS "DMA buffer" the way Quake and other OSS-era games
 * do: mmap() the ring, SETTRIGGER, and follow the card's pointer (GETOPTR/GETIPTR) instead of
 * calling write()/read().
 *
 * Playback (Quake 1's snd_linux.c order by default): open O_RDWR, RESET, GETCAPS (needs
 * DSP_CAP_MMAP and DSP_CAP_TRIGGER), GETOSPACE, mmap(fragstotal x fragsize, PROT_WRITE,
 * MAP_SHARED), then STEREO/CHANNELS, SPEED, SETFMT; prefill the whole ring with the signal,
 * SETTRIGGER(0), SETTRIGGER(PCM_ENABLE_OUTPUT); then every few ms read GETOPTR and keep the
 * ring written --ahead-ms ahead of the pointer (never into the fragment the pointer is in), the
 * signal first and silence after it, as a game paints silence; stop (SETTRIGGER(0)) once the
 * card has taken the whole signal. The card must have taken nothing the program had not
 * written ("underruns" counts pointer positions past what was written).
 *
 * Recording (--record): open O_RDONLY, set the parameters, GETISPACE, mmap(PROT_READ),
 * SETTRIGGER(PCM_ENABLE_INPUT), then copy what lies behind GETIPTR's pointer until --bytes
 * were read, and print their hash like dsp-record.
 *
 * Output lines start with "DSP-MMAP: ". Exit 0 ok, 1 device or ioctl failure, 2 usage,
 * 3 --strict mismatch or an inconsistency (underrun, overrun, a pointer that disagrees with
 * the byte count).
 */
#include <fcntl.h>
#include <getopt.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dsp-signal.h"
#include "oss-common.h"

#define PREFIX "DSP-MMAP"
#define MAX_BYTES (64ul << 20)
#define MAX_HEX 256ul
#define POLL_US 4000

static void usage(FILE *f)
{
	fprintf(f,
		"usage: dsp-mmap [options]\n"
		"  -d, --device PATH     OSS device (default /dev/dsp)\n"
		"  -r, --rate HZ         SNDCTL_DSP_SPEED (default 22050)\n"
		"  -f, --format FMT      u8 | s16 (default s16)\n"
		"  -c, --channels N      channels (default 2)\n"
		"  -m, --ms N            play/record N milliseconds (default 2000)\n"
		"  -b, --bytes N         exactly N bytes instead\n"
		"  -F, --frag 0xMMMMSSSS SNDCTL_DSP_SETFRAGMENT before anything else (default: not set)\n"
		"  -a, --ahead-ms N      playback: keep the ring written N ms ahead of the pointer\n"
		"                        (default 50; at most the ring minus one fragment)\n"
		"  -p, --params-first    set the parameters before mmap() (default: after, as Quake)\n"
		"  -W, --wronly          playback: open O_WRONLY (default O_RDWR, as Quake)\n"
		"  -R, --record          record instead of playing\n"
		"  -k, --skip-silence    record: drop whole silent frames before the first sound\n"
		"  -x, --hex N           record: print the first N bytes (after skipping) in hex\n"
		"  -w, --check-rw        after mmap(), a write() (read() when recording) must fail\n"
		"  -S, --strict          exit 3 if the driver changes format, channels or rate\n");
}

/* GETOPTR/GETIPTR as a position in the stream: the ring offset plus the laps seen so far. */
struct pointer {
	int fd;
	unsigned long req;
	size_t ring;
	size_t last_ptr;
	unsigned long long laps;
	unsigned long long blocks;
	unsigned long mismatches;	/* bytes (mod 2^31) that disagree with the position */
	unsigned long calls;
};

static int pointer_read(struct pointer *pt, unsigned long long *pos)
{
	count_info ci;
	unsigned long long p;

	if (ioctl(pt->fd, pt->req, &ci) < 0) {
		printf(PREFIX ": %s error=%s\n", pt->req == SNDCTL_DSP_GETOPTR ? "GETOPTR" : "GETIPTR",
		       strerror(errno));
		return -1;
	}
	if (ci.ptr < 0 || (size_t)ci.ptr >= pt->ring || ci.bytes < 0 || ci.blocks < 0) {
		printf(PREFIX ": pointer out of range: bytes=%d blocks=%d ptr=%d (ring %zu)\n",
		       ci.bytes, ci.blocks, ci.ptr, pt->ring);
		return -1;
	}
	if ((size_t)ci.ptr < pt->last_ptr)
		pt->laps++;
	pt->last_ptr = (size_t)ci.ptr;
	p = pt->laps * pt->ring + (size_t)ci.ptr;
	/* OSS's bytes is an int that wraps; compare what fits */
	if ((unsigned long long)ci.bytes != (p & 0x7fffffffull))
		pt->mismatches++;
	pt->blocks += (unsigned)ci.blocks;
	pt->calls++;
	*pos = p;
	return 0;
}

/* Quake's order: STEREO (or CHANNELS beyond 2), SPEED, SETFMT. */
static int set_params_quake(int fd, const struct oss_params *want, struct oss_params *got)
{
	int v;

	if (want->channels <= 2) {
		v = want->channels == 2;
		if (ioctl(fd, SNDCTL_DSP_STEREO, &v) < 0) {
			printf(PREFIX ": STEREO error=%s\n", strerror(errno));
			return -1;
		}
		got->channels = v ? 2 : 1;
		printf(PREFIX ": STEREO %d -> %d\n", want->channels == 2, v);
	} else {
		v = (int)want->channels;
		if (ioctl(fd, SNDCTL_DSP_CHANNELS, &v) < 0) {
			printf(PREFIX ": CHANNELS error=%s\n", strerror(errno));
			return -1;
		}
		got->channels = (unsigned)v;
		printf(PREFIX ": CHANNELS %u -> %d\n", want->channels, v);
	}
	v = (int)want->rate;
	if (ioctl(fd, SNDCTL_DSP_SPEED, &v) < 0) {
		printf(PREFIX ": SPEED error=%s\n", strerror(errno));
		return -1;
	}
	got->rate = (unsigned)v;
	printf(PREFIX ": SPEED %u -> %d\n", want->rate, v);
	v = want->format->afmt;
	if (ioctl(fd, SNDCTL_DSP_SETFMT, &v) < 0) {
		printf(PREFIX ": SETFMT error=%s\n", strerror(errno));
		return -1;
	}
	got->format = oss_format_by_afmt(v);
	printf(PREFIX ": SETFMT %s(0x%x) -> 0x%x\n", want->format->name, want->format->afmt,
	       (unsigned)v);
	return 0;
}

static int check_params(const struct oss_params *want, const struct oss_params *got, int strict)
{
	if (!got->format || got->format->afmt != want->format->afmt ||
	    got->channels != want->channels || got->rate != want->rate) {
		printf(PREFIX ": mismatch: asked %s/%u/%u, got %s/%u/%u\n", want->format->name,
		       want->channels, want->rate, got->format ? got->format->name : "?",
		       got->channels, got->rate);
		if (strict || !got->format)
			return -1;
	}
	return 0;
}

static int check_rw_refused(int fd, int record, size_t frame)
{
	unsigned char tmp[64] = { 0 };
	ssize_t r = record ? read(fd, tmp, frame) : write(fd, tmp, frame);

	if (r >= 0) {
		printf(PREFIX ": %s after mmap() was accepted (%zd bytes): mixing is not refused\n",
		       record ? "read()" : "write()", r);
		return -1;
	}
	printf(PREFIX ": %s after mmap() refused errno=%s (%s)\n", record ? "read()" : "write()",
	       errno_name(errno), strerror(errno));
	return 0;
}

struct geometry {
	size_t frag, ring;
};

static int get_space(int fd, int record, struct geometry *g, const char *when)
{
	audio_buf_info info;

	if (ioctl(fd, record ? SNDCTL_DSP_GETISPACE : SNDCTL_DSP_GETOSPACE, &info) < 0) {
		printf(PREFIX ": %s error=%s\n", record ? "GETISPACE" : "GETOSPACE", strerror(errno));
		return -1;
	}
	printf(PREFIX ": %s %s fragments=%d fragstotal=%d fragsize=%d bytes=%d\n", when,
	       record ? "GETISPACE" : "GETOSPACE", info.fragments, info.fragstotal, info.fragsize,
	       info.bytes);
	if (info.fragsize <= 0 || info.fragstotal <= 0)
		return -1;
	g->frag = (size_t)info.fragsize;
	g->ring = (size_t)info.fragsize * (size_t)info.fragstotal;
	return 0;
}

static int play(int fd, unsigned char *ring, const struct geometry *g, const unsigned char *sig,
		size_t len, const struct oss_format *fmt, size_t frame, unsigned rate,
		unsigned long ahead_ms)
{
	struct pointer pt = { .fd = fd, .req = SNDCTL_DSP_GETOPTR, .ring = g->ring };
	size_t ahead = (size_t)((unsigned long long)rate * ahead_ms / 1000) * frame;
	unsigned long long written, pos = 0;
	count_info after;
	unsigned long underruns = 0;
	double t0, t_stop, t_end;
	size_t q;
	int v;

	/* never into the fragment the card is in: the OSS rule for DMA buffers */
	if (ahead > g->ring - g->frag)
		ahead = g->ring - g->frag;
	if (ahead < frame)
		ahead = frame;
	/* prefill: the ring's first lap is the signal's start (silence after a short signal) */
	for (q = 0; q < g->ring; q++)
		ring[q] = q < len ? sig[q] : fmt->silence;
	written = g->ring;
	printf(PREFIX ": prefilled %zu bytes; keeping %zu bytes (%lu ms) ahead of the pointer\n",
	       g->ring, ahead, ahead_ms);

	v = 0;
	if (ioctl(fd, SNDCTL_DSP_SETTRIGGER, &v) < 0) {
		printf(PREFIX ": SETTRIGGER 0 error=%s\n", strerror(errno));
		return -1;
	}
	t0 = now_ms();
	v = PCM_ENABLE_OUTPUT;
	if (ioctl(fd, SNDCTL_DSP_SETTRIGGER, &v) < 0) {
		printf(PREFIX ": SETTRIGGER PCM_ENABLE_OUTPUT error=%s\n", strerror(errno));
		return -1;
	}
	if (ioctl(fd, SNDCTL_DSP_GETTRIGGER, &v) == 0)
		printf(PREFIX ": GETTRIGGER 0x%x\n", (unsigned)v);
	for (;;) {
		unsigned long long target;

		if (pointer_read(&pt, &pos) < 0)
			return -1;
		if (pos > written)
			underruns++;
		/* paint ahead: signal bytes, then silence, up to pointer + ahead */
		target = pos + ahead;
		if (written < pos)
			written = pos;
		for (; written < target; written++)
			ring[written % g->ring] = written < len ? sig[written] : fmt->silence;
		if (pos >= len)
			break;
		if (now_ms() - t0 > 10000.0 + (double)len * 1000.0 / ((double)rate * frame) * 2) {
			printf(PREFIX ": the pointer stalled at %llu of %zu bytes\n", pos, len);
			return -1;
		}
		usleep(POLL_US);
	}
	/* everything after the signal is silence, whatever the card takes until it stops */
	for (; written < pos + g->ring - g->frag; written++)
		ring[written % g->ring] = fmt->silence;
	t_stop = now_ms();
	v = 0;
	if (ioctl(fd, SNDCTL_DSP_SETTRIGGER, &v) < 0) {
		printf(PREFIX ": SETTRIGGER 0 (stop) error=%s\n", strerror(errno));
		return -1;
	}
	t_end = now_ms();
	/*
	 * Where the pointer stopped: what the card took in all. OSS does not say what GETOPTR
	 * reports once the trigger is off (Linux's OSS emulation drops the stream and reports
	 * something else), so this reading is printed, not checked here.
	 */
	if (ioctl(fd, SNDCTL_DSP_GETOPTR, &after) < 0) {
		printf(PREFIX ": GETOPTR after the stop error=%s\n", strerror(errno));
		return -1;
	}
	printf(PREFIX ": GETOPTR calls=%lu blocks_total=%llu ptr_mismatches=%lu\n", pt.calls,
	       pt.blocks, pt.mismatches);
	printf(PREFIX ": played signal_bytes=%zu pointer_at_stop=%llu underruns=%lu stop_ms=%.1f\n",
	       len, pos, underruns, t_end - t_stop);
	printf(PREFIX ": after the stop GETOPTR bytes=%d ptr=%d\n", after.bytes, after.ptr);
	printf(PREFIX ": elapsed_ms=%.0f\n", t_end - t0);
	return underruns || pt.mismatches ? 1 : 0;
}

static int record(int fd, const unsigned char *ring, const struct geometry *g, size_t len,
		  const struct oss_format *fmt, size_t frame, unsigned rate, int skip_silence,
		  unsigned long hex)
{
	struct pointer pt = { .fd = fd, .req = SNDCTL_DSP_GETIPTR, .ring = g->ring };
	unsigned long long readpos = 0, pos;
	unsigned long overruns = 0;
	uint64_t h = FNV1A64_INIT;
	unsigned char head[MAX_HEX];
	size_t got = 0, head_len = 0, skipped = 0;
	unsigned char fr[256];
	size_t fr_len = 0;
	double t0;
	int v;

	v = 0;
	if (ioctl(fd, SNDCTL_DSP_SETTRIGGER, &v) < 0) {
		printf(PREFIX ": SETTRIGGER 0 error=%s\n", strerror(errno));
		return -1;
	}
	t0 = now_ms();
	v = PCM_ENABLE_INPUT;
	if (ioctl(fd, SNDCTL_DSP_SETTRIGGER, &v) < 0) {
		printf(PREFIX ": SETTRIGGER PCM_ENABLE_INPUT error=%s\n", strerror(errno));
		return -1;
	}
	while (got < len) {
		if (pointer_read(&pt, &pos) < 0)
			return -1;
		if (pos - readpos > g->ring - g->frag) {
			/* the card lapped the program: what it overwrote is lost */
			overruns++;
			readpos = pos - (g->ring - g->frag);
		}
		for (; readpos < pos && got < len; readpos++) {
			unsigned char b = ring[readpos % g->ring];

			if (skip_silence) {
				size_t i;
				int silent = 1;

				fr[fr_len++] = b;
				if (fr_len < frame)
					continue;
				for (i = 0; i < frame; i++)
					silent &= fr[i] == fmt->silence;
				fr_len = 0;
				if (silent) {
					skipped += frame;
					continue;
				}
				skip_silence = 0;
				for (i = 0; i < frame && got < len; i++) {
					h = fnv1a64_update(h, &fr[i], 1);
					if (head_len < hex)
						head[head_len++] = fr[i];
					got++;
				}
				continue;
			}
			h = fnv1a64_update(h, &b, 1);
			if (head_len < hex)
				head[head_len++] = b;
			got++;
		}
		if (got >= len)
			break;
		if (now_ms() - t0 > 30000.0) {
			printf(PREFIX ": only %zu of %zu bytes after 30 s (pointer at %llu)\n", got, len,
			       pos);
			return -1;
		}
		usleep(POLL_US);
	}
	v = 0;
	if (ioctl(fd, SNDCTL_DSP_SETTRIGGER, &v) < 0)
		printf(PREFIX ": SETTRIGGER 0 (stop) error=%s\n", strerror(errno));
	printf(PREFIX ": GETIPTR calls=%lu blocks_total=%llu ptr_mismatches=%lu\n", pt.calls,
	       pt.blocks, pt.mismatches);
	if (skipped)
		printf(PREFIX ": skipped_silence_bytes=%zu\n", skipped);
	if (hex) {
		size_t i;

		printf(PREFIX ": head=");
		for (i = 0; i < head_len; i++)
			printf("%02x", head[i]);
		printf("\n");
	}
	printf(PREFIX ": record bytes=%zu fnv1a64=%016llx overruns=%lu elapsed_ms=%.0f\n", got,
	       (unsigned long long)h, overruns, now_ms() - t0);
	(void)rate;
	return overruns || pt.mismatches ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", required_argument, 0, 'd' },   { "rate", required_argument, 0, 'r' },
		{ "format", required_argument, 0, 'f' },   { "channels", required_argument, 0, 'c' },
		{ "ms", required_argument, 0, 'm' },	   { "bytes", required_argument, 0, 'b' },
		{ "frag", required_argument, 0, 'F' },	   { "ahead-ms", required_argument, 0, 'a' },
		{ "params-first", no_argument, 0, 'p' },   { "wronly", no_argument, 0, 'W' },
		{ "record", no_argument, 0, 'R' },	   { "skip-silence", no_argument, 0, 'k' },
		{ "hex", required_argument, 0, 'x' },	   { "check-rw", no_argument, 0, 'w' },
		{ "strict", no_argument, 0, 'S' },	   { "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	const char *device = "/dev/dsp";
	struct oss_params want = { &oss_formats[1], 2, 22050 }, got;
	unsigned long ms = 2000, bytes = 0, frag = 0, ahead_ms = 50, hex = 0;
	int have_bytes = 0, params_first = 0, wronly = 0, rec = 0, skip_silence = 0;
	int check_rw = 0, strict = 0, opt, fd, caps = 0, status;
	struct geometry g, g2;
	unsigned char *ring, *sig = NULL;
	size_t len, frame;

	while ((opt = getopt_long(argc, argv, "d:r:f:c:m:b:F:a:pWRkx:wSh", opts, NULL)) != -1) {
		if (oss_params_option(opt, optarg, &want, "dsp-mmap") == 0)
			continue;
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'm':
			if (parse_ulong(optarg, 600000, &ms)) {
				fprintf(stderr, "dsp-mmap: bad --ms '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			if (parse_ulong(optarg, MAX_BYTES, &bytes)) {
				fprintf(stderr, "dsp-mmap: bad --bytes '%s'\n", optarg);
				return EXIT_USAGE;
			}
			have_bytes = 1;
			break;
		case 'F':
			if (parse_ulong(optarg, 0x7fffffff, &frag) || !frag) {
				fprintf(stderr, "dsp-mmap: bad --frag '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'a':
			if (parse_ulong(optarg, 10000, &ahead_ms) || !ahead_ms) {
				fprintf(stderr, "dsp-mmap: bad --ahead-ms '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'x':
			if (parse_ulong(optarg, MAX_HEX, &hex)) {
				fprintf(stderr, "dsp-mmap: bad --hex '%s' (max %lu)\n", optarg, MAX_HEX);
				return EXIT_USAGE;
			}
			break;
		case 'p':
			params_first = 1;
			break;
		case 'W':
			wronly = 1;
			break;
		case 'R':
			rec = 1;
			break;
		case 'k':
			skip_silence = 1;
			break;
		case 'w':
			check_rw = 1;
			break;
		case 'S':
			strict = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* recording sets its parameters first: there is no ring to fill before the trigger */
	if (rec)
		params_first = 1;

	fd = open(device, rec ? O_RDONLY : (wronly ? O_WRONLY : O_RDWR));
	if (fd < 0) {
		printf(PREFIX ": open %s error=%s\n", device, strerror(errno));
		return EXIT_DEVICE;
	}
	printf(PREFIX ": open %s %s ok\n", device, rec ? "O_RDONLY" : (wronly ? "O_WRONLY" : "O_RDWR"));
	if (ioctl(fd, SNDCTL_DSP_RESET, 0) < 0)
		printf(PREFIX ": RESET error=%s\n", strerror(errno));
	if (ioctl(fd, SNDCTL_DSP_GETCAPS, &caps) < 0) {
		printf(PREFIX ": GETCAPS error=%s\n", strerror(errno));
		return EXIT_DEVICE;
	}
	printf(PREFIX ": GETCAPS 0x%x%s%s\n", (unsigned)caps, caps & DSP_CAP_MMAP ? " MMAP" : "",
	       caps & DSP_CAP_TRIGGER ? " TRIGGER" : "");
	if (!(caps & DSP_CAP_MMAP) || !(caps & DSP_CAP_TRIGGER)) {
		printf(PREFIX ": the device cannot do mmap + trigger (Quake would give up here)\n");
		return EXIT_DEVICE;
	}
	if (frag) {
		int v = (int)frag;

		if (ioctl(fd, SNDCTL_DSP_SETFRAGMENT, &v) < 0)
			printf(PREFIX ": SETFRAGMENT error=%s\n", strerror(errno));
		else
			printf(PREFIX ": SETFRAGMENT 0x%08lx -> 0x%08x\n", frag, (unsigned)v);
	}
	if (params_first) {
		if (oss_set_params(fd, PREFIX, 0, &want, &got) < 0)
			return EXIT_DEVICE;
		if (check_params(&want, &got, strict) < 0)
			return EXIT_MISMATCH;
	}
	if (get_space(fd, rec, &g, "before mmap") < 0)
		return EXIT_DEVICE;
	ring = mmap(NULL, g.ring, rec ? PROT_READ : PROT_WRITE, MAP_SHARED, fd, 0);
	if (ring == MAP_FAILED) {
		printf(PREFIX ": mmap %zu bytes error=%s\n", g.ring, strerror(errno));
		return EXIT_DEVICE;
	}
	printf(PREFIX ": mmap ring=%zu fragsize=%zu fragstotal=%zu ok\n", g.ring, g.frag,
	       g.ring / g.frag);
	if (!params_first) {
		if (set_params_quake(fd, &want, &got) < 0)
			return EXIT_DEVICE;
		if (check_params(&want, &got, strict) < 0)
			return EXIT_MISMATCH;
		/* the ring stays what was mapped; say whether the driver still agrees */
		if (get_space(fd, rec, &g2, "after the parameters") == 0 && g2.ring != g.ring)
			printf(PREFIX ": warning: the driver now reports a %zu-byte buffer, %zu are mapped\n",
			       g2.ring, g.ring);
	}
	frame = (size_t)got.format->bytes_per_sample * got.channels;
	if (g.ring % frame)
		printf(PREFIX ": note: the %zu-byte ring is not a whole number of %zu-byte frames\n",
		       g.ring, frame);
	if (check_rw && check_rw_refused(fd, rec, frame) < 0)
		return EXIT_MISMATCH;
	len = have_bytes ? bytes : (size_t)((unsigned long long)got.rate * ms / 1000) * frame;
	if (rec) {
		status = record(fd, ring, &g, len, got.format, frame, got.rate, skip_silence, hex);
	} else {
		sig = malloc(len ? len : 1);
		if (!sig) {
			printf(PREFIX ": out of memory\n");
			return EXIT_DEVICE;
		}
		dsp_signal_fill(sig, len, got.format->bytes_per_sample, got.channels);
		printf(PREFIX ": signal bytes=%zu fnv1a64=%016llx\n", len,
		       (unsigned long long)fnv1a64_update(FNV1A64_INIT, sig, len));
		status = play(fd, ring, &g, sig, len, got.format, frame, got.rate, ahead_ms);
	}
	munmap(ring, g.ring);
	if (close(fd) < 0) {
		printf(PREFIX ": close error=%s\n", strerror(errno));
		status = -1;
	}
	free(sig);
	return status < 0 ? EXIT_DEVICE : status > 0 ? EXIT_MISMATCH : 0;
}
