/* The deterministic test signal dsproxy's end-to-end tests play through the guest.
 *
 * One definition, two uses: the guest's dsp-play writes it to /dev/dsp, and a host build of the
 * same dsp-play (`dsp-play --stdout ...`) writes the identical bytes to stdout, so a test can
 * compare what the host captured with what the guest played, byte for byte.
 *
 * Definition (integer arithmetic only, so any compiler gives the same bytes):
 *   Samples are generated in interleaved order, n = 0, 1, 2, ... (n = frame * channels + ch).
 *   lcg_0 = 0x12345678;  before each sample: lcg = lcg * 1664525 + 1013904223 (mod 2^32).
 *   noise = (lcg >> 24) - 128                              in [-128, 127]
 *   p     = (frame * (ch + 1)) mod 256
 *   tri   = p < 128 ? p * 128 - 8192 : (255 - p) * 128 - 8192   in [-8192, 8064]
 *   s16   = tri + 4 * noise                                in [-8704, 8572]
 *   That is a triangle wave of rate/256 Hz on channel 0, twice that on channel 1, and so on
 *   (187.5 Hz and 375 Hz at 48 kHz), under low-level noise that makes every position in the
 *   stream distinct, so dropped, repeated or reordered chunks show up in a comparison.
 * Encoding of one sample:
 *   s16 (AFMT_S16_LE): the two bytes of s16, little endian.
 *   u8  (AFMT_U8):     (s16 + 32768) >> 8.
 * The byte stream is the concatenation of the encoded samples, cut at the requested length
 * (which may end inside a frame).
 */
#ifndef DSPROXY_DSP_SIGNAL_H
#define DSPROXY_DSP_SIGNAL_H

#include <stddef.h>
#include <stdint.h>

#define DSP_SIGNAL_LCG_SEED 0x12345678u

struct dsp_signal {
	uint32_t lcg;
	uint64_t sample_index;
	unsigned channels;
};

static inline void dsp_signal_init(struct dsp_signal *sig, unsigned channels)
{
	sig->lcg = DSP_SIGNAL_LCG_SEED;
	sig->sample_index = 0;
	sig->channels = channels ? channels : 1;
}

static inline int16_t dsp_signal_next_sample(struct dsp_signal *sig)
{
	uint64_t frame = sig->sample_index / sig->channels;
	unsigned ch = (unsigned)(sig->sample_index % sig->channels);
	int noise, tri;
	unsigned p;

	sig->lcg = sig->lcg * 1664525u + 1013904223u;
	noise = (int)(sig->lcg >> 24) - 128;
	p = (unsigned)((frame * (ch + 1u)) & 255u);
	tri = p < 128 ? (int)p * 128 - 8192 : (int)(255 - p) * 128 - 8192;
	sig->sample_index++;
	return (int16_t)(tri + 4 * noise);
}

/* Fills buf with the first len bytes of the signal for (bytes_per_sample, channels):
 * bytes_per_sample 1 = u8, 2 = s16 little endian. */
static inline void dsp_signal_fill(unsigned char *buf, size_t len, unsigned bytes_per_sample,
				   unsigned channels)
{
	struct dsp_signal sig;
	size_t i = 0;

	dsp_signal_init(&sig, channels);
	while (i < len) {
		int16_t s = dsp_signal_next_sample(&sig);

		if (bytes_per_sample == 1) {
			buf[i++] = (unsigned char)((s + 32768) >> 8);
		} else {
			uint16_t u = (uint16_t)s;

			buf[i++] = (unsigned char)(u & 0xff);
			if (i < len)
				buf[i++] = (unsigned char)(u >> 8);
		}
	}
}

#endif
