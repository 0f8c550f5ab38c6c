//! The firmware boot: the installed Debian (`DebianImage::efi_image`: a GPT disk, an ESP with
//! systemd-boot, root ext4 by PARTUUID) booted by Debian's OVMF to multi-user and stopped by
//! its ACPI power button, under ghost-vmm (`[boot] firmware`) and QEMU q35 (OVMF as pflash),
//! each boot on its own pristine copy of the disk and of OVMF's variable store.
//!
//! Besides the boot and the stop, the firmware's share of the boot: VMM start to the kernel's
//! first line (`Linux version`, which the loader entry's `loglevel=6` shows through `quiet`),
//! and, for ghost-vmm, how many exits the firmware caused (its control API's exit counters,
//! read with `ghost-vmm status` as soon as the banner is on the console).

use std::fmt::Write as _;
use std::time::Duration;

use ghost_tests::testhost::{qemu_ovmf_args, ScenarioResult, L2_OVMF_CODE};

use super::guests::ready_settle_stop;
use super::vmms::{GHOST_STOP, QMP_AFTER, QMP_STOP};
use super::{Options, Vmm, DISK, READY_LINE};

/// The kernel's first line on the console: where the firmware's share of a boot ends.
pub(super) const LINUX_BANNER: &str = "Linux version";
/// Printed by the L2 script before ghost-vmm's `status` line `exits:` (see [`ghost`]).
const EXITS_LINE: &str = "FIRMWARE_EXITS=";
/// The firmware figures, taken only of VMMs with a [`Vmm::firmware`] (`firmware_exits` of
/// ghost-vmm alone: it is ghost-only).
pub(super) const FIRMWARE_FIGURES: &[&str] = &[
    "firmware_boot_s",
    "firmware_share_s",
    "firmware_exits",
    "firmware_stop_s",
];

/// A VMM's commands for the firmware boot, as L2 shell text; [`DISK`] stands for L2's disk
/// (`vdc`), `$vm` for the scenario's VM name.
#[derive(Debug)]
pub(super) struct FirmwareCmds {
    /// Runs before the start mark: gives the VM a fresh copy of OVMF's variable store.
    pub(super) setup: String,
    /// The VMM's command line.
    pub(super) start: String,
    /// Runs as soon as the console shows [`LINUX_BANNER`]; prints what the VMM can tell of the
    /// firmware's part of the boot (ghost-vmm: its exit counters), or nothing.
    pub(super) at_banner: String,
    /// Asks VM `$vm` to stop (presses its power button); returns at once.
    pub(super) stop: &'static str,
    /// Runs once the VMM has exited.
    pub(super) after: &'static str,
}

/// The name of ghost-vmm's VM on L2's disk `disk` (`vdc`): `efi-vdc`, its VM file
/// `/ghost/vm/efi-vdc.toml` and its variable store `/tmp/efi-vdc.vars`.
fn ghost_vm(disk: &str) -> String {
    format!("efi-{disk}")
}

/// Where [`ghost_vm_file`]`(disk)` goes in L2.
pub(super) fn ghost_vm_path(disk: &str) -> String {
    format!("/ghost/vm/{}.toml", ghost_vm(disk))
}

/// ghost-vmm's VM file for the installed Debian on L2's disk `disk` (`vdc`): as the firmware
/// test's (`tests/tests/firmware.rs`), OVMF from L2's `/usr/share/OVMF`, its variable store in
/// `/tmp`, 2 vCPUs, 1 GiB, the disk; no NIC; a guest reset boots it again (as QEMU's
/// command does: nested, OVMF now and then resets early in its boot, under either VMM).
pub(super) fn ghost_vm_file(disk: &str) -> String {
    let vm = ghost_vm(disk);
    format!(
        "[vm]\nname = \"{vm}\"\nvcpus = 2\n\n[memory]\nsize = \"1G\"\n\n\
         [boot]\nfirmware = \"{L2_OVMF_CODE}\"\nfirmware_vars = \"/tmp/{vm}.vars\"\n\n\
         [serial]\nmode = \"stdio\"\n\n[[disk]]\npath = \"/dev/{disk}\"\n"
    )
}

/// ghost-vmm: the VM file of [`ghost_vm_file`]; its exit counters sampled when the kernel's
/// banner appears (`ghost-vmm status`, whose `exits:` line the script prints after
/// [`EXITS_LINE`]); SIGTERM presses the power button.
pub(super) fn ghost() -> FirmwareCmds {
    let vm = ghost_vm(DISK);
    FirmwareCmds {
        setup: format!("cp $GHOST_OVMF_VARS /tmp/{vm}.vars"),
        start: format!("env GHOST_LOG=info $GHOST_VMM run {}", ghost_vm_path(DISK)),
        at_banner: format!(
            "$GHOST_VMM status {vm} 2>&1 | sed -n -e 's/^exits: */{EXITS_LINE}/p' \
             -e 's/^ghost-vmm: /FIRMWARE_STATUS: /p'"
        ),
        stop: GHOST_STOP,
        after: "",
    }
}

/// QEMU q35 with OVMF as its two flash drives (as `qemu_ovmf` of the firmware test), the same
/// vCPUs, RAM and disk as ghost-vmm's VM file, QMP for the power button.
pub(super) fn qemu_q35() -> FirmwareCmds {
    FirmwareCmds {
        setup: "cp $GHOST_OVMF_VARS /tmp/$vm.vars".into(),
        start: format!(
            "$QEMU -accel kvm -machine q35 -cpu host -smp 2 -m 1G -nodefaults \
             -no-user-config -display none -serial stdio {ovmf} \
             -drive file=/dev/{DISK},if=none,id=d0,format=raw \
             -device virtio-blk-pci,drive=d0,disable-legacy=on \
             -qmp tcp:127.0.0.1:4444,server=on,wait=off",
            ovmf = qemu_ovmf_args("/tmp/$vm.vars"),
        ),
        at_banner: String::new(),
        stop: QMP_STOP,
        after: QMP_AFTER,
    }
}

/// L2 side of the firmware boot under `cmds`, as VM `name`, on L2's disk `disk` (`vdc`): a
/// fresh variable store, start, the kernel's banner (then [`FirmwareCmds::at_banner`]),
/// multi-user, systemd idle, the power button, the VMM's exit. As `debian_l2`, with the
/// firmware's own steps.
pub(super) fn firmware_l2(name: &str, disk: &str, cmds: &FirmwareCmds) -> String {
    let sub = |s: &str| s.replace(DISK, disk);
    let (setup, start, at_banner) = (sub(&cmds.setup), sub(&cmds.start), sub(&cmds.at_banner));
    let (stop, after) = (cmds.stop, cmds.after);
    format!(
        r#"vm={name}
[ -b /dev/{disk} ] || {{ echo "NO_DISK /dev/{disk}"; exit 1; }}
{setup} || exit 1
ghost_mark start
vm_start $vm {start}
vm_wait_for $vm "{LINUX_BANNER}" 300 || {{ vm_kill $vm; exit 1; }}
{at_banner}
{tail}"#,
        tail = ready_settle_stop(stop, after),
    )
}

/// The exits of `ghost-vmm status`'s `exits:` line (`pio in 1200, pio out 5400, mmio read 800,
/// mmio write 9100, interrupted 310, unclaimed 12`, with or without the `exits:`): the I/O
/// exits, PIO in and out plus MMIO read and write, as the boot timer's `boot_exits` counts
/// them. `interrupted` (KVM_RUN cut short by a signal) and `unclaimed` (already counted under
/// its reason) are left out; unknown fields are ignored. `None` unless all four are there.
pub(super) fn status_exits(line: &str) -> Option<u64> {
    let line = line.trim();
    let line = line.strip_prefix("exits:").unwrap_or(line);
    let mut counts: [Option<u64>; 4] = [None; 4];
    for field in line.split(',') {
        let Some((name, n)) = field.trim().rsplit_once(' ') else {
            continue;
        };
        let slot = match name.trim() {
            "pio in" => 0,
            "pio out" => 1,
            "mmio read" => 2,
            "mmio write" => 3,
            _ => continue,
        };
        counts[slot] = Some(n.parse().ok()?);
    }
    counts
        .iter()
        .try_fold(0u64, |sum, n| sum.checked_add((*n)?))
}

/// The firmware figures of a finished firmware boot (`s` ended with the VMM's status 0): boot
/// to `GHOST-READY`, to the kernel's banner, the stop, and (`ghost`) `firmware_exits`, the
/// exits sampled when L2 saw the banner (so an upper bound: the kernel's first moments, until
/// the `status` command answered, are in it).
pub(super) fn figures(s: &ScenarioResult, ghost: bool) -> Vec<(&'static str, f64)> {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let mut out = Vec::new();
    let mut take = |key: &'static str, value: Option<f64>| {
        if let Some(v) = value {
            out.push((key, v));
        }
    };
    take(
        "firmware_boot_s",
        secs(s.time_between("@@GHOST-MARK start", READY_LINE)),
    );
    take(
        "firmware_share_s",
        secs(s.time_between("@@GHOST-MARK start", LINUX_BANNER)),
    );
    take(
        "firmware_stop_s",
        secs(s.time_between("@@GHOST-MARK stop", "VMM_RC=")),
    );
    if ghost {
        // Exit counts are far below 2^53: exact as f64.
        #[allow(clippy::cast_precision_loss)]
        let exits = s
            .line_after(EXITS_LINE)
            .and_then(status_exits)
            .map(|n| n as f64);
        take("firmware_exits", exits);
    }
    out
}

/// How the firmware figures were taken (for the results file): `ovmf` is the OVMF package's
/// version, `None` when no firmware boot was planned.
pub(super) fn notes(
    opts: &Options,
    firmware_runs: usize,
    vmms: &[Vmm],
    ovmf: Option<&str>,
) -> String {
    let mut md = String::from("\n## The firmware figures\n\n");
    let Some(version) = ovmf.filter(|_| firmware_runs > 0) else {
        md.push_str(
            "- not taken in this run (`--firmware-runs 0`, or no disk slot of the test host \
             left for them).\n",
        );
        return md;
    };
    let _ = writeln!(
        md,
        "- the installed Debian 12: the same file system as the direct boot's, on a GPT disk \
         (`efi.img` of tests/testhost/debian-image.sh) whose ESP holds systemd-boot (`timeout \
         0`) and the kernel and initramfs; root by PARTUUID. Booted by Debian's OVMF \
         {version} (`OVMF_CODE_4M.fd`, no SMM, no Secure Boot), each VM with a fresh copy of \
         `OVMF_VARS_4M.fd` and its own pristine copy of the disk; 2 vCPUs, 1 GiB, \
         virtio-blk, no NIC. ghost-vmm: `[boot] firmware`; QEMU q35: the two pflash drives."
    );
    md.push_str(
        "- boot: from the line L2 prints just before it starts the VMM to `GHOST-READY`. \
         The firmware's share: to the kernel's first line (`Linux version`, shown through \
         `quiet` by the loader entry's `loglevel=6`): OVMF, its boot manager, systemd-boot and \
         the loading of the kernel and initramfs through the firmware's virtio-blk driver. \
         Stop: as the Debian figures'.\n\
         - ghost-vmm's exits during the firmware: PIO (in, out) plus MMIO (read, write) from \
         its control API (`ghost-vmm status`), sampled when L2 sees the banner in the VM's \
         output (polled every 50 ms), so the kernel's first moments until `status` answers \
         are in it. That `status` runs in L2 during ghost-vmm's boot (QEMU's boot has no such \
         step). ghost-vmm answers OVMF's probe of the debug console (port 0x402; QEMU's \
         command here has no `-debugcon`): a debug log written there is one PIO exit a byte.\n\
         - a firmware boot needs L1 to be the project's QEMU with the CR8 fix \
         (tests/testhost/l1-qemu.sh; Debian's aborts when OVMF writes CR8), so that QEMU ran \
         every scenario of this run (see the environment).\n",
    );
    if firmware_runs < opts.runs {
        let _ = writeln!(
            md,
            "- taken in the first {firmware_runs} of the {} runs only (medians of \
             {firmware_runs}; the test host's disk slots are shared with the Debian boots).",
            opts.runs
        );
    }
    let without: Vec<&str> = vmms
        .iter()
        .filter(|v| v.firmware.is_none())
        .map(|v| v.label)
        .collect();
    if !without.is_empty() {
        let _ = writeln!(
            md,
            "- not taken of {} (firmware boots under the two required VMMs only).",
            without.join(", ")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use ghost_tests::testhost::Line;

    use super::*;

    #[test]
    fn status_exits_sum_the_io_exits() {
        let line = "pio in 1200, pio out 5400, mmio read 800, mmio write 9100, interrupted 310, \
                    unclaimed 12";
        assert_eq!(status_exits(line), Some(16_500));
        assert_eq!(status_exits(&format!("exits:   {line}")), Some(16_500));
        // Fields added later are ignored; their order does not matter.
        assert_eq!(
            status_exits("mmio write 4, halts 9, mmio read 3, pio out 2, pio in 1"),
            Some(10)
        );
    }

    #[test]
    fn status_exits_need_every_io_reason() {
        assert_eq!(status_exits(""), None);
        assert_eq!(status_exits("pio in 1, pio out 2, mmio read 3"), None);
        assert_eq!(
            status_exits("pio in 1, pio out x, mmio read 3, mmio write 4"),
            None
        );
        assert_eq!(status_exits("no such VM"), None);
        assert_eq!(
            status_exits(&format!(
                "pio in {}, pio out 1, mmio read 0, mmio write 0",
                u64::MAX
            )),
            None,
            "overflow"
        );
    }

    fn line(at_ms: u64, text: &str) -> Line {
        Line {
            at: Duration::from_millis(at_ms),
            text: text.into(),
        }
    }

    #[test]
    fn figures_of_a_firmware_boot() {
        let s = ScenarioResult {
            name: "fw-ghost-1".into(),
            rc: Some(0),
            lines: vec![
                line(1_000, "@@GHOST-MARK start"),
                line(2_000, "BdsDxe: starting Boot0001"),
                line(31_500, "[    0.000000] Linux version 6.1.0-28-cloud-amd64"),
                line(
                    32_000,
                    "FIRMWARE_EXITS=pio in 10, pio out 20, mmio read 30, mmio write 40, \
                     interrupted 5, unclaimed 1",
                ),
                line(91_000, "GHOST-READY uptime=50.10"),
                line(100_000, "@@GHOST-MARK stop"),
                line(103_250, "VMM_RC=0"),
            ],
            ..ScenarioResult::default()
        };
        let ghost = figures(&s, true);
        let get = |key: &str| ghost.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        assert_eq!(get("firmware_boot_s"), Some(90.0));
        assert_eq!(get("firmware_share_s"), Some(30.5));
        assert_eq!(get("firmware_stop_s"), Some(3.25));
        assert_eq!(get("firmware_exits"), Some(100.0));
        let qemu = figures(&s, false);
        assert_eq!(qemu.len(), 3);
        assert!(qemu.iter().all(|(k, _)| *k != "firmware_exits"));
        assert!(FIRMWARE_FIGURES
            .iter()
            .all(|k| ghost_benches::figure(k).is_some()));
        assert!(ghost_benches::figure("firmware_exits").is_some_and(|f| f.ghost_only));
    }

    #[test]
    fn the_l2_script_names_the_disk_and_samples_exits_at_the_banner() {
        let script = firmware_l2("b0", "vdc", &ghost());
        assert!(!script.contains(DISK), "{script}");
        assert!(
            script.contains("cp $GHOST_OVMF_VARS /tmp/efi-vdc.vars || exit 1"),
            "{script}"
        );
        assert!(
            script.contains("env GHOST_LOG=info $GHOST_VMM run /ghost/vm/efi-vdc.toml"),
            "{script}"
        );
        let banner = script.find(LINUX_BANNER).unwrap_or(usize::MAX);
        let status = script
            .find("$GHOST_VMM status efi-vdc")
            .unwrap_or(usize::MAX);
        let ready = script.find(READY_LINE).unwrap_or(usize::MAX);
        assert!(banner < status && status < ready, "{script}");
        let qemu = firmware_l2("b1", "vdd", &qemu_q35());
        assert!(qemu.contains("file=/dev/vdd,if=none"), "{qemu}");
        assert!(qemu.contains("unit=1,file=/tmp/$vm.vars"), "{qemu}");
        assert!(qemu.contains("cp $GHOST_OVMF_VARS /tmp/$vm.vars"), "{qemu}");
        assert!(!qemu.contains("status"), "{qemu}");
    }

    #[test]
    fn ghost_vm_file_boots_ovmf_from_the_disk() {
        let toml = ghost_vm_file("vdc");
        assert!(toml.contains("name = \"efi-vdc\""), "{toml}");
        assert!(
            toml.contains("firmware = \"/usr/share/OVMF/OVMF_CODE_4M.fd\""),
            "{toml}"
        );
        assert!(
            toml.contains("firmware_vars = \"/tmp/efi-vdc.vars\""),
            "{toml}"
        );
        assert!(toml.contains("path = \"/dev/vdc\""), "{toml}");
        assert!(!toml.contains("[[net]]"), "{toml}");
        assert_eq!(ghost_vm_path("vdc"), "/ghost/vm/efi-vdc.toml");
    }
}
