//! The VMMs under test and how each one runs every guest of the benchmark: the general guest,
//! the passthrough guest, the Debian image and the installed Debian through OVMF (started,
//! then stopped through the guest's ACPI power button).

use ghost_tests::testhost::DEBIAN_CMDLINE;

use super::firmware::{self, FirmwareCmds};
use super::{CMDLINE, DISK, EDU, KERNEL, L2_CLOUD_HYPERVISOR, L2_PTYRUN, NVME, VMLINUX};

/// Where a boot command names its vCPU count.
pub(super) const VCPUS: &str = "@VCPUS@";

/// One VMM under test: how it runs the general guest and the passthrough guest.
pub(super) struct Vmm {
    pub(super) label: &'static str,
    /// Short name for scenario names.
    pub(super) short: &'static str,
    pub(super) general: String,
    pub(super) passthrough: String,
    /// Whether a missing figure fails the run (ghost-vmm and the QEMU it is judged against);
    /// the other columns are for reference.
    pub(super) required: bool,
    /// Whether the guest reaches config space through 0xCF8/0xCFC (not so on microvm, whose
    /// PCIe host is ECAM only): the PIO figure is taken only where it is PIO.
    pub(super) config_pio: bool,
    /// How it boots the boot guest with [`VCPUS`] vCPUs (L2 shell text); `None` where the
    /// multi-vCPU boots are not measured.
    pub(super) boot: Option<String>,
    /// Why not (where `boot` is `None`), for the results.
    pub(super) no_boot: &'static str,
    /// How it boots the boot guest's kernel as the ELF vmlinux with [`VCPUS`] vCPUs; `None`
    /// where that is not measured.
    pub(super) boot_elf: Option<String>,
    /// Whether its general guest boots the bzImage, the image of the `boot_ms` figure (Cloud
    /// Hypervisor's boots the vmlinux).
    pub(super) bzimage: bool,
    /// How it boots the Debian image and stops it; `None` where that is not measured.
    pub(super) debian: Option<DebianCmds>,
    /// Why the Debian image is not booted (where `debian` is `None`), for the results.
    pub(super) no_debian: &'static str,
    /// How it boots the installed Debian through OVMF and stops it; `None` where that is not
    /// measured (only the required VMMs boot the firmware).
    pub(super) firmware: Option<FirmwareCmds>,
}

/// A VMM's commands for the Debian guest, as L2 shell text.
pub(super) struct DebianCmds {
    /// The VMM's command line, with [`DISK`] for L2's disk (`vdb`).
    pub(super) start: String,
    /// Asks VM `$vm` to stop (presses its power button); returns at once.
    pub(super) stop: &'static str,
    /// Runs once the VMM has exited (collects what the stop request printed).
    pub(super) after: &'static str,
}

/// ghost-vmm's stop request: SIGTERM presses the guest's ACPI power button.
pub(super) const GHOST_STOP: &str = r#"kill -TERM "$(cat "$GHOST_VM_DIR/$vm.pid")""#;

/// QEMU's: QMP `system_powerdown` (the guest's ACPI power button). Busybox's `nc` has no unix
/// sockets, so QMP listens on L2's loopback; the connection is held open while QEMU answers.
pub(super) const QMP_STOP: &str = r#"(printf '{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n'; sleep 2) \
    | nc 127.0.0.1 4444 >/tmp/qmp.out 2>&1 &
qmp=$!"#;

pub(super) const QMP_AFTER: &str = r#"wait $qmp
echo "QMP_SAID=$(tr '\n' ' ' </tmp/qmp.out)""#;

pub(super) fn vmms(cloud_hypervisor: bool) -> Vec<Vmm> {
    // QEMU as lean as it is configured for this job: no default devices, no VGA, modern-only
    // virtio (as ghost-vmm's), the same disk and TAP. vhost-net is off: L2 has no vhost_net,
    // and ghost-vmm has no vhost either.
    let qemu_smp = |machine: &str, smp: &str, initrd: &str, devices: &str| {
        format!(
            "$QEMU -accel kvm -machine {machine} -cpu host -smp {smp} -m 256 -nodefaults \
             -no-user-config -display none -serial stdio -no-reboot -kernel {KERNEL} \
             -initrd /ghost/initrd/{initrd}.cpio.gz -append \"{CMDLINE}\" {devices}"
        )
    };
    let qemu = |machine: &str, initrd: &str, devices: &str| qemu_smp(machine, "1", initrd, devices);
    let virtio = "-drive file=/tmp/bench.img,if=none,id=d0,format=raw \
                  -device virtio-blk-pci,drive=d0,disable-legacy=on \
                  -netdev tap,id=n0,ifname=tapb,script=no,downscript=no,vhost=off \
                  -device virtio-net-pci,netdev=n0,disable-legacy=on";
    let vfio = format!("-device vfio-pci,host={EDU} -device vfio-pci,host={NVME}");
    // The Debian image: the same vCPUs, RAM and disk as ghost-vmm's VM file, a QMP socket to
    // press the power button.
    let qemu_debian = |machine: &str| DebianCmds {
        start: format!(
            "$QEMU -accel kvm -machine {machine} -cpu host -smp 2 -m 1024 -nodefaults \
             -no-user-config -display none -serial stdio -no-reboot \
             -kernel $GHOST_DEBIAN_KERNEL -initrd $GHOST_DEBIAN_INITRD \
             -append \"{DEBIAN_CMDLINE}\" \
             -drive file=/dev/{DISK},if=none,id=d0,format=raw \
             -device virtio-blk-pci,drive=d0,disable-legacy=on \
             -qmp tcp:127.0.0.1:4444,server=on,wait=off"
        ),
        stop: QMP_STOP,
        after: QMP_AFTER,
    };
    let mut vmms = vec![
        Vmm {
            label: "ghost-vmm",
            short: "ghost",
            general: "env GHOST_LOG=info $GHOST_VMM run --exit-stats /ghost/vm/bench.toml".into(),
            passthrough: "env GHOST_LOG=info $GHOST_VMM run --exit-stats /ghost/vm/pt.toml".into(),
            required: true,
            config_pio: true,
            boot: Some(format!(
                "env GHOST_LOG=info $GHOST_VMM run /ghost/vm/boot-{VCPUS}.toml"
            )),
            no_boot: "",
            boot_elf: Some(format!(
                "env GHOST_LOG=info $GHOST_VMM run /ghost/vm/elf-{VCPUS}.toml"
            )),
            bzimage: true,
            debian: Some(DebianCmds {
                start: format!("env GHOST_LOG=info $GHOST_VMM run /ghost/vm/debian-{DISK}.toml"),
                stop: GHOST_STOP,
                after: "",
            }),
            no_debian: "",
            firmware: Some(firmware::ghost()),
        },
        Vmm {
            label: "QEMU q35",
            short: "q35",
            general: qemu("q35", "bench", virtio),
            passthrough: qemu("q35", "pt", &vfio),
            required: true,
            config_pio: true,
            boot: Some(qemu_smp("q35", VCPUS, "boot", virtio)),
            no_boot: "",
            boot_elf: None,
            bzimage: true,
            debian: Some(qemu_debian("q35")),
            no_debian: "",
            firmware: Some(firmware::qemu_q35()),
        },
        // microvm with a PCIe host (GPEX, ECAM only) so that the same virtio-pci and vfio-pci
        // devices plug in; SeaBIOS's microvm build as firmware.
        Vmm {
            label: "QEMU microvm",
            short: "microvm",
            general: qemu("microvm,pcie=on", "bench", virtio),
            passthrough: qemu("microvm,pcie=on", "pt", &vfio),
            required: false,
            config_pio: false,
            boot: None,
            no_boot: "not taken (a reference column; the 1-vCPU boot is in the general run)",
            boot_elf: None,
            bzimage: true,
            debian: Some(qemu_debian("microvm,pcie=on")),
            no_debian: "",
            firmware: None,
        },
        // The same ghost-vmm without its sandbox (seccomp filters, landlock): what
        // confinement costs, side by side in one run (issue 15: within the noise).
        Vmm {
            label: "ghost-vmm, no sandbox",
            short: "ghostns",
            general:
                "env GHOST_LOG=info $GHOST_VMM run --no-sandbox --exit-stats /ghost/vm/bench.toml"
                    .into(),
            passthrough:
                "env GHOST_LOG=info $GHOST_VMM run --no-sandbox --exit-stats /ghost/vm/pt.toml"
                    .into(),
            required: false,
            config_pio: true,
            boot: None,
            no_boot: "not taken (the sandbox's cost is in the block, net and exit figures)",
            boot_elf: None,
            bzimage: true,
            // What confinement costs is in the block, net and exit figures; a Debian boot would
            // take a disk copy from the other columns' runs.
            debian: None,
            no_debian: "not taken (the sandbox's cost is in the block, net and exit figures)",
            firmware: None,
        },
    ];
    if cloud_hypervisor {
        // The user's own build, for reference: PVH boot of the same kernel as vmlinux, the
        // same disk, TAP and devices, the 16550 on stdio, which it reads only from a terminal:
        // on one of ptyrun's (the same process: ptyrun execs it).
        let ch_smp = |cpus: &str, initrd: &str, devices: &str| {
            format!(
                "{L2_PTYRUN} {L2_CLOUD_HYPERVISOR} --cpus boot={cpus} --memory size=256M --kernel {VMLINUX} \
                 --initramfs /ghost/initrd/{initrd}.cpio.gz --cmdline \"{CMDLINE}\" \
                 --serial tty --console off {devices}"
            )
        };
        let ch = |initrd: &str, devices: &str| ch_smp("1", initrd, devices);
        let ch_virtio = "--disk path=/tmp/bench.img --net tap=tapb";
        vmms.push(Vmm {
            label: "Cloud Hypervisor",
            short: "ch",
            general: ch("bench", ch_virtio),
            passthrough: ch(
                "pt",
                &format!(
                    "--device path=/sys/bus/pci/devices/{EDU}/ path=/sys/bus/pci/devices/{NVME}/"
                ),
            ),
            required: false,
            config_pio: true,
            // It boots the vmlinux only: its boot figures are the vmlinux's.
            boot: None,
            no_boot: "not taken (it boots ELF kernels only: see the vmlinux boots)",
            boot_elf: Some(ch_smp(VCPUS, "boot", ch_virtio)),
            bzimage: false,
            // The image's kernel is a bzImage; Cloud Hypervisor boots PVH ELF kernels only.
            debian: None,
            no_debian: "not taken (the image's kernel is a bzImage; Cloud Hypervisor boots PVH \
                        ELF kernels only)",
            firmware: None,
        });
    }
    vmms
}

/// How the boot figures were taken, and why some columns have none of the multi-vCPU ones.
pub(super) fn boot_notes(vmms: &[Vmm]) -> String {
    let mut md = String::from(
        "\n## The boot figures\n\n\
         - from the line L2 prints just before it starts the VMM to the guest init's first line \
         (host timestamps of L2's console lines); 1 vCPU: the general guest's boot; 2 and 4 \
         vCPUs: a guest that only boots and powers off, with the same kernel, modules, disk and \
         TAP and 256 MiB.\n\
         - ghost-vmm and QEMU boot the bzImage (its kernel decompresses itself). Cloud \
         Hypervisor boots ELF kernels only: its figures are the rows of the same kernel's \
         vmlinux (PVH), which ghost-vmm boots too (its ELF loader), so that its ratio to Cloud \
         Hypervisor compares one image.\n\
         - the boot-only runs (2 and 4 vCPUs, and the vmlinux's) are taken in full runs only \
         (not with --quick).\n\
         - before every scenario L2 writes 768 MiB of fresh memory (`tests/guest-tools/scrub.c`): \
         L1's TCG keeps its translations of the last guest's code on the pages that guest \
         freed, and the first writes to them cost up to 0.9 s per 2 MiB to whichever VM got \
         them next (tests/testhost/README.md, \"Timing\").\n",
    );
    for v in vmms.iter().filter(|v| v.boot.is_none()) {
        md.push_str(&format!(
            "- {}, the bzImage with 2 and 4 vCPUs: {}.\n",
            v.label, v.no_boot
        ));
    }
    md
}
