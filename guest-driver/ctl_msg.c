// SPDX-License-Identifier: GPL-2.0
/*
 * Control queue: one request, one response, bounded wait.
 *
 * A request that times out stays on the queue (the device may still write the response),
 * so the message is reference counted: one reference for the waiter, one for the queue.
 * Whoever drops the last one frees it; remove() returns unfinished ones with
 * dsp_ctl_flush() after the device is reset.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "dsproxy_oss.h"

struct dsp_ctl_msg {
	struct kref ref;
	struct completion done;
	int result;		/* 0, or -ENODEV when the device went away */
	u32 used_len;		/* bytes the device wrote into the response */
	size_t req_len;
	size_t resp_len;
	u8 *req;		/* both point into buf[]: kmalloc'd, so DMA-able */
	u8 *resp;
	u8 buf[];
};

static void dsp_ctl_msg_free(struct kref *ref)
{
	kfree(container_of(ref, struct dsp_ctl_msg, ref));
}

int dsp_status_to_errno(u32 code)
{
	switch (code) {
	case VIRTIO_SND_S_OK:
		return 0;
	case VIRTIO_SND_S_BAD_MSG:
		return -EINVAL;
	case VIRTIO_SND_S_NOT_SUPP:
		return -EOPNOTSUPP;
	case VIRTIO_SND_S_IO_ERR:
	default:
		return -EIO;
	}
}

static const char *dsp_ctl_code_name(u32 code)
{
	switch (code) {
	case VIRTIO_SND_R_PCM_INFO: return "PCM_INFO";
	case VIRTIO_SND_R_PCM_SET_PARAMS: return "PCM_SET_PARAMS";
	case VIRTIO_SND_R_PCM_PREPARE: return "PCM_PREPARE";
	case VIRTIO_SND_R_PCM_RELEASE: return "PCM_RELEASE";
	case VIRTIO_SND_R_PCM_START: return "PCM_START";
	case VIRTIO_SND_R_PCM_STOP: return "PCM_STOP";
	case DSP_SND_R_CTL_INFO: return "CTL_INFO";
	case DSP_SND_R_CTL_READ: return "CTL_READ";
	case DSP_SND_R_CTL_WRITE: return "CTL_WRITE";
	default: return "request";
	}
}

/*
 * Sends req (starting with a struct virtio_snd_hdr) and waits up to card->msg_timeout_ms
 * for the response. resp (resp_len bytes, starting with struct virtio_snd_hdr) receives it;
 * resp may be NULL when only the status matters. Returns 0 if the device answered OK with
 * a complete response, else a negative errno (-ETIMEDOUT, -ENODEV, or the mapped status).
 * Sleeps; req and resp may live on the caller's stack.
 */
int dsp_ctl_request(struct dsp_card *card, const void *req, size_t req_len, void *resp,
		    size_t resp_len)
{
	struct virtio_snd_hdr local_hdr;
	struct scatterlist sg_req, sg_resp, *sgs[2];
	struct dsp_ctl_msg *msg;
	u32 code = le32_to_cpu(((const struct virtio_snd_hdr *)req)->code);
	unsigned long left;
	u32 status;
	int err;

	if (!resp) {
		resp = &local_hdr;
		resp_len = sizeof(local_hdr);
	}
	if (req_len < sizeof(struct virtio_snd_hdr) || resp_len < sizeof(struct virtio_snd_hdr))
		return -EINVAL;

	msg = kzalloc(struct_size(msg, buf, req_len + resp_len), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	kref_init(&msg->ref);
	init_completion(&msg->done);
	msg->req_len = req_len;
	msg->resp_len = resp_len;
	msg->req = msg->buf;
	msg->resp = msg->buf + req_len;
	memcpy(msg->req, req, req_len);
	/* a device that answers without writing the header must not read as OK */
	((struct virtio_snd_hdr *)msg->resp)->code = cpu_to_le32(VIRTIO_SND_S_IO_ERR);

	sg_init_one(&sg_req, msg->req, req_len);
	sg_init_one(&sg_resp, msg->resp, resp_len);
	sgs[0] = &sg_req;
	sgs[1] = &sg_resp;

	/* the queue's reference; dropped by dsp_ctl_vq_done() or dsp_ctl_flush() */
	kref_get(&msg->ref);
	err = dsp_queue_add(card, &card->ctlq, sgs, 1, 1, msg);
	if (err) {
		kref_put(&msg->ref, dsp_ctl_msg_free);
		kref_put(&msg->ref, dsp_ctl_msg_free);
		if (err != -ENODEV)
			pr_err_ratelimited("%s: cannot queue %s: %d\n", card->name,
					   dsp_ctl_code_name(code), err);
		return err;
	}

	left = wait_for_completion_timeout(&msg->done, msecs_to_jiffies(card->msg_timeout_ms));
	if (!left) {
		pr_err_ratelimited("%s: %s timed out after %u ms\n", card->name,
				   dsp_ctl_code_name(code), card->msg_timeout_ms);
		kref_put(&msg->ref, dsp_ctl_msg_free);
		return -ETIMEDOUT;
	}

	err = msg->result;
	if (!err) {
		status = le32_to_cpu(((struct virtio_snd_hdr *)msg->resp)->code);
		err = dsp_status_to_errno(status);
		if (err) {
			pr_debug("%s: %s answered status 0x%x\n", card->name,
				 dsp_ctl_code_name(code), status);
		} else if (msg->used_len < resp_len) {
			pr_err_ratelimited("%s: %s: short response (%u of %zu bytes)\n",
					   card->name, dsp_ctl_code_name(code), msg->used_len,
					   resp_len);
			err = -EIO;
		}
	}
	if (!err)
		memcpy(resp, msg->resp, resp_len);
	else if (resp != &local_hdr && resp_len >= sizeof(struct virtio_snd_hdr))
		memcpy(resp, msg->resp, sizeof(struct virtio_snd_hdr));
	kref_put(&msg->ref, dsp_ctl_msg_free);
	return err;
}

/* control virtqueue callback (interrupt context) */
void dsp_ctl_vq_done(struct virtqueue *vq)
{
	struct dsp_card *card = vq->vdev->priv;
	struct dsp_queue *q = &card->ctlq;
	struct dsp_ctl_msg *msg;
	unsigned long flags;
	unsigned int len;

	spin_lock_irqsave(&q->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((msg = virtqueue_get_buf(vq, &len))) {
			msg->used_len = min_t(u32, len, msg->resp_len);
			complete(&msg->done);
			kref_put(&msg->ref, dsp_ctl_msg_free);
		}
	} while (!virtqueue_enable_cb(vq));
	spin_unlock_irqrestore(&q->lock, flags);
}

/* after the device is reset: fail every request it still held */
void dsp_ctl_flush(struct dsp_card *card)
{
	struct dsp_queue *q = &card->ctlq;
	struct dsp_ctl_msg *msg;
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	while ((msg = virtqueue_detach_unused_buf(q->vq))) {
		msg->result = -ENODEV;
		complete(&msg->done);
		kref_put(&msg->ref, dsp_ctl_msg_free);
	}
	spin_unlock_irqrestore(&q->lock, flags);
}
