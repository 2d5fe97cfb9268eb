// SPDX-License-Identifier: GPL-2.0
/*
 * The one place that maps OSS sample formats and rates onto virtio-snd's codes.
 */
#include <linux/kernel.h>
#include <linux/errno.h>
#include <linux/string.h>

#include "dsproxy_oss.h"

/*
 * Linux's <linux/soundcard.h> stops at OSS 3.8; these are OSS 4's values for the formats
 * virtio-snd can also carry.
 */
#ifndef AFMT_S32_LE
#define AFMT_S32_LE 0x00001000
#endif
#ifndef AFMT_FLOAT
#define AFMT_FLOAT 0x00004000
#endif
#ifndef AFMT_S24_LE
#define AFMT_S24_LE 0x00008000	/* 24 bits, LSB-aligned in 32 (virtio S24) */
#endif
#ifndef AFMT_S24_PACKED
#define AFMT_S24_PACKED 0x00040000	/* 3-byte little endian (virtio S24_3) */
#endif

/*
 * Order matters: dsp_format_fallback() picks the first entry the device supports, so the
 * common formats come first. Only little-endian formats: virtio-snd's PCM formats are LE.
 */
static const struct dsp_format dsp_formats[] = {
	{ AFMT_U8,         VIRTIO_SND_PCM_FMT_U8,     1, 0x80, "U8" },
	{ AFMT_S16_LE,     VIRTIO_SND_PCM_FMT_S16,    2, 0x00, "S16_LE" },
	{ AFMT_S8,         VIRTIO_SND_PCM_FMT_S8,     1, 0x00, "S8" },
	/* U16's silence is 0x8000: bytes 00 80, see dsp_format_fill_silence() */
	{ AFMT_U16_LE,     VIRTIO_SND_PCM_FMT_U16,    2, 0x00, "U16_LE" },
	{ AFMT_MU_LAW,     VIRTIO_SND_PCM_FMT_MU_LAW, 1, 0xff, "MU_LAW" },
	{ AFMT_A_LAW,      VIRTIO_SND_PCM_FMT_A_LAW,  1, 0xd5, "A_LAW" },
	{ AFMT_S32_LE,     VIRTIO_SND_PCM_FMT_S32,    4, 0x00, "S32_LE" },
	{ AFMT_S24_LE,     VIRTIO_SND_PCM_FMT_S24,    4, 0x00, "S24_LE" },
	{ AFMT_S24_PACKED, VIRTIO_SND_PCM_FMT_S24_3,  3, 0x00, "S24_PACKED" },
	{ AFMT_FLOAT,      VIRTIO_SND_PCM_FMT_FLOAT,  4, 0x00, "FLOAT" },
};

/* index = VIRTIO_SND_PCM_RATE_* */
static const unsigned int dsp_rates[] = {
	5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000,
	64000, 88200, 96000, 176400, 192000, 384000,
};

static_assert(ARRAY_SIZE(dsp_rates) == VIRTIO_SND_PCM_RATE_384000 + 1);

const struct dsp_format *dsp_format_by_afmt(u32 afmt)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(dsp_formats); i++)
		if (dsp_formats[i].afmt == afmt)
			return &dsp_formats[i];
	return NULL;
}

const struct dsp_format *dsp_format_by_vfmt(u8 vfmt)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(dsp_formats); i++)
		if (dsp_formats[i].vfmt == vfmt)
			return &dsp_formats[i];
	return NULL;
}

const struct dsp_format *dsp_format_fallback(u64 vfmt_mask)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(dsp_formats); i++)
		if (vfmt_mask & BIT_ULL(dsp_formats[i].vfmt))
			return &dsp_formats[i];
	return NULL;
}

u32 dsp_format_afmt_mask(u64 vfmt_mask)
{
	unsigned int i;
	u32 mask = 0;

	for (i = 0; i < ARRAY_SIZE(dsp_formats); i++)
		if (vfmt_mask & BIT_ULL(dsp_formats[i].vfmt))
			mask |= dsp_formats[i].afmt;
	return mask;
}

/* fills buf with the format's silence (a mapped ring before the program writes it) */
void dsp_format_fill_silence(const struct dsp_format *fmt, u8 *buf, size_t len)
{
	size_t i;

	memset(buf, fmt->silence, len);
	if (fmt->afmt == AFMT_U16_LE)
		for (i = 1; i < len; i += 2)
			buf[i] = 0x80;
}

unsigned int dsp_rate_hz(u8 rate_code)
{
	return rate_code < ARRAY_SIZE(dsp_rates) ? dsp_rates[rate_code] : 0;
}

int dsp_rate_nearest(u64 vrate_mask, unsigned int hz)
{
	unsigned int i, best_diff = UINT_MAX;
	int best = -EINVAL;

	for (i = 0; i < ARRAY_SIZE(dsp_rates); i++) {
		unsigned int diff;

		if (!(vrate_mask & BIT_ULL(i)))
			continue;
		diff = hz > dsp_rates[i] ? hz - dsp_rates[i] : dsp_rates[i] - hz;
		/* ties go to the higher rate: never less resolution than asked for */
		if (diff <= best_diff) {
			best_diff = diff;
			best = i;
		}
	}
	return best;
}
