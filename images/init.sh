#!/bin/busybox sh
# /init of dsproxy's test guest (packed by images/build-initramfs.sh).
#
# Kernel command line contract (all optional):
#   dsproxy.driver=stock|ours|none   module set to load (default none):
#       stock: soundcore snd snd-timer snd-pcm virtio_snd snd-mixer-oss snd-pcm-oss (+ deps)
#       ours:  the module(s) given to build-initramfs.sh --module (+ their deps)
#       ac97:  snd-intel8x0 (QEMU's -device AC97) + snd-mixer-oss snd-pcm-oss (+ deps)
#       hda:   snd-hda-codec-generic snd-hda-intel (QEMU's intel-hda/ich9-intel-hda with
#              hda-duplex or hda-output) + snd-mixer-oss snd-pcm-oss (+ deps)
#   dsproxy.run="/bin/prog args"     command to run (via sh -c); without it: a shell on the console
#   dsproxy.wait_ms=N                how long to wait for /dev/dsp after loading (default 5000)
#   dsproxy.dmesg=1                  print the whole kernel log after the program
#   MODNAME.PARAM=VALUE              passed to insmod of MODNAME, as modprobe would
#                                    (e.g. dsproxy_oss.debug=1)
# Console markers (match them anywhere in a line: serial output can glue lines together):
#   DSPROXY-GUEST: boot flavor=F kver=K driver=D
#   DSPROXY-GUEST: loaded MODULE          (one per module)
#   DSPROXY-GUEST: devices: ...           (sound device nodes present)
#   DSPROXY-GUEST: ready                  (about to run the program)
#   DSPROXY-GUEST: run: CMD
#   DSPROXY-GUEST: error: ...             (setup failed; followed by exit=125)
#   DSPROXY-GUEST: exit=N                 (the program's exit status; last line before poweroff)

/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox mount -t tmpfs tmpfs /run
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=vt100

SETUP_FAILED=125

say() { echo "DSPROXY-GUEST: $*"; }

finish() {
	if [ "$1" -ne 0 ] && [ "$DMESG" != 1 ]; then
		say "dmesg-tail-begin"
		dmesg | tail -n 40
		say "dmesg-tail-end"
	fi
	if [ "$DMESG" = 1 ]; then
		say "dmesg-begin"
		dmesg
		say "dmesg-end"
	fi
	say "exit=$1"
	sync
	poweroff -f
	# poweroff -f does not return; if it ever does, make the kernel panic (panic=-1 reboots,
	# and QEMU's -no-reboot turns that into an exit).
	exit "$1"
}

# Splits /proc/cmdline into words the way the kernel does: spaces separate, double quotes group
# (and are removed).
cmdline_words() {
	awk '{
		s = $0; n = length(s); tok = ""; inq = 0
		for (i = 1; i <= n + 1; i++) {
			c = (i <= n) ? substr(s, i, 1) : " "
			if (c == "\"") { inq = !inq; continue }
			if ((c == " " || c == "\t") && !inq) { if (tok != "") print tok; tok = ""; continue }
			tok = tok c
		}
	}' /proc/cmdline
}

DRIVER=none
RUN=""
WAIT_MS=5000
DMESG=0
WORDS="$(cmdline_words)"
while IFS= read -r word; do
	case "$word" in
	dsproxy.driver=*) DRIVER="${word#dsproxy.driver=}" ;;
	dsproxy.run=*) RUN="${word#dsproxy.run=}" ;;
	dsproxy.wait_ms=*) WAIT_MS="${word#dsproxy.wait_ms=}" ;;
	dsproxy.dmesg=*) DMESG="${word#dsproxy.dmesg=}" ;;
	esac
done <<EOF
$WORDS
EOF

say "boot flavor=$(cat /etc/dsproxy/flavor) kver=$(uname -r) driver=$DRIVER uptime=$(cut -d' ' -f1 /proc/uptime)"

# Module parameters from the command line for module $1 (dashes and underscores are the same
# in module names, as for modprobe).
module_params() {
	mod=$(echo "$1" | tr - _)
	echo "$WORDS" | while IFS= read -r word; do
		name=$(echo "${word%%.*}" | tr - _)
		case "$word" in
		*.*=*) [ "$name" = "$mod" ] && echo "${word#*.}" ;;
		esac
	done
}

case "$DRIVER" in
stock | ours | ac97 | hda)
	list=/etc/dsproxy/modules.$DRIVER
	if [ ! -s "$list" ]; then
		say "error: this image has no '$DRIVER' module set (see /etc/dsproxy/missing.$DRIVER)"
		[ -s "/etc/dsproxy/missing.$DRIVER" ] && say "missing: $(cat "/etc/dsproxy/missing.$DRIVER")"
		finish $SETUP_FAILED
	fi
	if [ -s "/etc/dsproxy/missing.$DRIVER" ]; then
		say "warning: modules not in this kernel: $(cat "/etc/dsproxy/missing.$DRIVER")"
	fi
	while IFS= read -r ko; do
		mod="${ko%.ko}"
		params="$(module_params "$mod" | tr '\n' ' ' | sed 's/ *$//')"
		# shellcheck disable=SC2086 # params are separate words on purpose
		if ! insmod "/lib/modules/dsproxy/$ko" $params; then
			say "error: insmod $ko $params failed"
			finish $SETUP_FAILED
		fi
		say "loaded $mod${params:+ $params}"
	done <"$list"
	# The card's device nodes appear once the driver has probed the device (not worth waiting
	# for when the set is incomplete, e.g. stock on 6.1, which has no virtio_snd).
	waited=0
	[ -s "/etc/dsproxy/missing.$DRIVER" ] && waited=$WAIT_MS
	while [ ! -e /dev/dsp ] && [ "$waited" -lt "$WAIT_MS" ]; do
		sleep 0.05
		waited=$((waited + 50))
	done
	[ -e /dev/dsp ] || say "warning: /dev/dsp did not appear within ${WAIT_MS} ms"
	;;
none) ;;
*)
	say "error: unknown dsproxy.driver=$DRIVER (stock, ours, ac97, hda, none)"
	finish $SETUP_FAILED
	;;
esac

say "devices: $(ls /dev/dsp* /dev/mixer* /dev/audio* /dev/snd/* 2>/dev/null | tr '\n' ' ')"
say "ready uptime=$(cut -d' ' -f1 /proc/uptime)"

if [ -z "$RUN" ]; then
	say "no dsproxy.run: starting a shell (exit it to power off)"
	setsid cttyhack sh
	finish $?
fi

say "run: $RUN"
sh -c "$RUN"
finish $?
