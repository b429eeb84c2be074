//! The initramfs: cpio newc + compression + kernel modules. (being written)
