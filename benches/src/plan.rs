//! The plan of a benchmark: which scenario (a [`Job`]) runs in which run, under which VMM, in
//! which order, and which of L2's disks each boot of the Debian image (direct or through the
//! firmware) gets: each its own pristine copy, and a test host holds [`MAX_DEBIAN_BOOTS`].

use std::time::Duration;

use ghost_benches::run_order;
use ghost_tests::testhost::Scenario;

use super::firmware::firmware_l2;
use super::guests::{boot_l2, debian_l2, general_l2, passthrough_l2};
use super::vmms::{Vmm, VCPUS};

/// Which image of the kernel a boot-only run boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Image {
    /// The bzImage (its kernel decompresses itself), as the general guest.
    BzImage,
    /// The same kernel's ELF vmlinux: what Cloud Hypervisor boots (PVH), so that its boot
    /// figures compare the same image.
    Vmlinux,
}

/// The boot-only runs ([`Kind::Boot`]): vCPUs, image, figure. The general guest's boot is
/// the 1-vCPU bzImage figure.
pub(super) const BOOTS: [(u8, Image, &str); 5] = [
    (2, Image::BzImage, "boot_2cpu_ms"),
    (4, Image::BzImage, "boot_4cpu_ms"),
    (1, Image::Vmlinux, "boot_elf_ms"),
    (2, Image::Vmlinux, "boot_elf_2cpu_ms"),
    (4, Image::Vmlinux, "boot_elf_4cpu_ms"),
];

/// The figure of a boot-only run with `vcpus` vCPUs of `image`.
pub(super) fn boot_figure(vcpus: u8, image: Image) -> Option<&'static str> {
    BOOTS
        .iter()
        .find(|(n, i, _)| *n == vcpus && *i == image)
        .map(|(_, _, key)| *key)
}

/// The image whose boot-only runs take figure `key`, if it is one of theirs.
pub(super) fn boot_image_of(key: &str) -> Option<Image> {
    BOOTS.iter().find(|(_, _, k)| *k == key).map(|(_, i, _)| *i)
}

/// L2's scrubber (`tests/guest-tools/scrub.c`) and how much it writes before each scenario:
/// more than any one VM of the benchmark leaves behind but the Debian guests' 1 GiB, whose
/// code is a small part of it.
pub(super) const L2_SCRUB: &str = "/ghost/bin/scrub";
const SCRUB_MIB: u32 = 768;

/// Debian boots (direct and firmware together) one test host can hold: each needs its own
/// copy of its image, a virtio disk of L1 (whose PCI bus 0 has about 26 free slots; L2 names
/// them `vda` to `vdz`).
pub(super) const MAX_DEBIAN_BOOTS: usize = 20;

/// What a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The general guest: boot, exits, memory, block, TCP.
    General,
    /// The passthrough guest: edu and nvme through VFIO.
    Passthrough,
    /// The boot guest with this many vCPUs, of this image: VMM start to init, then poweroff.
    Boot { vcpus: u8, image: Image },
    /// The Debian image on L2's disk `/dev/vd<'a' + disk>` (a pristine copy in every test-host
    /// boot, so a re-run in the next boot gets one too).
    Debian { disk: usize },
    /// The installed Debian (`DebianImage::efi_image`) booted by OVMF, on L2's disk
    /// `/dev/vd<'a' + disk>` (a pristine copy, as [`Kind::Debian`]'s).
    Firmware { disk: usize },
}

impl Kind {
    /// The L2 disk the scenario boots from, if any.
    pub(super) fn disk(self) -> Option<usize> {
        match self {
            Kind::General | Kind::Passthrough | Kind::Boot { .. } => None,
            Kind::Debian { disk } | Kind::Firmware { disk } => Some(disk),
        }
    }
}

/// L2's name of the `n`th disk attached with `TestHost::disk`: `vda`, `vdb`, ...
pub(super) fn disk_name(n: usize) -> String {
    let letter = u8::try_from(n)
        .ok()
        .filter(|n| *n < 26)
        .map_or('?', |n| char::from(b'a' + n));
    format!("vd{letter}")
}

/// One scenario of the plan: a kind of guest under one VMM in one run.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) kind: Kind,
    pub(super) vmm: usize,
    pub(super) run: usize,
}

impl Job {
    /// The scenario's name: `general-ghost-1`, `fw-q35-2`, ...
    pub(super) fn name(&self, vmms: &[Vmm]) -> String {
        let who = vmms[self.vmm].short;
        let what = match self.kind {
            Kind::General => "general".to_owned(),
            Kind::Passthrough => "pt".to_owned(),
            Kind::Boot {
                vcpus,
                image: Image::BzImage,
            } => format!("boot{vcpus}"),
            Kind::Boot {
                vcpus,
                image: Image::Vmlinux,
            } => format!("elf{vcpus}"),
            Kind::Debian { .. } => "debian".to_owned(),
            Kind::Firmware { .. } => "fw".to_owned(),
        };
        format!("{what}-{who}-{}", self.run)
    }

    /// The scenario: its L2 script and timeout.
    pub(super) fn scenario(&self, vmms: &[Vmm]) -> Scenario {
        let vmm = &vmms[self.vmm];
        let short = format!("b{}", self.vmm);
        let (script, timeout) = match self.kind {
            Kind::General => (general_l2(&short, &vmm.general), 300),
            Kind::Passthrough => (passthrough_l2(&short, &vmm.passthrough), 180),
            Kind::Boot { vcpus, image } => {
                let cmd = match image {
                    Image::BzImage => vmm.boot.as_ref(),
                    Image::Vmlinux => vmm.boot_elf.as_ref(),
                }
                .expect("a boot job for a VMM without one");
                (
                    boot_l2(&short, &cmd.replace(VCPUS, &vcpus.to_string())),
                    180,
                )
            }
            Kind::Debian { disk } => {
                let cmds = vmm
                    .debian
                    .as_ref()
                    .expect("a Debian job for a VMM without one");
                (debian_l2(&short, &disk_name(disk), cmds), 720)
            }
            Kind::Firmware { disk } => {
                let cmds = vmm
                    .firmware
                    .as_ref()
                    .expect("a firmware job for a VMM without one");
                (firmware_l2(&short, &disk_name(disk), cmds), 720)
            }
        };
        // First, outside the measurement, the memory the last VM left with TCG's translations
        // of its guest's code (see `L2_SCRUB`).
        let script = format!("{L2_SCRUB} {SCRUB_MIB} || exit 1\n{script}");
        Scenario::new(self.name(vmms), script).timeout(Duration::from_secs(timeout))
    }
}

/// How many test-host boots a plan of `jobs` scenarios may take: three for a short plan (as
/// `--quick`'s), one more per 15 scenarios beyond. L2 dies now and then on its own (its kernel
/// panics under L1's emulated SVM; tests/testhost/README.md, "Flakes"), and a 5-run plan with
/// the Debian boots keeps one L2 busy for about half an hour: three boots were seen to die in
/// one such run.
pub(super) fn max_host_boots(jobs: usize) -> usize {
    2 + jobs.div_ceil(15).max(1)
}

/// The boots of the Debian image one way: its VMMs, in how many runs, the kind of job (given
/// its disk).
type DiskBoots<'a> = (&'a [usize], usize, fn(usize) -> Kind);

/// Every scenario of a benchmark, and which runs boot the Debian image.
#[derive(Debug)]
pub(super) struct Plan {
    /// In the order they run.
    pub(super) jobs: Vec<Job>,
    /// The VMMs that boot the Debian image directly (the required ones only with `--quick`).
    pub(super) debian_vmms: Vec<usize>,
    /// The VMMs of the boot-only runs of the bzImage (none with `--quick`).
    pub(super) boot_vmms: Vec<usize>,
    /// The VMMs of the boot-only runs of the vmlinux (none with `--quick`).
    pub(super) elf_vmms: Vec<usize>,
    /// The VMMs that boot the installed Debian through OVMF (those with a `Vmm::firmware`).
    pub(super) firmware_vmms: Vec<usize>,
    /// How many runs (the first ones) boot the Debian image directly.
    pub(super) debian_runs: usize,
    /// How many runs (the first ones) boot the installed Debian through OVMF.
    pub(super) firmware_runs: usize,
}

impl Plan {
    /// `runs` runs of every VMM of `vmms`: in each, the general and the passthrough guest
    /// under every VMM, then (in the first runs) the Debian image, then the firmware boot, each
    /// group's first VMM rotating from run to run ([`run_order`]). `debian_runs` and
    /// `firmware_runs` as given (`--debian-runs`, `--firmware-runs`), or as [`disk_runs`]
    /// shares the disks out.
    pub(super) fn new(
        runs: usize,
        vmms: &[Vmm],
        quick: bool,
        debian_runs: Option<usize>,
        firmware_runs: Option<usize>,
    ) -> Result<Plan, String> {
        let boots = |with: &dyn Fn(&Vmm) -> bool| -> Vec<usize> {
            (0..vmms.len())
                .filter(|&i| with(&vmms[i]) && (vmms[i].required || !quick))
                .collect()
        };
        // Multi-vCPU boots in full runs only: CI's quick run proves the harness, and QEMU q35
        // with 4 vCPUs hangs the test host now and then (twice on 2026-12-03).
        let (boot_vmms, elf_vmms) = if quick {
            (Vec::new(), Vec::new())
        } else {
            (
                boots(&|v| v.boot.is_some()),
                boots(&|v| v.boot_elf.is_some()),
            )
        };
        let debian_vmms = boots(&|v| v.debian.is_some());
        let firmware_vmms = boots(&|v| v.firmware.is_some());
        let (debian_runs, firmware_runs) = disk_runs(
            runs,
            debian_vmms.len(),
            firmware_vmms.len(),
            debian_runs,
            firmware_runs,
        )?;
        let mut jobs = Vec::new();
        let mut disks = 0;
        for run in 1..=runs {
            for kind in [Kind::General, Kind::Passthrough] {
                for vmm in run_order(run, vmms.len()) {
                    jobs.push(Job { kind, vmm, run });
                }
            }
            for (vcpus, image, _) in BOOTS {
                let group = match image {
                    Image::BzImage => &boot_vmms,
                    Image::Vmlinux => &elf_vmms,
                };
                for i in run_order(run, group.len()) {
                    jobs.push(Job {
                        kind: Kind::Boot { vcpus, image },
                        vmm: group[i],
                        run,
                    });
                }
            }
            let groups: [DiskBoots; 2] = [
                (&debian_vmms, debian_runs, |disk| Kind::Debian { disk }),
                (&firmware_vmms, firmware_runs, |disk| Kind::Firmware {
                    disk,
                }),
            ];
            for (group, group_runs, kind) in groups {
                let now = if run <= group_runs { group.len() } else { 0 };
                for i in run_order(run, now) {
                    jobs.push(Job {
                        kind: kind(disks),
                        vmm: group[i],
                        run,
                    });
                    disks += 1;
                }
            }
        }
        Ok(Plan {
            jobs,
            boot_vmms,
            elf_vmms,
            debian_vmms,
            firmware_vmms,
            debian_runs,
            firmware_runs,
        })
    }

    /// The kinds of the jobs with a disk, in disk order (`vda` first): what to attach.
    pub(super) fn disks(&self) -> Vec<Kind> {
        let mut disks: Vec<Kind> = self
            .jobs
            .iter()
            .map(|j| j.kind)
            .filter(|k| k.disk().is_some())
            .collect();
        disks.sort_by_key(|k| k.disk());
        disks
    }

    /// Whether any job boots the firmware (the test host then needs OVMF).
    pub(super) fn has_firmware(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| matches!(j.kind, Kind::Firmware { .. }))
    }
}

/// How many of `runs` runs boot the Debian image directly (under `debian_vmms` VMMs each) and
/// how many the installed Debian through OVMF (under `firmware_vmms`), with at most
/// [`MAX_DEBIAN_BOOTS`] disks in all. A count given (`--debian-runs`, `--firmware-runs`;
/// more than `runs` is `runs`) is kept, or refused if the disks cannot hold it; one not given
/// takes what the other leaves, up to `runs`; with neither given both get the same number of
/// runs, as many as the disks hold.
pub(super) fn disk_runs(
    runs: usize,
    debian_vmms: usize,
    firmware_vmms: usize,
    debian: Option<usize>,
    firmware: Option<usize>,
) -> Result<(usize, usize), String> {
    let (debian, firmware) = (debian.map(|n| n.min(runs)), firmware.map(|n| n.min(runs)));
    // Runs that fit in `slots` disks at `per_run` disks a run.
    let fit =
        |slots: usize, per_run: usize| slots.checked_div(per_run).map_or(runs, |n| n.min(runs));
    let refuse = |what: String, disks: usize| {
        Err(format!(
            "{what}: {disks} boots of the Debian image, but a test host holds \
             {MAX_DEBIAN_BOOTS} copies of it (each boot needs its own; {debian_vmms} VMMs boot \
             it directly, {firmware_vmms} through the firmware)"
        ))
    };
    let (d, f) = match (debian, firmware) {
        (Some(d), Some(f)) => (d, f),
        (Some(d), None) => (
            d,
            fit(
                MAX_DEBIAN_BOOTS.saturating_sub(d * debian_vmms),
                firmware_vmms,
            ),
        ),
        (None, Some(f)) => (
            fit(
                MAX_DEBIAN_BOOTS.saturating_sub(f * firmware_vmms),
                debian_vmms,
            ),
            f,
        ),
        (None, None) => {
            let both = fit(MAX_DEBIAN_BOOTS, debian_vmms + firmware_vmms);
            (both, both)
        }
    };
    let disks = d * debian_vmms + f * firmware_vmms;
    if disks > MAX_DEBIAN_BOOTS {
        let what = match (debian, firmware) {
            (Some(_), Some(_)) => format!("--debian-runs {d} with --firmware-runs {f}"),
            (Some(_), None) => format!("--debian-runs {d}"),
            _ => format!("--firmware-runs {f}"),
        };
        return refuse(what, disks);
    }
    Ok((d, f))
}

#[cfg(test)]
mod tests {
    use super::super::vmms::vmms;
    use super::*;

    #[test]
    fn longer_plans_may_boot_the_test_host_more_often() {
        assert_eq!(max_host_boots(0), 3);
        assert_eq!(max_host_boots(10), 3); // --quick
        assert_eq!(max_host_boots(27), 4); // 3 runs
        assert_eq!(max_host_boots(50), 6); // 5 runs, microvm included
    }

    #[test]
    fn disks_are_named_as_l2_sees_them() {
        assert_eq!(disk_name(0), "vda");
        assert_eq!(disk_name(1), "vdb");
        assert_eq!(disk_name(MAX_DEBIAN_BOOTS - 1), "vdt");
    }

    #[test]
    fn by_default_the_direct_and_the_firmware_boots_share_the_disks() {
        // A full 5-run plan: 3 VMMs boot Debian directly, 2 through the firmware.
        assert_eq!(disk_runs(5, 3, 2, None, None), Ok((4, 4)));
        // --quick: the two required VMMs, once each.
        assert_eq!(disk_runs(1, 2, 2, None, None), Ok((1, 1)));
        assert_eq!(disk_runs(3, 3, 2, None, None), Ok((3, 3)));
        // No VMM to boot it: no disks, every run.
        assert_eq!(disk_runs(5, 0, 0, None, None), Ok((5, 5)));
    }

    #[test]
    fn a_count_given_is_kept_and_the_other_takes_what_is_left() {
        assert_eq!(disk_runs(5, 3, 2, Some(5), None), Ok((5, 2)));
        assert_eq!(disk_runs(5, 3, 2, None, Some(5)), Ok((3, 5)));
        assert_eq!(disk_runs(5, 3, 2, None, Some(0)), Ok((5, 0)));
        assert_eq!(disk_runs(5, 3, 2, Some(2), Some(3)), Ok((2, 3)));
        // More than the runs: as many as the runs.
        assert_eq!(disk_runs(5, 3, 2, Some(50), None), Ok((5, 2)));
        // Every disk taken: no firmware boot.
        assert_eq!(disk_runs(10, 2, 2, Some(10), None), Ok((10, 0)));
    }

    #[test]
    fn counts_the_disks_cannot_hold_are_refused() {
        let err = disk_runs(7, 3, 2, Some(7), None).unwrap_err();
        assert!(err.starts_with("--debian-runs 7: 21 boots"), "{err}");
        let err = disk_runs(5, 3, 2, Some(5), Some(5)).unwrap_err();
        assert!(
            err.starts_with("--debian-runs 5 with --firmware-runs 5: 25 boots"),
            "{err}"
        );
        let err = disk_runs(20, 3, 2, None, Some(11)).unwrap_err();
        assert!(err.starts_with("--firmware-runs 11: 22 boots"), "{err}");
    }

    #[test]
    fn every_boot_of_the_image_gets_its_own_disk() {
        let vmms = vmms(false);
        let plan = Plan::new(5, &vmms, false, None, None).expect("plan");
        assert_eq!((plan.debian_runs, plan.firmware_runs), (4, 4));
        assert_eq!(plan.debian_vmms, [0, 1, 2]);
        // ghost-vmm and QEMU q35 only: not microvm.
        assert_eq!(plan.firmware_vmms, [0, 1]);
        // Per run: general and passthrough under all 4, the bzImage's 2 and 4 vCPU boots
        // under ghost-vmm and q35 (not microvm, not ghost-vmm without its sandbox), the
        // vmlinux's 1, 2 and 4 vCPU boots under ghost-vmm (Cloud Hypervisor's column is off).
        assert_eq!(plan.jobs.len(), 5 * (8 + 2 * 2 + 3) + 4 * 3 + 4 * 2);
        let boots: Vec<(Kind, usize)> = plan
            .jobs
            .iter()
            .filter(|j| j.run == 2 && matches!(j.kind, Kind::Boot { .. }))
            .map(|j| (j.kind, j.vmm))
            .collect();
        let bz = |vcpus| Kind::Boot {
            vcpus,
            image: Image::BzImage,
        };
        let elf = |vcpus| Kind::Boot {
            vcpus,
            image: Image::Vmlinux,
        };
        assert_eq!(
            boots,
            [
                (bz(2), 1),
                (bz(2), 0),
                (bz(4), 1),
                (bz(4), 0),
                (elf(1), 0),
                (elf(2), 0),
                (elf(4), 0),
            ]
        );
        // With Cloud Hypervisor's column, it boots the vmlinux only, rotating with ghost-vmm.
        let with_ch = super::super::vmms::vmms(true);
        let ch_plan = Plan::new(5, &with_ch, false, None, None).expect("plan");
        assert_eq!(
            (ch_plan.boot_vmms.clone(), ch_plan.elf_vmms.clone()),
            (vec![0, 1], vec![0, 4])
        );
        let elf_boots: Vec<(Kind, usize)> = ch_plan
            .jobs
            .iter()
            .filter(|j| j.run == 2 && j.kind == elf(2))
            .map(|j| (j.kind, j.vmm))
            .collect();
        assert_eq!(elf_boots, [(elf(2), 4), (elf(2), 0)]);
        let scenario = ch_plan.jobs[0].scenario(&with_ch);
        assert!(scenario
            .script
            .starts_with("/ghost/bin/scrub 768 || exit 1\n"));
        let disks: Vec<usize> = plan.jobs.iter().filter_map(|j| j.kind.disk()).collect();
        assert_eq!(disks, (0..20).collect::<Vec<_>>());
        let kinds = plan.disks();
        assert_eq!(kinds.len(), 20);
        assert!(kinds.iter().enumerate().all(|(i, k)| k.disk() == Some(i)));
        // Each run: the Debian boots, then the firmware boots, the first VMM rotating.
        let run2: Vec<(Kind, usize)> = plan
            .jobs
            .iter()
            .filter(|j| j.run == 2 && j.kind.disk().is_some())
            .map(|j| (j.kind, j.vmm))
            .collect();
        assert_eq!(
            run2,
            [
                (Kind::Debian { disk: 5 }, 1),
                (Kind::Debian { disk: 6 }, 2),
                (Kind::Debian { disk: 7 }, 0),
                (Kind::Firmware { disk: 8 }, 1),
                (Kind::Firmware { disk: 9 }, 0),
            ]
        );
        assert!(plan.has_firmware());
        // Run 5 boots neither.
        assert!(plan
            .jobs
            .iter()
            .filter(|j| j.run == 5)
            .all(|j| j.kind.disk().is_none()));
        let names: Vec<String> = plan.jobs.iter().map(|j| j.name(&vmms)).collect();
        assert!(names.contains(&"fw-ghost-1".to_owned()));
        assert!(names.contains(&"fw-q35-4".to_owned()));
        assert!(names.contains(&"boot4-ghost-3".to_owned()));
        assert!(!names.iter().any(|n| n.starts_with("fw-microvm")));
    }

    #[test]
    fn quick_and_no_firmware_plans() {
        let vmms = vmms(false);
        let quick = Plan::new(1, &vmms, true, None, None).expect("plan");
        assert_eq!(quick.jobs.len(), 12);
        assert!(quick.boot_vmms.is_empty());
        assert_eq!(quick.debian_vmms, [0, 1]);
        assert_eq!(quick.firmware_runs, 1);
        assert_eq!(quick.disks().len(), 4);
        let none = Plan::new(1, &vmms, true, None, Some(0)).expect("plan");
        assert!(!none.has_firmware());
        assert_eq!(none.disks().len(), 2);
    }
}
