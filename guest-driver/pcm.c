// SPDX-License-Identifier: GPL-2.0
/*
 * PCM streams on the device: discovery (PCM_INFO) and the command lifecycle
 * SET_PARAMS -> PREPARE -> START <-> STOP -> RELEASE (virtio 1.2, 5.14.6.6.1).
 *
 * Every function taking a struct dsp_stream * runs with the stream's owner lock held (the
 * lock of the file that has it open, stream->owner_lock): the file's operations take it, and
 * so does remove() when it stops the streams (dsp_pcm_quiesce()).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>

#include "dsproxy_oss.h"

/* streams beyond this are ignored: more /dev/dspN nodes than any program looks at */
#define DSP_MAX_STREAMS 64

static const char *dsp_dir_name(u8 direction)
{
	return direction == VIRTIO_SND_D_OUTPUT ? "output" : "input";
}

static bool dsp_pcm_info_usable(struct dsp_card *card, u32 id,
				const struct virtio_snd_pcm_info *info)
{
	u64 formats = le64_to_cpu(info->formats);
	u64 rates = le64_to_cpu(info->rates);

	if (info->direction != VIRTIO_SND_D_OUTPUT && info->direction != VIRTIO_SND_D_INPUT) {
		dev_warn(&card->vdev->dev, "stream %u: unknown direction %u, ignored\n", id,
			 info->direction);
		return false;
	}
	if (!info->channels_min || info->channels_min > info->channels_max) {
		dev_warn(&card->vdev->dev, "stream %u: bad channel range %u..%u, ignored\n", id,
			 info->channels_min, info->channels_max);
		return false;
	}
	if (!dsp_format_afmt_mask(formats)) {
		dev_warn(&card->vdev->dev,
			 "stream %u: no format OSS can use (mask 0x%llx), ignored\n", id, formats);
		return false;
	}
	if (dsp_rate_nearest(rates, 48000) < 0) {
		dev_warn(&card->vdev->dev, "stream %u: no known rate (mask 0x%llx), ignored\n",
			 id, rates);
		return false;
	}
	return true;
}

int dsp_pcm_probe(struct dsp_card *card)
{
	struct virtio_snd_query_info req = {};
	size_t resp_len;
	u8 *resp;
	u32 i, n;
	int err;

	if (!card->nstreams) {
		dev_err(&card->vdev->dev, "device has no PCM streams\n");
		return -ENODEV;
	}
	n = min_t(u32, card->nstreams, DSP_MAX_STREAMS);
	if (n < card->nstreams)
		dev_warn(&card->vdev->dev, "using %u of %u streams\n", n, card->nstreams);
	/* nstreams counts allocated, initialized streams: the error paths walk them */
	card->nstreams = 0;

	resp_len = sizeof(struct virtio_snd_hdr) + n * sizeof(struct virtio_snd_pcm_info);
	resp = kzalloc(resp_len, GFP_KERNEL);
	card->streams = kcalloc(n, sizeof(*card->streams), GFP_KERNEL);
	card->outputs = kcalloc(n, sizeof(*card->outputs), GFP_KERNEL);
	card->inputs = kcalloc(n, sizeof(*card->inputs), GFP_KERNEL);
	if (!resp || !card->streams || !card->outputs || !card->inputs) {
		kfree(resp);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct dsp_stream *s = &card->streams[i];

		s->card = card;
		s->id = i;
		init_waitqueue_head(&s->wait);
		s->state = DSP_ST_RELEASED;
		s->ring_lock = &card->txq.lock;
	}
	card->nstreams = n;

	req.hdr.code = cpu_to_le32(VIRTIO_SND_R_PCM_INFO);
	req.start_id = 0;
	req.count = cpu_to_le32(n);
	req.size = cpu_to_le32(sizeof(struct virtio_snd_pcm_info));
	err = dsp_ctl_request(card, &req, sizeof(req), resp, resp_len);
	if (err) {
		dev_err(&card->vdev->dev, "PCM_INFO failed: %d\n", err);
		kfree(resp);
		return err;
	}
	for (i = 0; i < n; i++) {
		struct dsp_stream *s = &card->streams[i];
		struct virtio_snd_pcm_info info_copy, *info = &info_copy;

		/* the records follow the 4-byte header: copy out to align the le64s */
		memcpy(info, resp + sizeof(struct virtio_snd_hdr) + i * sizeof(*info),
		       sizeof(*info));

		s->direction = info->direction;
		s->ring_lock = s->direction == VIRTIO_SND_D_OUTPUT ? &card->txq.lock :
								      &card->rxq.lock;
		if (!dsp_pcm_info_usable(card, i, info))
			continue;
		s->features = le32_to_cpu(info->features);
		s->formats = le64_to_cpu(info->formats);
		s->rates = le64_to_cpu(info->rates);
		s->channels_min = info->channels_min;
		s->channels_max = info->channels_max;
		if (s->direction == VIRTIO_SND_D_OUTPUT) {
			s->nr = card->noutputs;
			card->outputs[card->noutputs++] = s;
		} else {
			s->nr = card->ninputs;
			card->inputs[card->ninputs++] = s;
		}
		dev_info(&card->vdev->dev,
			 "stream %u: %s %u, channels %u..%u, formats 0x%llx (OSS 0x%x), rates 0x%llx\n",
			 i, dsp_dir_name(s->direction), s->nr, s->channels_min, s->channels_max,
			 s->formats, dsp_format_afmt_mask(s->formats), s->rates);
	}
	kfree(resp);
	if (!card->noutputs && !card->ninputs) {
		dev_err(&card->vdev->dev, "no usable PCM stream\n");
		return -ENODEV;
	}
	return 0;
}

/* event queue, interrupt context */
void dsp_pcm_event(struct dsp_card *card, u32 code, u32 stream_id)
{
	struct dsp_stream *s;

	if (stream_id >= card->nstreams || !card->streams) {
		pr_warn_ratelimited("%s: event 0x%x for unknown stream %u\n", card->name, code,
				    stream_id);
		return;
	}
	s = &card->streams[stream_id];
	if (code == VIRTIO_SND_EVT_PCM_XRUN) {
		atomic_inc(&s->xruns);
		pr_debug("%s: stream %u: xrun\n", card->name, stream_id);
	}
}

static const char *dsp_cmd_name(u32 code)
{
	switch (code) {
	case VIRTIO_SND_R_PCM_PREPARE: return "PREPARE";
	case VIRTIO_SND_R_PCM_RELEASE: return "RELEASE";
	case VIRTIO_SND_R_PCM_START: return "START";
	case VIRTIO_SND_R_PCM_STOP: return "STOP";
	default: return "?";
	}
}

static int dsp_stream_cmd(struct dsp_stream *s, u32 code)
{
	struct virtio_snd_pcm_hdr req = {};
	int err;

	req.hdr.code = cpu_to_le32(code);
	req.stream_id = cpu_to_le32(s->id);
	err = dsp_ctl_request(s->card, &req, sizeof(req), NULL, 0);
	if (err && err != -ENODEV)
		pr_warn_ratelimited("%s: stream %u: %s failed: %d\n", s->card->name, s->id,
				    dsp_cmd_name(code), err);
	return err;
}

/*
 * remove(), device still alive: no new I/O messages, and STOP + RELEASE every stream the
 * device holds messages of, so it returns them. Resetting a device that still holds
 * buffers is allowed, but QEMU's virtio-sound keeps them across the reset and later
 * completes them on the new virtqueues.
 * card->removing is already set, so a file operation that holds a stream's owner lock ends
 * soon (its waits end, it sends nothing more) and lets go of the lock; each stream is then
 * stopped under its owner lock like any other stream command, and its state says so.
 * Lock order: card->open_lock (keeps the owner from going away), then the owner lock.
 */
void dsp_pcm_quiesce(struct dsp_card *card)
{
	unsigned long flags;
	u32 i;

	spin_lock_irqsave(&card->txq.lock, flags);
	card->io_blocked = true;
	spin_unlock_irqrestore(&card->txq.lock, flags);
	spin_lock_irqsave(&card->rxq.lock, flags);
	card->io_blocked = true;
	spin_unlock_irqrestore(&card->rxq.lock, flags);

	for (i = 0; i < card->nstreams; i++) {
		struct dsp_stream *s = &card->streams[i];
		struct mutex *owner;

		mutex_lock(&card->open_lock);
		owner = s->owner_lock;
		if (owner)
			mutex_lock(owner);
		dsp_mmap_set_run(s, false, 0);
		if (!dsp_ring_idle(s)) {
			dsp_ring_set_flushing(s, true);
			dsp_stream_cmd(s, VIRTIO_SND_R_PCM_STOP);
			dsp_stream_cmd(s, VIRTIO_SND_R_PCM_RELEASE);
			s->state = DSP_ST_RELEASED;
			if (s->direction == VIRTIO_SND_D_INPUT)
				dsp_rx_arm(s, false);
		}
		if (owner)
			mutex_unlock(owner);
		mutex_unlock(&card->open_lock);
	}
	for (i = 0; i < card->nstreams; i++) {
		struct dsp_stream *s = &card->streams[i];

		if (!wait_event_timeout(s->wait, dsp_ring_idle(s),
					msecs_to_jiffies(card->msg_timeout_ms))) {
			pr_warn("%s: device kept I/O messages of stream %u at removal\n",
				card->name, s->id);
			break;
		}
	}
}

static int dsp_stream_set_params(struct dsp_stream *s, const struct dsp_hw_params *hw)
{
	struct virtio_snd_pcm_set_params req = {};
	int err;

	req.hdr.hdr.code = cpu_to_le32(VIRTIO_SND_R_PCM_SET_PARAMS);
	req.hdr.stream_id = cpu_to_le32(s->id);
	req.buffer_bytes = cpu_to_le32(hw->buffer_bytes);
	req.period_bytes = cpu_to_le32(hw->period_bytes);
	/* xrun notifications if the device offers them; nothing else (no shared memory) */
	req.features = cpu_to_le32(s->features & BIT(VIRTIO_SND_PCM_F_EVT_XRUNS));
	req.channels = hw->channels;
	req.format = hw->format;
	req.rate = hw->rate;
	err = dsp_ctl_request(s->card, &req, sizeof(req), NULL, 0);
	if (err && err != -ENODEV)
		pr_warn_ratelimited("%s: stream %u: SET_PARAMS (%u ch, fmt %u, rate %u, period %u, buffer %u) failed: %d\n",
				    s->card->name, s->id, hw->channels, hw->format, hw->rate,
				    hw->period_bytes, hw->buffer_bytes, err);
	return err;
}

static bool dsp_hw_equal(const struct dsp_hw_params *a, const struct dsp_hw_params *b)
{
	return a->buffer_bytes == b->buffer_bytes && a->period_bytes == b->period_bytes &&
	       a->channels == b->channels && a->format == b->format && a->rate == b->rate;
}

/* the device runs (or is prepared to run) exactly these parameters */
bool dsp_stream_matches(struct dsp_stream *s, const struct dsp_hw_params *hw)
{
	return s->state != DSP_ST_RELEASED && s->hw_valid && dsp_hw_equal(&s->hw, hw);
}

/* bytes per second of the device's current parameters (at least 1) */
static u32 dsp_stream_bps(struct dsp_stream *s)
{
	u32 bps = dsp_rate_hz(s->hw.rate) * s->frame_bytes;

	return bps ? bps : 1;
}

/* how long the device may take to complete one message before we call it stuck */
unsigned long dsp_stream_progress_timeout(struct dsp_stream *s)
{
	/* div_u64: a plain 64-bit division needs libgcc's __udivdi3 on 32-bit kernels */
	u64 ms = div_u64((u64)s->ring.period_bytes * 1000, dsp_stream_bps(s));

	return msecs_to_jiffies(2 * ms + s->card->msg_timeout_ms + 1000);
}

/* waits until the device returned every message; false on timeout */
static bool dsp_stream_wait_idle(struct dsp_stream *s)
{
	long left = wait_event_timeout(s->wait, dsp_ring_idle(s) || dsp_card_gone(s->card),
				       msecs_to_jiffies(s->card->msg_timeout_ms));

	if (!left && !dsp_ring_idle(s)) {
		pr_warn_ratelimited("%s: stream %u: device kept %u messages after RELEASE\n",
				    s->card->name, s->id, s->ring.queued);
		return false;
	}
	return true;
}

/*
 * Makes the device run hw: SET_PARAMS (only if the values changed) and PREPARE, after
 * STOP/RELEASE if needed. Data still in the driver must have been drained or discarded
 * by the caller if the parameters change.
 */
int dsp_stream_configure(struct dsp_stream *s, const struct dsp_hw_params *hw)
{
	const struct dsp_format *fmt = dsp_format_by_vfmt(hw->format);
	struct dsp_ring *r = &s->ring;
	bool same_hw = s->hw_valid && dsp_hw_equal(&s->hw, hw);
	int err;

	if (dsp_stream_matches(s, hw))
		return 0;
	if (dsp_card_gone(s->card))
		return -ENODEV;
	if (!fmt || !hw->channels || !hw->period_bytes || hw->buffer_bytes < hw->period_bytes)
		return -EINVAL;

	err = dsp_stream_release(s);
	if (err)
		return err;

	if (!r->msgs || r->period_bytes != hw->period_bytes ||
	    r->nmsgs != hw->buffer_bytes / hw->period_bytes) {
		err = dsp_ring_alloc(s, hw->buffer_bytes / hw->period_bytes, hw->period_bytes);
		if (err)
			return err;
		s->carry_len = 0;
	}
	if (!same_hw) {
		/* an incomplete frame of the old format means nothing in the new one */
		s->carry_len = 0;
		s->hw_valid = false;
		err = dsp_stream_set_params(s, hw);
		if (err)
			return err;
		s->hw = *hw;
		s->hw_valid = true;
		s->frame_bytes = fmt->bytes * hw->channels;
	}
	err = dsp_stream_cmd(s, VIRTIO_SND_R_PCM_PREPARE);
	if (err)
		return err;
	dsp_ring_set_flushing(s, false);
	s->state = DSP_ST_PREPARED;
	return 0;
}

int dsp_stream_start(struct dsp_stream *s)
{
	int err;

	if (s->state == DSP_ST_RUNNING)
		return 0;
	if (s->state == DSP_ST_RELEASED)
		return -EINVAL;
	if (s->direction == VIRTIO_SND_D_INPUT)
		dsp_rx_arm(s, true);
	err = dsp_stream_cmd(s, VIRTIO_SND_R_PCM_START);
	if (err) {
		if (s->direction == VIRTIO_SND_D_INPUT)
			dsp_rx_arm(s, false);
		return err;
	}
	s->state = DSP_ST_RUNNING;
	return 0;
}

int dsp_stream_stop(struct dsp_stream *s)
{
	int err;

	if (s->state != DSP_ST_RUNNING)
		return 0;
	if (s->direction == VIRTIO_SND_D_INPUT)
		dsp_rx_arm(s, false);
	err = dsp_stream_cmd(s, VIRTIO_SND_R_PCM_STOP);
	/* even if STOP failed, RELEASE is the next valid step: do not claim RUNNING */
	s->state = DSP_ST_STOPPED;
	return err;
}

/*
 * STOP (if running) and RELEASE; the device must return every message before it answers
 * RELEASE. Returns -EIO if it still holds some (the ring then stays allocated).
 */
int dsp_stream_release(struct dsp_stream *s)
{
	if (s->state == DSP_ST_RELEASED)
		return dsp_ring_idle(s) ? 0 : (dsp_stream_wait_idle(s) ? 0 : -EIO);
	dsp_stream_stop(s);
	dsp_ring_set_flushing(s, true);
	dsp_stream_cmd(s, VIRTIO_SND_R_PCM_RELEASE);
	s->state = DSP_ST_RELEASED;
	if (s->direction == VIRTIO_SND_D_INPUT)
		dsp_rx_arm(s, false);
	if (dsp_card_gone(s->card))
		return dsp_ring_idle(s) ? 0 : -ENODEV;
	return dsp_stream_wait_idle(s) ? 0 : -EIO;
}

/*
 * The device completed every message, but it may still hold audio it has accepted: it says
 * how much in latency_bytes. STOP would cut that off, so let it play first (plus the
 * stop_delay_ms parameter, for devices that report no latency but have some, like QEMU's
 * built-in virtio-sound with its audio timer).
 */
static void dsp_stream_linger(struct dsp_stream *s, bool closing)
{
	unsigned long flags;
	u32 latency, ms;

	if (s->state != DSP_ST_RUNNING)
		return;
	spin_lock_irqsave(s->ring_lock, flags);
	latency = s->ring.latency_bytes;
	spin_unlock_irqrestore(s->ring_lock, flags);
	ms = min_t(u64, div_u64((u64)latency * 1000, dsp_stream_bps(s)), 2000) +
	     s->card->stop_delay_ms;
	if (!ms)
		return;
	if (closing)
		msleep(ms);
	else
		msleep_interruptible(ms);
}

/* how long the device needs to play what the driver still holds for it, in ms */
static u32 dsp_stream_pending_ms(struct dsp_stream *s)
{
	return (u32)min_t(u64, div_u64((u64)dsp_tx_delay_bytes(s) * 1000, dsp_stream_bps(s)),
			  600000);
}

/*
 * Waits until the device has completed every message the driver sent or holds ready for it.
 * Bounded twice: the device must complete something at least every
 * dsp_stream_progress_timeout() (-EIO otherwise), and the whole wait ends after one and a half
 * times the audio's own duration plus that timeout (-ETIMEDOUT), so a device that trickles
 * completions cannot hold close() for long.
 * closing: only a fatal signal ends the wait early (-EINTR): close() cannot be restarted, and
 * a program's handled signals (SIGALRM, SIGCHLD) must not cut off its last buffer. A program
 * killed by a signal still drains: the signal was consumed before its files are closed.
 * Otherwise (SYNC, SETTRIGGER, parameter change) any signal ends it with -ERESTARTSYS.
 */
static int dsp_stream_wait_played(struct dsp_stream *s, bool closing)
{
	unsigned long timeout = dsp_stream_progress_timeout(s);
	unsigned long start = jiffies, progress_at = start;
	unsigned long deadline = start + timeout +
				 msecs_to_jiffies(dsp_stream_pending_ms(s) * 3 / 2);
	u64 done, last_done;

	dsp_tx_drained(s, &last_done);
	for (;;) {
		unsigned long now, until;
		long left;

		if (dsp_tx_drained(s, &done))
			return 0;
		if (dsp_card_gone(s->card))
			return -ENODEV;
		now = jiffies;
		if (done != last_done) {
			last_done = done;
			progress_at = now;
		}
		if (time_after_eq(now, deadline)) {
			pr_warn("%s: stream %u: %u bytes still unplayed after %u ms of draining; giving up\n",
				s->card->name, s->id, dsp_tx_delay_bytes(s),
				jiffies_to_msecs(now - start));
			return -ETIMEDOUT;
		}
		if (time_after_eq(now, progress_at + timeout)) {
			pr_warn("%s: stream %u: device completed nothing for %u ms while draining; giving up\n",
				s->card->name, s->id, jiffies_to_msecs(timeout));
			return -EIO;
		}
		until = time_before(deadline, progress_at + timeout) ? deadline : progress_at + timeout;
		if (closing)
			left = wait_event_killable_timeout(s->wait,
				dsp_tx_drained(s, NULL) || dsp_card_gone(s->card), until - now);
		else
			left = wait_event_interruptible_timeout(s->wait,
				dsp_tx_drained(s, NULL) || dsp_card_gone(s->card), until - now);
		if (left < 0)
			return closing ? -EINTR : -ERESTARTSYS;
	}
}

/*
 * Output drain (SYNC, close, parameter change): send the partial fragment, make sure the
 * stream runs, wait until the device completed every message, then STOP and RELEASE.
 * Nothing is dropped and nothing padded; the wait is bounded (dsp_stream_wait_played()).
 * A mapped stream stops taking periods from the program's ring first: what the card has
 * taken is played, nothing more.
 * closing: the file is being closed; only a fatal signal ends the wait, and an incomplete
 * trailing frame is dropped. Otherwise a signal ends the wait with -ERESTARTSYS, the data
 * stays queued, and an incomplete frame is kept for the next write.
 */
int dsp_stream_drain(struct dsp_stream *s, bool closing)
{
	int err;

	if (s->direction != VIRTIO_SND_D_OUTPUT)
		return -EINVAL;
	if (dsp_card_gone(s->card))
		return -ENODEV;
	if (!s->ring.msgs)
		return dsp_stream_release(s);

	dsp_mmap_set_run(s, false, 0);
	dsp_tx_flush_partial(s, !closing);
	if (dsp_tx_has_queued(s)) {
		err = dsp_stream_start(s);
		if (err)
			goto release;
	}

	err = dsp_stream_wait_played(s, closing);
	if (err == -ERESTARTSYS || err == -ENODEV)
		return err;
	if (!err)
		dsp_stream_linger(s, closing);
release:
	return dsp_stream_release(s);
}

/*
 * SETTRIGGER without PCM_ENABLE_OUTPUT on a mapped stream: the card takes no more of the
 * ring; what it has taken (the bytes before the pointer) is played, then STOP. The pointer
 * stays where it is, and SETTRIGGER with PCM_ENABLE_OUTPUT goes on from there.
 */
int dsp_stream_mmap_halt(struct dsp_stream *s, bool closing)
{
	int err;

	dsp_mmap_set_run(s, false, 0);
	if (s->state != DSP_ST_RUNNING)
		return 0;
	err = dsp_stream_wait_played(s, closing);
	if (err == -ERESTARTSYS || err == -ENODEV)
		return err;
	return dsp_stream_stop(s);
}

/*
 * RESET/HALT: STOP, RELEASE (the device returns what it still holds), drop what the driver
 * holds, and PREPARE again if the stream was set up, so the next write starts cleanly.
 */
int dsp_stream_reset(struct dsp_stream *s)
{
	bool was_set_up = s->state != DSP_ST_RELEASED;
	int err;

	if (dsp_card_gone(s->card))
		return -ENODEV;
	err = dsp_stream_release(s);
	dsp_ring_discard(s);
	dsp_ring_reset_counters(s);
	dsp_mmap_reset(s);
	if (err)
		return err;
	if (!was_set_up || !s->hw_valid)
		return 0;
	err = dsp_stream_cmd(s, VIRTIO_SND_R_PCM_PREPARE);
	if (err)
		return err;
	dsp_ring_set_flushing(s, false);
	s->state = DSP_ST_PREPARED;
	return 0;
}
