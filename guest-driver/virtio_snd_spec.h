/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virtio-snd base definitions (virtio 1.2, section 5.14): the kernel's <linux/virtio_snd.h>
 * where it exists (5.13 and later), the same names written from the spec where it does not
 * (Debian 11's 5.10). Either way the sizes are checked against the spec below, on every
 * architecture (i386 aligns u64 to 4 bytes in structs; none of these layouts depends on it).
 */
#ifndef DSPROXY_VIRTIO_SND_SPEC_H
#define DSPROXY_VIRTIO_SND_SPEC_H

#include <linux/build_bug.h>
#include <linux/stddef.h>
#include <linux/types.h>

#if __has_include(<linux/virtio_snd.h>)
#include <linux/virtio_snd.h>
#else

/* configuration space */
struct virtio_snd_config {
	__le32 jacks;
	__le32 streams;
	__le32 chmaps;
};

/* virtqueues */
enum {
	VIRTIO_SND_VQ_CONTROL = 0,
	VIRTIO_SND_VQ_EVENT,
	VIRTIO_SND_VQ_TX,
	VIRTIO_SND_VQ_RX,
	VIRTIO_SND_VQ_MAX
};

/* stream directions */
enum {
	VIRTIO_SND_D_OUTPUT = 0,
	VIRTIO_SND_D_INPUT
};

/* request, event and status codes */
enum {
	VIRTIO_SND_R_JACK_INFO = 1,
	VIRTIO_SND_R_JACK_REMAP,

	VIRTIO_SND_R_PCM_INFO = 0x0100,
	VIRTIO_SND_R_PCM_SET_PARAMS,
	VIRTIO_SND_R_PCM_PREPARE,
	VIRTIO_SND_R_PCM_RELEASE,
	VIRTIO_SND_R_PCM_START,
	VIRTIO_SND_R_PCM_STOP,

	VIRTIO_SND_R_CHMAP_INFO = 0x0200,

	VIRTIO_SND_EVT_JACK_CONNECTED = 0x1000,
	VIRTIO_SND_EVT_JACK_DISCONNECTED,

	VIRTIO_SND_EVT_PCM_PERIOD_ELAPSED = 0x1100,
	VIRTIO_SND_EVT_PCM_XRUN,

	VIRTIO_SND_S_OK = 0x8000,
	VIRTIO_SND_S_BAD_MSG,
	VIRTIO_SND_S_NOT_SUPP,
	VIRTIO_SND_S_IO_ERR
};

struct virtio_snd_hdr {
	__le32 code;
};

struct virtio_snd_event {
	struct virtio_snd_hdr hdr;
	__le32 data;
};

struct virtio_snd_query_info {
	struct virtio_snd_hdr hdr;
	__le32 start_id;
	__le32 count;
	__le32 size;
};

struct virtio_snd_info {
	__le32 hda_fn_nid;
};

/* PCM stream features (bit numbers) */
enum {
	VIRTIO_SND_PCM_F_SHMEM_HOST = 0,
	VIRTIO_SND_PCM_F_SHMEM_GUEST,
	VIRTIO_SND_PCM_F_MSG_POLLING,
	VIRTIO_SND_PCM_F_EVT_SHMEM_PERIODS,
	VIRTIO_SND_PCM_F_EVT_XRUNS
};

/* PCM sample formats (bit numbers of the format mask) */
enum {
	VIRTIO_SND_PCM_FMT_IMA_ADPCM = 0,
	VIRTIO_SND_PCM_FMT_MU_LAW,
	VIRTIO_SND_PCM_FMT_A_LAW,
	VIRTIO_SND_PCM_FMT_S8,
	VIRTIO_SND_PCM_FMT_U8,
	VIRTIO_SND_PCM_FMT_S16,
	VIRTIO_SND_PCM_FMT_U16,
	VIRTIO_SND_PCM_FMT_S18_3,
	VIRTIO_SND_PCM_FMT_U18_3,
	VIRTIO_SND_PCM_FMT_S20_3,
	VIRTIO_SND_PCM_FMT_U20_3,
	VIRTIO_SND_PCM_FMT_S24_3,
	VIRTIO_SND_PCM_FMT_U24_3,
	VIRTIO_SND_PCM_FMT_S20,
	VIRTIO_SND_PCM_FMT_U20,
	VIRTIO_SND_PCM_FMT_S24,
	VIRTIO_SND_PCM_FMT_U24,
	VIRTIO_SND_PCM_FMT_S32,
	VIRTIO_SND_PCM_FMT_U32,
	VIRTIO_SND_PCM_FMT_FLOAT,
	VIRTIO_SND_PCM_FMT_FLOAT64,
	VIRTIO_SND_PCM_FMT_DSD_U8,
	VIRTIO_SND_PCM_FMT_DSD_U16,
	VIRTIO_SND_PCM_FMT_DSD_U32,
	VIRTIO_SND_PCM_FMT_IEC958_SUBFRAME
};

/* PCM frame rates (bit numbers of the rate mask) */
enum {
	VIRTIO_SND_PCM_RATE_5512 = 0,
	VIRTIO_SND_PCM_RATE_8000,
	VIRTIO_SND_PCM_RATE_11025,
	VIRTIO_SND_PCM_RATE_16000,
	VIRTIO_SND_PCM_RATE_22050,
	VIRTIO_SND_PCM_RATE_32000,
	VIRTIO_SND_PCM_RATE_44100,
	VIRTIO_SND_PCM_RATE_48000,
	VIRTIO_SND_PCM_RATE_64000,
	VIRTIO_SND_PCM_RATE_88200,
	VIRTIO_SND_PCM_RATE_96000,
	VIRTIO_SND_PCM_RATE_176400,
	VIRTIO_SND_PCM_RATE_192000,
	VIRTIO_SND_PCM_RATE_384000
};

struct virtio_snd_pcm_info {
	struct virtio_snd_info hdr;
	__le32 features;
	__le64 formats;
	__le64 rates;
	__u8 direction;
	__u8 channels_min;
	__u8 channels_max;
	__u8 padding[5];
};

struct virtio_snd_pcm_hdr {
	struct virtio_snd_hdr hdr;
	__le32 stream_id;
};

struct virtio_snd_pcm_set_params {
	struct virtio_snd_pcm_hdr hdr;
	__le32 buffer_bytes;
	__le32 period_bytes;
	__le32 features;
	__u8 channels;
	__u8 format;
	__u8 rate;
	__u8 padding;
};

struct virtio_snd_pcm_xfer {
	__le32 stream_id;
};

struct virtio_snd_pcm_status {
	__le32 status;
	__le32 latency_bytes;
};

#endif /* __has_include(<linux/virtio_snd.h>) */

/* 6.9+ appends the control elements' field (virtio_snd_ctl.h has our own copy) */
static_assert(offsetof(struct virtio_snd_config, chmaps) == 8);
static_assert(sizeof(struct virtio_snd_hdr) == 4);
static_assert(sizeof(struct virtio_snd_event) == 8);
static_assert(sizeof(struct virtio_snd_query_info) == 16);
static_assert(sizeof(struct virtio_snd_pcm_info) == 32);
static_assert(sizeof(struct virtio_snd_pcm_hdr) == 8);
static_assert(sizeof(struct virtio_snd_pcm_set_params) == 24);
static_assert(sizeof(struct virtio_snd_pcm_xfer) == 4);
static_assert(sizeof(struct virtio_snd_pcm_status) == 8);

#endif /* DSPROXY_VIRTIO_SND_SPEC_H */
