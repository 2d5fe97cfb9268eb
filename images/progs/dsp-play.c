/* dsp-play: plays the deterministic test signal (dsp-signal.h) to an OSS /dev/dsp the way real
 * OSS programs do, printing every ioctl's answer and how long playback took. With --stdout it
 * writes the same bytes to stdout instead, so the host can regenerate what the guest played.
 *
 * Output lines start with "DSP-PLAY: "; the last one is "DSP-PLAY: elapsed_ms=N".
 */
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <unistd.h>

#include "dsp-signal.h"
#include "dsp-tune.h"
#include "oss-common.h"

#define PREFIX "DSP-PLAY"
#define MAX_BYTES (64ul << 20)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: dsp-play [options]\n"
		"  -d, --device PATH     OSS device (default /dev/dsp)\n"
		"  -r, --rate HZ         SNDCTL_DSP_SPEED (default 48000)\n"
		"  -f, --format FMT      u8 | s16 (default s16, little endian)\n"
		"  -c, --channels N      SNDCTL_DSP_CHANNELS (default 2)\n"
		"  -m, --ms N            play N milliseconds of signal (default 1000)\n"
		"  -b, --bytes N         play exactly N bytes instead\n"
		"  -T, --tail-ms N       then N ms of silence in the same stream (not part of the\n"
		"                        signal: a card that drops what it still buffers when the\n"
		"                        stream stops then loses silence, not signal)\n"
		"  -t, --tune            play a short melody (dsp-tune.h) instead of the test signal;\n"
		"                        its length is the tune's unless --bytes is given\n"
		"  -F, --frag 0xMMMMSSSS SNDCTL_DSP_SETFRAGMENT argument (default: not set)\n"
		"  -w, --write-size N    bytes per write() (default 4096)\n"
		"  -n, --nonblock        O_NONBLOCK; poll + GETOSPACE/GETODELAY before each write\n"
		"  -s, --sync            SNDCTL_DSP_SYNC before close\n"
		"  -S, --strict          exit 3 if the driver changes format, channels or rate\n"
		"  -o, --stdout          write the signal to stdout (no device, no ioctls)\n"
		"  -v, --verbose         print every GETOSPACE/GETODELAY in --nonblock mode\n");
}

static int write_all_blocking(int fd, const unsigned char *buf, size_t len, size_t write_size)
{
	size_t done = 0;

	while (done < len) {
		size_t n = len - done < write_size ? len - done : write_size;
		ssize_t r = write(fd, buf + done, n);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			printf(PREFIX ": write error=%s after %zu bytes\n", strerror(errno), done);
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

struct nonblock_stats {
	unsigned long polls, writes, eagain, no_space;
	int odelay_min, odelay_max;
};

static int write_all_nonblocking(int fd, const unsigned char *buf, size_t len, size_t write_size,
				 int verbose, struct nonblock_stats *st)
{
	size_t done = 0;

	st->odelay_min = -1;
	st->odelay_max = -1;
	while (done < len) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		audio_buf_info space;
		int odelay = 0, pr;
		size_t n;
		ssize_t r;

		pr = poll(&pfd, 1, 5000);
		st->polls++;
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			printf(PREFIX ": poll error=%s\n", strerror(errno));
			return -1;
		}
		if (pr == 0) {
			printf(PREFIX ": poll timeout: no POLLOUT for 5 s after %zu bytes\n", done);
			return -1;
		}
		if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) {
			printf(PREFIX ": poll revents=0x%x after %zu bytes\n", pfd.revents, done);
			return -1;
		}
		if (ioctl(fd, SNDCTL_DSP_GETOSPACE, &space) < 0) {
			printf(PREFIX ": GETOSPACE error=%s\n", strerror(errno));
			return -1;
		}
		if (ioctl(fd, SNDCTL_DSP_GETODELAY, &odelay) < 0) {
			printf(PREFIX ": GETODELAY error=%s\n", strerror(errno));
			return -1;
		}
		if (st->odelay_min < 0 || odelay < st->odelay_min)
			st->odelay_min = odelay;
		if (odelay > st->odelay_max)
			st->odelay_max = odelay;
		if (verbose)
			printf(PREFIX ": at=%zu ospace bytes=%d fragments=%d odelay=%d\n", done,
			       space.bytes, space.fragments, odelay);
		if (space.bytes <= 0) {
			/* POLLOUT without space: count it and yield briefly rather than spin. */
			st->no_space++;
			usleep(1000);
			continue;
		}
		n = len - done;
		if (n > write_size)
			n = write_size;
		if (n > (size_t)space.bytes)
			n = (size_t)space.bytes;
		r = write(fd, buf + done, n);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				st->eagain++;
				continue;
			}
			printf(PREFIX ": write error=%s after %zu bytes\n", strerror(errno), done);
			return -1;
		}
		st->writes++;
		done += (size_t)r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", required_argument, 0, 'd' }, { "rate", required_argument, 0, 'r' },
		{ "format", required_argument, 0, 'f' }, { "channels", required_argument, 0, 'c' },
		{ "ms", required_argument, 0, 'm' },	 { "bytes", required_argument, 0, 'b' },
		{ "frag", required_argument, 0, 'F' },	 { "write-size", required_argument, 0, 'w' },
		{ "nonblock", no_argument, 0, 'n' },	 { "sync", no_argument, 0, 's' },
		{ "strict", no_argument, 0, 'S' },	 { "stdout", no_argument, 0, 'o' },
		{ "verbose", no_argument, 0, 'v' },	 { "help", no_argument, 0, 'h' },
		{ "tune", no_argument, 0, 't' },	 { "tail-ms", required_argument, 0, 'T' },
		{ 0, 0, 0, 0 }
	};
	const char *device = "/dev/dsp";
	struct oss_params want = { &oss_formats[1], 2, 48000 }, got;
	unsigned long ms = 1000, bytes = 0, frag = 0, write_size = 4096, tail_ms = 0, v;
	int have_bytes = 0, nonblock = 0, sync = 0, strict = 0, to_stdout = 0, verbose = 0;
	int tune = 0;
	int opt, fd, status = 0;
	unsigned char *buf;
	size_t len, tail_len = 0, frame_bytes;
	double t_open = 0, t_first_write, t_written, t_synced, t_closed;
	int blksize = 0;
	audio_buf_info space;

	while ((opt = getopt_long(argc, argv, "d:r:f:c:m:b:F:w:T:nsSovht", opts, NULL)) != -1) {
		if (oss_params_option(opt, optarg, &want, "dsp-play") == 0)
			continue;
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'm':
			if (parse_ulong(optarg, 3600000, &ms)) {
				fprintf(stderr, "dsp-play: bad --ms '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			if (parse_ulong(optarg, MAX_BYTES, &bytes)) {
				fprintf(stderr, "dsp-play: bad --bytes '%s' (max %lu)\n", optarg,
					MAX_BYTES);
				return EXIT_USAGE;
			}
			have_bytes = 1;
			break;
		case 'T':
			if (parse_ulong(optarg, 60000, &tail_ms)) {
				fprintf(stderr, "dsp-play: bad --tail-ms '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'F':
			if (parse_ulong(optarg, 0x7fffffff, &frag) || frag == 0) {
				fprintf(stderr, "dsp-play: bad --frag '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'w':
			if (parse_ulong(optarg, MAX_BYTES, &v) || v == 0) {
				fprintf(stderr, "dsp-play: bad --write-size '%s'\n", optarg);
				return EXIT_USAGE;
			}
			write_size = v;
			break;
		case 'n':
			nonblock = 1;
			break;
		case 's':
			sync = 1;
			break;
		case 'S':
			strict = 1;
			break;
		case 'o':
			to_stdout = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		case 't':
			tune = 1;
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
		fprintf(stderr, "dsp-play: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (to_stdout) {
		got = want;
		fd = STDOUT_FILENO;
	} else {
		t_open = now_ms();
		fd = open(device, O_WRONLY | (nonblock ? O_NONBLOCK : 0));
		if (fd < 0) {
			printf(PREFIX ": open %s error=%s\n", device, strerror(errno));
			return EXIT_DEVICE;
		}
		printf(PREFIX ": open %s%s ok\n", device, nonblock ? " O_NONBLOCK" : "");
		if (oss_set_params(fd, PREFIX, frag, &want, &got) < 0)
			return EXIT_DEVICE;
		if (!got.format) {
			printf(PREFIX ": driver chose a format this program cannot generate\n");
			return EXIT_MISMATCH;
		}
		if (got.format->afmt != want.format->afmt || got.channels != want.channels ||
		    got.rate != want.rate) {
			printf(PREFIX ": mismatch: asked %s/%u/%u, got %s/%u/%u%s\n",
			       want.format->name, want.channels, want.rate, got.format->name,
			       got.channels, got.rate, strict ? "" : " (playing what the driver chose)");
			if (strict)
				return EXIT_MISMATCH;
		}
		if (got.channels == 0 || got.rate == 0) {
			printf(PREFIX ": driver returned zero channels or rate\n");
			return EXIT_DEVICE;
		}
		if (ioctl(fd, SNDCTL_DSP_GETBLKSIZE, &blksize) < 0)
			printf(PREFIX ": GETBLKSIZE error=%s\n", strerror(errno));
		else
			printf(PREFIX ": GETBLKSIZE %d\n", blksize);
		if (ioctl(fd, SNDCTL_DSP_GETOSPACE, &space) < 0)
			printf(PREFIX ": GETOSPACE error=%s\n", strerror(errno));
		else
			printf(PREFIX ": GETOSPACE fragments=%d fragstotal=%d fragsize=%d bytes=%d\n",
			       space.fragments, space.fragstotal, space.fragsize, space.bytes);
	}

	frame_bytes = (size_t)got.format->bytes_per_sample * got.channels;
	if (have_bytes)
		len = bytes;
	else if (tune)
		len = dsp_tune_frames(got.rate) * frame_bytes;
	else
		len = (size_t)((unsigned long long)got.rate * ms / 1000) * frame_bytes;
	if (!to_stdout)
		tail_len = (size_t)((unsigned long long)got.rate * tail_ms / 1000) * frame_bytes;
	if (len > MAX_BYTES || tail_len > MAX_BYTES - len) {
		fprintf(stderr, "dsp-play: %zu bytes is more than the %lu this program buffers\n", len,
			MAX_BYTES);
		return EXIT_USAGE;
	}
	buf = malloc(len + tail_len ? len + tail_len : 1);
	if (!buf) {
		fprintf(stderr, "dsp-play: out of memory for %zu bytes\n", len);
		return EXIT_DEVICE;
	}
	if (tune)
		dsp_tune_fill(buf, len, got.format->bytes_per_sample, got.channels, got.rate);
	else
		dsp_signal_fill(buf, len, got.format->bytes_per_sample, got.channels);
	memset(buf + len, got.format->afmt == AFMT_U8 ? 0x80 : 0, tail_len);

	if (to_stdout) {
		/* The host copy: only the bytes, nothing else on stdout. */
		return write_all_blocking(fd, buf, len, 65536) < 0 ? EXIT_DEVICE : 0;
	}

	printf(PREFIX ": playing bytes=%zu audio_ms=%.1f fnv1a64=%016llx\n", len,
	       (double)len * 1000.0 / ((double)frame_bytes * got.rate),
	       (unsigned long long)fnv1a64_update(FNV1A64_INIT, buf, len));
	if (tail_len)
		printf(PREFIX ": then silence bytes=%zu audio_ms=%.1f\n", tail_len,
		       (double)tail_len * 1000.0 / ((double)frame_bytes * got.rate));
	len += tail_len;
	t_first_write = now_ms();
	if (nonblock) {
		struct nonblock_stats st = { 0 };

		status = write_all_nonblocking(fd, buf, len, write_size, verbose, &st);
		printf(PREFIX ": nonblock polls=%lu writes=%lu eagain=%lu no_space=%lu odelay_min=%d "
		       "odelay_max=%d\n",
		       st.polls, st.writes, st.eagain, st.no_space, st.odelay_min, st.odelay_max);
	} else {
		status = write_all_blocking(fd, buf, len, write_size);
	}
	t_written = now_ms();
	if (status == 0 && sync) {
		if (ioctl(fd, SNDCTL_DSP_SYNC, 0) < 0) {
			printf(PREFIX ": SYNC error=%s\n", strerror(errno));
			status = -1;
		}
	}
	t_synced = now_ms();
	if (close(fd) < 0) {
		printf(PREFIX ": close error=%s\n", strerror(errno));
		status = -1;
	}
	t_closed = now_ms();
	free(buf);
	printf(PREFIX ": setup_ms=%.1f write_ms=%.1f sync_ms=%.1f close_ms=%.1f\n",
	       t_first_write - t_open, t_written - t_first_write, t_synced - t_written,
	       t_closed - t_synced);
	/* elapsed: first write to close() returning, i.e. how long the audio took to go out. */
	printf(PREFIX ": elapsed_ms=%.0f\n", t_closed - t_first_write);
	return status < 0 ? EXIT_DEVICE : 0;
}
