// SPDX-License-Identifier: GPL-2.0
/*
 * The I/O message ring of one stream: period-sized tx/rx messages.
 *
 * A tx message is {le32 stream_id} (device-readable), PCM bytes (device-readable), then
 * {le32 status, le32 latency_bytes} (device-writable). An rx message is the same header,
 * a device-writable PCM buffer, then the status. Messages travel in ring order; write()
 * fills ring.msgs[ring.fill], read() drains ring.msgs[ring.fill].
 *
 * Locking: a stream's ring is protected by the lock of its direction's virtqueue
 * (stream->ring_lock), so the virtqueue callback can complete messages and hand the next
 * ones to the device under one lock. The data of a FILLING (tx) or DONE (rx) message
 * belongs to the file that owns the stream; it is copied to/from user space without the
 * spinlock. The ring array is only replaced while the device owns none of its messages.
 *
 * A mapped stream (OSS mmap) has no write()/read(): the messages are filled from, or emptied
 * into, the program's ring (struct dsp_mmap) under the same lock, as the card takes and
 * returns them (dsp_mmap_take_locked(), dsp_msg_complete()).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "dsproxy_oss.h"

static struct dsp_queue *dsp_stream_queue(struct dsp_stream *s)
{
	return s->direction == VIRTIO_SND_D_OUTPUT ? &s->card->txq : &s->card->rxq;
}

static void dsp_msgs_free(struct dsp_pcm_msg *msgs, unsigned int nmsgs)
{
	unsigned int i;

	if (!msgs)
		return;
	for (i = 0; i < nmsgs; i++)
		kfree(msgs[i].data);
	kfree(msgs);
}

void dsp_ring_free(struct dsp_ring *ring)
{
	dsp_msgs_free(ring->msgs, ring->nmsgs);
	ring->msgs = NULL;
	ring->nmsgs = 0;
}

/* Replaces the ring's messages. The caller owns the stream and the device holds none. */
int dsp_ring_alloc(struct dsp_stream *s, unsigned int nmsgs, u32 period_bytes)
{
	struct dsp_ring *r = &s->ring;
	struct dsp_pcm_msg *msgs, *old;
	unsigned int i, old_n;
	unsigned long flags;

	msgs = kcalloc(nmsgs, sizeof(*msgs), GFP_KERNEL);
	if (!msgs)
		return -ENOMEM;
	for (i = 0; i < nmsgs; i++) {
		msgs[i].data = kmalloc(period_bytes, GFP_KERNEL | __GFP_NOWARN);
		if (!msgs[i].data) {
			dsp_msgs_free(msgs, nmsgs);
			return -ENOMEM;
		}
		msgs[i].stream = s;
		msgs[i].xfer.stream_id = cpu_to_le32(s->id);
		msgs[i].state = DSP_MSG_FREE;
	}

	spin_lock_irqsave(s->ring_lock, flags);
	if (r->queued) {
		spin_unlock_irqrestore(s->ring_lock, flags);
		dsp_msgs_free(msgs, nmsgs);
		return -EBUSY;
	}
	old = r->msgs;
	old_n = r->nmsgs;
	r->msgs = msgs;
	r->nmsgs = nmsgs;
	r->period_bytes = period_bytes;
	r->fill = 0;
	r->next_sub = 0;
	r->ready = 0;
	r->pending_bytes = 0;
	r->armed = false;
	spin_unlock_irqrestore(s->ring_lock, flags);

	dsp_msgs_free(old, old_n);
	return 0;
}

/*
 * Copies len bytes between buf and the mapped ring at mm->pos, wrapping at its end, and
 * advances the position. The program may write the ring at any time (it is its DMA buffer):
 * what is copied is what it held at this moment. ring_lock held.
 */
static void dsp_mmap_copy_locked(struct dsp_mmap *mm, u8 *buf, u32 len, bool into_ring)
{
	while (len) {
		u32 n = min(len, mm->bytes - mm->pos);

		if (into_ring)
			memcpy(mm->buf + mm->pos, buf, n);
		else
			memcpy(buf, mm->buf + mm->pos, n);
		buf += n;
		len -= n;
		mm->pos += n;
		if (mm->pos >= mm->bytes)
			mm->pos = 0;
		mm->total += n;
	}
}

/*
 * tx, mapped and running: the card takes the program's next periods, so that it holds
 * mm->lead of them (the pointer moves past each). ring_lock held.
 */
static void dsp_mmap_take_locked(struct dsp_stream *s)
{
	struct dsp_mmap *mm = &s->mmap;
	struct dsp_ring *r = &s->ring;

	while (r->nmsgs && r->queued + r->ready < mm->lead) {
		struct dsp_pcm_msg *m = &r->msgs[r->fill];

		if (m->state != DSP_MSG_FREE)
			break;
		dsp_mmap_copy_locked(mm, m->data, r->period_bytes, false);
		m->length = r->period_bytes;
		m->state = DSP_MSG_READY;
		r->ready++;
		r->pending_bytes += m->length;
		r->fill = (r->fill + 1) % r->nmsgs;
	}
}

/* hands READY tx / FREE rx messages to the device in ring order; ring_lock held */
static bool dsp_ring_push_locked(struct dsp_stream *s)
{
	struct dsp_queue *q = dsp_stream_queue(s);
	struct dsp_ring *r = &s->ring;
	bool tx = s->direction == VIRTIO_SND_D_OUTPUT;
	bool added = false;

	if (tx && s->mmap.run && !s->card->io_blocked)
		dsp_mmap_take_locked(s);
	while (r->nmsgs) {
		struct dsp_pcm_msg *m = &r->msgs[r->next_sub];
		struct scatterlist sg_hdr, sg_data, sg_status, *sgs[3];
		int err;

		if (tx ? m->state != DSP_MSG_READY : (m->state != DSP_MSG_FREE || !r->armed))
			break;
		if (s->card->io_blocked)
			break;
		m->status.status = cpu_to_le32(VIRTIO_SND_S_IO_ERR);
		m->status.latency_bytes = 0;
		sg_init_one(&sg_hdr, &m->xfer, sizeof(m->xfer));
		sg_init_one(&sg_data, m->data, tx ? m->length : r->period_bytes);
		sg_init_one(&sg_status, &m->status, sizeof(m->status));
		sgs[0] = &sg_hdr;
		sgs[1] = &sg_data;
		sgs[2] = &sg_status;
		err = dsp_queue_add_locked(s->card, q, sgs, tx ? 2 : 1, tx ? 1 : 2, m);
		if (err) {
			/* -ENOSPC: the queue is full; the next completion retries */
			if (err != -ENOSPC && err != -ENODEV)
				pr_err_ratelimited("%s: stream %u: cannot queue message: %d\n",
						   s->card->name, s->id, err);
			break;
		}
		if (tx) {
			r->ready--;
			r->queued_bytes += m->length;
		} else {
			m->length = 0;
			m->offset = 0;
		}
		m->state = DSP_MSG_QUEUED;
		r->queued++;
		r->next_sub = (r->next_sub + 1) % r->nmsgs;
		added = true;
	}
	return added;
}

void dsp_ring_push(struct dsp_stream *s)
{
	struct dsp_queue *q = dsp_stream_queue(s);
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	if (dsp_ring_push_locked(s))
		virtqueue_kick(q->vq);
	spin_unlock_irqrestore(&q->lock, flags);
}

void dsp_rx_arm(struct dsp_stream *s, bool on)
{
	unsigned long flags;

	spin_lock_irqsave(s->ring_lock, flags);
	s->ring.armed = on;
	spin_unlock_irqrestore(s->ring_lock, flags);
	if (on)
		dsp_ring_push(s);
}

void dsp_ring_set_flushing(struct dsp_stream *s, bool on)
{
	unsigned long flags;

	spin_lock_irqsave(s->ring_lock, flags);
	s->ring.flushing = on;
	spin_unlock_irqrestore(s->ring_lock, flags);
}

void dsp_ring_reset_counters(struct dsp_stream *s)
{
	unsigned long flags;

	spin_lock_irqsave(s->ring_lock, flags);
	s->ring.bytes_done = 0;
	s->ring.blocks_done = 0;
	s->ring.latency_bytes = 0;
	spin_unlock_irqrestore(s->ring_lock, flags);
}

/* drops every byte the driver holds (RESET); the device must hold no message */
void dsp_ring_discard(struct dsp_stream *s)
{
	struct dsp_ring *r = &s->ring;
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(s->ring_lock, flags);
	if (!r->queued) {
		for (i = 0; i < r->nmsgs; i++) {
			r->msgs[i].state = DSP_MSG_FREE;
			r->msgs[i].length = 0;
			r->msgs[i].offset = 0;
		}
		r->fill = 0;
		r->next_sub = 0;
		r->ready = 0;
		r->pending_bytes = 0;
	}
	spin_unlock_irqrestore(s->ring_lock, flags);
	s->carry_len = 0;
}

bool dsp_ring_idle(struct dsp_stream *s)
{
	unsigned long flags;
	bool idle;

	spin_lock_irqsave(s->ring_lock, flags);
	idle = !s->ring.queued;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return idle;
}

/* tx: bytes not yet completed by the device (READY + QUEUED) and messages READY/QUEUED */
bool dsp_tx_drained(struct dsp_stream *s, u64 *bytes_done)
{
	unsigned long flags;
	bool drained;

	spin_lock_irqsave(s->ring_lock, flags);
	drained = !s->ring.queued && !s->ring.ready;
	if (bytes_done)
		*bytes_done = s->ring.bytes_done;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return drained;
}

bool dsp_tx_has_queued(struct dsp_stream *s)
{
	unsigned long flags;
	bool any;

	spin_lock_irqsave(s->ring_lock, flags);
	any = s->ring.queued || s->ring.ready;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return any;
}

/* tx: write() can put at least one byte into the ring */
bool dsp_tx_writable(struct dsp_stream *s)
{
	unsigned long flags;
	bool ok = false;

	spin_lock_irqsave(s->ring_lock, flags);
	if (s->ring.nmsgs) {
		struct dsp_pcm_msg *m = &s->ring.msgs[s->ring.fill];

		ok = m->state == DSP_MSG_FREE ||
		     (m->state == DSP_MSG_FILLING && m->length < s->ring.period_bytes);
	}
	spin_unlock_irqrestore(s->ring_lock, flags);
	return ok;
}

/* rx: read() can consume the next message (it may hold 0 bytes after a RELEASE) */
bool dsp_rx_ready(struct dsp_stream *s)
{
	unsigned long flags;
	bool ok;

	spin_lock_irqsave(s->ring_lock, flags);
	ok = s->ring.nmsgs && s->ring.msgs[s->ring.fill].state == DSP_MSG_DONE;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return ok;
}

/* tx: marks the FILLING message READY and hands it to the device */
static void dsp_tx_submit(struct dsp_stream *s)
{
	struct dsp_queue *q = dsp_stream_queue(s);
	struct dsp_ring *r = &s->ring;
	struct dsp_pcm_msg *m;
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	m = &r->msgs[r->fill];
	m->state = DSP_MSG_READY;
	r->ready++;
	r->pending_bytes += m->length;
	r->fill = (r->fill + 1) % r->nmsgs;
	if (dsp_ring_push_locked(s))
		virtqueue_kick(q->vq);
	spin_unlock_irqrestore(&q->lock, flags);
}

/*
 * Copies user bytes into the ring, sending each message as soon as it holds a full period.
 * Returns the bytes taken (0 when the ring is full) or -EFAULT if none could be copied.
 * The stream must be configured (ring allocated); the caller owns the stream.
 */
ssize_t dsp_tx_copy(struct dsp_stream *s, const char __user *buf, size_t count)
{
	struct dsp_ring *r = &s->ring;
	size_t done = 0;

	while (done < count) {
		struct dsp_pcm_msg *m;
		unsigned long flags;
		size_t n, left;

		spin_lock_irqsave(s->ring_lock, flags);
		m = &r->msgs[r->fill];
		if (m->state == DSP_MSG_FREE) {
			/* a partial frame held back by a SYNC/POST starts the next message */
			memcpy(m->data, s->carry, s->carry_len);
			m->length = s->carry_len;
			s->carry_len = 0;
			m->state = DSP_MSG_FILLING;
		}
		spin_unlock_irqrestore(s->ring_lock, flags);
		if (READ_ONCE(m->state) != DSP_MSG_FILLING)
			break;

		n = min_t(size_t, r->period_bytes - m->length, count - done);
		left = copy_from_user(m->data + m->length, buf + done, n);
		n -= left;
		WRITE_ONCE(m->length, m->length + n);
		done += n;
		if (m->length == r->period_bytes)
			dsp_tx_submit(s);
		if (left)
			return done ? done : -EFAULT;
	}
	return done;
}

/*
 * SYNC/POST/close: sends what the FILLING message holds as a shorter message, cut at a frame
 * boundary, never padded. The bytes of an incomplete frame are kept for the next write
 * (keep_partial_frame) so channels stay aligned, or dropped at close. Returns true if a
 * message was sent.
 */
bool dsp_tx_flush_partial(struct dsp_stream *s, bool keep_partial_frame)
{
	struct dsp_ring *r = &s->ring;
	struct dsp_pcm_msg *m;
	u32 aligned, rest;

	if (!r->nmsgs)
		return false;
	m = &r->msgs[r->fill];
	if (m->state != DSP_MSG_FILLING) {
		if (!keep_partial_frame && s->carry_len) {
			pr_debug("%s: stream %u: dropping %u bytes of an incomplete frame\n",
				 s->card->name, s->id, s->carry_len);
			s->carry_len = 0;
		}
		return false;
	}
	aligned = rounddown(m->length, s->frame_bytes);
	rest = m->length - aligned;
	if (rest) {
		if (keep_partial_frame) {
			memcpy(s->carry, m->data + aligned, rest);
			s->carry_len = rest;
		} else {
			pr_debug("%s: stream %u: dropping %u bytes of an incomplete frame\n",
				 s->card->name, s->id, rest);
		}
		WRITE_ONCE(m->length, aligned);
	}
	if (!aligned) {
		unsigned long flags;

		spin_lock_irqsave(s->ring_lock, flags);
		m->state = DSP_MSG_FREE;
		m->length = 0;
		spin_unlock_irqrestore(s->ring_lock, flags);
		return false;
	}
	dsp_tx_submit(s);
	return true;
}

/* tx: bytes write() can take without blocking */
u32 dsp_tx_free_bytes(struct dsp_stream *s)
{
	struct dsp_ring *r = &s->ring;
	unsigned long flags;
	unsigned int i;
	u32 free = 0;

	spin_lock_irqsave(s->ring_lock, flags);
	for (i = 0; i < r->nmsgs; i++) {
		if (r->msgs[i].state == DSP_MSG_FREE)
			free += r->period_bytes;
		else if (r->msgs[i].state == DSP_MSG_FILLING)
			free += r->period_bytes - READ_ONCE(r->msgs[i].length);
	}
	if (r->nmsgs && r->msgs[r->fill].state == DSP_MSG_FREE)
		free -= s->carry_len;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return free;
}

/*
 * tx: bytes written but not yet played (GETODELAY): what the driver holds, plus what the
 * device holds — the messages it has not completed, or the latency it reported, whichever
 * is more (the two count the same bytes on a device whose completion means "played").
 */
u32 dsp_tx_delay_bytes(struct dsp_stream *s)
{
	struct dsp_ring *r = &s->ring;
	unsigned long flags;
	u32 delay;

	spin_lock_irqsave(s->ring_lock, flags);
	delay = r->pending_bytes - r->queued_bytes + s->carry_len;
	if (r->nmsgs && r->msgs[r->fill].state == DSP_MSG_FILLING)
		delay += READ_ONCE(r->msgs[r->fill].length);
	if (r->queued)
		delay += max(r->queued_bytes, r->latency_bytes);
	spin_unlock_irqrestore(s->ring_lock, flags);
	return delay;
}

/*
 * rx: copies completed bytes to user space and gives consumed messages back to the device.
 * Returns the bytes copied (0 when nothing is available) or -EFAULT if none could be.
 */
ssize_t dsp_rx_copy(struct dsp_stream *s, char __user *buf, size_t count)
{
	struct dsp_queue *q = dsp_stream_queue(s);
	struct dsp_ring *r = &s->ring;
	size_t done = 0;

	while (done < count && r->nmsgs) {
		struct dsp_pcm_msg *m;
		unsigned long flags;
		size_t n, left;
		bool kick = false;

		spin_lock_irqsave(&q->lock, flags);
		m = &r->msgs[r->fill];
		if (m->state != DSP_MSG_DONE) {
			spin_unlock_irqrestore(&q->lock, flags);
			break;
		}
		spin_unlock_irqrestore(&q->lock, flags);

		n = min_t(size_t, m->length - m->offset, count - done);
		left = n ? copy_to_user(buf + done, m->data + m->offset, n) : 0;
		n -= left;
		done += n;

		spin_lock_irqsave(&q->lock, flags);
		m->offset += n;
		r->pending_bytes -= n;
		if (m->offset >= m->length) {
			m->state = DSP_MSG_FREE;
			m->length = 0;
			m->offset = 0;
			r->fill = (r->fill + 1) % r->nmsgs;
			kick = dsp_ring_push_locked(s);
		}
		if (kick)
			virtqueue_kick(q->vq);
		spin_unlock_irqrestore(&q->lock, flags);
		if (left)
			return done ? done : -EFAULT;
	}
	return done;
}

/* rx: bytes read() can return without blocking */
u32 dsp_rx_avail_bytes(struct dsp_stream *s)
{
	unsigned long flags;
	u32 avail;

	spin_lock_irqsave(s->ring_lock, flags);
	avail = s->ring.pending_bytes;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return avail;
}

u64 dsp_ring_bytes_done(struct dsp_stream *s)
{
	unsigned long flags;
	u64 done;

	spin_lock_irqsave(s->ring_lock, flags);
	done = s->ring.bytes_done;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return done;
}

/* counters for GETOPTR/GETIPTR; resets the block count as OSS specifies */
void dsp_ring_pointer(struct dsp_stream *s, u64 *bytes, u32 *blocks, u32 *ptr)
{
	struct dsp_ring *r = &s->ring;
	unsigned long flags;
	u64 pos;
	u32 size;

	spin_lock_irqsave(s->ring_lock, flags);
	*bytes = r->bytes_done;
	*blocks = r->blocks_done;
	r->blocks_done = 0;
	size = r->nmsgs * r->period_bytes;
	pos = r->bytes_done;
	*ptr = size ? (u32)do_div(pos, size) : 0;
	spin_unlock_irqrestore(s->ring_lock, flags);
}

/* one message came back from the device; ring_lock held */
static void dsp_msg_complete(struct dsp_pcm_msg *m, u32 len, bool reclaimed)
{
	struct dsp_stream *s = m->stream;
	struct dsp_ring *r = &s->ring;
	u32 status = le32_to_cpu(m->status.status);
	u32 bytes;

	if (m->state != DSP_MSG_QUEUED) {
		pr_err_ratelimited("%s: stream %u: device returned a message it did not own\n",
				   s->card->name, s->id);
		return;
	}
	r->queued--;
	if (!reclaimed && status != VIRTIO_SND_S_OK) {
		atomic_inc(&s->io_errors);
		/* after RELEASE the device returns what it held, often as IO_ERR */
		if (r->flushing)
			pr_debug("%s: stream %u: message returned on release, status 0x%x\n",
				 s->card->name, s->id, status);
		else
			pr_warn_ratelimited("%s: stream %u: I/O message status 0x%x\n",
					    s->card->name, s->id, status);
	}
	if (!reclaimed)
		r->latency_bytes = le32_to_cpu(m->status.latency_bytes);

	if (s->direction == VIRTIO_SND_D_OUTPUT) {
		r->queued_bytes -= m->length;
		r->pending_bytes -= m->length;
		r->bytes_done += m->length;
		m->length = 0;
		m->state = DSP_MSG_FREE;
	} else if (s->mmap.buf) {
		/* mapped capture: the bytes go into the program's ring, the message goes back */
		bytes = reclaimed || len < sizeof(m->status) ? 0 : len - sizeof(m->status);
		if (bytes > r->period_bytes) {
			pr_err_ratelimited("%s: stream %u: device claims %u bytes in a %u-byte buffer\n",
					   s->card->name, s->id, bytes, r->period_bytes);
			bytes = r->period_bytes;
		}
		if (status != VIRTIO_SND_S_OK)
			bytes = 0;
		dsp_mmap_copy_locked(&s->mmap, m->data, bytes, true);
		m->length = 0;
		m->offset = 0;
		m->state = DSP_MSG_FREE;
		r->bytes_done += bytes;
	} else {
		/* the device wrote PCM bytes and then the status */
		bytes = reclaimed || len < sizeof(m->status) ? 0 : len - sizeof(m->status);
		if (bytes > r->period_bytes) {
			pr_err_ratelimited("%s: stream %u: device claims %u bytes in a %u-byte buffer\n",
					   s->card->name, s->id, bytes, r->period_bytes);
			bytes = r->period_bytes;
		}
		if (status != VIRTIO_SND_S_OK)
			bytes = 0;
		m->length = bytes;
		m->offset = 0;
		m->state = DSP_MSG_DONE;
		r->pending_bytes += bytes;
		r->bytes_done += bytes;
	}
	r->blocks_done++;
	wake_up_all(&s->wait);
}

static void dsp_pcm_vq_done(struct virtqueue *vq, struct dsp_queue *q,
			    struct dsp_stream **streams, u32 nstreams)
{
	struct dsp_pcm_msg *m;
	unsigned long flags;
	unsigned int len;
	bool kick = false;
	u32 i;

	spin_lock_irqsave(&q->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((m = virtqueue_get_buf(vq, &len)))
			dsp_msg_complete(m, len, false);
	} while (!virtqueue_enable_cb(vq));
	/* room in the queue again: hand over what waited for it (tx) or what is free (rx) */
	for (i = 0; i < nstreams; i++)
		kick |= dsp_ring_push_locked(streams[i]);
	if (kick)
		virtqueue_kick(vq);
	spin_unlock_irqrestore(&q->lock, flags);
}

void dsp_tx_vq_done(struct virtqueue *vq)
{
	struct dsp_card *card = vq->vdev->priv;

	dsp_pcm_vq_done(vq, &card->txq, card->outputs, card->noutputs);
}

void dsp_rx_vq_done(struct virtqueue *vq)
{
	struct dsp_card *card = vq->vdev->priv;

	dsp_pcm_vq_done(vq, &card->rxq, card->inputs, card->ninputs);
}

/* after the device is reset: take back every message it held */
void dsp_pcm_msg_flush(struct dsp_card *card)
{
	struct dsp_queue *queues[] = { &card->txq, &card->rxq };
	struct dsp_pcm_msg *m;
	unsigned long flags;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(queues); i++) {
		spin_lock_irqsave(&queues[i]->lock, flags);
		while ((m = virtqueue_detach_unused_buf(queues[i]->vq)))
			dsp_msg_complete(m, 0, true);
		spin_unlock_irqrestore(&queues[i]->lock, flags);
	}
}

/* ---- OSS mmap ------------------------------------------------------------------------- */

/*
 * read()/write() (and capture started without a mapping) claim the stream for themselves:
 * false if it is mapped. mmap() claims it under the same lock (dsp_mmap_alloc()), so exactly
 * one of the two ways wins.
 */
bool dsp_stream_use_rw(struct dsp_stream *s)
{
	unsigned long flags;
	bool ok;

	spin_lock_irqsave(s->ring_lock, flags);
	ok = !s->mmap.buf;
	if (ok)
		s->rw_used = true;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return ok;
}

/*
 * Allocates the ring a program maps: frag x nfrags bytes (page-rounded), filled with the
 * format's silence. Called by mmap() without the owner lock (see dsp_mmap()); 0 if the
 * stream is (now) mapped, -EBUSY if read()/write() claimed it first.
 */
int dsp_mmap_alloc(struct dsp_stream *s, u32 frag, u32 nfrags, const struct dsp_format *fmt)
{
	u32 bytes = frag * nfrags;
	unsigned long flags;
	u8 *buf;

	if (!frag || !nfrags || bytes / nfrags != frag)
		return -EINVAL;
	/* vmalloc_user: zeroed, page-aligned, and remap_vmalloc_range() may map it */
	buf = vmalloc_user(PAGE_ALIGN(bytes));
	if (!buf)
		return -ENOMEM;
	dsp_format_fill_silence(fmt, buf, PAGE_ALIGN(bytes));
	spin_lock_irqsave(s->ring_lock, flags);
	if (s->mmap.buf || s->rw_used) {
		int err = s->mmap.buf ? 0 : -EBUSY;

		spin_unlock_irqrestore(s->ring_lock, flags);
		vfree(buf);
		return err;
	}
	s->mmap.bytes = bytes;
	s->mmap.frag = frag;
	s->mmap.pos = 0;
	s->mmap.total = 0;
	s->mmap.blocks_reported = 0;
	s->mmap.run = false;
	/* last, with release order: whoever sees buf without the lock sees bytes and frag */
	smp_store_release(&s->mmap.buf, buf);
	spin_unlock_irqrestore(s->ring_lock, flags);
	return 0;
}

/*
 * At release(): every mapping of the ring is gone (each holds a reference to the file) and
 * the device holds no message of the stream.
 */
void dsp_mmap_free(struct dsp_stream *s)
{
	unsigned long flags;
	u8 *buf;

	spin_lock_irqsave(s->ring_lock, flags);
	buf = s->mmap.buf;
	memset(&s->mmap, 0, sizeof(s->mmap));
	s->rw_used = false;
	spin_unlock_irqrestore(s->ring_lock, flags);
	vfree(buf);
}

/*
 * tx: start (run) or stop taking periods from the ring as the card completes them. Starting
 * takes the first lead periods and hands them to the device (before START, so the card has
 * them when its clock starts).
 */
void dsp_mmap_set_run(struct dsp_stream *s, bool run, unsigned int lead)
{
	unsigned long flags;

	spin_lock_irqsave(s->ring_lock, flags);
	s->mmap.run = run && s->mmap.buf;
	if (lead)
		s->mmap.lead = lead;
	spin_unlock_irqrestore(s->ring_lock, flags);
	if (run)
		dsp_ring_push(s);
}

/* RESET: the pointer goes back to the ring's start */
void dsp_mmap_reset(struct dsp_stream *s)
{
	unsigned long flags;

	spin_lock_irqsave(s->ring_lock, flags);
	s->mmap.run = false;
	s->mmap.pos = 0;
	s->mmap.total = 0;
	s->mmap.blocks_reported = 0;
	spin_unlock_irqrestore(s->ring_lock, flags);
}

/*
 * GETOPTR/GETIPTR of a mapped stream: bytes the card has taken (tx) or filled (rx), the
 * fragments the pointer crossed since the last call (reset on read, as OSS specifies), and
 * the pointer's offset in the ring.
 */
void dsp_mmap_pointer(struct dsp_stream *s, u64 *bytes, u32 *blocks, u32 *ptr)
{
	struct dsp_mmap *mm = &s->mmap;
	unsigned long flags;
	u64 frags;

	spin_lock_irqsave(s->ring_lock, flags);
	*bytes = mm->total;
	*ptr = mm->pos;
	frags = mm->frag ? div_u64(mm->total, mm->frag) : 0;
	*blocks = (u32)min_t(u64, frags - mm->blocks_reported, U32_MAX);
	mm->blocks_reported = frags;
	spin_unlock_irqrestore(s->ring_lock, flags);
}

/* poll() of a mapped stream: the pointer crossed a fragment since the last GETxPTR */
bool dsp_mmap_moved(struct dsp_stream *s)
{
	unsigned long flags;
	bool moved;

	spin_lock_irqsave(s->ring_lock, flags);
	moved = s->mmap.frag && div_u64(s->mmap.total, s->mmap.frag) != s->mmap.blocks_reported;
	spin_unlock_irqrestore(s->ring_lock, flags);
	return moved;
}
