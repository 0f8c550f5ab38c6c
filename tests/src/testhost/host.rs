//! The test host (L2): its image, its QEMU, and the run of a list of scenarios in one boot.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::assets::{run_setup, Assets, KernelFlavor, L1Qemu, L1_QEMU_ENV};
use super::console::Transcript;
use super::cpio::{Archive, Compression, Contents};
use super::debian::{DebianImage, L2_DEBIAN_INITRD, L2_DEBIAN_VMLINUZ};
use super::error::{Error, Result};
use super::firmware::Ovmf;
use super::guest::GuestInitramfs;
use super::image::{add_busybox, add_dynamic_binary, add_modules};
use super::paths::{ghost_vmm_binary, target_dir};
use super::rerun::{left_over, Stop};
use super::scenario::{RunReport, Scenario};
use super::session::QemuSession;

/// Where ghost-vmm is inside L2 (when given with [`TestHost::ghost_vmm`]).
pub const L2_GHOST_VMM: &str = "/usr/bin/ghost-vmm";
/// Where QEMU (the reference VMM) is inside L2.
pub const L2_QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The in-L2 directory of the L3 kernels: `<flavor>/bzImage`, `<flavor>/vmlinux`.
pub const L2_KERNEL_DIR: &str = "/ghost/kernel";
/// The in-L2 directory of the L3 initramfs images: `<name>.cpio.gz` (`.cpio` if uncompressed).
pub const L2_INITRD_DIR: &str = "/ghost/initrd";
/// The in-L2 shell helper library, sourced by every scenario.
pub const L2_HELPERS: &str = "/lib/ghost.sh";

/// Modules loaded in L2 at boot, in this order, with their dependencies. Missing ones are
/// skipped and reported (`skipped=` on the `@@GHOST-L2-UP` line).
pub const L2_MODULES: &[&str] = &[
    "irqbypass",
    "kvm",
    "kvm-amd",
    "vfio",
    "vfio_iommu_type1",
    "vfio_virqfd",
    "vfio-pci-core",
    "vfio-pci",
    "tun",
];

/// The PCI slot (bus 0) of the first [`TestHost::nvme_disk`]; the next ones follow.
const L2_NVME_FIRST_SLOT: usize = 0x18;
/// At most this many: slot 0x1f is the ICH9 LPC bridge's.
const L2_NVME_MAX: usize = 7;

/// L2's PCI address of the `i`th (from 0) [`TestHost::nvme_disk`]: `0000:00:18.0`, then
/// `0000:00:19.0`, ...
pub fn l2_nvme_address(i: usize) -> String {
    format!("0000:00:{:02x}.0", L2_NVME_FIRST_SLOT + i)
}

/// Modules loaded in L2 (after [`L2_MODULES`]) when disks are attached ([`TestHost::disk`]):
/// virtio-pci and virtio-blk, with their dependencies.
pub const L2_DISK_MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// The L2 kernel command line; [`TestHost::cmdline`] appends to it. `hugepages=256` reserves
/// 512 MiB of 2 MiB pages, mounted at `/dev/hugepages`.
///
/// L1's emulated CPU now and then corrupts L2 (a kernel stack overrun, a CPU that stops:
/// tests/testhost/README.md, "Flakes"), nearly always on the CPU that takes the serial
/// console's interrupts while it runs an L3 guest. So `irqaffinity=0` keeps device interrupts
/// on CPU 0, which L2's init keeps free of the scenarios (see [`TestHost::cpus`]); and a CPU
/// that stops panics L2 (RCU stall, soft lockup) within some 20 s instead of holding the run
/// to its deadline: the harness then boots L2 again for what was left.
pub const L2_BASE_CMDLINE: &[&str] = &[
    "console=ttyS0",
    "panic=-1",
    "quiet",
    "intel_iommu=on",
    "hugepages=256",
    "irqaffinity=0",
    "softlockup_panic=1",
    "sysctl.kernel.panic_on_rcu_stall=1",
];

/// Firmware and option ROMs the in-L2 QEMU needs for `-machine q35 -kernel ... -initrd ...`
/// with its default devices (std VGA, e1000e NIC). SeaBIOS's directory is copied whole.
const QEMU_DATA_FILES: &[&str] = &[
    "/usr/share/qemu/linuxboot.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/multiboot.bin",
    "/usr/share/qemu/multiboot_dma.bin",
    "/usr/share/qemu/pvh.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/lib/ipxe/qemu/efi-e1000e.rom",
    "/usr/lib/ipxe/qemu/efi-e1000.rom",
    "/usr/lib/ipxe/qemu/efi-virtio.rom",
];
const SEABIOS_DIR: &str = "/usr/share/seabios";

const L2_INIT: &str = include_str!("l2_init.sh");
const GHOST_SH: &str = include_str!("ghost.sh");

/// Set (to anything) to keep the L2 image in the work directory after a run.
pub const KEEP_ENV: &str = "GHOST_TESTHOST_KEEP";

/// Time allowed for QEMU to boot L2 to its init, on top of the scenarios' timeouts.
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// Slack added to the host-side deadline for the L2 init's own work and power-off.
const DEADLINE_SLACK: Duration = Duration::from_secs(30);
/// How many fresh L2 boots [`TestHost::run`] may add when L2 stops before the end.
const DEFAULT_REBOOTS: u32 = 4;

/// One L2 boot at a time per process: each uses both cores of the CI machine.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Which images of an L3 kernel to put in L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelImages {
    /// `<L2_KERNEL_DIR>/<flavor>/bzImage` only.
    BzImage,
    /// `<L2_KERNEL_DIR>/<flavor>/vmlinux` only (ELF64).
    Vmlinux,
    /// Both.
    Both,
}

/// A nested test host: a Linux (Debian's cloud kernel) booted under QEMU-TCG with `-cpu max`
/// (emulated AMD SVM, so `kvm-amd` works inside), an emulated Intel IOMMU, and an initramfs
/// holding busybox, QEMU, optionally ghost-vmm, the L3 kernels and initramfs images.
/// [`run`](Self::run) boots it once and runs scenarios one after the other.
///
/// # Inside L2
///
/// | path | what |
/// |---|---|
/// | [`L2_GHOST_VMM`] `/usr/bin/ghost-vmm` | the binary given to [`ghost_vmm`](Self::ghost_vmm) |
/// | [`L2_QEMU`] `/usr/bin/qemu-system-x86_64` | QEMU with its libraries and firmware |
/// | `/ghost/kernel/cloud/{bzImage,vmlinux}` | the L3 kernel (also `generic/` if asked) |
/// | `/ghost/initrd/<name>.cpio.gz` | each [`guest`](Self::guest) image |
/// | `/lib/modules/<version>/...` | the L2 modules (busybox `modprobe` works for them) |
/// | `/dev/vda`, `/dev/vdb`, ... | each [`disk`](Self::disk), in order (writes go to a throwaway overlay) |
/// | `/ghost/debian/{vmlinuz,initrd.img}` | the Debian image's kernel and initramfs ([`debian`](Self::debian)) |
/// | [`l2_nvme_address`]`(i)` | each [`nvme_disk`](Self::nvme_disk): an NVMe controller to pass through |
/// | `/usr/share/OVMF/OVMF_{CODE,VARS}_4M.fd` | Debian's OVMF ([`with_ovmf`](Self::with_ovmf)) |
/// | `/dev/hugepages` | hugetlbfs, 256 × 2 MiB pages reserved |
/// | [`L2_HELPERS`] `/lib/ghost.sh` | helpers, sourced before each scenario |
///
/// `/lib/ghost.sh` defines `$GHOST_VMM`, `$QEMU`, `$GHOST_KERNEL`, `$GHOST_VMLINUX`,
/// `$GHOST_GENERIC_KERNEL`, `$GHOST_INITRD_DIR`, `$GHOST_DEBIAN_KERNEL`,
/// `$GHOST_DEBIAN_INITRD`, `$GHOST_OVMF_CODE`, `$GHOST_OVMF_VARS` and:
///
/// - `wait_for_line FILE STRING [TIMEOUT_S]`: wait until a line of FILE contains STRING;
/// - `vm_start NAME CMD...`: run a VMM in the background, stdin from a FIFO, output to the
///   console (timestamped by the host) and to a log;
/// - `vm_wait_for NAME STRING [TIMEOUT_S]`: wait for STRING in its output (fails if it exits);
/// - `vm_send NAME TEXT`: write a line to its stdin (the guest's serial console);
/// - `vm_wait NAME [TIMEOUT_S]`: wait for it to exit, return its status (124: killed);
/// - `vm_kill NAME`, `ghost_mark TEXT`, `hugepages_free`.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use ghost_tests::testhost::*;
///
/// let host = TestHost::new("example")?.guest("probe", GuestInitramfs::probe(true));
/// let boot = Scenario::new("boot", r#"
///     vm_start l3 $QEMU -accel kvm -machine q35 -cpu host -m 256 -nographic -no-reboot \
///         -kernel $GHOST_KERNEL -initrd $GHOST_INITRD_DIR/probe.cpio.gz \
///         -append "console=ttyS0 quiet panic=-1"
///     vm_wait_for l3 GHOST-L3-READY 60 || exit 1
///     vm_send l3 go
///     vm_wait l3 30
/// "#).timeout(Duration::from_secs(90));
/// let report = host.run(&[boot])?;
/// report["boot"].assert_success();
/// assert_eq!(report["boot"].value::<u32>("CPUS="), Some(1));
/// # Ok::<(), ghost_tests::testhost::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TestHost {
    name: String,
    assets: Assets,
    memory_mib: u32,
    cpus: u32,
    qemu_args: Vec<String>,
    cmdline: Vec<String>,
    modules: Vec<String>,
    ghost_vmm: Option<PathBuf>,
    l3_kernels: BTreeMap<KernelFlavor, KernelImages>,
    guests: Vec<(String, GuestInitramfs)>,
    files: Vec<(String, Contents, u32)>,
    binaries: Vec<(String, PathBuf)>,
    disks: Vec<PathBuf>,
    nvme_disks: Vec<PathBuf>,
    compression: Compression,
    boot_timeout: Duration,
    deadline: Option<Duration>,
    reboots: u32,
}

impl TestHost {
    /// A test host called `name` (its work files go to `<target>/testhost/<name>/`), with the
    /// defaults: 3072 MiB, 3 CPUs (the scenarios on 1-2), the cloud L3 kernel as bzImage and vmlinux, no ghost-vmm.
    /// Prepares the [`Assets`] if needed.
    pub fn new(name: &str) -> Result<Self> {
        check_name("test host", name)?;
        Ok(TestHost {
            name: name.to_owned(),
            assets: Assets::ensure()?,
            memory_mib: 3072,
            cpus: 3,
            qemu_args: Vec::new(),
            cmdline: Vec::new(),
            modules: Vec::new(),
            ghost_vmm: None,
            l3_kernels: BTreeMap::from([(KernelFlavor::Cloud, KernelImages::Both)]),
            guests: Vec::new(),
            files: Vec::new(),
            binaries: Vec::new(),
            disks: Vec::new(),
            nvme_disks: Vec::new(),
            compression: Compression::None,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            deadline: None,
            reboots: DEFAULT_REBOOTS,
        })
    }

    /// The assets in use.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// L2's memory in MiB (default 3072; 512 MiB of it are reserved huge pages).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// L2's CPU count (default 3). With more than one, L2's init runs the scenarios on CPUs
    /// 1 and up, so L3 guests get all but CPU 0, which keeps the device interrupts
    /// ([`L2_BASE_CMDLINE`]): the default gives L3 two CPUs, as many as the machine's cores.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Extra QEMU arguments for L2, e.g. `["-device", "edu"]` for a device to pass through.
    pub fn qemu_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.qemu_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Extra words for the L2 kernel command line (after [`L2_BASE_CMDLINE`]).
    pub fn cmdline<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmdline.extend(words.into_iter().map(Into::into));
        self
    }

    /// Extra L2 modules to load after [`L2_MODULES`] (e.g. `bridge`).
    pub fn modules<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.modules.extend(names.into_iter().map(Into::into));
        self
    }

    /// Puts this ghost-vmm binary (and its shared libraries) at [`L2_GHOST_VMM`].
    pub fn ghost_vmm(mut self, binary: impl Into<PathBuf>) -> Self {
        self.ghost_vmm = Some(binary.into());
        self
    }

    /// Puts the binary found by [`ghost_vmm_binary`] at [`L2_GHOST_VMM`].
    pub fn with_built_ghost_vmm(self) -> Result<Self> {
        Ok(self.ghost_vmm(ghost_vmm_binary()?))
    }

    /// Chooses the images of an L3 kernel to include (default: cloud, both).
    pub fn l3_kernel(mut self, flavor: KernelFlavor, images: KernelImages) -> Self {
        self.l3_kernels.insert(flavor, images);
        self
    }

    /// Leaves an L3 kernel out (the cloud vmlinux alone is ~50 MiB of image).
    pub fn without_l3_kernel(mut self, flavor: KernelFlavor) -> Self {
        self.l3_kernels.remove(&flavor);
        self
    }

    /// Builds `image` and puts it at `/ghost/initrd/<name>.cpio.gz` in L2 (`.cpio` if the image
    /// is uncompressed).
    pub fn guest(mut self, name: &str, image: GuestInitramfs) -> Self {
        self.guests.push((name.to_owned(), image));
        self
    }

    /// Adds a file with these contents and permission bits at `dest` in L2.
    pub fn file(
        mut self,
        dest: impl Into<String>,
        contents: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Self {
        self.files
            .push((dest.into(), Contents::Bytes(contents.into()), mode));
        self
    }

    /// Adds the host file `src` at `dest` in L2.
    pub fn host_file(
        mut self,
        dest: impl Into<String>,
        src: impl Into<PathBuf>,
        mode: u32,
    ) -> Self {
        self.files
            .push((dest.into(), Contents::Host(src.into()), mode));
        self
    }

    /// Adds the host executable `src` at `dest` in L2, with the shared libraries `ldd` lists.
    pub fn binary(mut self, dest: impl Into<String>, src: impl Into<PathBuf>) -> Self {
        self.binaries.push((dest.into(), src.into()));
        self
    }

    /// Attaches the raw disk image `path` to L2 as a virtio-blk disk: the first is `/dev/vda`,
    /// the next `/dev/vdb`, and so on (the same image may be attached more than once, each a
    /// fresh copy). L1 QEMU opens it with `snapshot=on`: L2 may write to the disk, but the
    /// writes go to a temporary overlay dropped when L2 exits, and `path` stays as it was.
    /// L2's init loads [`L2_DISK_MODULES`] before the first scenario, so the devices are there
    /// when it starts.
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(path.into());
        self
    }

    /// Attaches the raw disk image `path` to L2 as an emulated NVMe controller with one
    /// namespace (`snapshot=on`, as [`disk`](Self::disk)), at the fixed PCI address
    /// [`l2_nvme_address`]`(i)` for the `i`th (from 0; at most 7): a device to pass through
    /// to an L3 guest (bind it to `vfio-pci` first; L2's kernel has the NVMe driver built in,
    /// so the disk is also `/dev/nvme<i>n1` in L2 until then).
    pub fn nvme_disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.nvme_disks.push(path.into());
        self
    }

    /// Puts Debian's OVMF ([`Ovmf::ensure`]) into L2 at [`L2_OVMF_DIR`] (`/usr/share/OVMF`,
    /// as on a Debian host: [`L2_OVMF_CODE`], [`L2_OVMF_VARS`], [`L2_OVMF_CODE_SECBOOT`],
    /// [`L2_OVMF_VARS_MS`]; `$GHOST_OVMF_CODE` and `$GHOST_OVMF_VARS` in scenarios; 8 MiB of
    /// L2 image), and makes sure L1 is the fixed QEMU ([`L1Qemu`]: Debian's aborts when an
    /// L3 guest writes CR8, which OVMF does), running `setup.sh` to build it if needed.
    /// With `$GHOST_L1_QEMU` set, that binary is used whatever it is.
    ///
    /// [`L2_OVMF_DIR`]: super::L2_OVMF_DIR
    /// [`L2_OVMF_CODE`]: super::L2_OVMF_CODE
    /// [`L2_OVMF_VARS`]: super::L2_OVMF_VARS
    /// [`L2_OVMF_CODE_SECBOOT`]: super::L2_OVMF_CODE_SECBOOT
    /// [`L2_OVMF_VARS_MS`]: super::L2_OVMF_VARS_MS
    pub fn with_ovmf(mut self) -> Result<Self> {
        let ovmf = Ovmf::ensure()?;
        if !self.assets.l1_qemu.fixed && std::env::var_os(L1_QEMU_ENV).is_none() {
            run_setup()?;
            self.assets.l1_qemu = L1Qemu::locate(&self.assets.cache_dir, &self.assets.qemu)?;
            if !self.assets.l1_qemu.fixed {
                return Err(Error::MissingAsset {
                    what: "L1 QEMU with the CR8 fix (tests/testhost/l1-qemu.sh)",
                    path: self.assets.cache_dir.join("qemu-l1-<hash>"),
                });
            }
        }
        for (dest, src) in ovmf.l2_files() {
            self = self.host_file(dest, src, 0o644);
        }
        Ok(self)
    }

    /// Puts the kernel and initramfs of `image` into L2 at [`L2_DEBIAN_VMLINUZ`] and
    /// [`L2_DEBIAN_INITRD`] (`$GHOST_DEBIAN_KERNEL`, `$GHOST_DEBIAN_INITRD`), for a direct
    /// kernel boot of the image, which [`disk`](Self::disk) attaches. (About 27 MiB more of
    /// L2 image, copied at packing time: cheaper than a second drive or than extracting them
    /// from the disk inside L2, where every byte costs emulated CPU time.)
    pub fn debian(self, image: &DebianImage) -> Self {
        self.host_file(L2_DEBIAN_VMLINUZ, &image.vmlinuz, 0o644)
            .host_file(L2_DEBIAN_INITRD, &image.initrd, 0o644)
    }

    /// The L2 image's compression (default none: under TCG, decompressing ~100 MiB costs more
    /// boot time than QEMU loading it).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Time allowed for L2 to reach its init (default 90 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// Overrides the host-side deadline of a whole run (default: boot timeout + the scenarios'
    /// timeouts + 30 s). QEMU is killed when it passes.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How many more times [`run`](Self::run) may boot L2 when a boot stops before the end of
    /// its scenarios (default 4; 0 for exactly one boot).
    pub fn reboots(mut self, reboots: u32) -> Self {
        self.reboots = reboots;
        self
    }

    /// The directory of this test host's work files (images, console log).
    pub fn work_dir(&self) -> PathBuf {
        target_dir().join("testhost").join(&self.name)
    }

    /// Boots L2 and runs `scenarios` in order, each under its own timeout, then powers L2 off.
    /// Returns what every scenario printed, timestamped on the host.
    ///
    /// The L2 console goes to `<work_dir>/console.log` and, line by line, to stderr (which the
    /// test harness shows when a test fails). QEMU is killed at the deadline and whenever this
    /// returns. The L2 image is deleted afterwards unless `$GHOST_TESTHOST_KEEP` is set
    /// ([`KEEP_ENV`]); the L3 images stay. Runs in one process are serialized.
    ///
    /// A boot that stops before its last scenario ended (L2's kernel hung or crashed, or L1
    /// QEMU exited) is the test host's failure, not a scenario's: a scenario can only exit or
    /// time out inside L2. Up to [`reboots`](Self::reboots) fresh boots then run what is left:
    /// the scenarios that never started, and the one that was running, unless L2 has stopped
    /// under it [`MAX_STOPS_UNDER`](super::rerun::MAX_STOPS_UNDER) times. The report
    /// keeps the result of each scenario's last run and says, in
    /// [`early_stops`](RunReport::early_stops), which boot stopped where; boot N > 1 logs to
    /// `console-N.log`.
    ///
    /// Errors if the image cannot be built, QEMU cannot start, or L2 never reaches its init
    /// on the first boot.
    pub fn run(&self, scenarios: &[Scenario]) -> Result<RunReport> {
        let _serial = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names = BTreeSet::new();
        for s in scenarios {
            check_name("scenario", &s.name)?;
            if !names.insert(s.name.as_str()) {
                return Err(Error::Config(format!("two scenarios named {:?}", s.name)));
            }
        }

        // Logs of an earlier run's extra boots would pass for this run's.
        let work = self.work_dir();
        if let Ok(entries) = fs::read_dir(&work) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("console-") && name.ends_with(".log") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }

        let mut report = self.boot(scenarios, 1)?;
        let mut stopped = Stop::of(&report);
        let mut stops = BTreeMap::new();
        let mut boot = 1;
        while let Some(stop) = stopped.take() {
            let again = left_over(scenarios, &report, &mut stops);
            let more = !again.is_empty() && boot <= self.reboots;
            let line = stop.describe(boot, &self.log_path(boot), &again, more);
            eprintln!("testhost[{}]: {line}", self.name);
            report.early_stops.push(line);
            if !more {
                break;
            }
            boot += 1;
            match self.boot(&again, boot) {
                Ok(next) => {
                    stopped = Stop::of(&next);
                    report.absorb(next);
                }
                Err(e) => {
                    let line = format!("boot {boot} failed: {e}");
                    eprintln!("testhost[{}]: {line}", self.name);
                    report.early_stops.push(line);
                }
            }
        }
        Ok(report)
    }

    /// The console log of the `n`th boot of a run.
    fn log_path(&self, n: u32) -> PathBuf {
        if n == 1 {
            self.work_dir().join("console.log")
        } else {
            self.work_dir().join(format!("console-{n}.log"))
        }
    }

    /// One L2 boot running `scenarios`; the `n`th of a [`run`](Self::run).
    fn boot(&self, scenarios: &[Scenario], n: u32) -> Result<RunReport> {
        let work = self.work_dir();
        fs::create_dir_all(&work).map_err(|e| Error::io("creating", &work, e))?;
        let packing = Instant::now();
        let image = work.join(format!("l2{}", self.compression.suffix()));
        let l2_image_bytes = self.build_image(&work, &image, scenarios)?;
        let pack_time = packing.elapsed();

        let log_path = self.log_path(n);
        let log = File::create(&log_path).map_err(|e| Error::io("creating", &log_path, e))?;
        eprintln!(
            "testhost[{}]: packed {:.1} MiB in {:.1}s; console log: {}",
            self.name,
            l2_image_bytes as f64 / f64::from(1 << 20),
            pack_time.as_secs_f64(),
            log_path.display()
        );

        let deadline = self.deadline.unwrap_or_else(|| {
            self.boot_timeout
                + DEADLINE_SLACK
                + scenarios.iter().map(|s| s.timeout).sum::<Duration>()
        });
        let mut session = QemuSession::start(self.qemu_command(&image), log, &log_path)?;
        let mut transcript =
            Transcript::new(scenarios.iter().map(|s| (s.name.as_str(), s.timeout)));
        let deadline_hit =
            session.read_until(deadline, self.boot_timeout, &mut transcript, &self.name)?;
        let (exit_status, qemu_stderr, wall) = session.finish();
        if std::env::var_os(KEEP_ENV).is_none() {
            // QEMU has read it; it is big (~100 MiB) and rebuilt every run.
            let _ = fs::remove_file(&image);
        }

        if transcript.l2_up_at.is_none() {
            let reason = if deadline_hit {
                format!(
                    "no init within {}s (boot timeout or deadline)",
                    self.boot_timeout.min(deadline).as_secs()
                )
            } else {
                match exit_status {
                    Some(status) => format!("QEMU exited ({status}) first"),
                    None => "QEMU was killed first".to_owned(),
                }
            };
            let mut tail = String::new();
            for l in transcript.lines.iter().rev().take(30).rev() {
                let _ = writeln!(tail, "{}", l.text);
            }
            let _ = write!(tail, "QEMU stderr: {}", qemu_stderr.trim());
            return Err(Error::L2DidNotBoot {
                reason,
                log: log_path,
                tail,
            });
        }

        let report = RunReport {
            scenarios: transcript.scenarios,
            lines: transcript.lines,
            l2_up_at: transcript.l2_up_at,
            l2_info: transcript.l2_info,
            completed: transcript.completed,
            deadline_hit,
            exit_status,
            qemu_stderr,
            log_path,
            wall,
            pack_time,
            l2_image_bytes,
            early_stops: Vec::new(),
        };
        eprint!("{report}");
        Ok(report)
    }

    /// Boots L2 with `script` (a busybox `sh` script, with `/lib/ghost.sh` sourced) attached to
    /// this process's terminal through L2's serial console, and waits for L2 to power off: the
    /// interactive demo. QEMU's own escape (Ctrl-A X) also ends it.
    pub fn interactive(&self, script: &str) -> Result<std::process::ExitStatus> {
        let work = self.work_dir();
        fs::create_dir_all(&work).map_err(|e| Error::io("creating", &work, e))?;
        let image = work.join(format!("l2{}", self.compression.suffix()));
        let with_script = self.clone().file("/ghost/interactive.sh", script, 0o755);
        with_script.build_image(&work, &image, &[])?;
        let mut cmd = with_script.qemu_command(&image);
        let status = cmd
            .status()
            .map_err(|e| Error::io("starting", &self.assets.l1_qemu.binary, e))?;
        let _ = fs::remove_file(&image);
        Ok(status)
    }

    /// The QEMU command line that boots L2 from `image`.
    fn qemu_command(&self, image: &Path) -> Command {
        let mut cmdline: Vec<&str> = L2_BASE_CMDLINE.to_vec();
        cmdline.extend(self.cmdline.iter().map(String::as_str));
        let l1 = &self.assets.l1_qemu;
        let mut cmd = Command::new(&l1.binary);
        cmd.args(&l1.args)
            .args(["-accel", "tcg,thread=multi"])
            .args(["-machine", "q35,kernel-irqchip=split"])
            .args(["-cpu", "max"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-nographic", "-no-reboot"])
            .args(["-device", "intel-iommu,intremap=on,caching-mode=on"])
            .args(&self.qemu_args);
        for disk in &self.disks {
            // QEMU's option syntax doubles a comma inside a value.
            let file = disk.to_string_lossy().replace(',', ",,");
            cmd.arg("-drive")
                .arg(format!("file={file},if=virtio,format=raw,snapshot=on"));
        }
        for (i, disk) in self.nvme_disks.iter().enumerate() {
            let file = disk.to_string_lossy().replace(',', ",,");
            cmd.arg("-drive")
                .arg(format!(
                    "file={file},if=none,id=ghost-nvme{i},format=raw,snapshot=on"
                ))
                .arg("-device")
                .arg(format!(
                    "nvme,drive=ghost-nvme{i},serial=ghost-nvme{i},addr={:#x}",
                    L2_NVME_FIRST_SLOT + i
                ));
        }
        cmd.arg("-kernel")
            .arg(&self.assets.cloud.bzimage)
            .arg("-initrd")
            .arg(image)
            .args(["-append", &cmdline.join(" ")]);
        cmd
    }

    /// Writes the L2 image (and the L3 images it holds) into `work`.
    fn build_image(&self, work: &Path, out: &Path, scenarios: &[Scenario]) -> Result<u64> {
        let assets = &self.assets;
        let mut archive = Archive::default();
        add_busybox(&mut archive, assets)?;
        for dir in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/var/tmp"] {
            archive.dir(dir)?;
        }
        archive.file("/init", Contents::Bytes(L2_INIT.as_bytes().to_vec()), 0o755)?;
        archive.file(
            L2_HELPERS,
            Contents::Bytes(GHOST_SH.as_bytes().to_vec()),
            0o644,
        )?;

        let mut wanted: Vec<&str> = L2_MODULES.to_vec();
        wanted.extend(self.modules.iter().map(String::as_str));
        if !self.disks.is_empty() {
            wanted.extend(L2_DISK_MODULES);
        }
        if self.nvme_disks.len() > L2_NVME_MAX {
            return Err(Error::Config(format!(
                "{} NVMe disks: at most {L2_NVME_MAX}",
                self.nvme_disks.len()
            )));
        }
        for disk in self.disks.iter().chain(&self.nvme_disks) {
            if !disk.is_file() {
                return Err(Error::MissingAsset {
                    what: "disk image",
                    path: disk.clone(),
                });
            }
        }
        let (modules, missing) = assets.cloud.resolve_modules(&wanted);
        add_modules(&mut archive, &assets.cloud, &modules, &missing)?;

        add_dynamic_binary(&mut archive, L2_QEMU, &assets.qemu)?;
        for file in QEMU_DATA_FILES {
            if Path::new(file).is_file() {
                archive.file(file, Contents::Host(PathBuf::from(file)), 0o644)?;
            }
        }
        let seabios =
            fs::read_dir(SEABIOS_DIR).map_err(|e| Error::io("listing", SEABIOS_DIR, e))?;
        for entry in seabios {
            let path = entry
                .map_err(|e| Error::io("listing", SEABIOS_DIR, e))?
                .path();
            if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                archive.file(
                    &format!("{SEABIOS_DIR}/{name}"),
                    Contents::Host(path.clone()),
                    0o644,
                )?;
            }
        }

        if let Some(vmm) = &self.ghost_vmm {
            if !vmm.is_file() {
                return Err(Error::GhostVmmNotBuilt {
                    searched: vmm.display().to_string(),
                });
            }
            add_dynamic_binary(&mut archive, L2_GHOST_VMM, vmm)?;
        }
        for (dest, src) in &self.binaries {
            add_dynamic_binary(&mut archive, dest, src)?;
        }

        for (flavor, images) in &self.l3_kernels {
            let kernel = assets.kernel(*flavor);
            let dir = format!("{L2_KERNEL_DIR}/{}", flavor.name());
            if matches!(images, KernelImages::BzImage | KernelImages::Both) {
                archive.file(
                    &format!("{dir}/bzImage"),
                    Contents::Host(kernel.bzimage.clone()),
                    0o644,
                )?;
            }
            if matches!(images, KernelImages::Vmlinux | KernelImages::Both) {
                archive.file(
                    &format!("{dir}/vmlinux"),
                    Contents::Host(kernel.vmlinux.clone()),
                    0o644,
                )?;
            }
        }
        for (name, guest) in &self.guests {
            check_name("guest image", name)?;
            let file = format!("l3-{name}{}", guest.compression_kind().suffix());
            let host_path = work.join(&file);
            guest.build(assets, &host_path)?;
            archive.file(
                &format!(
                    "{L2_INITRD_DIR}/{name}{}",
                    guest.compression_kind().suffix()
                ),
                Contents::Host(host_path),
                0o644,
            )?;
        }

        for (dest, contents, mode) in &self.files {
            archive.file(dest, contents.clone(), *mode)?;
        }

        let mut list = String::new();
        for (i, s) in scenarios.iter().enumerate() {
            let timeout = s.timeout.as_secs() + u64::from(s.timeout.subsec_nanos() > 0);
            let _ = writeln!(list, "{i} {} {}", timeout.max(1), s.name);
            let script = format!(
                "#!/bin/sh\n# scenario {}\n. {L2_HELPERS}\n{}\n",
                s.name, s.script
            );
            archive.file(
                &format!("/ghost/scenarios/{i}.sh"),
                Contents::Bytes(script.into_bytes()),
                0o755,
            )?;
        }
        archive.file(
            "/ghost/scenarios.list",
            Contents::Bytes(list.into_bytes()),
            0o644,
        )?;

        archive.write(out, self.compression)
    }
}

/// Names become file names and marker words: `[A-Za-z0-9._-]+`.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} name {name:?}: use letters, digits, '.', '_', '-'"
        )))
    }
}
