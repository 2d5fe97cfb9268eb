# The guest kernel flavors, in one place (sourced by fetch-kernels.sh, build-guest-driver.sh,
# images/build-initramfs.sh and guest-run.sh):
#   6.1      Debian 12 bookworm, amd64 (no virtio_snd)
#   6.12     bookworm-backports, amd64 (virtio_snd with control elements, snd-pcm-oss)
#   5.10     Debian 11 bullseye, amd64 (older than virtio_snd, which arrived in 5.13)
#   6.1-686  bookworm, 32-bit i386 (linux-image-6.1.0-NN-686; no virtio_snd); its userspace is
#            i386 too (busybox-static:i386, programs built with gcc -m32)
# shellcheck shell=bash
DSPROXY_FLAVORS=(6.1 6.12 5.10 6.1-686)
DSPROXY_FLAVORS_TEXT="6.1 6.12 5.10 6.1-686"

flavor_known() { # FLAVOR
  local f
  for f in "${DSPROXY_FLAVORS[@]}"; do [ "$f" = "$1" ] && return 0; done
  return 1
}

# The Debian architecture of a flavor's kernel and guest userspace.
flavor_arch() { # FLAVOR
  case "$1" in
    *-686) echo i386 ;;
    *) echo amd64 ;;
  esac
}
