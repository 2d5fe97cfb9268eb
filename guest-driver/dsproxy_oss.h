/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dsproxy_oss: a virtio-snd driver that presents the classic OSS /dev/dsp and /dev/mixer.
 *
 * Shared types. Layering (one file per concern, like Linux's sound/virtio/):
 *   card.c     probe/remove, virtqueues, event queue, OSS node registration
 *   ctl_msg.c  control queue request/response with timeout
 *   pcm.c      per-stream device state: PCM_INFO, SET_PARAMS/PREPARE/START/STOP/RELEASE,
 *              drain and reset
 *   pcm_msg.c  tx/rx I/O message ring
 *   dsp.c      /dev/dsp file operations (the OSS audio API)
 *   mixer.c    /dev/mixer file operations, control element discovery and mapping
 *   fmt.c      the one table of OSS AFMT_* <-> virtio formats, and the rate table
 */
#ifndef DSPROXY_OSS_H
#define DSPROXY_OSS_H

#include <linux/completion.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mutex.h>
#include <linux/soundcard.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/version.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/wait.h>

#include "virtio_snd_spec.h"
#include "virtio_snd_ctl.h"

/* Kernel API differences (5.10 is the oldest kernel this builds for) */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 17, 0)
/* 5.17 added virtio_reset_device(); before it, the transport's reset op was called directly */
static inline void virtio_reset_device(struct virtio_device *vdev)
{
	vdev->config->reset(vdev);
}
#endif

/* limits of the message ring (per stream) */
#define DSP_MIN_FRAG_SHIFT 4	/* 16-byte fragments, as OSS allows */
#define DSP_MAX_FRAG_SHIFT 16	/* 64 KiB: one kmalloc'd, physically contiguous buffer */
#define DSP_MIN_FRAGS 2
#define DSP_MAX_FRAGS 256
#define DSP_DEFAULT_FRAGS 16
#define DSP_MAX_BUFFER_BYTES (512 * 1024)
/* largest frame: 255 channels of 4-byte samples (the widest mapped format) */
#define DSP_MAX_FRAME_BYTES (255 * 4)
/*
 * mmap playback: the card takes the program's ring this far ahead of what it has played (at
 * least 2 periods), so the next period is always queued when one completes, even when the
 * guest's interrupt comes late (TCG).
 */
#define DSP_MMAP_LEAD_MS 20

struct dsp_card;
struct dsp_stream;

/* fmt.c: OSS format <-> virtio format, one table */
struct dsp_format {
	u32 afmt;		/* AFMT_* */
	u8 vfmt;		/* VIRTIO_SND_PCM_FMT_* */
	u8 bytes;		/* bytes per sample (physical width) */
	u8 silence;		/* the byte value of silence (U8 0x80, MU_LAW 0xff, A_LAW 0xd5) */
	const char *name;
};

const struct dsp_format *dsp_format_by_afmt(u32 afmt);
const struct dsp_format *dsp_format_by_vfmt(u8 vfmt);
/* the preferred supported format when the program asks for something the device lacks */
const struct dsp_format *dsp_format_fallback(u64 vfmt_mask);
u32 dsp_format_afmt_mask(u64 vfmt_mask);
void dsp_format_fill_silence(const struct dsp_format *fmt, u8 *buf, size_t len);
unsigned int dsp_rate_hz(u8 rate_code);
/* nearest rate in vrate_mask to hz; returns the code, or -EINVAL if the mask is empty */
int dsp_rate_nearest(u64 vrate_mask, unsigned int hz);

/* one virtqueue and the lock that serializes every use of it */
struct dsp_queue {
	struct virtqueue *vq;
	spinlock_t lock;
};

/* ctl_msg.c */
int dsp_ctl_request(struct dsp_card *card, const void *req, size_t req_len, void *resp,
		    size_t resp_len);
void dsp_ctl_vq_done(struct virtqueue *vq);
void dsp_ctl_flush(struct dsp_card *card);
int dsp_status_to_errno(u32 code);

/* pcm_msg.c: the I/O message ring */
enum dsp_msg_state {
	DSP_MSG_FREE,		/* driver owns it, no data */
	DSP_MSG_FILLING,	/* tx: write() is filling it */
	DSP_MSG_READY,		/* tx: full, waiting for room in the virtqueue */
	DSP_MSG_QUEUED,		/* the device owns it */
	DSP_MSG_DONE,		/* rx: the device filled it, read() has not consumed it all */
};

struct dsp_pcm_msg {
	/* device-readable header and device-writable status: kmalloc'd, so DMA-able */
	struct virtio_snd_pcm_xfer xfer;
	struct virtio_snd_pcm_status status;
	struct dsp_stream *stream;
	u8 *data;		/* capacity: stream->ring.period_bytes */
	u32 length;		/* tx: bytes filled / sent; rx: bytes received */
	u32 offset;		/* rx: bytes already consumed by read() */
	enum dsp_msg_state state;
};

struct dsp_ring {
	struct dsp_pcm_msg *msgs;
	unsigned int nmsgs;
	u32 period_bytes;
	unsigned int fill;	/* tx: message write() fills; rx: message read() consumes */
	unsigned int next_sub;	/* next message to hand to the device (ring order) */
	unsigned int queued;	/* messages the device owns */
	u32 queued_bytes;	/* tx: bytes in them */
	unsigned int ready;	/* tx: READY messages */
	u32 pending_bytes;	/* tx: bytes READY or QUEUED; rx: unread bytes in DONE msgs */
	u64 bytes_done;		/* bytes the device completed since the last reset */
	u32 blocks_done;	/* messages completed since the last GETxPTR */
	/*
	 * From the last completed message's status: what the device still holds unplayed.
	 * dsproxy-device counts the messages it has not completed yet, i.e. ours (queued_bytes)
	 * as of that completion; a device with a FIFO behind its completions may count more.
	 */
	u32 latency_bytes;
	bool armed;		/* rx: give FREE messages to the device (capture running) */
	bool flushing;		/* RELEASE sent: returned messages carry no data, errors expected */
};

/*
 * OSS mmap: the program's "DMA buffer", a ring of fragsize x fragstotal bytes it maps and
 * writes (playback) or reads (capture) directly. The messages stay the driver's own: a
 * playback period is copied out of the ring at the moment the card takes it (the pointer
 * passes it), a capture period into the ring when the card has filled it. So the card gets
 * exactly what the program wrote ahead of the pointer, whatever it writes afterwards, and
 * never a period before the program could write it.
 * buf, bytes, frag: set once by mmap() under ring_lock, read without it afterwards; the rest:
 * ring_lock.
 */
struct dsp_mmap {
	u8 *buf;		/* vmalloc_user(), mapped into the program */
	u32 bytes;		/* the ring's size: fragsize x fragstotal at mmap() time */
	u32 frag;		/* fragsize at mmap() time (GETxPTR's blocks count these) */
	u32 pos;		/* tx: next byte the card takes; rx: next byte it fills */
	u64 total;		/* bytes taken (tx) or filled (rx) since open or RESET */
	u64 blocks_reported;	/* total / frag at the last GETxPTR */
	unsigned int lead;	/* tx: messages the card may hold (taken, not yet played) */
	bool run;		/* tx: take periods from the ring as the card completes them */
};

int dsp_ring_alloc(struct dsp_stream *s, unsigned int nmsgs, u32 period_bytes);
void dsp_ring_free(struct dsp_ring *ring);
void dsp_ring_push(struct dsp_stream *s);
void dsp_ring_reset_counters(struct dsp_stream *s);
void dsp_ring_discard(struct dsp_stream *s);
bool dsp_ring_idle(struct dsp_stream *s);
void dsp_ring_pointer(struct dsp_stream *s, u64 *bytes, u32 *blocks, u32 *ptr);
u64 dsp_ring_bytes_done(struct dsp_stream *s);
void dsp_rx_arm(struct dsp_stream *s, bool on);
void dsp_ring_set_flushing(struct dsp_stream *s, bool on);
bool dsp_tx_drained(struct dsp_stream *s, u64 *bytes_done);
bool dsp_tx_has_queued(struct dsp_stream *s);
bool dsp_tx_writable(struct dsp_stream *s);
bool dsp_rx_ready(struct dsp_stream *s);
ssize_t dsp_tx_copy(struct dsp_stream *s, const char __user *buf, size_t count);
bool dsp_tx_flush_partial(struct dsp_stream *s, bool keep_partial_frame);
u32 dsp_tx_free_bytes(struct dsp_stream *s);
u32 dsp_tx_delay_bytes(struct dsp_stream *s);
ssize_t dsp_rx_copy(struct dsp_stream *s, char __user *buf, size_t count);
u32 dsp_rx_avail_bytes(struct dsp_stream *s);
void dsp_tx_vq_done(struct virtqueue *vq);
void dsp_rx_vq_done(struct virtqueue *vq);
void dsp_pcm_msg_flush(struct dsp_card *card);
int dsp_mmap_alloc(struct dsp_stream *s, u32 frag, u32 nfrags, const struct dsp_format *fmt);
void dsp_mmap_free(struct dsp_stream *s);
void dsp_mmap_set_run(struct dsp_stream *s, bool run, unsigned int lead);
void dsp_mmap_reset(struct dsp_stream *s);
void dsp_mmap_pointer(struct dsp_stream *s, u64 *bytes, u32 *blocks, u32 *ptr);
bool dsp_mmap_moved(struct dsp_stream *s);
bool dsp_stream_use_rw(struct dsp_stream *s);

/* pcm.c: stream state on the device */
enum dsp_stream_state {
	DSP_ST_RELEASED,	/* no resources on the device (also: never configured) */
	DSP_ST_PREPARED,
	DSP_ST_RUNNING,
	DSP_ST_STOPPED,
};

struct dsp_hw_params {
	u32 buffer_bytes;
	u32 period_bytes;
	u8 channels;
	u8 format;		/* VIRTIO_SND_PCM_FMT_* */
	u8 rate;		/* VIRTIO_SND_PCM_RATE_* */
};

struct dsp_stream {
	struct dsp_card *card;
	u32 id;			/* virtio stream id */
	u8 direction;		/* VIRTIO_SND_D_* */
	unsigned int nr;	/* N in /dev/dspN among streams of this direction */
	/* PCM_INFO */
	u32 features;
	u64 formats;
	u64 rates;
	u8 channels_min;
	u8 channels_max;

	bool busy;		/* claimed by an open file; card->open_lock */
	/*
	 * The owning file's lock (dsp_file.lock), NULL while nobody owns the stream;
	 * card->open_lock. remove() takes it to stop the stream (dsp_pcm_quiesce).
	 */
	struct mutex *owner_lock;
	wait_queue_head_t wait;	/* woken when the device completes a message */
	spinlock_t *ring_lock;	/* the lock of this direction's virtqueue */

	/* below: the owner lock */
	enum dsp_stream_state state;
	bool hw_valid;		/* hw is what the device was last told */
	struct dsp_hw_params hw;
	u32 frame_bytes;
	/* tx: bytes of an incomplete frame held back for the next write (see dsp_tx_flush_partial) */
	u8 carry[DSP_MAX_FRAME_BYTES];
	u32 carry_len;

	/* ring_lock */
	struct dsp_ring ring;
	struct dsp_mmap mmap;
	bool rw_used;		/* read()/write() (or unmapped capture) since open: no mmap */
	atomic_t xruns;
	atomic_t io_errors;
};

int dsp_pcm_probe(struct dsp_card *card);
void dsp_pcm_event(struct dsp_card *card, u32 code, u32 stream_id);
void dsp_pcm_quiesce(struct dsp_card *card);
int dsp_stream_configure(struct dsp_stream *s, const struct dsp_hw_params *hw);
bool dsp_stream_matches(struct dsp_stream *s, const struct dsp_hw_params *hw);
int dsp_stream_start(struct dsp_stream *s);
int dsp_stream_stop(struct dsp_stream *s);
int dsp_stream_release(struct dsp_stream *s);
int dsp_stream_drain(struct dsp_stream *s, bool closing);
int dsp_stream_mmap_halt(struct dsp_stream *s, bool closing);
int dsp_stream_reset(struct dsp_stream *s);
unsigned long dsp_stream_progress_timeout(struct dsp_stream *s);

/* mixer.c */
struct dsp_ctl_elem {
	u32 id;
	u32 role;
	u32 type;
	u32 access;
	u32 count;
	u32 index;
	s64 min;
	s64 max;
	s64 step;
	char name[45];
};

/* where an OSS mixer channel's value lives: device control elements (-1: none) */
enum { DSP_MIX_PLAYBACK, DSP_MIX_CAPTURE, DSP_MIX_GLOBAL, DSP_MIX_NR_KINDS };

struct dsp_mixer_chan {
	int vol[DSP_MIX_NR_KINDS];
	int sw[DSP_MIX_NR_KINDS];
	u8 left, right;		/* software state (no device controls) */
};

struct dsp_mixer {
	struct mutex lock;
	bool hw;		/* channels are backed by device control elements */
	struct dsp_ctl_elem *elems;
	u32 nelems;
	struct dsp_mixer_chan chan[SOUND_MIXER_NRDEVICES];
	u32 devmask;
	u32 stereodevs;
	u32 recmask;
	u32 sw_recsrc;		/* software RECSRC (no device controls) */
	atomic_t modify_counter;
};

int dsp_mixer_probe(struct dsp_card *card, u32 ncontrols);
void dsp_mixer_remove(struct dsp_card *card);
void dsp_mixer_event(struct dsp_card *card, u16 control_id, u16 mask);
long dsp_mixer_ioctl(struct dsp_card *card, unsigned int cmd, void __user *argp);
extern const struct file_operations dsp_mixer_fops;

/* card.c: OSS device nodes (/dev/audio is /dev/dsp with Sun's defaults: 8 kHz mu-law mono) */
enum dsp_node_kind { DSP_NODE_DSP, DSP_NODE_AUDIO, DSP_NODE_MIXER };

struct dsp_node {
	struct dsp_card *card;
	enum dsp_node_kind kind;
	unsigned int nr;	/* dsp: the stream number N it opens */
	dev_t devt;		/* 0 while not registered */
	int sound_minor;	/* sound_core minor, or -1 */
	bool misc_registered;
	struct miscdevice misc;
	char name[16];
	struct list_head list;	/* dsp_node_list */
};

struct dsp_card {
	struct kref ref;
	struct virtio_device *vdev;	/* only valid until gone */
	char name[32];			/* for log lines after the device is gone */
	struct dsp_queue ctlq;
	struct dsp_queue eventq;
	struct dsp_queue txq;
	struct dsp_queue rxq;
	/* set first thing in remove: file operations end with ENODEV, waits end */
	bool removing;
	/* set under every queue lock in remove: no virtqueue may be touched afterwards */
	bool gone;
	/* set under the tx/rx queue locks in remove: no new I/O messages for the device */
	bool io_blocked;
	unsigned int msg_timeout_ms;
	unsigned int stop_delay_ms;

	struct virtio_snd_event *events;
	unsigned int nevents;

	struct dsp_stream *streams;
	u32 nstreams;
	struct dsp_stream **outputs;
	u32 noutputs;
	struct dsp_stream **inputs;
	u32 ninputs;

	struct mutex open_lock;	/* dsp_stream.busy */

	struct dsp_node *dsp_nodes;
	unsigned int ndsp_nodes;
	struct dsp_node *audio_nodes;	/* one per dsp node whose streams speak MU_LAW */
	struct dsp_node mixer_node;

	struct dsp_mixer mixer;
};

struct dsp_card *dsp_node_get_card(dev_t devt, enum dsp_node_kind kind, unsigned int *nr);
void dsp_card_put(struct dsp_card *card);
/* the card is being removed or is gone: file operations fail with ENODEV */
bool dsp_card_gone(struct dsp_card *card);
int dsp_queue_add(struct dsp_card *card, struct dsp_queue *q, struct scatterlist **sgs,
		  unsigned int out_sgs, unsigned int in_sgs, void *token);
/* as dsp_queue_add, with q->lock already held by the caller; does not kick */
int dsp_queue_add_locked(struct dsp_card *card, struct dsp_queue *q, struct scatterlist **sgs,
			 unsigned int out_sgs, unsigned int in_sgs, void *token);

/* dsp.c */
extern const struct file_operations dsp_dsp_fops;

#endif /* DSPROXY_OSS_H */
