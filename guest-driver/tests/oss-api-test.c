/* SPDX-License-Identifier: GPL-2.0 */
/*
 * oss-api-test: checks the OSS API of a /dev/dsp + /dev/mixer the way programs use it, against
 * a device that plays in real time (QEMU's virtio-sound-pci, dsproxy-device). Runs in the guest.
 *
 * Every check prints "OSS-API: ok NAME" or "OSS-API: FAIL NAME: why"; the last line is
 * "OSS-API: failures=N". Exit status: 0 all passed, 1 a check failed, 2 bad usage.
 *
 * Timing checks are loose (they only tell "did not move" from "moved"), never performance.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/soundcard.h>

#define P "OSS-API"

static int failures;
static const char *dsp_path = "/dev/dsp";
static const char *mixer_path = "/dev/mixer";

#define CHECK(cond, name, ...)                                                   \
	do {                                                                     \
		if (cond) {                                                      \
			printf(P ": ok %s\n", name);                              \
		} else {                                                         \
			failures++;                                              \
			printf(P ": FAIL %s: ", name);                            \
			printf(__VA_ARGS__);                                     \
			printf("\n");                                            \
		}                                                                \
		fflush(stdout);                                                  \
	} while (0)

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int xioctl(int fd, unsigned long req, int val, int *out)
{
	int v = val;

	if (ioctl(fd, req, &v) < 0)
		return -errno;
	if (out)
		*out = v;
	return 0;
}

static int odelay(int fd)
{
	int v = -1;

	return ioctl(fd, SNDCTL_DSP_GETODELAY, &v) < 0 ? -errno : v;
}

static audio_buf_info ospace(int fd)
{
	audio_buf_info i;

	memset(&i, 0xff, sizeof(i));
	ioctl(fd, SNDCTL_DSP_GETOSPACE, &i);
	return i;
}

static count_info optr(int fd)
{
	count_info c;

	memset(&c, 0xff, sizeof(c));
	ioctl(fd, SNDCTL_DSP_GETOPTR, &c);
	return c;
}

/* waits up to ms for GETODELAY to reach 0 */
static int wait_odelay_zero(int fd, int ms)
{
	double end = now_ms() + ms;

	while (now_ms() < end) {
		if (odelay(fd) == 0)
			return 1;
		sleep_ms(5);
	}
	return odelay(fd) == 0;
}

static ssize_t write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = write(fd, (const char *)buf + done, len - done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return done ? (ssize_t)done : -errno;
		}
		done += r;
	}
	return done;
}

static const int std_rates[] = { 5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000,
				 64000, 88200, 96000, 176400, 192000, 384000 };

/* sets S16_LE, 2 channels, 48 kHz and 3 fragments of 2 KiB */
static int setup_s16(int fd, int frag)
{
	int v;

	if (xioctl(fd, SNDCTL_DSP_SETFRAGMENT, frag, NULL) ||
	    xioctl(fd, SNDCTL_DSP_SETFMT, AFMT_S16_LE, &v) || v != AFMT_S16_LE ||
	    xioctl(fd, SNDCTL_DSP_CHANNELS, 2, &v) || v != 2 ||
	    xioctl(fd, SNDCTL_DSP_SPEED, 48000, &v) || v != 48000)
		return -1;
	return 0;
}

static void test_params(int fd)
{
	int v = 0, fmts = 0, r, i, j, n = 0, supported[14];
	static const int asks[] = { 1, 4000, 11000, 44000, 47000, 100000, 500000 };

	CHECK(xioctl(fd, OSS_GETVERSION, 0, &v) == 0 && v == SOUND_VERSION, "version",
	      "OSS_GETVERSION=0x%x", v);
	CHECK(xioctl(fd, SNDCTL_DSP_GETCAPS, 0, &v) == 0 && (v & DSP_CAP_TRIGGER), "caps",
	      "GETCAPS=0x%x", v);
	CHECK(xioctl(fd, SNDCTL_DSP_GETFMTS, 0, &fmts) == 0 && (fmts & AFMT_S16_LE), "getfmts",
	      "GETFMTS=0x%x", fmts);
	r = xioctl(fd, SNDCTL_DSP_SETFMT, 0x40000000, &v);
	CHECK(r == 0 && v && (v & fmts) == v && !(v & (v - 1)), "setfmt-unsupported",
	      "SETFMT(bogus) r=%d -> 0x%x (GETFMTS 0x%x)", r, v, fmts);
	r = xioctl(fd, SNDCTL_DSP_SETFMT, AFMT_S16_LE, &v);
	CHECK(r == 0 && v == AFMT_S16_LE, "setfmt", "SETFMT(S16_LE) r=%d -> 0x%x", r, v);
	r = xioctl(fd, SNDCTL_DSP_SETFMT, AFMT_QUERY, &v);
	CHECK(r == 0 && v == AFMT_S16_LE, "setfmt-query", "SETFMT(QUERY) r=%d -> 0x%x", r, v);

	for (i = 0; i < 14; i++)
		if (xioctl(fd, SNDCTL_DSP_SPEED, std_rates[i], &v) == 0 && v == std_rates[i])
			supported[n++] = std_rates[i];
	CHECK(n > 0, "rates", "no standard rate is accepted as is");
	for (j = 0; j < (int)(sizeof(asks) / sizeof(asks[0])) && n; j++) {
		int best = supported[0];
		char name[32];

		for (i = 1; i < n; i++)
			if (abs(supported[i] - asks[j]) <= abs(best - asks[j]))
				best = supported[i];
		r = xioctl(fd, SNDCTL_DSP_SPEED, asks[j], &v);
		snprintf(name, sizeof(name), "speed-nearest-%d", asks[j]);
		CHECK(r == 0 && v == best, name, "SPEED(%d) r=%d -> %d, nearest is %d", asks[j], r,
		      v, best);
	}
	xioctl(fd, SNDCTL_DSP_SPEED, 44100, NULL);
	r = xioctl(fd, SOUND_PCM_READ_RATE, 0, &v);
	CHECK(r == 0 && v == 44100, "read-rate", "SOUND_PCM_READ_RATE r=%d -> %d", r, v);

	r = xioctl(fd, SNDCTL_DSP_CHANNELS, 200, &v);
	CHECK(r == 0 && v >= 1 && v < 200, "channels-clamp", "CHANNELS(200) r=%d -> %d", r, v);
	if (v >= 2) {
		r = xioctl(fd, SNDCTL_DSP_STEREO, 1, &v);
		CHECK(r == 0 && v == 1, "stereo", "STEREO(1) r=%d -> %d", r, v);
		r = xioctl(fd, SOUND_PCM_READ_CHANNELS, 0, &v);
		CHECK(r == 0 && v == 2, "read-channels", "READ_CHANNELS r=%d -> %d", r, v);
	}

	r = setup_s16(fd, 0x0003000b);
	CHECK(r == 0, "setup", "SETFRAGMENT/SETFMT/CHANNELS/SPEED failed");
	r = xioctl(fd, SNDCTL_DSP_GETBLKSIZE, 0, &v);
	CHECK(r == 0 && v == 2048, "blksize", "GETBLKSIZE r=%d -> %d (want 2048)", r, v);
	{
		audio_buf_info sp = ospace(fd);

		CHECK(sp.fragstotal == 3 && sp.fragsize == 2048 && sp.bytes == 6144 &&
			      sp.fragments == 3,
		      "ospace-empty", "GETOSPACE fragments=%d fragstotal=%d fragsize=%d bytes=%d",
		      sp.fragments, sp.fragstotal, sp.fragsize, sp.bytes);
	}
	r = xioctl(fd, SNDCTL_DSP_SUBDIVIDE, 0, &v);
	CHECK(r == 0 && v == 1, "subdivide-query", "SUBDIVIDE(0) r=%d -> %d", r, v);
	r = xioctl(fd, _IOW('P', 99, int), 0, NULL);
	CHECK(r == -EINVAL, "unknown-ioctl", "ioctl('P', 99) r=%d (want -EINVAL)", r);
	r = xioctl(fd, SOUND_MIXER_READ_DEVMASK, 0, &v);
	CHECK(r == 0 && v, "mixer-via-dsp", "MIXER_READ_DEVMASK on /dev/dsp r=%d -> 0x%x", r, v);
}

static void test_output(int fd)
{
	static char buf[65536];
	int v, r, got_eagain = 0, total = 0, flags;
	audio_buf_info sp;
	count_info c0, c1;
	double t0;
	struct pollfd pfd;

	/* non-blocking fill: the ring takes a buffer's worth, then EAGAIN */
	flags = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	t0 = now_ms();
	while (now_ms() - t0 < 2000) {
		ssize_t w = write(fd, buf, 1000);

		if (w < 0 && errno == EAGAIN) {
			got_eagain = 1;
			break;
		}
		if (w < 0)
			break;
		total += w;
	}
	sp = ospace(fd);
	v = odelay(fd);
	CHECK(got_eagain && total >= 6144, "nonblock-eagain", "EAGAIN=%d after %d bytes",
	      got_eagain, total);
	CHECK(sp.bytes < sp.fragsize, "ospace-full", "GETOSPACE bytes=%d right after EAGAIN",
	      sp.bytes);
	CHECK(v > 0 && v <= 6144 + 8192, "odelay-full", "GETODELAY=%d", v);

	pfd.fd = fd;
	pfd.events = POLLOUT;
	r = poll(&pfd, 1, 2000);
	CHECK(r == 1 && (pfd.revents & POLLOUT), "poll-out", "poll r=%d revents=0x%x", r,
	      pfd.revents);
	sp = ospace(fd);
	CHECK(sp.bytes >= sp.fragsize, "poll-means-space", "after POLLOUT GETOSPACE bytes=%d",
	      sp.bytes);

	c0 = optr(fd);
	sleep_ms(100);
	c1 = optr(fd);
	CHECK(c1.bytes > c0.bytes && c1.blocks >= 1, "optr-moves",
	      "GETOPTR bytes %d -> %d, blocks %d", c0.bytes, c1.bytes, c1.blocks);
	fcntl(fd, F_SETFL, flags);

	/* SYNC: returns once everything played */
	r = write_full(fd, buf, 4096);
	r = xioctl(fd, SNDCTL_DSP_SYNC, 0, NULL);
	sp = ospace(fd);
	CHECK(r == 0 && odelay(fd) == 0 && sp.bytes == 6144, "sync",
	      "SYNC r=%d, then GETODELAY=%d GETOSPACE bytes=%d", r, odelay(fd), sp.bytes);

	/* SETTRIGGER: nothing plays while the trigger is off */
	r = xioctl(fd, SNDCTL_DSP_GETTRIGGER, 0, &v);
	CHECK(r == 0 && v == PCM_ENABLE_OUTPUT, "gettrigger", "GETTRIGGER r=%d -> 0x%x", r, v);
	r = xioctl(fd, SNDCTL_DSP_SETTRIGGER, 0, NULL);
	xioctl(fd, SNDCTL_DSP_GETTRIGGER, 0, &v);
	CHECK(r == 0 && v == 0, "settrigger-off", "SETTRIGGER(0) r=%d, GETTRIGGER 0x%x", r, v);
	r = write_full(fd, buf, 4096);
	c0 = optr(fd);
	sleep_ms(200);
	c1 = optr(fd);
	v = odelay(fd);
	CHECK(r == 4096 && c1.bytes == c0.bytes && v == 4096, "trigger-holds",
	      "write=%d, GETOPTR bytes %d -> %d, GETODELAY=%d", r, c0.bytes, c1.bytes, v);
	r = xioctl(fd, SNDCTL_DSP_SETTRIGGER, PCM_ENABLE_OUTPUT, NULL);
	CHECK(r == 0 && wait_odelay_zero(fd, 2000), "trigger-starts",
	      "SETTRIGGER(OUTPUT) r=%d, GETODELAY=%d after 2 s", r, odelay(fd));

	/* RESET drops what is queued */
	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	while (write(fd, buf, 2048) > 0)
		;
	fcntl(fd, F_SETFL, flags);
	r = xioctl(fd, SNDCTL_DSP_RESET, 0, NULL);
	sp = ospace(fd);
	c0 = optr(fd);
	CHECK(r == 0 && odelay(fd) == 0 && sp.bytes == 6144 && c0.bytes == 0, "reset",
	      "RESET r=%d, GETODELAY=%d GETOSPACE bytes=%d GETOPTR bytes=%d", r, odelay(fd),
	      sp.bytes, c0.bytes);

	/* a partial fragment waits for more data, or for POST */
	r = write_full(fd, buf, 1000);
	sleep_ms(100);
	v = odelay(fd);
	CHECK(r == 1000 && v == 1000, "partial-waits", "write=%d, GETODELAY=%d after 100 ms", r,
	      v);
	r = xioctl(fd, SNDCTL_DSP_POST, 0, NULL);
	CHECK(r == 0 && wait_odelay_zero(fd, 2000), "post", "POST r=%d, GETODELAY=%d after 2 s",
	      r, odelay(fd));

	/* an incomplete frame is held back, never sent */
	xioctl(fd, SNDCTL_DSP_RESET, 0, NULL);
	r = write_full(fd, buf, 1001);
	xioctl(fd, SNDCTL_DSP_SYNC, 0, NULL);
	v = odelay(fd);
	c0 = optr(fd);
	CHECK(r == 1001 && v == 1 && c0.bytes == 1000, "partial-frame-held",
	      "write=%d, after SYNC GETODELAY=%d GETOPTR bytes=%d (want 1, 1000)", r, v,
	      c0.bytes);
	r = write_full(fd, buf, 3);
	xioctl(fd, SNDCTL_DSP_SYNC, 0, NULL);
	v = odelay(fd);
	c0 = optr(fd);
	CHECK(r == 3 && v == 0 && c0.bytes == 1004, "partial-frame-completed",
	      "write=%d, after SYNC GETODELAY=%d GETOPTR bytes=%d (want 0, 1004)", r, v,
	      c0.bytes);
}

static void test_close_drains(void)
{
	static char buf[48000];
	int fd = open(dsp_path, O_WRONLY), fd2;
	double t0, dt;

	if (fd < 0) {
		CHECK(0, "close-drains", "open: %s", strerror(errno));
		return;
	}
	fd2 = open(dsp_path, O_WRONLY);
	CHECK(fd2 < 0 && errno == EBUSY, "exclusive", "second open r=%d errno=%s", fd2,
	      fd2 < 0 ? strerror(errno) : "-");
	if (fd2 >= 0)
		close(fd2);
	setup_s16(fd, 0x0010000c);	/* 16 x 4 KiB: 0.34 s at 48 kHz */
	write_full(fd, buf, sizeof(buf)); /* 250 ms */
	t0 = now_ms();
	close(fd);
	dt = now_ms() - t0;
	CHECK(dt >= 100, "close-drains", "close() took %.0f ms with 250 ms queued", dt);
}

static void test_input(void)
{
	static char buf[9600];
	int fd = open(dsp_path, O_RDONLY | O_NONBLOCK), fd2, r, v;
	audio_buf_info sp;
	count_info c;
	struct pollfd pfd;
	ssize_t n;

	if (fd < 0) {
		CHECK(0, "input-open", "open O_RDONLY: %s", strerror(errno));
		return;
	}
	setup_s16(fd, 0x0008000b);
	r = ioctl(fd, SNDCTL_DSP_GETISPACE, &sp);
	CHECK(r == 0 && sp.fragsize == 2048 && sp.fragstotal == 8 && sp.bytes == 0,
	      "ispace-empty", "GETISPACE r=%d fragsize=%d fragstotal=%d bytes=%d", r,
	      sp.fragsize, sp.fragstotal, sp.bytes);
	n = read(fd, buf, sizeof(buf));
	CHECK(n < 0 && errno == EAGAIN, "read-nonblock", "first read r=%zd errno=%s", n,
	      n < 0 ? strerror(errno) : "-");
	pfd.fd = fd;
	pfd.events = POLLIN;
	r = poll(&pfd, 1, 2000);
	CHECK(r == 1 && (pfd.revents & POLLIN), "poll-in", "poll r=%d revents=0x%x", r,
	      pfd.revents);
	ioctl(fd, SNDCTL_DSP_GETISPACE, &sp);
	CHECK(sp.bytes > 0, "ispace-data", "GETISPACE bytes=%d after POLLIN", sp.bytes);
	fcntl(fd, F_SETFL, O_RDONLY);
	n = read(fd, buf, sizeof(buf));
	CHECK(n == (ssize_t)sizeof(buf), "read-blocking", "read(%zu) = %zd", sizeof(buf), n);
	r = ioctl(fd, SNDCTL_DSP_GETIPTR, &c);
	CHECK(r == 0 && c.bytes >= (int)sizeof(buf), "iptr", "GETIPTR r=%d bytes=%d", r,
	      c.bytes);
	close(fd);

	fd = open(dsp_path, O_RDWR);
	if (fd < 0) {
		CHECK(0, "duplex-open", "open O_RDWR: %s", strerror(errno));
		return;
	}
	r = xioctl(fd, SNDCTL_DSP_GETCAPS, 0, &v);
	CHECK(r == 0 && (v & DSP_CAP_DUPLEX), "duplex-caps", "GETCAPS=0x%x", v);
	CHECK(xioctl(fd, SNDCTL_DSP_SETDUPLEX, 0, NULL) == 0, "setduplex", "SETDUPLEX failed");
	fd2 = open(dsp_path, O_RDONLY);
	CHECK(fd2 < 0 && errno == EBUSY, "duplex-exclusive", "O_RDONLY beside O_RDWR r=%d",
	      fd2);
	if (fd2 >= 0)
		close(fd2);
	setup_s16(fd, 0x0008000b);
	n = write_full(fd, buf, sizeof(buf));
	CHECK(n == (ssize_t)sizeof(buf), "duplex-write", "write=%zd", n);
	n = read(fd, buf, sizeof(buf));
	CHECK(n == (ssize_t)sizeof(buf), "duplex-read", "read=%zd", n);
	close(fd);
}

static void test_mixer(void)
{
	int fd = open(mixer_path, O_RDWR), r, devmask = 0, v = 0, w, ch;
	mixer_info info;

	if (fd < 0) {
		CHECK(0, "mixer-open", "%s", strerror(errno));
		return;
	}
	r = xioctl(fd, SOUND_MIXER_READ_DEVMASK, 0, &devmask);
	CHECK(r == 0 && (devmask & SOUND_MASK_VOLUME), "mixer-devmask", "DEVMASK r=%d 0x%x", r,
	      devmask);
	memset(&info, 0, sizeof(info));
	r = ioctl(fd, SOUND_MIXER_INFO, &info);
	CHECK(r == 0 && info.id[0], "mixer-info", "SOUND_MIXER_INFO r=%d", r);
	r = xioctl(fd, SOUND_MIXER_WRITE_VOLUME, 37 | (63 << 8), &w);
	xioctl(fd, SOUND_MIXER_READ_VOLUME, 0, &v);
	CHECK(r == 0 && abs((w & 0xff) - 37) <= 1 && abs((w >> 8) - 63) <= 1 && v == w,
	      "mixer-volume", "WRITE 37:63 r=%d -> %d:%d, READ %d:%d", r, w & 0xff, w >> 8,
	      v & 0xff, v >> 8);
	xioctl(fd, SOUND_MIXER_WRITE_VOLUME, 100 | (100 << 8), NULL);
	if (devmask & SOUND_MASK_IGAIN) {
		int ig = -1, rl = -2;

		xioctl(fd, SOUND_MIXER_READ_IGAIN, 0, &ig);
		xioctl(fd, SOUND_MIXER_READ_RECLEV, 0, &rl);
		CHECK(ig == rl, "mixer-reclev-alias", "IGAIN 0x%x RECLEV 0x%x", ig, rl);
	}
	for (ch = 0; ch < SOUND_MIXER_NRDEVICES && (devmask & (1 << ch)); ch++)
		;
	if (ch < SOUND_MIXER_NRDEVICES && ch != SOUND_MIXER_RECLEV) {
		r = xioctl(fd, MIXER_READ(ch), 0, NULL);
		CHECK(r == -EINVAL, "mixer-absent-channel", "READ channel %d r=%d", ch, r);
	}
	close(fd);
}

int main(int argc, char **argv)
{
	int opt, input = 0, mixer = 1, fd;

	while ((opt = getopt(argc, argv, "d:m:iM")) != -1) {
		switch (opt) {
		case 'd': dsp_path = optarg; break;
		case 'm': mixer_path = optarg; break;
		case 'i': input = 1; break;
		case 'M': mixer = 0; break;
		default:
			fprintf(stderr, "usage: oss-api-test [-d DSP] [-m MIXER] [-i (input too)] [-M (no mixer)]\n");
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = open(dsp_path, O_WRONLY);
	if (fd < 0) {
		printf(P ": FAIL open %s: %s\n" P ": failures=1\n", dsp_path, strerror(errno));
		return 1;
	}
	test_params(fd);
	test_output(fd);
	close(fd);
	test_close_drains();
	if (input)
		test_input();
	if (mixer)
		test_mixer();
	printf(P ": failures=%d\n", failures);
	return failures ? 1 : 0;
}
