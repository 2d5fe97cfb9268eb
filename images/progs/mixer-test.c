/* mixer-test: exercises an OSS /dev/mixer the way aumix and friends do: reads the capability
 * masks, reads channels, writes channels and reads them back, and optionally waits and re-reads
 * (to see changes made on the host side).
 *
 * Output lines start with "MIXER: ":
 *   MIXER: devmask=0x... recmask=0x... stereodevs=0x... caps=0x... recsrc=0x...
 *   MIXER: get vol=L:R            (or "get vol error=EINVAL")
 *   MIXER: set vol=L:R -> L:R     (the value the driver returned from MIXER_WRITE)
 *   MIXER: reread[K] vol=L:R
 * Exit status: 0 ok; 1 if opening the mixer, a mask read, an explicit --get or any --set failed;
 * 2 bad usage.
 */
#include <fcntl.h>
#include <getopt.h>
#include <unistd.h>

#include "oss-common.h"

#define PREFIX "MIXER"
#define MAX_OPS 64

static const char *const channel_names[SOUND_MIXER_NRDEVICES] = SOUND_DEVICE_NAMES;

static int channel_by_name(const char *name, size_t len)
{
	int i;

	for (i = 0; i < SOUND_MIXER_NRDEVICES; i++)
		if (strlen(channel_names[i]) == len && strncasecmp(channel_names[i], name, len) == 0)
			return i;
	return -1;
}

struct set_op {
	int channel;
	unsigned left, right;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: mixer-test [options]\n"
		   "  -d, --device PATH   mixer device (default /dev/mixer)\n"
		   "  -g, --get NAME      read channel NAME (repeatable; default vol, pcm, igain)\n"
		   "  -a, --all           read every channel in DEVMASK\n"
		   "  -s, --set NAME=L[:R] write channel NAME (0..100), then read it back\n"
		   "  -w, --wait-ms N     after the writes, wait N ms and re-read (default 0: no)\n"
		   "  -n, --repeat K      re-read K times, --wait-ms apart (default 1)\n"
		   "channel names: vol bass treble synth pcm speaker line mic cd mix pcm2 rec igain\n"
		   "               ogain line1 line2 line3 dig1 dig2 dig3 phin phout video radio monitor\n");
}

/* Reads one channel; prints it with the given label; returns 0 or -1. */
static int read_channel(int fd, int ch, const char *label)
{
	int v = 0;

	if (ioctl(fd, MIXER_READ(ch), &v) < 0) {
		printf(PREFIX ": %s %s error=%s\n", label, channel_names[ch], strerror(errno));
		return -1;
	}
	printf(PREFIX ": %s %s=%d:%d\n", label, channel_names[ch], v & 0xff, (v >> 8) & 0xff);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", required_argument, 0, 'd' }, { "get", required_argument, 0, 'g' },
		{ "all", no_argument, 0, 'a' },		 { "set", required_argument, 0, 's' },
		{ "wait-ms", required_argument, 0, 'w' }, { "repeat", required_argument, 0, 'n' },
		{ "help", no_argument, 0, 'h' },	 { 0, 0, 0, 0 }
	};
	const char *device = "/dev/mixer";
	int gets[MAX_OPS], ngets = 0, explicit_gets = 0, all = 0, opt, fd, i, k, status = 0;
	struct set_op sets[MAX_OPS];
	int nsets = 0;
	unsigned long wait_ms = 0, repeat = 1;
	int devmask = 0, recmask = 0, stereodevs = 0, caps = 0, recsrc = 0;
	mixer_info info;

	while ((opt = getopt_long(argc, argv, "d:g:as:w:n:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'g': {
			int ch = channel_by_name(optarg, strlen(optarg));

			if (ch < 0 || ngets >= MAX_OPS) {
				fprintf(stderr, "mixer-test: bad --get '%s'\n", optarg);
				return EXIT_USAGE;
			}
			gets[ngets++] = ch;
			explicit_gets = 1;
			break;
		}
		case 'a':
			all = 1;
			break;
		case 's': {
			const char *eq = strchr(optarg, '=');
			char *colon;
			unsigned long l, r;
			int ch;

			if (!eq || nsets >= MAX_OPS ||
			    (ch = channel_by_name(optarg, (size_t)(eq - optarg))) < 0) {
				fprintf(stderr, "mixer-test: bad --set '%s' (NAME=L[:R])\n", optarg);
				return EXIT_USAGE;
			}
			colon = strchr(eq + 1, ':');
			if (colon) {
				*colon = '\0';
				if (parse_ulong(colon + 1, 100, &r)) {
					fprintf(stderr, "mixer-test: bad right level in --set\n");
					return EXIT_USAGE;
				}
			}
			if (parse_ulong(eq + 1, 100, &l)) {
				fprintf(stderr, "mixer-test: bad level in --set (0..100)\n");
				return EXIT_USAGE;
			}
			if (!colon)
				r = l;
			sets[nsets].channel = ch;
			sets[nsets].left = (unsigned)l;
			sets[nsets].right = (unsigned)r;
			nsets++;
			break;
		}
		case 'w':
			if (parse_ulong(optarg, 3600000, &wait_ms)) {
				fprintf(stderr, "mixer-test: bad --wait-ms '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'n':
			if (parse_ulong(optarg, 100000, &repeat)) {
				fprintf(stderr, "mixer-test: bad --repeat '%s'\n", optarg);
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
	if (optind != argc) {
		fprintf(stderr, "mixer-test: unexpected argument '%s'\n", argv[optind]);
		return EXIT_USAGE;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	fd = open(device, nsets ? O_RDWR : O_RDONLY);
	if (fd < 0) {
		printf(PREFIX ": open %s error=%s\n", device, strerror(errno));
		return EXIT_DEVICE;
	}
	if (ioctl(fd, SOUND_MIXER_INFO, &info) == 0) {
		info.id[sizeof(info.id) - 1] = '\0';
		info.name[sizeof(info.name) - 1] = '\0';
		printf(PREFIX ": info id=\"%s\" name=\"%s\"\n", info.id, info.name);
	}
	if (ioctl(fd, SOUND_MIXER_READ_DEVMASK, &devmask) < 0 ||
	    ioctl(fd, SOUND_MIXER_READ_RECMASK, &recmask) < 0 ||
	    ioctl(fd, SOUND_MIXER_READ_STEREODEVS, &stereodevs) < 0 ||
	    ioctl(fd, SOUND_MIXER_READ_CAPS, &caps) < 0 ||
	    ioctl(fd, SOUND_MIXER_READ_RECSRC, &recsrc) < 0) {
		printf(PREFIX ": mask read error=%s\n", strerror(errno));
		status = EXIT_DEVICE;
	}
	printf(PREFIX ": devmask=0x%08x recmask=0x%08x stereodevs=0x%08x caps=0x%08x recsrc=0x%08x\n",
	       (unsigned)devmask, (unsigned)recmask, (unsigned)stereodevs, (unsigned)caps,
	       (unsigned)recsrc);

	if (all) {
		for (i = 0; i < SOUND_MIXER_NRDEVICES && ngets < MAX_OPS; i++)
			if (devmask & (1 << i))
				gets[ngets++] = i;
	} else if (!ngets) {
		gets[ngets++] = SOUND_MIXER_VOLUME;
		gets[ngets++] = SOUND_MIXER_PCM;
		gets[ngets++] = SOUND_MIXER_IGAIN;
	}
	for (i = 0; i < ngets; i++)
		if (read_channel(fd, gets[i], "get") < 0 && explicit_gets)
			status = EXIT_DEVICE;

	for (i = 0; i < nsets; i++) {
		int v = (int)(sets[i].left | (sets[i].right << 8));
		const char *name = channel_names[sets[i].channel];

		if (ioctl(fd, MIXER_WRITE(sets[i].channel), &v) < 0) {
			printf(PREFIX ": set %s=%u:%u error=%s\n", name, sets[i].left, sets[i].right,
			       strerror(errno));
			status = EXIT_DEVICE;
			continue;
		}
		printf(PREFIX ": set %s=%u:%u -> %d:%d\n", name, sets[i].left, sets[i].right, v & 0xff,
		       (v >> 8) & 0xff);
		if (read_channel(fd, sets[i].channel, "readback") < 0)
			status = EXIT_DEVICE;
	}

	if (wait_ms) {
		for (k = 0; k < (int)repeat; k++) {
			char label[32];

			usleep((useconds_t)(wait_ms * 1000));
			snprintf(label, sizeof(label), "reread[%d]", k);
			for (i = 0; i < ngets; i++)
				read_channel(fd, gets[i], label);
			for (i = 0; i < nsets; i++)
				read_channel(fd, sets[i].channel, label);
		}
	}
	close(fd);
	return status;
}
