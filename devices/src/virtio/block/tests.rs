//! Unit tests of the virtio-blk device.
