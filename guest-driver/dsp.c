// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/dsp, /dev/dspN: the OSS audio API on top of virtio-snd streams.
 *
 * /dev/dspN opens output stream N for writing and input stream N for reading. Parameters
 * (format, channels, rate, fragments) belong to the open file, as in OSS; they reach the
 * device as SET_PARAMS + PREPARE before the first write/read (or SETTRIGGER/POST), and
 * again whenever the program changes them later: then the queued audio is first played
 * out (drained), so the host sees every byte under the parameters it was written with.
 *
 * /dev/audioN is the same with Sun's defaults (8 kHz mu-law mono). A program may instead
 * mmap() the "DMA buffer" and drive it with SETTRIGGER and GETOPTR/GETIPTR, as OSS games do;
 * a mapped direction has no read()/write() (ENXIO), and a direction that was read or written
 * cannot be mapped (EBUSY). See struct dsp_mmap for where the mapped bytes go.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/soundcard.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "dsproxy_oss.h"

struct dsp_file {
	struct dsp_card *card;
	struct dsp_stream *out;		/* NULL unless opened for writing and the stream exists */
	struct dsp_stream *in;		/* NULL unless opened for reading and the stream exists */
	struct mutex lock;		/* everything below and the streams' driver-side state */
	const struct dsp_format *fmt;
	unsigned int channels;
	u8 rate;			/* VIRTIO_SND_PCM_RATE_* */
	unsigned int frag_shift;	/* SETFRAGMENT's log2 size; 0: not set */
	unsigned int frag_max;		/* SETFRAGMENT's fragment count; 0: not set */
	unsigned int subdivide;
	bool nonblock;			/* SNDCTL_DSP_NONBLOCK */
	int trigger;			/* PCM_ENABLE_OUTPUT | PCM_ENABLE_INPUT */
	struct mutex map_lock;		/* serializes mmap() calls; see dsp_mmap() */
};

static bool dsp_mapped(struct dsp_stream *s)
{
	/* acquire: pairs with dsp_mmap_alloc(), so mmap.bytes and mmap.frag are valid */
	return s && smp_load_acquire(&s->mmap.buf);
}

/*
 * The mapped ring of the file, if any direction is mapped. Its size is fixed in bytes
 * (fragsize x fragstotal as GETOSPACE said before the first mmap()): later format or rate
 * changes keep this fragment size in bytes, as on hardware with a fixed DMA buffer (Quake
 * maps first, then sets the format).
 */
static const struct dsp_mmap *dsp_file_mmap(struct dsp_file *df)
{
	if (dsp_mapped(df->out))
		return &df->out->mmap;
	if (dsp_mapped(df->in))
		return &df->in->mmap;
	return NULL;
}

static bool dsp_nonblock(struct file *file, struct dsp_file *df)
{
	return (file->f_flags & O_NONBLOCK) || df->nonblock;
}

/* what every stream this file uses supports */
static u64 dsp_file_formats(struct dsp_file *df)
{
	u64 out = df->out ? df->out->formats : ~0ULL;
	u64 in = df->in ? df->in->formats : ~0ULL;

	return (out & in) ? out & in : (df->out ? out : in);
}

static u64 dsp_file_rates(struct dsp_file *df)
{
	u64 out = df->out ? df->out->rates : ~0ULL;
	u64 in = df->in ? df->in->rates : ~0ULL;

	return (out & in) ? out & in : (df->out ? out : in);
}

static void dsp_file_channel_range(struct dsp_file *df, unsigned int *min, unsigned int *max)
{
	struct dsp_stream *first = df->out ? df->out : df->in;

	*min = first->channels_min;
	*max = first->channels_max;
	if (df->out && df->in && max(df->out->channels_min, df->in->channels_min) <=
				 min(df->out->channels_max, df->in->channels_max)) {
		*min = max(df->out->channels_min, df->in->channels_min);
		*max = min(df->out->channels_max, df->in->channels_max);
	}
}

/* The device parameters for the file's OSS parameters: the fragment size is the period. */
static void dsp_file_hw(struct dsp_file *df, struct dsp_hw_params *hw)
{
	const struct dsp_mmap *mm = dsp_file_mmap(df);
	u32 frame = df->fmt->bytes * df->channels;
	u32 bps = dsp_rate_hz(df->rate) * frame;
	u32 frag, period, nfrags, max_frags;

	if (mm) {
		/* mapped: the fragment size in bytes stays; periods still carry whole frames */
		period = rounddown(mm->frag, frame);
		if (!period)
			period = frame;
		nfrags = mm->bytes / mm->frag;
		goto done;
	}
	if (df->frag_shift)
		frag = 1u << df->frag_shift;
	else	/* about 40 ms, like OSS drivers' defaults; 4 KiB at CD rate */
		frag = clamp_t(u32, rounddown_pow_of_two(max_t(u32, bps / 25, 1)), 256, 4096);
	frag = max_t(u32, frag / df->subdivide, 1u << DSP_MIN_FRAG_SHIFT);
	/* messages carry whole frames: 3-, 5-, 6-channel frames do not divide 2^n */
	period = rounddown(frag, frame);
	if (!period)
		period = frame;
	nfrags = df->frag_max ? df->frag_max : DSP_DEFAULT_FRAGS;
	max_frags = max_t(u32, DSP_MAX_BUFFER_BYTES / period, DSP_MIN_FRAGS);
	nfrags = clamp_t(u32, nfrags, DSP_MIN_FRAGS, min_t(u32, max_frags, DSP_MAX_FRAGS));
done:
	hw->period_bytes = period;
	hw->buffer_bytes = nfrags * period;
	hw->channels = df->channels;
	hw->format = df->fmt->vfmt;
	hw->rate = df->rate;
}

/* the ring already has the geometry hw asks for */
static bool dsp_ring_fits(struct dsp_stream *s, const struct dsp_hw_params *hw)
{
	return s->ring.msgs && s->ring.period_bytes == hw->period_bytes &&
	       s->ring.nmsgs == hw->buffer_bytes / hw->period_bytes;
}

/*
 * The program changed a parameter. A stream that is set up with other values is drained
 * (output: every byte written so far is played under the old values) or stopped (input);
 * the new values go to the device lazily, before the next transfer.
 */
static int dsp_params_changed(struct dsp_file *df)
{
	struct dsp_hw_params hw;
	int err = 0;

	dsp_file_hw(df, &hw);
	if (df->out && df->out->state != DSP_ST_RELEASED && !dsp_stream_matches(df->out, &hw))
		err = dsp_stream_drain(df->out, false);
	if (df->in && df->in->state != DSP_ST_RELEASED && !dsp_stream_matches(df->in, &hw)) {
		int e = dsp_stream_release(df->in);

		dsp_ring_discard(df->in);
		if (!err)
			err = e;
	}
	return err;
}

static int dsp_out_prepare(struct dsp_file *df)
{
	struct dsp_hw_params hw;
	int err;

	dsp_file_hw(df, &hw);
	if (dsp_stream_matches(df->out, &hw))
		return 0;
	if (df->out->state != DSP_ST_RELEASED) {
		err = dsp_stream_drain(df->out, false);
		if (err)
			return err;
	}
	return dsp_stream_configure(df->out, &hw);
}

static int dsp_out_maybe_start(struct dsp_file *df)
{
	struct dsp_stream *s = df->out;

	if (!(df->trigger & PCM_ENABLE_OUTPUT) || s->state == DSP_ST_RUNNING ||
	    s->state == DSP_ST_RELEASED || !dsp_tx_has_queued(s))
		return 0;
	return dsp_stream_start(s);
}

/* the periods a mapped output keeps with the device: DSP_MMAP_LEAD_MS of audio, at least 2 */
static unsigned int dsp_mmap_lead(struct dsp_stream *s)
{
	u64 bps = (u64)dsp_rate_hz(s->hw.rate) * s->frame_bytes;
	u32 lead_bytes = (u32)div_u64(bps * DSP_MMAP_LEAD_MS, 1000);
	unsigned int n = DIV_ROUND_UP(lead_bytes, max(s->ring.period_bytes, 1u));

	return clamp_t(unsigned int, n, 2, max(s->ring.nmsgs, 2u));
}

/*
 * SETTRIGGER with PCM_ENABLE_OUTPUT on a mapped output: set up with the file's current
 * parameters, let the card take the first periods of the ring, START. From then on every
 * completion lets the card take the next period, until SETTRIGGER turns it off.
 */
static int dsp_out_mmap_start(struct dsp_file *df)
{
	struct dsp_stream *s = df->out;
	struct dsp_hw_params hw;
	int err;

	dsp_file_hw(df, &hw);
	if (!dsp_stream_matches(s, &hw)) {
		if (s->state != DSP_ST_RELEASED) {
			/* what the card took under the old parameters is played under them */
			err = dsp_stream_drain(s, false);
			if (err)
				return err;
		}
		err = dsp_stream_configure(s, &hw);
		if (err)
			return err;
	}
	if (s->state == DSP_ST_RUNNING)
		return 0;
	dsp_mmap_set_run(s, true, dsp_mmap_lead(s));
	err = dsp_stream_start(s);
	if (err)
		dsp_mmap_set_run(s, false, 0);
	return err;
}

/* sets up the input stream and, if the trigger allows, starts capturing */
static int dsp_in_start(struct dsp_file *df)
{
	struct dsp_stream *s = df->in;
	struct dsp_hw_params hw;
	int err;

	dsp_file_hw(df, &hw);
	if (!dsp_stream_matches(s, &hw)) {
		if (s->state != DSP_ST_RELEASED) {
			err = dsp_stream_release(s);
			dsp_ring_discard(s);
			if (err)
				return err;
		}
		err = dsp_stream_configure(s, &hw);
		if (err)
			return err;
	}
	if (!(df->trigger & PCM_ENABLE_INPUT))
		return 0;
	/* capture that runs unmapped fills messages for read(): no mapping from now on */
	if (s->state != DSP_ST_RUNNING && !dsp_mapped(s) && !dsp_stream_use_rw(s))
		return -ENXIO;
	return dsp_stream_start(s);
}

static int dsp_open(struct inode *inode, struct file *file)
{
	struct dsp_stream *out = NULL, *in = NULL;
	unsigned int nr, max_channels;
	struct dsp_card *card;
	struct dsp_file *df;
	bool audio = false;
	int err;

	card = dsp_node_get_card(inode->i_rdev, DSP_NODE_DSP, &nr);
	if (!card) {
		card = dsp_node_get_card(inode->i_rdev, DSP_NODE_AUDIO, &nr);
		audio = true;
	}
	if (!card)
		return -ENODEV;
	if (dsp_card_gone(card)) {
		err = -ENODEV;
		goto err_put;
	}
	if ((file->f_mode & FMODE_WRITE) && nr < card->noutputs)
		out = card->outputs[nr];
	if ((file->f_mode & FMODE_READ) && nr < card->ninputs)
		in = card->inputs[nr];
	/* O_WRONLY needs an output, O_RDONLY an input; O_RDWR takes what exists */
	if (((file->f_mode & FMODE_WRITE) && !(file->f_mode & FMODE_READ) && !out) ||
	    ((file->f_mode & FMODE_READ) && !(file->f_mode & FMODE_WRITE) && !in) ||
	    (!out && !in)) {
		err = -ENXIO;
		goto err_put;
	}

	df = kzalloc(sizeof(*df), GFP_KERNEL);
	if (!df) {
		err = -ENOMEM;
		goto err_put;
	}
	mutex_init(&df->lock);
	mutex_init(&df->map_lock);
	mutex_lock(&card->open_lock);
	if ((out && out->busy) || (in && in->busy)) {
		mutex_unlock(&card->open_lock);
		mutex_destroy(&df->lock);
		mutex_destroy(&df->map_lock);
		kfree(df);
		err = -EBUSY;
		goto err_put;
	}
	if (out) {
		out->busy = true;
		out->owner_lock = &df->lock;
	}
	if (in) {
		in->busy = true;
		in->owner_lock = &df->lock;
	}
	mutex_unlock(&card->open_lock);

	df->card = card;
	df->out = out;
	df->in = in;
	df->trigger = (out ? PCM_ENABLE_OUTPUT : 0) | (in ? PCM_ENABLE_INPUT : 0);
	df->subdivide = 1;
	/*
	 * OSS defaults: 8 kHz, 8-bit unsigned, mono; /dev/audio: Sun's 8 kHz mu-law mono (it
	 * only exists where the streams have mu-law). Or the nearest the device has.
	 */
	df->fmt = dsp_format_by_afmt(audio ? AFMT_MU_LAW : AFMT_U8);
	if (!(dsp_file_formats(df) & BIT_ULL(df->fmt->vfmt)))
		df->fmt = dsp_format_fallback(dsp_file_formats(df));
	df->rate = dsp_rate_nearest(dsp_file_rates(df), 8000);
	dsp_file_channel_range(df, &df->channels, &max_channels);
	if (out) {
		out->carry_len = 0;
		dsp_ring_reset_counters(out);
	}
	if (in) {
		dsp_ring_discard(in);
		dsp_ring_reset_counters(in);
	}
	stream_open(inode, file);
	file->private_data = df;
	return 0;

err_put:
	dsp_card_put(card);
	return err;
}

static int dsp_release(struct inode *inode, struct file *file)
{
	struct dsp_file *df = file->private_data;
	struct dsp_card *card = df->card;

	mutex_lock(&df->lock);
	if (df->out) {
		/*
		 * close drains: programs like mpg321/ogg123 never call SYNC. A mapped output
		 * plays what the card took from the ring (the bytes before the pointer).
		 */
		if (dsp_card_gone(card) || dsp_stream_drain(df->out, true))
			dsp_stream_release(df->out);
		dsp_ring_discard(df->out);
		/* no mapping is left: each one holds a reference to this file */
		dsp_mmap_free(df->out);
	}
	if (df->in) {
		dsp_stream_release(df->in);
		dsp_ring_discard(df->in);
		dsp_mmap_free(df->in);
	}
	mutex_unlock(&df->lock);

	mutex_lock(&card->open_lock);
	if (df->out) {
		df->out->busy = false;
		df->out->owner_lock = NULL;
	}
	if (df->in) {
		df->in->busy = false;
		df->in->owner_lock = NULL;
	}
	mutex_unlock(&card->open_lock);
	mutex_destroy(&df->lock);
	mutex_destroy(&df->map_lock);
	kfree(df);
	dsp_card_put(card);
	return 0;
}

/*
 * Blocking read/write: sleeps (without the file lock) until ready(s). A running stream whose
 * device completes nothing for dsp_stream_progress_timeout() is dead, like a sound card whose
 * DMA stopped: -EIO instead of hanging forever. A stream that is not running (trigger off)
 * waits as long as the program likes.
 */
static int dsp_wait_device(struct dsp_file *df, struct dsp_stream *s,
			   bool (*ready)(struct dsp_stream *s))
{
	for (;;) {
		u64 before = dsp_ring_bytes_done(s);
		bool running = s->state == DSP_ST_RUNNING;
		long left;

		mutex_unlock(&df->lock);
		left = wait_event_interruptible_timeout(s->wait,
				ready(s) || dsp_card_gone(df->card),
				running ? dsp_stream_progress_timeout(s) : MAX_SCHEDULE_TIMEOUT);
		mutex_lock(&df->lock);
		if (left < 0)
			return -ERESTARTSYS;
		if (left > 0)
			return 0;
		if (s->state == DSP_ST_RUNNING && dsp_ring_bytes_done(s) == before) {
			pr_warn_ratelimited("%s: stream %u: device completed nothing for %u ms\n",
					    df->card->name, s->id,
					    jiffies_to_msecs(dsp_stream_progress_timeout(s)));
			return -EIO;
		}
	}
}

static ssize_t dsp_write(struct file *file, const char __user *buf, size_t count, loff_t *ppos)
{
	struct dsp_file *df = file->private_data;
	struct dsp_stream *s = df->out;
	size_t done = 0;
	int err = 0;

	if (!s)
		return -EINVAL;
	if (!count)
		return 0;
	if (mutex_lock_interruptible(&df->lock))
		return -ERESTARTSYS;
	/* mixing mmap and write() is refused, as Linux's OSS emulation refuses it */
	if (!dsp_stream_use_rw(s)) {
		mutex_unlock(&df->lock);
		return -ENXIO;
	}
	for (;;) {
		ssize_t n;

		if (dsp_card_gone(df->card)) {
			err = -ENODEV;
			break;
		}
		err = dsp_out_prepare(df);
		if (err)
			break;
		n = dsp_tx_copy(s, buf + done, count - done);
		if (n < 0) {
			err = n;
			break;
		}
		done += n;
		/* playback begins with the first full fragment, as on OSS hardware */
		err = dsp_out_maybe_start(df);
		if (err || done == count)
			break;
		if (dsp_nonblock(file, df)) {
			err = -EAGAIN;
			break;
		}
		err = dsp_wait_device(df, s, dsp_tx_writable);
		if (err)
			break;
	}
	mutex_unlock(&df->lock);
	return done ? done : err;
}

static ssize_t dsp_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	struct dsp_file *df = file->private_data;
	struct dsp_stream *s = df->in;
	size_t done = 0;
	int err = 0;

	if (!s)
		return -EINVAL;
	if (!count)
		return 0;
	if (mutex_lock_interruptible(&df->lock))
		return -ERESTARTSYS;
	if (!dsp_stream_use_rw(s)) {
		mutex_unlock(&df->lock);
		return -ENXIO;
	}
	for (;;) {
		ssize_t n;

		if (dsp_card_gone(df->card)) {
			err = -ENODEV;
			break;
		}
		err = dsp_in_start(df);
		if (err)
			break;
		n = dsp_rx_copy(s, buf + done, count - done);
		if (n < 0) {
			err = n;
			break;
		}
		done += n;
		if (done == count)
			break;
		if (dsp_nonblock(file, df)) {
			err = -EAGAIN;
			break;
		}
		err = dsp_wait_device(df, s, dsp_rx_ready);
		if (err)
			break;
	}
	mutex_unlock(&df->lock);
	return done ? done : err;
}

/* free bytes in the output as OSS reports them; the ring may not be set up yet */
static void dsp_out_space(struct dsp_file *df, struct audio_buf_info *info)
{
	struct dsp_stream *s = df->out;
	struct dsp_hw_params hw;

	if (dsp_mapped(s)) {
		/* the whole ring is the program's to write ahead of the pointer */
		info->fragsize = s->mmap.frag;
		info->fragstotal = s->mmap.bytes / s->mmap.frag;
		info->bytes = info->fragsize * info->fragstotal;
		info->fragments = info->fragstotal;
		return;
	}
	dsp_file_hw(df, &hw);
	info->fragsize = hw.period_bytes;
	info->fragstotal = hw.buffer_bytes / hw.period_bytes;
	if (dsp_ring_fits(s, &hw))
		info->bytes = dsp_tx_free_bytes(s);
	else
		info->bytes = hw.buffer_bytes;
	info->fragments = info->bytes / info->fragsize;
}

static void dsp_in_space(struct dsp_file *df, struct audio_buf_info *info)
{
	struct dsp_stream *s = df->in;
	struct dsp_hw_params hw;

	if (dsp_mapped(s)) {
		/* the pointer tells a mapping program where the data is (GETIPTR) */
		info->fragsize = s->mmap.frag;
		info->fragstotal = s->mmap.bytes / s->mmap.frag;
		info->bytes = 0;
		info->fragments = 0;
		return;
	}
	dsp_file_hw(df, &hw);
	info->fragsize = hw.period_bytes;
	info->fragstotal = hw.buffer_bytes / hw.period_bytes;
	info->bytes = dsp_ring_fits(s, &hw) ? dsp_rx_avail_bytes(s) : 0;
	info->fragments = info->bytes / info->fragsize;
}

static __poll_t dsp_poll(struct file *file, poll_table *wait)
{
	struct dsp_file *df = file->private_data;
	__poll_t mask = 0;

	if (df->out)
		poll_wait(file, &df->out->wait, wait);
	if (df->in)
		poll_wait(file, &df->in->wait, wait);
	if (dsp_card_gone(df->card))
		return EPOLLERR | EPOLLHUP;

	mutex_lock(&df->lock);
	if (dsp_mapped(df->out)) {
		/* mapped: ready when the pointer crossed a fragment since the last GETOPTR */
		if (dsp_mmap_moved(df->out))
			mask |= EPOLLOUT | EPOLLWRNORM;
	} else if (df->out) {
		struct audio_buf_info info;

		/* writable when a whole fragment fits, like OSS */
		dsp_out_space(df, &info);
		if (info.bytes >= info.fragsize)
			mask |= EPOLLOUT | EPOLLWRNORM;
	}
	if (dsp_mapped(df->in)) {
		if (dsp_mmap_moved(df->in))
			mask |= EPOLLIN | EPOLLRDNORM;
	} else if (df->in && (poll_requested_events(wait) & (EPOLLIN | EPOLLRDNORM))) {
		/* select() for reading on a capture device starts recording, as in OSS */
		if (dsp_in_start(df))
			mask |= EPOLLERR;
		else if (dsp_rx_ready(df->in))
			mask |= EPOLLIN | EPOLLRDNORM;
	}
	mutex_unlock(&df->lock);
	return mask;
}

static int dsp_caps(struct dsp_file *df)
{
	struct dsp_card *card = df->card;
	unsigned int nr = df->out ? df->out->nr : df->in->nr;
	int caps = 1 | DSP_CAP_TRIGGER | DSP_CAP_MMAP | DSP_CAP_BATCH;

	if (nr < card->noutputs && nr < card->ninputs)
		caps |= DSP_CAP_DUPLEX;
	return caps;
}

static int dsp_set_rate(struct dsp_file *df, int hz)
{
	int code;

	if (hz <= 0)
		return 0;
	code = dsp_rate_nearest(dsp_file_rates(df), hz);
	if (code < 0 || code == df->rate)
		return 0;
	df->rate = code;
	return dsp_params_changed(df);
}

static int dsp_set_channels(struct dsp_file *df, int channels)
{
	unsigned int min, max, ch;

	if (channels <= 0)
		return 0;
	dsp_file_channel_range(df, &min, &max);
	ch = clamp_t(unsigned int, channels, min, max);
	if (ch == df->channels)
		return 0;
	df->channels = ch;
	return dsp_params_changed(df);
}

static int dsp_set_format(struct dsp_file *df, int afmt)
{
	const struct dsp_format *fmt;

	if (afmt == AFMT_QUERY)
		return 0;
	fmt = dsp_format_by_afmt(afmt);
	/* unsupported: keep the current one; OSS returns what is actually selected */
	if (!fmt || !(dsp_file_formats(df) & BIT_ULL(fmt->vfmt)) || fmt == df->fmt)
		return 0;
	df->fmt = fmt;
	return dsp_params_changed(df);
}

static int dsp_set_fragment(struct dsp_file *df, int arg)
{
	unsigned int shift = arg & 0xffff;
	unsigned int frags = (arg >> 16) & 0xffff;

	shift = clamp_t(unsigned int, shift, DSP_MIN_FRAG_SHIFT, DSP_MAX_FRAG_SHIFT);
	/* 0x7fff means "as many as you can" */
	frags = frags ? min_t(unsigned int, frags, DSP_MAX_FRAGS) : 0;
	if (shift == df->frag_shift && frags == df->frag_max)
		return 0;
	df->frag_shift = shift;
	df->frag_max = frags;
	return dsp_params_changed(df);
}

static int dsp_set_trigger(struct dsp_file *df, int bits)
{
	int err = 0;

	if (dsp_mapped(df->out)) {
		if (bits & PCM_ENABLE_OUTPUT) {
			df->trigger |= PCM_ENABLE_OUTPUT;
			err = dsp_out_mmap_start(df);
		} else {
			df->trigger &= ~PCM_ENABLE_OUTPUT;
			err = dsp_stream_mmap_halt(df->out, false);
		}
	} else if (df->out) {
		if (bits & PCM_ENABLE_OUTPUT) {
			df->trigger |= PCM_ENABLE_OUTPUT;
			err = dsp_out_prepare(df);
			if (!err)
				err = dsp_out_maybe_start(df);
		} else {
			df->trigger &= ~PCM_ENABLE_OUTPUT;
			err = dsp_stream_stop(df->out);
		}
	}
	if (df->in && !err) {
		if (bits & PCM_ENABLE_INPUT) {
			df->trigger |= PCM_ENABLE_INPUT;
			err = dsp_in_start(df);
		} else {
			df->trigger &= ~PCM_ENABLE_INPUT;
			err = dsp_stream_stop(df->in);
		}
	}
	return err;
}

static void dsp_pointer(struct dsp_stream *s, struct count_info *ci)
{
	u64 bytes;
	u32 blocks, ptr;

	if (dsp_mapped(s))
		dsp_mmap_pointer(s, &bytes, &blocks, &ptr);
	else
		dsp_ring_pointer(s, &bytes, &blocks, &ptr);
	ci->bytes = (int)(bytes & INT_MAX);
	ci->blocks = blocks;
	ci->ptr = ptr;
}

static long dsp_ioctl_locked(struct file *file, struct dsp_file *df, unsigned int cmd,
			     int __user *p)
{
	struct dsp_hw_params hw;
	struct audio_buf_info info;
	struct count_info ci;
	int val, err = 0;

	switch (cmd) {
	case OSS_GETVERSION:
		return put_user(SOUND_VERSION, p);

	case SNDCTL_DSP_RESET:	/* == SNDCTL_DSP_HALT */
		if (df->out)
			err = dsp_stream_reset(df->out);
		if (df->in) {
			int e = dsp_stream_reset(df->in);

			err = err ? err : e;
		}
		return err;

	case SNDCTL_DSP_SYNC:
		if (!df->out)
			return 0;
		return dsp_stream_drain(df->out, false);

	case SNDCTL_DSP_POST:
		/* a mapped output has nothing partial: SETTRIGGER starts it */
		if (!df->out || df->out->state == DSP_ST_RELEASED || dsp_mapped(df->out))
			return 0;
		dsp_tx_flush_partial(df->out, true);
		return dsp_out_maybe_start(df);

	case SNDCTL_DSP_SPEED:
		if (get_user(val, p))
			return -EFAULT;
		err = dsp_set_rate(df, val);
		if (err)
			return err;
		fallthrough;
	case SOUND_PCM_READ_RATE:
		return put_user(dsp_rate_hz(df->rate), p);

	case SNDCTL_DSP_STEREO:
		if (get_user(val, p))
			return -EFAULT;
		if (val < 0 || val > 1)
			return -EINVAL;
		err = dsp_set_channels(df, val ? 2 : 1);
		if (err)
			return err;
		return put_user(df->channels >= 2 ? 1 : 0, p);

	case SNDCTL_DSP_CHANNELS:
		if (get_user(val, p))
			return -EFAULT;
		err = dsp_set_channels(df, val);
		if (err)
			return err;
		fallthrough;
	case SOUND_PCM_READ_CHANNELS:
		return put_user(df->channels, p);

	case SNDCTL_DSP_SETFMT:
		if (get_user(val, p))
			return -EFAULT;
		err = dsp_set_format(df, val);
		if (err)
			return err;
		fallthrough;
	case SOUND_PCM_READ_BITS:	/* returns the format, as Linux's OSS emulation does */
		return put_user(df->fmt->afmt, p);

	case SNDCTL_DSP_GETFMTS:
		return put_user(dsp_format_afmt_mask(dsp_file_formats(df)), p);

	case SNDCTL_DSP_GETBLKSIZE:
		dsp_file_hw(df, &hw);
		return put_user(hw.period_bytes, p);

	case SNDCTL_DSP_SETFRAGMENT:
		if (get_user(val, p))
			return -EFAULT;
		return dsp_set_fragment(df, val);

	case SNDCTL_DSP_SUBDIVIDE:
		if (get_user(val, p))
			return -EFAULT;
		if (val) {
			if (val < 0 || val > 16 || !is_power_of_2(val))
				return -EINVAL;
			if (val != df->subdivide) {
				df->subdivide = val;
				err = dsp_params_changed(df);
				if (err)
					return err;
			}
		}
		return put_user(df->subdivide, p);

	case SNDCTL_DSP_GETOSPACE:
		if (!df->out)
			return -EINVAL;
		dsp_out_space(df, &info);
		return copy_to_user(p, &info, sizeof(info)) ? -EFAULT : 0;

	case SNDCTL_DSP_GETISPACE:
		if (!df->in)
			return -EINVAL;
		dsp_in_space(df, &info);
		return copy_to_user(p, &info, sizeof(info)) ? -EFAULT : 0;

	case SNDCTL_DSP_GETODELAY:
		if (!df->out)
			return -EINVAL;
		return put_user(df->out->ring.msgs ? dsp_tx_delay_bytes(df->out) : 0, p);

	case SNDCTL_DSP_GETOPTR:
		if (!df->out)
			return -EINVAL;
		dsp_pointer(df->out, &ci);
		return copy_to_user(p, &ci, sizeof(ci)) ? -EFAULT : 0;

	case SNDCTL_DSP_GETIPTR:
		if (!df->in)
			return -EINVAL;
		dsp_pointer(df->in, &ci);
		return copy_to_user(p, &ci, sizeof(ci)) ? -EFAULT : 0;

	case SNDCTL_DSP_GETCAPS:
		return put_user(dsp_caps(df), p);

	case SNDCTL_DSP_GETTRIGGER:
		return put_user(df->trigger, p);

	case SNDCTL_DSP_SETTRIGGER:
		if (get_user(val, p))
			return -EFAULT;
		return dsp_set_trigger(df, val);

	case SNDCTL_DSP_NONBLOCK:
		df->nonblock = true;
		return 0;

	case SNDCTL_DSP_SETDUPLEX:
		return df->out && df->in ? 0 : -EIO;

	case SNDCTL_DSP_PROFILE:
		return 0;

	default:
		return -EINVAL;
	}
}

/*
 * mmap() of the "DMA buffer": a shared writable mapping is the playback ring, a shared
 * read-only one the capture ring (as in Linux's OSS emulation), offset 0, at most
 * fragsize x fragstotal bytes (page-rounded). The first mapping of a direction fixes the
 * ring's geometry; the stream itself is set up at SETTRIGGER.
 * The VFS calls this with the process's mmap_lock held, and write()/read() fault on user
 * memory (taking mmap_lock) while they hold the file lock: taking the file lock here could
 * deadlock, so it is not taken. The stream is claimed under its ring lock instead
 * (dsp_mmap_alloc() against dsp_stream_use_rw()); the geometry is read from the file's
 * parameters unlocked (a thread changing them at the same moment gives the old or the new
 * values, all valid).
 */
static int dsp_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct dsp_file *df = file->private_data;
	unsigned long size = vma->vm_end - vma->vm_start;
	bool out = vma->vm_flags & VM_WRITE;
	struct dsp_stream *s = out ? df->out : df->in;
	const struct dsp_mmap *other;
	struct dsp_hw_params hw;
	int err = 0;

	if (dsp_card_gone(df->card))
		return -ENODEV;
	/*
	 * MAP_SHARED only (a private writable mapping would write into copies). The VFS drops
	 * VM_SHARED from a shared mapping of a file not open for writing (the capture ring of an
	 * O_RDONLY open); VM_MAYSHARE says MAP_SHARED either way.
	 */
	if (!s || !(vma->vm_flags & VM_MAYSHARE) || !(vma->vm_flags & (VM_READ | VM_WRITE)) ||
	    vma->vm_pgoff)
		return -EINVAL;
	mutex_lock(&df->map_lock);
	if (!dsp_mapped(s)) {
		/* the other direction mapped first: the file's ring geometry is set */
		other = dsp_file_mmap(df);
		if (other) {
			err = dsp_mmap_alloc(s, other->frag, other->bytes / other->frag,
					     READ_ONCE(df->fmt));
		} else {
			dsp_file_hw(df, &hw);
			err = dsp_mmap_alloc(s, hw.period_bytes, hw.buffer_bytes / hw.period_bytes,
					     READ_ONCE(df->fmt));
		}
	}
	if (!err && size > PAGE_ALIGN(s->mmap.bytes))
		err = -EINVAL;
	if (!err)
		err = remap_vmalloc_range(vma, s->mmap.buf, 0);
	mutex_unlock(&df->map_lock);
	return err;
}

static long dsp_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct dsp_file *df = file->private_data;
	long ret;

	if (dsp_card_gone(df->card))
		return -ENODEV;
	/* mixer ioctls on /dev/dsp reach the card's mixer, as OSS programs expect */
	if (_IOC_TYPE(cmd) == 'M')
		return dsp_mixer_ioctl(df->card, cmd, (void __user *)arg);
	if (mutex_lock_interruptible(&df->lock))
		return -ERESTARTSYS;
	ret = dsp_ioctl_locked(file, df, cmd, (int __user *)arg);
	mutex_unlock(&df->lock);
	return ret;
}

const struct file_operations dsp_dsp_fops = {
	.owner = THIS_MODULE,
	.open = dsp_open,
	.release = dsp_release,
	.read = dsp_read,
	.write = dsp_write,
	.poll = dsp_poll,
	.mmap = dsp_mmap,
	.unlocked_ioctl = dsp_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};
