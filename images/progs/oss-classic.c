/* oss-classic: the classic OSS device nodes and open modes, one subcommand each:
 *
 *   audio [-d /dev/audio] [--bytes N]
 *       /dev/audio as Sun programs use it: no ioctls before writing. Prints the defaults the
 *       driver chose (SOUND_PCM_READ_RATE/CHANNELS/BITS; Sun's are 8000 Hz, mono, mu-law) and
 *       writes N bytes of the test signal's u8 bytes (any byte is a mu-law sample).
 *   modes [-d /dev/dsp]
 *       O_RDONLY, O_WRONLY and O_RDWR each open; GETCAPS; SETDUPLEX on O_RDWR; the wrong
 *       direction's read()/write() fails with EBADF; an O_WRONLY and an O_RDONLY open at the
 *       same time both work, a second O_WRONLY gets EBUSY.
 *   consistency [-d /dev/dsp] [-r HZ] [-c N] [-f FMT]
 *       GETBLKSIZE, GETOSPACE, SETTRIGGER/GETTRIGGER, NONBLOCK, GETODELAY, GETOPTR and POST must
 *       agree with one another while a stream is held, filled, played and topped up (4
 *       fragments of 4 KiB). Plays 4 fragments + 1000 bytes of the signal.
 *   duplex [-d /dev/dsp] [-r HZ] [-c N] [-f FMT] [--bytes N] [--hex N]
 *       O_RDWR, SETDUPLEX, then writes and reads fragments in turn (full duplex) until N bytes
 *       went each way; the recording is hashed after its leading silence, like dsp-record
 *       --skip-silence.
 *
 * Output lines start with "DSP-CLASSIC: "; each check prints "check NAME ok" or
 * "check NAME FAILED: why". Exit 0 when every check passed, 1 device failure, 2 usage,
 * 3 a check failed.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <unistd.h>

#include "dsp-signal.h"
#include "oss-common.h"

#define PREFIX "DSP-CLASSIC"
#define MAX_BYTES (64ul << 20)

static int failures;

static void check(const char *name, int ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void check(const char *name, int ok, const char *fmt, ...)
{
	va_list ap;

	printf(PREFIX ": check %s %s", name, ok ? "ok" : "FAILED");
	if (fmt && *fmt) {
		printf(": ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	printf("\n");
	if (!ok)
		failures++;
}

static int ioctl_int(int fd, unsigned long req, int *v, const char *name)
{
	if (ioctl(fd, req, v) < 0) {
		printf(PREFIX ": %s error=%s\n", name, errno_name(errno));
		return -1;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: oss-classic audio|modes|consistency|duplex [options]\n"
		   "  -d, --device PATH   the node (default /dev/dsp; /dev/audio for audio)\n"
		   "  -r, -f, -c          rate, format (u8|s16), channels\n"
		   "  -b, --bytes N       bytes to play (audio, duplex)\n"
		   "  -x, --hex N         duplex: print the first N recorded bytes in hex\n");
}

/* ---- audio ----------------------------------------------------------------------------- */

static int cmd_audio(const char *dev, size_t len)
{
	int fd = open(dev, O_WRONLY), rate = 0, channels = 0, fmt = 0;
	unsigned char *buf;
	size_t done = 0;

	if (fd < 0) {
		printf(PREFIX ": open %s error=%s\n", dev, errno_name(errno));
		return EXIT_DEVICE;
	}
	/* read-only queries: the defaults the driver chose at open */
	if (ioctl_int(fd, SOUND_PCM_READ_RATE, &rate, "SOUND_PCM_READ_RATE") ||
	    ioctl_int(fd, SOUND_PCM_READ_CHANNELS, &channels, "SOUND_PCM_READ_CHANNELS") ||
	    ioctl_int(fd, SOUND_PCM_READ_BITS, &fmt, "SOUND_PCM_READ_BITS"))
		return EXIT_DEVICE;
	printf(PREFIX ": %s defaults rate=%d channels=%d format=0x%x\n", dev, rate, channels, fmt);
	check("audio-defaults", rate == 8000 && channels == 1 && fmt == AFMT_MU_LAW,
	      "rate %d, channels %d, format 0x%x (Sun: 8000, 1, AFMT_MU_LAW 0x%x)", rate, channels,
	      fmt, AFMT_MU_LAW);
	buf = malloc(len ? len : 1);
	if (!buf)
		return EXIT_DEVICE;
	dsp_signal_fill(buf, len, 1, 1);
	printf(PREFIX ": audio bytes=%zu fnv1a64=%016llx\n", len,
	       (unsigned long long)fnv1a64_update(FNV1A64_INIT, buf, len));
	while (done < len) {
		size_t n = len - done < 1024 ? len - done : 1024;
		ssize_t r = write(fd, buf + done, n);

		if (r < 0) {
			printf(PREFIX ": write error=%s after %zu bytes\n", errno_name(errno), done);
			return EXIT_DEVICE;
		}
		done += (size_t)r;
	}
	if (close(fd) < 0) {
		printf(PREFIX ": close error=%s\n", errno_name(errno));
		return EXIT_DEVICE;
	}
	free(buf);
	return failures ? EXIT_MISMATCH : 0;
}

/* ---- modes ----------------------------------------------------------------------------- */

static int cmd_modes(const char *dev)
{
	static const struct {
		const char *name;
		int flags;
	} modes[] = { { "O_RDONLY", O_RDONLY }, { "O_WRONLY", O_WRONLY }, { "O_RDWR", O_RDWR } };
	unsigned char b[4] = { 0 };
	size_t i;
	int a, c, d;

	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		int fd = open(dev, modes[i].flags), caps = 0;
		char name[32];

		snprintf(name, sizeof(name), "open-%s", modes[i].name);
		check(name, fd >= 0, "%s", fd >= 0 ? "" : errno_name(errno));
		if (fd < 0)
			continue;
		if (ioctl(fd, SNDCTL_DSP_GETCAPS, &caps) == 0)
			printf(PREFIX ": %s GETCAPS 0x%x%s\n", modes[i].name, (unsigned)caps,
			       caps & DSP_CAP_DUPLEX ? " DUPLEX" : "");
		if (modes[i].flags == O_RDWR) {
			int r = ioctl(fd, SNDCTL_DSP_SETDUPLEX, 0);

			check("rdwr-duplex-caps", caps & DSP_CAP_DUPLEX, "GETCAPS 0x%x", (unsigned)caps);
			check("rdwr-setduplex", r == 0, "%s", r == 0 ? "" : errno_name(errno));
		}
		if (modes[i].flags == O_RDONLY) {
			ssize_t r = write(fd, b, sizeof(b));

			check("rdonly-write-refused", r < 0 && errno == EBADF, "write returned %zd %s", r,
			      r < 0 ? errno_name(errno) : "");
		}
		if (modes[i].flags == O_WRONLY) {
			ssize_t r = read(fd, b, sizeof(b));

			check("wronly-read-refused", r < 0 && errno == EBADF, "read returned %zd %s", r,
			      r < 0 ? errno_name(errno) : "");
		}
		close(fd);
	}
	/* each direction of a stream is exclusive, the two directions are independent */
	a = open(dev, O_WRONLY);
	c = open(dev, O_RDONLY);
	check("wronly-and-rdonly-together", a >= 0 && c >= 0, "%s %s", a >= 0 ? "" : errno_name(errno),
	      c >= 0 ? "" : "O_RDONLY failed");
	d = open(dev, O_WRONLY);
	check("second-wronly-busy", d < 0 && errno == EBUSY, "%s", d < 0 ? errno_name(errno) : "opened");
	if (d >= 0)
		close(d);
	if (a >= 0)
		close(a);
	if (c >= 0)
		close(c);
	return failures ? EXIT_MISMATCH : 0;
}

/* ---- consistency ----------------------------------------------------------------------- */

struct state {
	int odelay, optr_bytes, ospace_bytes, ospace_frags, trigger;
};

/* GETOPTR, GETODELAY, GETOPTR again: a snapshot only counts if the pointer did not move */
static int snapshot(int fd, struct state *st)
{
	int tries;

	for (tries = 0; tries < 50; tries++) {
		count_info a, b;
		audio_buf_info sp;

		if (ioctl(fd, SNDCTL_DSP_GETOPTR, &a) < 0 ||
		    ioctl(fd, SNDCTL_DSP_GETODELAY, &st->odelay) < 0 ||
		    ioctl(fd, SNDCTL_DSP_GETOSPACE, &sp) < 0 ||
		    ioctl(fd, SNDCTL_DSP_GETTRIGGER, &st->trigger) < 0 ||
		    ioctl(fd, SNDCTL_DSP_GETOPTR, &b) < 0) {
			printf(PREFIX ": snapshot ioctl error=%s\n", errno_name(errno));
			return -1;
		}
		if (a.bytes == b.bytes) {
			st->optr_bytes = b.bytes;
			st->ospace_bytes = sp.bytes;
			st->ospace_frags = sp.fragments;
			return 0;
		}
	}
	printf(PREFIX ": the pointer never held still for a snapshot\n");
	return -1;
}

static ssize_t write_some(int fd, const unsigned char *buf, size_t n, int *err)
{
	ssize_t r = write(fd, buf, n);

	*err = r < 0 ? errno : 0;
	return r;
}

static int cmd_consistency(const char *dev, const struct oss_params *want)
{
	const unsigned long frag_arg = 0x0004000C; /* 4 fragments of 4096 bytes */
	const size_t frag = 4096, nfrags = 4, ring = frag * nfrags, tail = 1000;
	size_t len = ring + tail, written = 0;
	struct oss_params got;
	struct state st;
	unsigned char *sig;
	int fd, v, blk = 0, err = 0, agreed = 0, disagreed = 0;
	audio_buf_info sp;
	ssize_t r;
	double t0;

	fd = open(dev, O_WRONLY);
	if (fd < 0) {
		printf(PREFIX ": open %s error=%s\n", dev, errno_name(errno));
		return EXIT_DEVICE;
	}
	if (oss_set_params(fd, PREFIX, frag_arg, want, &got) < 0)
		return EXIT_DEVICE;
	if (!got.format || got.format->afmt != want->format->afmt || got.rate != want->rate ||
	    got.channels != want->channels) {
		printf(PREFIX ": the driver changed the parameters\n");
		return EXIT_MISMATCH;
	}
	sig = malloc(len);
	if (!sig)
		return EXIT_DEVICE;
	dsp_signal_fill(sig, len, got.format->bytes_per_sample, got.channels);
	printf(PREFIX ": consistency bytes=%zu fnv1a64=%016llx\n", len,
	       (unsigned long long)fnv1a64_update(FNV1A64_INIT, sig, len));

	if (ioctl_int(fd, SNDCTL_DSP_GETBLKSIZE, &blk, "GETBLKSIZE") ||
	    ioctl(fd, SNDCTL_DSP_GETOSPACE, &sp) < 0)
		return EXIT_DEVICE;
	check("getblksize-is-fragsize", blk == sp.fragsize && (size_t)blk == frag,
	      "GETBLKSIZE %d, GETOSPACE fragsize %d, SETFRAGMENT asked %zu", blk, sp.fragsize, frag);
	check("empty-ospace", (size_t)sp.bytes == ring && (size_t)sp.fragments == nfrags &&
	      (size_t)sp.fragstotal == nfrags, "bytes %d fragments %d fragstotal %d", sp.bytes,
	      sp.fragments, sp.fragstotal);
	if (snapshot(fd, &st))
		return EXIT_DEVICE;
	check("trigger-default-on", st.trigger & PCM_ENABLE_OUTPUT, "GETTRIGGER 0x%x", st.trigger);

	/* held: SETTRIGGER(0), then 2.5 fragments are accepted but nothing plays */
	v = 0;
	if (ioctl_int(fd, SNDCTL_DSP_SETTRIGGER, &v, "SETTRIGGER"))
		return EXIT_DEVICE;
	r = write_some(fd, sig, 2 * frag + frag / 2, &err);
	written += r > 0 ? (size_t)r : 0;
	check("held-write-accepted", r == (ssize_t)(2 * frag + frag / 2), "write returned %zd %s", r,
	      err ? errno_name(err) : "");
	if (snapshot(fd, &st))
		return EXIT_DEVICE;
	check("held-trigger-off", !(st.trigger & PCM_ENABLE_OUTPUT), "GETTRIGGER 0x%x", st.trigger);
	check("held-odelay-is-written", (size_t)st.odelay == written && st.optr_bytes == 0,
	      "GETODELAY %d, GETOPTR bytes %d, written %zu", st.odelay, st.optr_bytes, written);
	check("held-ospace", (size_t)st.ospace_bytes == ring - written && st.ospace_frags == 1,
	      "GETOSPACE bytes %d fragments %d (ring %zu - written %zu)", st.ospace_bytes,
	      st.ospace_frags, ring, written);

	/* NONBLOCK: the rest of the ring is taken, then EAGAIN */
	if (ioctl(fd, SNDCTL_DSP_NONBLOCK, 0) < 0) {
		printf(PREFIX ": NONBLOCK error=%s\n", errno_name(errno));
		return EXIT_DEVICE;
	}
	r = write_some(fd, sig + written, ring, &err);
	written += r > 0 ? (size_t)r : 0;
	check("nonblock-partial-write", written == ring, "write of %zu returned %zd %s", ring, r,
	      err ? errno_name(err) : "");
	r = write_some(fd, sig + written, frag, &err);
	check("nonblock-full-eagain", r < 0 && err == EAGAIN, "write returned %zd %s", r,
	      err ? errno_name(err) : "");
	usleep(200000);
	if (snapshot(fd, &st))
		return EXIT_DEVICE;
	check("held-nothing-played", st.optr_bytes == 0 && (size_t)st.odelay == ring &&
	      st.ospace_bytes == 0, "after 200 ms: GETOPTR bytes %d, GETODELAY %d, GETOSPACE bytes %d",
	      st.optr_bytes, st.odelay, st.ospace_bytes);

	/* SETTRIGGER on: it plays; odelay + optr == written at every snapshot */
	v = PCM_ENABLE_OUTPUT;
	if (ioctl_int(fd, SNDCTL_DSP_SETTRIGGER, &v, "SETTRIGGER"))
		return EXIT_DEVICE;
	t0 = now_ms();
	for (;;) {
		if (snapshot(fd, &st))
			return EXIT_DEVICE;
		if ((size_t)st.odelay + (size_t)st.optr_bytes == written)
			agreed++;
		else if (disagreed++ < 3)
			printf(PREFIX ": GETODELAY %d + GETOPTR bytes %d != written %zu\n", st.odelay,
			       st.optr_bytes, written);
		if (st.odelay == 0 || now_ms() - t0 > 3000)
			break;
		usleep(7000);
	}
	check("running-trigger-on", st.trigger & PCM_ENABLE_OUTPUT, "GETTRIGGER 0x%x", st.trigger);
	check("odelay-plus-optr-is-written", !disagreed && agreed > 3,
	      "%d snapshots agreed, %d did not", agreed, disagreed);
	check("played-out", st.odelay == 0 && (size_t)st.optr_bytes == written &&
	      (size_t)st.ospace_bytes == ring, "GETODELAY %d, GETOPTR bytes %d, GETOSPACE bytes %d after %.0f ms",
	      st.odelay, st.optr_bytes, st.ospace_bytes, now_ms() - t0);

	/* less than a fragment waits for more, until POST sends it */
	r = write_some(fd, sig + written, tail, &err);
	written += r > 0 ? (size_t)r : 0;
	check("tail-write", r == (ssize_t)tail, "write returned %zd %s", r, err ? errno_name(err) : "");
	usleep(200000);
	if (snapshot(fd, &st))
		return EXIT_DEVICE;
	check("partial-fragment-waits", (size_t)st.odelay == tail && (size_t)st.optr_bytes == ring,
	      "after 200 ms: GETODELAY %d, GETOPTR bytes %d", st.odelay, st.optr_bytes);
	if (ioctl(fd, SNDCTL_DSP_POST, 0) < 0) {
		printf(PREFIX ": POST error=%s\n", errno_name(errno));
		return EXIT_DEVICE;
	}
	t0 = now_ms();
	do {
		usleep(10000);
		if (snapshot(fd, &st))
			return EXIT_DEVICE;
	} while (st.odelay && now_ms() - t0 < 1000);
	check("post-sends-partial", st.odelay == 0 && (size_t)st.optr_bytes == written,
	      "%.0f ms after POST: GETODELAY %d, GETOPTR bytes %d, written %zu", now_ms() - t0,
	      st.odelay, st.optr_bytes, written);
	if (ioctl(fd, SNDCTL_DSP_SYNC, 0) < 0)
		printf(PREFIX ": SYNC error=%s\n", errno_name(errno));
	close(fd);
	free(sig);
	printf(PREFIX ": consistency written=%zu\n", written);
	return failures ? EXIT_MISMATCH : 0;
}

/* ---- duplex ---------------------------------------------------------------------------- */

static int cmd_duplex(const char *dev, const struct oss_params *want, size_t len, unsigned long hex)
{
	struct oss_params got;
	size_t frame, played = 0, recorded = 0, skipped = 0, head_len = 0, frag;
	unsigned char *sig, *rbuf, head[256];
	uint64_t h = FNV1A64_INIT;
	int fd, caps = 0, skipping = 1;
	audio_buf_info sp;
	double t0;

	fd = open(dev, O_RDWR);
	if (fd < 0) {
		printf(PREFIX ": open %s O_RDWR error=%s\n", dev, errno_name(errno));
		return EXIT_DEVICE;
	}
	if (ioctl(fd, SNDCTL_DSP_SETDUPLEX, 0) < 0)
		check("duplex-setduplex", 0, "%s", errno_name(errno));
	else
		check("duplex-setduplex", 1, NULL);
	if (ioctl_int(fd, SNDCTL_DSP_GETCAPS, &caps, "GETCAPS"))
		return EXIT_DEVICE;
	check("duplex-caps", caps & DSP_CAP_DUPLEX, "GETCAPS 0x%x", (unsigned)caps);
	if (oss_set_params(fd, PREFIX, 0x0008000B, want, &got) < 0)
		return EXIT_DEVICE;
	if (!got.format || got.format->afmt != want->format->afmt || got.rate != want->rate ||
	    got.channels != want->channels) {
		printf(PREFIX ": the driver changed the parameters\n");
		return EXIT_MISMATCH;
	}
	if (ioctl(fd, SNDCTL_DSP_GETOSPACE, &sp) < 0 || sp.fragsize <= 0)
		return EXIT_DEVICE;
	frag = (size_t)sp.fragsize;
	frame = (size_t)got.format->bytes_per_sample * got.channels;
	sig = malloc(len ? len : 1);
	rbuf = malloc(frag);
	if (!sig || !rbuf)
		return EXIT_DEVICE;
	dsp_signal_fill(sig, len, got.format->bytes_per_sample, got.channels);
	printf(PREFIX ": duplex play bytes=%zu fnv1a64=%016llx\n", len,
	       (unsigned long long)fnv1a64_update(FNV1A64_INIT, sig, len));
	t0 = now_ms();
	while (played < len || recorded < len) {
		if (played < len) {
			size_t n = len - played < frag ? len - played : frag;
			ssize_t r = write(fd, sig + played, n);

			if (r < 0) {
				printf(PREFIX ": write error=%s after %zu bytes\n", errno_name(errno), played);
				return EXIT_DEVICE;
			}
			played += (size_t)r;
		}
		if (recorded < len) {
			ssize_t r = read(fd, rbuf, frag);
			size_t i = 0;

			if (r < 0) {
				printf(PREFIX ": read error=%s after %zu bytes\n", errno_name(errno), recorded);
				return EXIT_DEVICE;
			}
			/* whole silent frames before the first sound are the card's, not the source's */
			for (; skipping && i + frame <= (size_t)r; i += frame) {
				size_t k;
				int silent = 1;

				for (k = 0; k < frame; k++)
					silent &= rbuf[i + k] == got.format->silence;
				if (!silent) {
					skipping = 0;
					break;
				}
				skipped += frame;
			}
			for (; i < (size_t)r && recorded < len; i++, recorded++) {
				h = fnv1a64_update(h, &rbuf[i], 1);
				if (head_len < hex && head_len < sizeof(head))
					head[head_len++] = rbuf[i];
			}
		}
		if (now_ms() - t0 > 30000) {
			printf(PREFIX ": duplex stalled: played %zu, recorded %zu of %zu\n", played,
			       recorded, len);
			return EXIT_DEVICE;
		}
	}
	if (ioctl(fd, SNDCTL_DSP_SYNC, 0) < 0)
		printf(PREFIX ": SYNC error=%s\n", errno_name(errno));
	close(fd);
	if (hex) {
		size_t i;

		printf(PREFIX ": duplex head=");
		for (i = 0; i < head_len; i++)
			printf("%02x", head[i]);
		printf("\n");
	}
	printf(PREFIX ": duplex record bytes=%zu fnv1a64=%016llx skipped_silence_bytes=%zu "
	       "elapsed_ms=%.0f\n", recorded, (unsigned long long)h, skipped, now_ms() - t0);
	free(sig);
	free(rbuf);
	return failures ? EXIT_MISMATCH : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", required_argument, 0, 'd' }, { "rate", required_argument, 0, 'r' },
		{ "format", required_argument, 0, 'f' }, { "channels", required_argument, 0, 'c' },
		{ "bytes", required_argument, 0, 'b' },	 { "hex", required_argument, 0, 'x' },
		{ "help", no_argument, 0, 'h' },	 { 0, 0, 0, 0 }
	};
	struct oss_params want = { &oss_formats[1], 2, 48000 };
	const char *device = NULL, *cmd;
	unsigned long bytes = 8000, hex = 0;
	int opt;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[1];
	optind = 2;
	while ((opt = getopt_long(argc, argv, "d:r:f:c:b:x:h", opts, NULL)) != -1) {
		if (oss_params_option(opt, optarg, &want, "oss-classic") == 0)
			continue;
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'b':
			if (parse_ulong(optarg, MAX_BYTES, &bytes)) {
				fprintf(stderr, "oss-classic: bad --bytes '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'x':
			if (parse_ulong(optarg, 256, &hex)) {
				fprintf(stderr, "oss-classic: bad --hex '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(cmd, "audio"))
		return cmd_audio(device ? device : "/dev/audio", bytes);
	if (!strcmp(cmd, "modes"))
		return cmd_modes(device ? device : "/dev/dsp");
	if (!strcmp(cmd, "consistency"))
		return cmd_consistency(device ? device : "/dev/dsp", &want);
	if (!strcmp(cmd, "duplex"))
		return cmd_duplex(device ? device : "/dev/dsp", &want, bytes, hex);
	usage(stderr);
	return EXIT_USAGE;
}
