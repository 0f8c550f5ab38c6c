//! The nested test host: real Linux guests for ghost-vmm on a machine whose own KVM cannot run
//! them (see `/work/shared/docs/testhost.md`).
//!
//! A Linux test host (L2, Debian's cloud kernel) boots under QEMU-TCG with `-cpu max`, so
//! `kvm-amd` works inside it; ghost-vmm (or QEMU, the reference) runs inside L2 and boots an
//! L3 guest. A [`TestHost`] builds L2's initramfs, boots it and runs a list of [`Scenario`]s
//! (shell scripts) one after the other; the host reads the L2 console line by line, timestamps
//! each line, and returns a [`RunReport`] with one [`ScenarioResult`] each. An L2 that hangs or
//! dies before the end is booted again for what it had left ([`TestHost::run`]).
//!
//! Prerequisites: `tests/testhost/setup.sh` (run automatically by [`Assets::ensure`]) and, for
//! scenarios that use ghost-vmm, a built binary (see [`ghost_vmm_binary`]). L1 is the
//! project's build of Debian's QEMU with the CR8 fix when `setup.sh` has made it ([`L1Qemu`]);
//! firmware guests need it ([`TestHost::with_ovmf`], [`Ovmf`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use ghost_tests::testhost::*;
//!
//! let report = TestHost::new("doc")?
//!     .run(&[Scenario::new("kvm", "test -c /dev/kvm").timeout(Duration::from_secs(10))])?;
//! report["kvm"].assert_success();
//! # Ok::<(), Error>(())
//! ```

mod assets;
mod console;
mod cpio;
mod debian;
mod error;
mod firmware;
mod guest;
mod host;
mod image;
mod paths;
mod rerun;
mod scenario;
mod session;

pub use assets::{Assets, Kernel, KernelFlavor, L1Qemu, Module, L1_FIRMWARE_DIRS, L1_QEMU_ENV};
pub use cpio::{Compression, Contents};
pub use debian::{
    debian_vm_file, hybrid_iso, DebianImage, DEBIAN_CMDLINE, DEBIAN_GUEST_SHELL, DEBIAN_READY,
    DEBIAN_SHELL_READY, L2_DEBIAN_DIR, L2_DEBIAN_INITRD, L2_DEBIAN_VMLINUZ,
};
pub use error::{Error, Result};
pub use firmware::{
    qemu_ovmf_args, Ovmf, L2_OVMF_CODE, L2_OVMF_CODE_SECBOOT, L2_OVMF_DIR, L2_OVMF_VARS,
    L2_OVMF_VARS_MS,
};
pub use guest::{
    probe_init, GuestInitramfs, PROBE_BYE, PROBE_INIT_OK, PROBE_READY, VIRTIO_MODULES,
};
pub use host::{
    l2_nvme_address, KernelImages, TestHost, KEEP_ENV, L2_BASE_CMDLINE, L2_DISK_MODULES,
    L2_GHOST_VMM, L2_HELPERS, L2_INITRD_DIR, L2_KERNEL_DIR, L2_MODULES, L2_QEMU,
};
pub use paths::{
    cache_dir, ghost_vmm_binary, target_dir, workspace_root, CACHE_ENV, GHOST_VMM_BIN_ENV,
};
pub use scenario::{Line, Outcome, RunReport, Scenario, ScenarioResult, DEFAULT_SCENARIO_TIMEOUT};
