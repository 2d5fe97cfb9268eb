// SPDX-License-Identifier: GPL-2.0
/*
 * dsproxy_oss: virtio-snd (device id 25) driver presenting OSS /dev/dsp and /dev/mixer.
 *
 * This file: probe/remove, virtqueues, the event queue and the OSS device nodes.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/sound.h>
#include <linux/version.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include "dsproxy_oss.h"

#ifndef VIRTIO_ID_SOUND
#define VIRTIO_ID_SOUND 25
#endif

#ifndef SOUND_MAJOR
#define SOUND_MAJOR 14
#endif

static unsigned int msg_timeout_ms = 1000;
module_param(msg_timeout_ms, uint, 0644);
MODULE_PARM_DESC(msg_timeout_ms, "Control request timeout in milliseconds (default 1000)");

static unsigned int stop_delay_ms;
module_param(stop_delay_ms, uint, 0644);
MODULE_PARM_DESC(stop_delay_ms,
		 "After a drain, keep the stream running this long (plus the device's reported latency) before STOP (default 0)");

static bool use_sound_core = true;
module_param(use_sound_core, bool, 0444);
MODULE_PARM_DESC(use_sound_core,
		 "Register nodes with sound_core (major 14) when available; otherwise misc devices");

/* every registered node, so open() can find its card by dev_t without racing remove() */
static LIST_HEAD(dsp_node_list);
static DEFINE_MUTEX(dsp_node_lock);
/* names for misc-device nodes: dsp, dsp1, ...; audio, audio1, ...; mixer, mixer1, ... */
static unsigned int dsp_misc_dsp_next;
static unsigned int dsp_misc_audio_next;
static unsigned int dsp_misc_mixer_next;

static void dsp_card_free(struct kref *ref)
{
	struct dsp_card *card = container_of(ref, struct dsp_card, ref);
	u32 i;

	for (i = 0; i < card->nstreams; i++)
		dsp_ring_free(&card->streams[i].ring);
	dsp_mixer_remove(card);
	kfree(card->outputs);
	kfree(card->inputs);
	kfree(card->streams);
	kfree(card->dsp_nodes);
	kfree(card->audio_nodes);
	kfree(card->events);
	kfree(card);
}

void dsp_card_put(struct dsp_card *card)
{
	kref_put(&card->ref, dsp_card_free);
}

bool dsp_card_gone(struct dsp_card *card)
{
	return READ_ONCE(card->removing) || READ_ONCE(card->gone);
}

/* finds the card of a registered node and takes a reference to it */
struct dsp_card *dsp_node_get_card(dev_t devt, enum dsp_node_kind kind, unsigned int *nr)
{
	struct dsp_card *card = NULL;
	struct dsp_node *node;

	mutex_lock(&dsp_node_lock);
	list_for_each_entry(node, &dsp_node_list, list) {
		if (node->devt == devt && node->kind == kind) {
			card = node->card;
			*nr = node->nr;
			kref_get(&card->ref);
			break;
		}
	}
	mutex_unlock(&dsp_node_lock);
	return card;
}

int dsp_queue_add_locked(struct dsp_card *card, struct dsp_queue *q, struct scatterlist **sgs,
			 unsigned int out_sgs, unsigned int in_sgs, void *token)
{
	lockdep_assert_held(&q->lock);
	if (card->gone)
		return -ENODEV;
	return virtqueue_add_sgs(q->vq, sgs, out_sgs, in_sgs, token, GFP_ATOMIC);
}

/*
 * Adds a buffer and notifies the device. The kick happens under the lock: remove() deletes
 * the virtqueues after setting card->gone under this lock, so nothing may touch the queue
 * once the lock is dropped.
 */
int dsp_queue_add(struct dsp_card *card, struct dsp_queue *q, struct scatterlist **sgs,
		  unsigned int out_sgs, unsigned int in_sgs, void *token)
{
	unsigned long flags;
	int err;

	spin_lock_irqsave(&q->lock, flags);
	err = dsp_queue_add_locked(card, q, sgs, out_sgs, in_sgs, token);
	if (!err)
		virtqueue_kick(q->vq);
	spin_unlock_irqrestore(&q->lock, flags);
	return err;
}

/* event queue */

static int dsp_event_queue_one(struct dsp_card *card, struct virtio_snd_event *ev)
{
	struct scatterlist sg, *sgs[1] = { &sg };

	sg_init_one(&sg, ev, sizeof(*ev));
	return dsp_queue_add_locked(card, &card->eventq, sgs, 0, 1, ev);
}

static int dsp_event_fill(struct dsp_card *card)
{
	unsigned long flags;
	unsigned int i;
	int err = 0;

	card->nevents = min_t(unsigned int, virtqueue_get_vring_size(card->eventq.vq), 64);
	card->events = kcalloc(card->nevents, sizeof(*card->events), GFP_KERNEL);
	if (!card->events)
		return -ENOMEM;
	spin_lock_irqsave(&card->eventq.lock, flags);
	for (i = 0; i < card->nevents && !err; i++)
		err = dsp_event_queue_one(card, &card->events[i]);
	virtqueue_kick(card->eventq.vq);
	spin_unlock_irqrestore(&card->eventq.lock, flags);
	return err;
}

static void dsp_event_handle(struct dsp_card *card, struct virtio_snd_event *ev, u32 len)
{
	u32 code;

	if (len < sizeof(struct virtio_snd_hdr)) {
		pr_warn_ratelimited("%s: short event (%u bytes)\n", card->name, len);
		return;
	}
	code = le32_to_cpu(ev->hdr.code);
	switch (code) {
	case VIRTIO_SND_EVT_PCM_PERIOD_ELAPSED:
	case VIRTIO_SND_EVT_PCM_XRUN:
		if (len >= sizeof(*ev))
			dsp_pcm_event(card, code, le32_to_cpu(ev->data));
		break;
	case DSP_SND_EVT_CTL_NOTIFY:
		if (len >= sizeof(struct dsp_snd_ctl_event)) {
			struct dsp_snd_ctl_event *cev = (struct dsp_snd_ctl_event *)ev;

			dsp_mixer_event(card, le16_to_cpu(cev->control_id),
					le16_to_cpu(cev->mask));
		}
		break;
	case VIRTIO_SND_EVT_JACK_CONNECTED:
	case VIRTIO_SND_EVT_JACK_DISCONNECTED:
		break;
	default:
		pr_debug("%s: unknown event 0x%x\n", card->name, code);
		break;
	}
}

static void dsp_event_vq_done(struct virtqueue *vq)
{
	struct dsp_card *card = vq->vdev->priv;
	struct dsp_queue *q = &card->eventq;
	struct virtio_snd_event *ev;
	unsigned long flags;
	unsigned int len;
	bool requeued = false;

	spin_lock_irqsave(&q->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((ev = virtqueue_get_buf(vq, &len))) {
			dsp_event_handle(card, ev, len);
			if (!dsp_event_queue_one(card, ev))
				requeued = true;
		}
	} while (!virtqueue_enable_cb(vq));
	if (requeued)
		virtqueue_kick(vq);
	spin_unlock_irqrestore(&q->lock, flags);
}

static int dsp_find_vqs(struct dsp_card *card)
{
	struct virtqueue *vqs[VIRTIO_SND_VQ_MAX];
	int err;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	struct virtqueue_info info[VIRTIO_SND_VQ_MAX] = {
		[VIRTIO_SND_VQ_CONTROL] = { "dsproxy-ctl", dsp_ctl_vq_done },
		[VIRTIO_SND_VQ_EVENT] = { "dsproxy-event", dsp_event_vq_done },
		[VIRTIO_SND_VQ_TX] = { "dsproxy-tx", dsp_tx_vq_done },
		[VIRTIO_SND_VQ_RX] = { "dsproxy-rx", dsp_rx_vq_done },
	};

	err = virtio_find_vqs(card->vdev, VIRTIO_SND_VQ_MAX, vqs, info, NULL);
#else
	vq_callback_t *callbacks[VIRTIO_SND_VQ_MAX] = {
		[VIRTIO_SND_VQ_CONTROL] = dsp_ctl_vq_done,
		[VIRTIO_SND_VQ_EVENT] = dsp_event_vq_done,
		[VIRTIO_SND_VQ_TX] = dsp_tx_vq_done,
		[VIRTIO_SND_VQ_RX] = dsp_rx_vq_done,
	};
	static const char *const names[VIRTIO_SND_VQ_MAX] = {
		[VIRTIO_SND_VQ_CONTROL] = "dsproxy-ctl",
		[VIRTIO_SND_VQ_EVENT] = "dsproxy-event",
		[VIRTIO_SND_VQ_TX] = "dsproxy-tx",
		[VIRTIO_SND_VQ_RX] = "dsproxy-rx",
	};

	err = virtio_find_vqs(card->vdev, VIRTIO_SND_VQ_MAX, vqs, callbacks, names, NULL);
#endif
	if (err)
		return err;
	card->ctlq.vq = vqs[VIRTIO_SND_VQ_CONTROL];
	card->eventq.vq = vqs[VIRTIO_SND_VQ_EVENT];
	card->txq.vq = vqs[VIRTIO_SND_VQ_TX];
	card->rxq.vq = vqs[VIRTIO_SND_VQ_RX];
	return 0;
}

/* OSS nodes */

static const char *dsp_node_base_name(enum dsp_node_kind kind)
{
	switch (kind) {
	case DSP_NODE_DSP: return "dsp";
	case DSP_NODE_AUDIO: return "audio";
	default: return "mixer";
	}
}

/* sound_core's unit for /dev/audio: minor 4 of each card (OSS's SND_DEV_AUDIO) */
#define DSP_SOUND_UNIT_AUDIO 4

static int dsp_node_register(struct dsp_node *node)
{
	const struct file_operations *fops =
		node->kind == DSP_NODE_MIXER ? &dsp_mixer_fops : &dsp_dsp_fops;
	unsigned int n;
	int err;

	node->sound_minor = -1;
#if IS_ENABLED(CONFIG_SOUND_OSS_CORE)
	if (use_sound_core) {
		int minor;

		switch (node->kind) {
		case DSP_NODE_DSP:
			minor = register_sound_dsp(fops, -1);
			break;
		case DSP_NODE_AUDIO:
			/* the first free unit 4, 20, 36, ...: /dev/audio, /dev/audio1, ... */
			minor = register_sound_special(fops, DSP_SOUND_UNIT_AUDIO);
			break;
		default:
			minor = register_sound_mixer(fops, -1);
			break;
		}

		if (minor >= 0) {
			node->sound_minor = minor;
			node->devt = MKDEV(SOUND_MAJOR, minor);
			return 0;
		}
		pr_warn("%s: sound_core registration failed (%d), using a misc device\n",
			node->card->name, minor);
	}
#endif
	mutex_lock(&dsp_node_lock);
	switch (node->kind) {
	case DSP_NODE_DSP:
		n = dsp_misc_dsp_next++;
		break;
	case DSP_NODE_AUDIO:
		n = dsp_misc_audio_next++;
		break;
	default:
		n = dsp_misc_mixer_next++;
		break;
	}
	mutex_unlock(&dsp_node_lock);
	if (n)
		snprintf(node->name, sizeof(node->name), "%s%u", dsp_node_base_name(node->kind), n);
	else
		strscpy(node->name, dsp_node_base_name(node->kind), sizeof(node->name));
	node->misc.minor = MISC_DYNAMIC_MINOR;
	node->misc.name = node->name;
	node->misc.fops = fops;
	err = misc_register(&node->misc);
	if (err)
		return err;
	node->misc_registered = true;
	node->devt = MKDEV(MISC_MAJOR, node->misc.minor);
	return 0;
}

static void dsp_node_unregister(struct dsp_node *node)
{
	if (!node->devt)
		return;
	mutex_lock(&dsp_node_lock);
	list_del(&node->list);
	mutex_unlock(&dsp_node_lock);
#if IS_ENABLED(CONFIG_SOUND_OSS_CORE)
	if (node->sound_minor >= 0) {
		if (node->kind == DSP_NODE_DSP)
			unregister_sound_dsp(node->sound_minor);
		else if (node->kind == DSP_NODE_AUDIO)
			unregister_sound_special(node->sound_minor);
		else
			unregister_sound_mixer(node->sound_minor);
		node->sound_minor = -1;
	}
#endif
	if (node->misc_registered) {
		misc_deregister(&node->misc);
		node->misc_registered = false;
	}
	node->devt = 0;
}

static void dsp_node_publish(struct dsp_node *node)
{
	mutex_lock(&dsp_node_lock);
	list_add_tail(&node->list, &dsp_node_list);
	mutex_unlock(&dsp_node_lock);
}

static const char *dsp_node_devname(struct dsp_node *node, char *buf, size_t len)
{
	if (node->misc_registered)
		return node->name;
	if (node->sound_minor >> 4)
		snprintf(buf, len, "%s%d", dsp_node_base_name(node->kind), node->sound_minor >> 4);
	else
		strscpy(buf, dsp_node_base_name(node->kind), len);
	return buf;
}

static void dsp_nodes_unregister(struct dsp_card *card)
{
	unsigned int i;

	for (i = 0; i < card->ndsp_nodes; i++) {
		dsp_node_unregister(&card->dsp_nodes[i]);
		if (card->audio_nodes)
			dsp_node_unregister(&card->audio_nodes[i]);
	}
	dsp_node_unregister(&card->mixer_node);
}

/* /dev/audioN exists where stream pair N can play or record mu-law, Sun's format */
static bool dsp_pair_has_mu_law(struct dsp_card *card, unsigned int nr)
{
	u64 mu = BIT_ULL(VIRTIO_SND_PCM_FMT_MU_LAW);

	return (nr < card->noutputs && (card->outputs[nr]->formats & mu)) ||
	       (nr < card->ninputs && (card->inputs[nr]->formats & mu));
}

static int dsp_nodes_register(struct dsp_card *card)
{
	unsigned int i;
	char buf[16];
	int err;

	card->ndsp_nodes = max(card->noutputs, card->ninputs);
	card->dsp_nodes = kcalloc(card->ndsp_nodes, sizeof(*card->dsp_nodes), GFP_KERNEL);
	card->audio_nodes = kcalloc(card->ndsp_nodes, sizeof(*card->audio_nodes), GFP_KERNEL);
	if (!card->dsp_nodes || !card->audio_nodes)
		return -ENOMEM;
	for (i = 0; i < card->ndsp_nodes; i++) {
		struct dsp_node *node = &card->dsp_nodes[i];

		node->card = card;
		node->kind = DSP_NODE_DSP;
		node->nr = i;
		err = dsp_node_register(node);
		if (err)
			goto fail;
		dsp_node_publish(node);
		dev_info(&card->vdev->dev, "/dev/%s: output stream %s, input stream %s\n",
			 dsp_node_devname(node, buf, sizeof(buf)),
			 i < card->noutputs ? "yes" : "no", i < card->ninputs ? "yes" : "no");
		node = &card->audio_nodes[i];
		node->card = card;
		node->kind = DSP_NODE_AUDIO;
		node->nr = i;
		if (!dsp_pair_has_mu_law(card, i)) {
			dev_info(&card->vdev->dev,
				 "no /dev/audio for stream pair %u: no mu-law on its streams\n", i);
			continue;
		}
		err = dsp_node_register(node);
		if (err)
			goto fail;
		dsp_node_publish(node);
		dev_info(&card->vdev->dev, "/dev/%s: stream pair %u, 8 kHz mu-law mono by default\n",
			 dsp_node_devname(node, buf, sizeof(buf)), i);
	}
	card->mixer_node.card = card;
	card->mixer_node.kind = DSP_NODE_MIXER;
	err = dsp_node_register(&card->mixer_node);
	if (err)
		goto fail;
	dsp_node_publish(&card->mixer_node);
	dev_info(&card->vdev->dev, "/dev/%s: %s mixer\n",
		 dsp_node_devname(&card->mixer_node, buf, sizeof(buf)),
		 card->mixer.hw ? "device control elements" : "software");
	return 0;
fail:
	dev_err(&card->vdev->dev, "cannot register OSS device nodes: %d\n", err);
	dsp_nodes_unregister(card);
	return err;
}

/* probe / remove */

static void dsp_card_kill(struct dsp_card *card)
{
	struct dsp_queue *queues[] = { &card->ctlq, &card->eventq, &card->txq, &card->rxq };
	unsigned long flags;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(queues); i++) {
		spin_lock_irqsave(&queues[i]->lock, flags);
		WRITE_ONCE(card->gone, true);
		spin_unlock_irqrestore(&queues[i]->lock, flags);
	}
}

/* device reset done: take back every buffer the device held, wake every waiter */
static void dsp_card_reclaim(struct dsp_card *card)
{
	unsigned long flags;
	u32 i;

	dsp_ctl_flush(card);
	dsp_pcm_msg_flush(card);
	spin_lock_irqsave(&card->eventq.lock, flags);
	while (virtqueue_detach_unused_buf(card->eventq.vq))
		;
	spin_unlock_irqrestore(&card->eventq.lock, flags);
	for (i = 0; i < card->nstreams; i++)
		wake_up_all(&card->streams[i].wait);
}

static int dsp_probe(struct virtio_device *vdev)
{
	struct dsp_card *card;
	u32 ncontrols = 0;
	int err;

	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config access disabled\n");
		return -EINVAL;
	}
	card = kzalloc(sizeof(*card), GFP_KERNEL);
	if (!card)
		return -ENOMEM;
	kref_init(&card->ref);
	card->vdev = vdev;
	strscpy(card->name, dev_name(&vdev->dev), sizeof(card->name));
	card->msg_timeout_ms = max(msg_timeout_ms, 10u);
	card->stop_delay_ms = min(stop_delay_ms, 5000u);
	spin_lock_init(&card->ctlq.lock);
	spin_lock_init(&card->eventq.lock);
	spin_lock_init(&card->txq.lock);
	spin_lock_init(&card->rxq.lock);
	mutex_init(&card->open_lock);
	mutex_init(&card->mixer.lock);
	vdev->priv = card;

	err = dsp_find_vqs(card);
	if (err) {
		dev_err(&vdev->dev, "cannot set up virtqueues: %d\n", err);
		goto err_free;
	}
	virtio_cread_le(vdev, struct virtio_snd_config, streams, &card->nstreams);
	if (virtio_has_feature(vdev, DSP_SND_F_CTLS))
		virtio_cread_le(vdev, struct dsp_snd_config, controls, &ncontrols);

	virtio_device_ready(vdev);

	err = dsp_pcm_probe(card);
	if (err)
		goto err_reset;
	err = dsp_mixer_probe(card, ncontrols);
	if (err)
		goto err_reset;
	/*
	 * Events may name streams and controls: the event queue gets its buffers only now that
	 * the streams and the mixer are published. The callback runs under eventq.lock, which
	 * dsp_event_fill() takes after these stores (and no event can arrive before a buffer).
	 */
	err = dsp_event_fill(card);
	if (err)
		goto err_reset;
	err = dsp_nodes_register(card);
	if (err)
		goto err_reset;
	return 0;

err_reset:
	dsp_card_kill(card);
	virtio_reset_device(vdev);
	dsp_card_reclaim(card);
	vdev->config->del_vqs(vdev);
err_free:
	vdev->priv = NULL;
	dsp_card_put(card);
	return err;
}

static void dsp_remove(struct virtio_device *vdev)
{
	struct dsp_card *card = vdev->priv;
	u32 i;

	/*
	 * Open files see dsp_card_gone() from here on: their waits end, they send nothing more
	 * and let go of their locks, which dsp_pcm_quiesce() then takes. They keep a reference
	 * to the card until they are closed.
	 */
	WRITE_ONCE(card->removing, true);
	for (i = 0; i < card->nstreams; i++)
		wake_up_all(&card->streams[i].wait);
	/* no new opens */
	dsp_nodes_unregister(card);
	dsp_pcm_quiesce(card);
	dsp_card_kill(card);
	virtio_reset_device(vdev);
	dsp_card_reclaim(card);
	vdev->config->del_vqs(vdev);
	vdev->priv = NULL;
	dev_info(&vdev->dev, "removed\n");
	dsp_card_put(card);
}

static const struct virtio_device_id dsp_id_table[] = {
	{ VIRTIO_ID_SOUND, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static unsigned int dsp_features[] = {
	DSP_SND_F_CTLS,
};

static struct virtio_driver dsp_virtio_driver = {
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = dsp_id_table,
	.feature_table = dsp_features,
	.feature_table_size = ARRAY_SIZE(dsp_features),
	.probe = dsp_probe,
	.remove = dsp_remove,
};

module_virtio_driver(dsp_virtio_driver);

MODULE_DEVICE_TABLE(virtio, dsp_id_table);
MODULE_DESCRIPTION("virtio-snd driver with OSS /dev/dsp and /dev/mixer (dsproxy)");
MODULE_LICENSE("GPL");
