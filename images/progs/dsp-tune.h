/* A short recognizable tune for the demo (`dsp-play --tune`): the opening of Beethoven's
 * "Ode to Joy", sine tones with a soft attack and release so the notes do not click.
 *
 * Integer arithmetic only (a quarter-wave sine table with linear interpolation, a 32-bit phase
 * accumulator), so the guest's static build and the host build produce identical bytes and the
 * demo can check the captured WAV against `dsp-play --tune --stdout` byte for byte.
 * Every channel carries the same tone. Encoding as in dsp-signal.h: s16 little endian, or
 * u8 = (s16 + 32768) >> 8.
 */
#ifndef DSPROXY_DSP_TUNE_H
#define DSPROXY_DSP_TUNE_H

#include <stddef.h>
#include <stdint.h>

/* sin(pi/2 * i/64) * 32767, i = 0..64. */
static const int16_t dsp_tune_quarter_sine[65] = {
	0,     804,   1608,  2410,  3212,  4011,  4808,  5602,  6393,  7179,  7962,  8739,  9512,
	10278, 11039, 11793, 12539, 13279, 14010, 14732, 15446, 16151, 16846, 17530, 18204, 18868,
	19519, 20159, 20787, 21403, 22005, 22594, 23170, 23731, 24279, 24811, 25329, 25832, 26319,
	26790, 27245, 27683, 28105, 28510, 28898, 29268, 29621, 29956, 30273, 30571, 30852, 31113,
	31356, 31580, 31785, 31971, 32137, 32285, 32412, 32521, 32609, 32678, 32728, 32757, 32767
};

/* sin(2*pi * phase / 2^32) * 32767, interpolated. */
static inline int32_t dsp_tune_sine(uint32_t phase)
{
	uint32_t quadrant = phase >> 30;
	uint32_t in_quarter = phase & 0x3fffffffu;	 /* 30 bits */
	uint32_t idx = in_quarter >> 24;		 /* 0..63 */
	int32_t frac = (int32_t)((in_quarter >> 8) & 0xffff); /* 16 bits */
	int32_t a, b, v;

	if (quadrant & 1) { /* falling half of the hump: mirror the table */
		idx = 63 - idx;
		frac = 0xffff - frac;
	}
	a = dsp_tune_quarter_sine[idx];
	b = dsp_tune_quarter_sine[idx + 1];
	v = a + (int32_t)(((int64_t)(b - a) * frac) >> 16);
	return (quadrant & 2) ? -v : v;
}

/* Notes in centi-hertz (C5 = 523.25 Hz); 0 is a rest. */
struct dsp_tune_note {
	uint32_t centihz;
	uint32_t ms;
};

#define DSP_TUNE_C5 52325u
#define DSP_TUNE_D5 58733u
#define DSP_TUNE_E5 65926u
#define DSP_TUNE_F5 69846u
#define DSP_TUNE_G5 78399u

static const struct dsp_tune_note dsp_tune_notes[] = {
	{ DSP_TUNE_E5, 320 }, { DSP_TUNE_E5, 320 }, { DSP_TUNE_F5, 320 }, { DSP_TUNE_G5, 320 },
	{ DSP_TUNE_G5, 320 }, { DSP_TUNE_F5, 320 }, { DSP_TUNE_E5, 320 }, { DSP_TUNE_D5, 320 },
	{ DSP_TUNE_C5, 320 }, { DSP_TUNE_C5, 320 }, { DSP_TUNE_D5, 320 }, { DSP_TUNE_E5, 320 },
	{ DSP_TUNE_E5, 480 }, { DSP_TUNE_D5, 160 }, { DSP_TUNE_D5, 640 }, { 0, 200 },
};

#define DSP_TUNE_NOTES (sizeof(dsp_tune_notes) / sizeof(dsp_tune_notes[0]))
#define DSP_TUNE_AMPLITUDE 12000 /* out of 32767: comfortably loud, no clipping */

/* Frames in the whole tune at `rate` Hz. */
static inline size_t dsp_tune_frames(unsigned rate)
{
	size_t frames = 0, i;

	for (i = 0; i < DSP_TUNE_NOTES; i++)
		frames += (size_t)((uint64_t)rate * dsp_tune_notes[i].ms / 1000);
	return frames;
}

/* Fills buf with the first len bytes of the tune (bytes_per_sample 1 = u8, 2 = s16 LE);
 * bytes past the end of the tune are silence. */
static inline void dsp_tune_fill(unsigned char *buf, size_t len, unsigned bytes_per_sample,
				 unsigned channels, unsigned rate)
{
	size_t i = 0, note;

	if (!channels)
		channels = 1;
	for (note = 0; note < DSP_TUNE_NOTES && i < len; note++) {
		uint32_t frames = (uint32_t)((uint64_t)rate * dsp_tune_notes[note].ms / 1000);
		/* phase step = f / rate * 2^32, f in centi-hertz. */
		uint32_t step = (uint32_t)(((uint64_t)dsp_tune_notes[note].centihz << 32) /
					   ((uint64_t)rate * 100));
		uint32_t attack = rate / 200, release = rate / 25; /* 5 ms, 40 ms */
		uint32_t phase = 0, f;

		for (f = 0; f < frames && i < len; f++) {
			int32_t env = 256, s;
			unsigned ch;

			if (attack && f < attack)
				env = (int32_t)(256 * f / attack);
			if (release && frames - f <= release)
				env = (int32_t)(256 * (frames - f - 1) / release);
			s = dsp_tune_notes[note].centihz
				    ? (dsp_tune_sine(phase) * DSP_TUNE_AMPLITUDE / 32767) * env / 256
				    : 0;
			phase += step;
			for (ch = 0; ch < channels && i < len; ch++) {
				if (bytes_per_sample == 1) {
					buf[i++] = (unsigned char)((s + 32768) >> 8);
				} else {
					uint16_t u = (uint16_t)(int16_t)s;

					buf[i++] = (unsigned char)(u & 0xff);
					if (i < len)
						buf[i++] = (unsigned char)(u >> 8);
				}
			}
		}
	}
	while (i < len)
		buf[i++] = bytes_per_sample == 1 ? 0x80 : 0x00;
}

#endif
