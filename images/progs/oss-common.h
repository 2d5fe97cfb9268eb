/* Small helpers shared by the guest test programs (dsp-play, dsp-record, mixer-test). */
#ifndef DSPROXY_OSS_COMMON_H
#define DSPROXY_OSS_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/ioctl.h>
#include <linux/soundcard.h>

/* Exit statuses: 0 ok, 1 the device or an ioctl failed, 2 bad usage, 3 --strict mismatch. */
#define EXIT_DEVICE 1
#define EXIT_USAGE 2
#define EXIT_MISMATCH 3

static inline double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* FNV-1a, 64 bit: offset basis 0xcbf29ce484222325, prime 0x100000001b3. */
#define FNV1A64_INIT 0xcbf29ce484222325ull

static inline uint64_t fnv1a64_update(uint64_t h, const unsigned char *p, size_t n)
{
	while (n--) {
		h ^= *p++;
		h *= 0x100000001b3ull;
	}
	return h;
}

struct oss_format {
	const char *name;
	int afmt;
	unsigned bytes_per_sample;
	unsigned char silence;
};

/* Index 1 (s16) is the programs' default format. */
static const struct oss_format oss_formats[] = {
	{ "u8", AFMT_U8, 1, 0x80 },
	{ "s16", AFMT_S16_LE, 2, 0x00 },
	{ "s16le", AFMT_S16_LE, 2, 0x00 },
};

static inline const struct oss_format *oss_format_by_name(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(oss_formats) / sizeof(oss_formats[0]); i++)
		if (strcasecmp(name, oss_formats[i].name) == 0)
			return &oss_formats[i];
	return NULL;
}

static inline const struct oss_format *oss_format_by_afmt(int afmt)
{
	size_t i;

	for (i = 0; i < sizeof(oss_formats) / sizeof(oss_formats[0]); i++)
		if (oss_formats[i].afmt == afmt)
			return &oss_formats[i];
	return NULL;
}

/* The symbolic name of the errno values an OSS driver returns (the tests match on them). */
static inline const char *errno_name(int e)
{
	switch (e) {
	case EAGAIN: return "EAGAIN";
	case EBADF: return "EBADF";
	case EBUSY: return "EBUSY";
	case EINVAL: return "EINVAL";
	case EIO: return "EIO";
	case ENODEV: return "ENODEV";
	case ENXIO: return "ENXIO";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case EINTR: return "EINTR";
	default: return "E?";
	}
}

/* Parses an unsigned number (decimal, or 0x hex); returns 0 on success. */
static inline int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (!s || !*s || *s == '-')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

struct oss_params {
	const struct oss_format *format;
	unsigned channels;
	unsigned rate;
};

/* Applies SETFRAGMENT (if frag != 0), SETFMT, CHANNELS and SPEED in the order OSS documents
 * (fragments first, then format, channels, rate), printing each request and the value the driver
 * returned. *got receives what the driver chose. Returns 0, or -1 if an ioctl failed. */
static inline int oss_set_params(int fd, const char *prefix, unsigned long frag,
				 const struct oss_params *want, struct oss_params *got)
{
	int v;

	if (frag) {
		v = (int)frag;
		if (ioctl(fd, SNDCTL_DSP_SETFRAGMENT, &v) < 0) {
			printf("%s: SETFRAGMENT 0x%08lx error=%s\n", prefix, frag, strerror(errno));
			return -1;
		}
		printf("%s: SETFRAGMENT 0x%08lx -> 0x%08x\n", prefix, frag, (unsigned)v);
	}
	v = want->format->afmt;
	if (ioctl(fd, SNDCTL_DSP_SETFMT, &v) < 0) {
		printf("%s: SETFMT %s error=%s\n", prefix, want->format->name, strerror(errno));
		return -1;
	}
	got->format = oss_format_by_afmt(v);
	printf("%s: SETFMT %s(0x%x) -> %s(0x%x)\n", prefix, want->format->name, want->format->afmt,
	       got->format ? got->format->name : "unsupported", (unsigned)v);
	v = (int)want->channels;
	if (ioctl(fd, SNDCTL_DSP_CHANNELS, &v) < 0) {
		printf("%s: CHANNELS %u error=%s\n", prefix, want->channels, strerror(errno));
		return -1;
	}
	got->channels = (unsigned)v;
	printf("%s: CHANNELS %u -> %d\n", prefix, want->channels, v);
	v = (int)want->rate;
	if (ioctl(fd, SNDCTL_DSP_SPEED, &v) < 0) {
		printf("%s: SPEED %u error=%s\n", prefix, want->rate, strerror(errno));
		return -1;
	}
	got->rate = (unsigned)v;
	printf("%s: SPEED %u -> %d\n", prefix, want->rate, v);
	return 0;
}

/* Shared option parsing for the stream parameters; returns 0 if opt was one of them. */
static inline int oss_params_option(int opt, const char *arg, struct oss_params *p,
				    const char *prog)
{
	unsigned long v;

	switch (opt) {
	case 'r':
		if (parse_ulong(arg, 1000000, &v) || v == 0) {
			fprintf(stderr, "%s: bad --rate '%s'\n", prog, arg);
			exit(EXIT_USAGE);
		}
		p->rate = (unsigned)v;
		return 0;
	case 'f':
		p->format = oss_format_by_name(arg);
		if (!p->format) {
			fprintf(stderr, "%s: bad --format '%s' (u8, s16)\n", prog, arg);
			exit(EXIT_USAGE);
		}
		return 0;
	case 'c':
		if (parse_ulong(arg, 64, &v) || v == 0) {
			fprintf(stderr, "%s: bad --channels '%s' (1..64)\n", prog, arg);
			exit(EXIT_USAGE);
		}
		p->channels = (unsigned)v;
		return 0;
	}
	return -1;
}

#endif
