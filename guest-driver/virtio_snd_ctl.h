/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virtio-snd control elements (virtio 1.3, section 5.14.6.10), VIRTIO_SND_F_CTLS.
 *
 * The 6.1 <linux/virtio_snd.h> predates control elements (5.10 has no virtio_snd.h at all);
 * 6.9+ has them. Everything here
 * carries the DSP_SND_ prefix instead of VIRTIO_SND_ so the same source builds against
 * both without #ifdef games on enum constants (which the preprocessor cannot see).
 * The layouts are checked against the spec's sizes with static_assert below.
 */
#ifndef DSPROXY_VIRTIO_SND_CTL_H
#define DSPROXY_VIRTIO_SND_CTL_H

#include <linux/build_bug.h>
#include <linux/stddef.h>
#include <linux/types.h>

#include "virtio_snd_spec.h"

/* feature bit: the device has control elements and config.controls is valid */
#define DSP_SND_F_CTLS 0

/* configuration space including the field that only exists with DSP_SND_F_CTLS */
struct dsp_snd_config {
	__le32 jacks;
	__le32 streams;
	__le32 chmaps;
	__le32 controls;
};

/* control element request codes */
enum {
	DSP_SND_R_CTL_INFO = 0x0300,
	DSP_SND_R_CTL_ENUM_ITEMS,
	DSP_SND_R_CTL_READ,
	DSP_SND_R_CTL_WRITE,
	DSP_SND_R_CTL_TLV_READ,
	DSP_SND_R_CTL_TLV_WRITE,
	DSP_SND_R_CTL_TLV_COMMAND,
};

/* control element event code */
#define DSP_SND_EVT_CTL_NOTIFY 0x1200

/* control element roles */
enum {
	DSP_SND_CTL_ROLE_UNDEFINED = 0,
	DSP_SND_CTL_ROLE_VOLUME,
	DSP_SND_CTL_ROLE_MUTE,
	DSP_SND_CTL_ROLE_GAIN,
};

/* control element value types */
enum {
	DSP_SND_CTL_TYPE_BOOLEAN = 0,
	DSP_SND_CTL_TYPE_INTEGER,
	DSP_SND_CTL_TYPE_INTEGER64,
	DSP_SND_CTL_TYPE_ENUMERATED,
	DSP_SND_CTL_TYPE_BYTES,
	DSP_SND_CTL_TYPE_IEC958,
};

/* control element access bits */
enum {
	DSP_SND_CTL_ACCESS_READ = 0,
	DSP_SND_CTL_ACCESS_WRITE,
	DSP_SND_CTL_ACCESS_VOLATILE,
	DSP_SND_CTL_ACCESS_INACTIVE,
	DSP_SND_CTL_ACCESS_TLV_READ,
	DSP_SND_CTL_ACCESS_TLV_WRITE,
	DSP_SND_CTL_ACCESS_TLV_COMMAND,
};

/* CTL_NOTIFY mask bits */
#define DSP_SND_CTL_EVT_MASK_VALUE BIT(0)
#define DSP_SND_CTL_EVT_MASK_INFO BIT(1)
#define DSP_SND_CTL_EVT_MASK_TLV BIT(2)

struct dsp_snd_ctl_hdr {
	struct virtio_snd_hdr hdr;
	__le32 control_id;
};

struct dsp_snd_ctl_info {
	struct virtio_snd_info hdr;
	__le32 role;
	__le32 type;
	__le32 access;
	__le32 count;
	__le32 index;
	__u8 name[44];
	/*
	 * The spec's C layout puts the union, which holds 64-bit members, at offset 72: 4 bytes
	 * of padding after name (68 -> 72). x86-64 pads implicitly (8-byte alignment of u64),
	 * i386 would not (u64 is 4-byte aligned in its structs), so the padding is explicit.
	 */
	__u8 padding[4];
	union {
		struct {
			__le32 min;
			__le32 max;
			__le32 step;
		} integer;
		struct {
			__le64 min;
			__le64 max;
			__le64 step;
		} integer64;
		struct {
			__le32 items;
		} enumerated;
	} value;
};

#define DSP_SND_CTL_VALUE_BYTES 512

struct dsp_snd_ctl_value {
	union {
		__le32 integer[128];
		__le64 integer64[64];
		__le32 enumerated[128];
		__u8 bytes[DSP_SND_CTL_VALUE_BYTES];
	} value;
};

struct dsp_snd_ctl_event {
	struct virtio_snd_hdr hdr;
	__le16 control_id;
	__le16 mask;
};

static_assert(sizeof(struct dsp_snd_config) == 16);
static_assert(sizeof(struct dsp_snd_ctl_hdr) == 8);
static_assert(offsetof(struct dsp_snd_ctl_info, name) == 24);
static_assert(offsetof(struct dsp_snd_ctl_info, value) == 72);
static_assert(sizeof(struct dsp_snd_ctl_info) == 96);
static_assert(sizeof(struct dsp_snd_ctl_value) == DSP_SND_CTL_VALUE_BYTES);
static_assert(sizeof(struct dsp_snd_ctl_event) == sizeof(struct virtio_snd_event));

#endif /* DSPROXY_VIRTIO_SND_CTL_H */
