/* dsp-record: records from an OSS /dev/dsp and prints what arrived as a length and an FNV-1a 64
 * hash (plus, optionally, the first bytes in hex), so a test can check captured audio against
 * bytes it fed in on the host. With --stdin it hashes standard input the same way, so the host can
 * compute the expected line with the very same code.
 *
 * Output lines start with "DSP-RECORD: "; the result line is
 * "DSP-RECORD: bytes=N fnv1a64=HEX nonsilent_bytes=N elapsed_ms=N".
 */
#include <fcntl.h>
#include <getopt.h>
#include <unistd.h>

#include "oss-common.h"

#define PREFIX "DSP-RECORD"
#define MAX_HEX 4096ul

static void usage(FILE *f)
{
	fprintf(f,
		"usage: dsp-record [options]\n"
		"  -d, --device PATH     OSS device (default /dev/dsp)\n"
		"  -r, --rate HZ         SNDCTL_DSP_SPEED (default 48000)\n"
		"  -f, --format FMT      u8 | s16 (default s16, little endian)\n"
		"  -c, --channels N      SNDCTL_DSP_CHANNELS (default 2)\n"
		"  -m, --ms N            record N milliseconds (default 1000)\n"
		"  -b, --bytes N         record exactly N bytes instead\n"
		"  -F, --frag 0xMMMMSSSS SNDCTL_DSP_SETFRAGMENT argument (default: not set)\n"
		"  -R, --read-size N     bytes per read() (default 4096)\n"
		"  -x, --hex N           also print the first N bytes in hex (max %lu)\n"
		"  -k, --skip-silence    discard whole frames of silence before the first sound (a capture\n"
		"                        that starts before its source does); they are not counted\n"
		"  -i, --stdin           hash standard input instead (no device, no ioctls)\n",
		MAX_HEX);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", required_argument, 0, 'd' }, { "rate", required_argument, 0, 'r' },
		{ "format", required_argument, 0, 'f' }, { "channels", required_argument, 0, 'c' },
		{ "ms", required_argument, 0, 'm' },	 { "bytes", required_argument, 0, 'b' },
		{ "frag", required_argument, 0, 'F' },	 { "read-size", required_argument, 0, 'R' },
		{ "hex", required_argument, 0, 'x' },	 { "stdin", no_argument, 0, 'i' },
		{ "skip-silence", no_argument, 0, 'k' },
		{ "help", no_argument, 0, 'h' },	 { 0, 0, 0, 0 }
	};
	const char *device = "/dev/dsp";
	struct oss_params want = { &oss_formats[1], 2, 48000 }, got;
	unsigned long ms = 1000, bytes = 0, frag = 0, read_size = 4096, hex = 0, v;
	int have_bytes = 0, from_stdin = 0, skip_silence = 0, opt, fd;
	size_t skipped = 0, frame_bytes, carry = 0;
	unsigned char *buf, head[MAX_HEX];
	size_t head_len = 0, total = 0, want_len, nonsilent = 0;
	uint64_t hash = FNV1A64_INIT;
	unsigned char silence;
	double t_start;
	int status = 0;

	while ((opt = getopt_long(argc, argv, "d:r:f:c:m:b:F:R:x:ikh", opts, NULL)) != -1) {
		if (oss_params_option(opt, optarg, &want, "dsp-record") == 0)
			continue;
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'm':
			if (parse_ulong(optarg, 3600000, &ms)) {
				fprintf(stderr, "dsp-record: bad --ms '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			if (parse_ulong(optarg, ~0ul >> 1, &bytes) /* fits 32-bit builds */) {
				fprintf(stderr, "dsp-record: bad --bytes '%s'\n", optarg);
				return EXIT_USAGE;
			}
			have_bytes = 1;
			break;
		case 'F':
			if (parse_ulong(optarg, 0x7fffffff, &frag) || frag == 0) {
				fprintf(stderr, "dsp-record: bad --frag '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'R':
			if (parse_ulong(optarg, 1ul << 24, &v) || v == 0) {
				fprintf(stderr, "dsp-record: bad --read-size '%s'\n", optarg);
				return EXIT_USAGE;
			}
			read_size = v;
			break;
		case 'x':
			if (parse_ulong(optarg, MAX_HEX, &hex)) {
				fprintf(stderr, "dsp-record: bad --hex '%s' (max %lu)\n", optarg, MAX_HEX);
				return EXIT_USAGE;
			}
			break;
		case 'i':
			from_stdin = 1;
			break;
		case 'k':
			skip_silence = 1;
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
		fprintf(stderr, "dsp-record: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (from_stdin) {
		got = want;
		fd = STDIN_FILENO;
		if (!have_bytes) {
			/* Hash all of stdin. */
			bytes = ~0ul;
			have_bytes = 1;
		}
	} else {
		fd = open(device, O_RDONLY);
		if (fd < 0) {
			printf(PREFIX ": open %s error=%s\n", device, strerror(errno));
			return EXIT_DEVICE;
		}
		printf(PREFIX ": open %s ok\n", device);
		if (oss_set_params(fd, PREFIX, frag, &want, &got) < 0)
			return EXIT_DEVICE;
		if (!got.format || got.channels == 0 || got.rate == 0) {
			printf(PREFIX ": driver chose unusable parameters\n");
			return EXIT_DEVICE;
		}
	}
	want_len = have_bytes ? bytes
			      : (size_t)((unsigned long long)got.rate * ms / 1000) *
					got.format->bytes_per_sample * got.channels;
	silence = got.format->silence;

	frame_bytes = (size_t)got.format->bytes_per_sample * got.channels;
	buf = malloc(read_size + frame_bytes);
	if (!buf) {
		fprintf(stderr, "dsp-record: out of memory\n");
		return EXIT_DEVICE;
	}
	t_start = now_ms();
	while (total < want_len) {
		size_t n = want_len - total < read_size ? want_len - total : read_size;
		size_t start = 0, i;
		ssize_t r;

		if (skip_silence)
			n = read_size; /* skipped bytes do not count towards want_len */
		r = read(fd, buf + carry, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			printf(PREFIX ": read error=%s after %zu bytes\n", strerror(errno), total);
			status = EXIT_DEVICE;
			break;
		}
		if (r == 0) {
			if (!from_stdin) {
				printf(PREFIX ": read returned end of file after %zu bytes\n", total);
				status = EXIT_DEVICE;
			}
			break;
		}
		r += (ssize_t)carry;
		carry = 0;
		if (skip_silence) {
			/* Skip whole silent frames; keep a trailing partial frame for the next read. */
			size_t whole = (size_t)r - (size_t)r % frame_bytes;

			while (start < whole) {
				for (i = 0; i < frame_bytes && buf[start + i] == silence; i++)
					;
				if (i < frame_bytes)
					break;
				start += frame_bytes;
			}
			skipped += start;
			if (start == whole) {
				carry = (size_t)r - whole;
				memmove(buf, buf + whole, carry);
				continue;
			}
			skip_silence = 0;
			if ((size_t)r - start > want_len - total)
				r = (ssize_t)(start + want_len - total);
		}
		hash = fnv1a64_update(hash, buf + start, (size_t)r - start);
		for (i = start; i < (size_t)r; i++) {
			if (buf[i] != silence)
				nonsilent++;
			if (head_len < hex)
				head[head_len++] = buf[i];
		}
		total += (size_t)r - start;
	}
	if (!from_stdin && close(fd) < 0) {
		printf(PREFIX ": close error=%s\n", strerror(errno));
		status = EXIT_DEVICE;
	}
	free(buf);
	if (head_len) {
		size_t i;

		printf(PREFIX ": head=");
		for (i = 0; i < head_len; i++)
			printf("%02x", head[i]);
		printf("\n");
	}
	if (skipped)
		printf(PREFIX ": skipped_silence_bytes=%zu\n", skipped);
	printf(PREFIX ": bytes=%zu fnv1a64=%016llx nonsilent_bytes=%zu elapsed_ms=%.0f\n", total,
	       (unsigned long long)hash, nonsilent, now_ms() - t_start);
	return status;
}
