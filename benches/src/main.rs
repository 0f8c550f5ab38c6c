//! `ghost-bench`: ghost-vmm and QEMU side by side, in one nested test-host run.
//!
//! ```text
//! cargo run --release -p ghost-benches --bin ghost-bench -- [--runs N] [--debian-runs N]
//!     [--firmware-runs N] [--quick] [--out DIR] [--cloud-hypervisor BINARY]
//! ```
//!
//! Each run boots the same L3 guest (Debian's cloud kernel, 1 vCPU, 256 MiB, a 128 MiB raw
//! disk, a TAP) under every VMM and takes every figure of [`ghost_benches::FIGURES`]: boot
//! and exit times, the VMM's memory beyond guest RAM at idle, block and TCP throughput, the
//! cost of one PIO and one MMIO exit, then passthrough (edu's BAR read, the interrupt round
//! trip: nvme admin commands completed by MSI-X, nvme QD1 reads) with both devices given to
//! each VMM in turn, then a real distribution: the Debian 12 systemd image of
//! `tests/testhost/debian-image.sh` (2 vCPUs, 1 GiB, root on virtio-blk, its own kernel and
//! initramfs) booted to multi-user (`GHOST-READY`) and stopped by its ACPI power button
//! (ghost-vmm: SIGTERM; QEMU: QMP `system_powerdown`), each boot on its own pristine copy of
//! the image (L2's `/dev/vda`, `/dev/vdb`, ...); then the same system installed (a GPT disk,
//! an ESP with systemd-boot) booted by Debian's OVMF under ghost-vmm and QEMU q35
//! ([`firmware`]): to multi-user, to the kernel's first line (the firmware's share), ghost-vmm's
//! exits by then, the stop. The VMMs alternate within a run, so drift on the shared machine
//! hits both alike, and the one that goes first rotates from run to run
//! ([`ghost_benches::run_order`]), so no VMM always has the first slot. Full runs also boot a
//! guest that only reaches init, the bzImage with 2 and 4 vCPUs and the same kernel's vmlinux
//! with 1, 2 and 4 ([`plan::BOOTS`]). Every scenario starts with L2 scrubbing its recently
//! freed memory, outside the measurement ([`plan::L2_SCRUB`]). A scenario whose
//! guest did not finish is reported and run once more; a test host that dies is booted again
//! for what is left. The table of medians and ratios is printed and written to `DIR/<date>.md`
//! (`<date>-2.md`, ... for a later run of the same day; default `benches/results`; with
//! `--quick`, `target/bench-results`).
//!
//! `--debian-runs N` and `--firmware-runs N` (0 to skip the firmware boots, and with them the
//! need for OVMF and the fixed L1 QEMU) boot the image directly, or through the firmware, in
//! the first N runs only. Every such boot needs its own copy of its image, and a test host
//! holds 20 ([`plan::MAX_DEBIAN_BOOTS`]): by default both get the same number of runs, all of
//! them if the copies suffice (a 5-run plan: 4, with microvm's direct boots); a count given is
//! kept (or refused if it cannot be), the other gets what is left.
//!
//! `--cloud-hypervisor BINARY` adds a column for a Cloud Hypervisor the user built (PVH boot of
//! the same kernel's vmlinux, same devices; its boot figures are the vmlinux rows); like
//! microvm's, its figures are for reference.
//!
//! `--quick` (CI) takes one run with smaller workloads, and boots the Debian image, directly
//! and through the firmware, under the two required VMMs only (ghost-vmm and QEMU q35), once
//! each: it proves the harness and both VMMs still produce every figure, without judging them.
//! Exit status: 0 with every figure present, 1 otherwise, 2 for bad usage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ghost_benches::{figure, results_path, today, Samples, FIGURES};
use ghost_tests::guest_tools::{build_static, vm_file};
use ghost_tests::testhost::{
    debian_vm_file, workspace_root, DebianImage, GuestInitramfs, Outcome, Ovmf, RunReport,
    Scenario, ScenarioResult, TestHost, DEBIAN_READY, VIRTIO_MODULES,
};

mod firmware;
mod guests;
mod plan;
mod scrape;
mod vmms;

use firmware::FIRMWARE_FIGURES;
use guests::{general_guest, passthrough_guest, Sizes, BOOT_GUEST, FULL, QUICK};
use plan::{disk_name, max_host_boots, Job, Kind, Plan};
use scrape::figures_of;
use vmms::{vmms, Vmm};

const KERNEL: &str = "/ghost/kernel/cloud/bzImage";
const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
/// L2's passed-through devices (see `host()`): QEMU's edu and an nvme disk.
const EDU: &str = "0000:00:10.0";
const NVME: &str = "0000:00:11.0";
/// The boot-timer port (ghost_boot::layout::BOOT_TIMER_PORT). ghost-vmm's VM file passes it
/// to the guest's init as `bench_timer=` on the kernel command line (an unknown parameter
/// with a value becomes an environment variable of init); under QEMU the guest skips it.
const BOOT_TIMER_PORT: &str = "0x440";
/// Guest RAM of every benchmark VM, in KiB (what the memory figure subtracts).
const GUEST_RAM_KIB: u64 = 256 * 1024;
const USAGE: &str =
    "usage: ghost-bench [--runs N] [--debian-runs N] [--firmware-runs N] [--quick] \
                     [--out DIR] [--cloud-hypervisor BINARY]";
/// Where a Cloud Hypervisor binary given with `--cloud-hypervisor` goes in L2.
const L2_CLOUD_HYPERVISOR: &str = "/usr/bin/cloud-hypervisor";
/// `tests/guest-tools/ptyrun.c` in L2: Cloud Hypervisor reads its serial console's input
/// only from a terminal, and a VM's stdin in L2 is a FIFO.
const L2_PTYRUN: &str = "/ghost/bin/ptyrun";
/// The same kernel as an ELF vmlinux (Cloud Hypervisor boots PVH ELF kernels only).
const VMLINUX: &str = "/ghost/kernel/cloud/vmlinux";
/// The general and the boot guests' devices under ghost-vmm: the benchmark's disk and TAP.
const VIRTIO_DEVICES: &str = "[[disk]]\npath = \"/tmp/bench.img\"\n\n[[net]]\ntap = \"tapb\"\n";
/// Where a VMM command of the Debian guest names its disk: L2's device (`vda`, `vdb`, ...).
const DISK: &str = "@DISK@";
/// The line the Debian image prints at multi-user (`GHOST-READY uptime=<seconds>`).
const READY_LINE: &str = "GHOST-READY uptime=";
/// Printed (whole) by the Debian guest's shell once systemd is idle; see `debian_l2`.
const SETTLED: &str = "BENCH-SETTLED=";
/// The Debian figures, taken only of VMMs with a [`Vmm::debian`].
const DEBIAN_FIGURES: &[&str] = &["debian_boot_s", "debian_uptime_s", "debian_stop_s"];

#[derive(Debug)]
struct Options {
    runs: usize,
    /// Runs (the first ones) that boot the Debian image too; default: see [`plan::disk_runs`].
    debian_runs: Option<usize>,
    /// Runs (the first ones) that boot the installed Debian through OVMF too (0: none);
    /// default: see [`plan::disk_runs`], 1 with `--quick`.
    firmware_runs: Option<usize>,
    quick: bool,
    out: PathBuf,
    /// A Cloud Hypervisor binary the user built: adds a reference column.
    cloud_hypervisor: Option<PathBuf>,
}

/// The number after `flag` (next of `it`), from `least` to 50.
fn count<'a>(
    it: &mut impl Iterator<Item = &'a String>,
    flag: &str,
    least: usize,
) -> Result<usize, String> {
    let n = it.next().ok_or_else(|| format!("{flag} needs a number"))?;
    n.parse::<usize>()
        .ok()
        .filter(|n| (least..=50).contains(n))
        .ok_or_else(|| format!("{flag} {n}: give {least} to 50"))
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut runs = None;
    let mut debian_runs = None;
    let mut firmware_runs = None;
    let mut quick = false;
    let mut out = None;
    let mut cloud_hypervisor = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--runs" => runs = Some(count(&mut it, arg, 1)?),
            "--debian-runs" => debian_runs = Some(count(&mut it, arg, 1)?),
            "--firmware-runs" => firmware_runs = Some(count(&mut it, arg, 0)?),
            "--out" => out = Some(PathBuf::from(it.next().ok_or("--out needs a folder")?)),
            "--cloud-hypervisor" => {
                let path = PathBuf::from(it.next().ok_or("--cloud-hypervisor needs a binary")?);
                if !path.is_file() {
                    return Err(format!(
                        "--cloud-hypervisor {}: no such file",
                        path.display()
                    ));
                }
                cloud_hypervisor = Some(path);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let root = workspace_root();
    Ok(Options {
        runs: runs.unwrap_or(if quick { 1 } else { 5 }),
        debian_runs,
        firmware_runs: firmware_runs.or(quick.then_some(1)),
        quick,
        out: out.unwrap_or_else(|| {
            if quick {
                root.join("target/bench-results")
            } else {
                root.join("benches/results")
            }
        }),
        cloud_hypervisor,
    })
}

/// What the harness learned from all host runs.
#[derive(Default)]
struct Collected {
    samples: Samples,
    /// Scenarios that did not finish, with the end of their output.
    incomplete: Vec<String>,
    /// ghost-vmm's exit statistics of its last general run.
    ghost_exit_stats: Option<String>,
    environment: Vec<String>,
    host_boots: usize,
    /// Debian guests whose systemd did not report "running" before the stop (a failed unit):
    /// their figures count, with a note.
    notes: Vec<String>,
    /// How many runs booted the Debian image.
    debian_runs: usize,
    /// How many runs booted the installed Debian through OVMF.
    firmware_runs: usize,
    /// The version of the OVMF package they booted (when they did).
    ovmf_version: Option<String>,
    /// The QEMU that ran the test host (L1), and which build it is.
    l1_qemu: String,
}

/// The test host of every job; one disk per boot of the Debian image in `disks` (a copy of
/// the image, or of the installed system for a firmware boot, with OVMF in L2 then).
fn build_host(
    work: &Path,
    sizes: Sizes,
    cloud_hypervisor: Option<&Path>,
    debian: &DebianImage,
    disks: &[Kind],
) -> Result<TestHost, String> {
    let exitbench = build_static(work, "exitbench");
    let iobench = build_static(work, "iobench");
    let edutest = build_static(work, "edutest");
    let nvme = work.join("nvme.img");
    std::fs::write(&nvme, vec![0x5au8; 64 << 20]).map_err(|e| format!("nvme image: {e}"))?;
    let vfio = |host: &str| format!("[[vfio]]\nhost = \"{host}\"\nbind = false\n");
    let bench_toml = vm_file(
        "bench",
        KERNEL,
        "bench",
        &format!("{CMDLINE} bench_timer={BOOT_TIMER_PORT}"),
        VIRTIO_DEVICES,
    );
    let boot_toml = vm_file("boot", KERNEL, "boot", CMDLINE, VIRTIO_DEVICES);
    let boot_elf_toml = vm_file("boot", VMLINUX, "boot", CMDLINE, VIRTIO_DEVICES);
    let pt_toml = vm_file(
        "pt",
        KERNEL,
        "pt",
        CMDLINE,
        &format!("{}{}", vfio(EDU), vfio(NVME)),
    );
    // `collect` boots again itself, counting boots and re-running failed guests too.
    let mut host = TestHost::new("bench")
        .map_err(|e| format!("test-host assets (tests/testhost/setup.sh): {e}"))?
        .reboots(0)
        .with_built_ghost_vmm()
        .map_err(|e| format!("a built ghost-vmm (cargo build --release -p ghost-cli): {e}"))?
        .qemu_args([
            "-device".to_owned(),
            "edu,addr=0x10".to_owned(),
            "-drive".to_owned(),
            format!("file={},if=none,id=nv0,format=raw", nvme.display()),
            "-device".to_owned(),
            "nvme,drive=nv0,serial=ghost-bench,addr=0x11".to_owned(),
        ])
        .guest(
            "bench",
            GuestInitramfs::new(general_guest(sizes))
                .modules(VIRTIO_MODULES)
                .file("/bin/exitbench", exitbench, 0o755)
                .file("/bin/iobench", iobench.clone(), 0o755),
        )
        .guest(
            "boot",
            GuestInitramfs::new(BOOT_GUEST).modules(VIRTIO_MODULES),
        )
        .guest(
            "pt",
            GuestInitramfs::new(passthrough_guest(sizes))
                .file("/bin/edutest", edutest, 0o755)
                .file("/bin/iobench", iobench, 0o755),
        )
        .file("/ghost/vm/bench.toml", bench_toml, 0o644)
        .file("/ghost/vm/pt.toml", pt_toml, 0o644)
        .file(
            "/ghost/vm/boot-2.toml",
            boot_toml.replace("vcpus = 1", "vcpus = 2"),
            0o644,
        )
        .file(
            "/ghost/vm/boot-4.toml",
            boot_toml.replace("vcpus = 1", "vcpus = 4"),
            0o644,
        )
        .file(plan::L2_SCRUB, build_static(work, "scrub"), 0o755);
    let elf_boots = plan::BOOTS
        .iter()
        .filter(|(_, image, _)| *image == plan::Image::Vmlinux);
    for (vcpus, _, _) in elf_boots {
        host = host.file(
            format!("/ghost/vm/elf-{vcpus}.toml"),
            boot_elf_toml.replace("vcpus = 1", &format!("vcpus = {vcpus}")),
            0o644,
        );
    }
    host = host.debian(debian);
    for (n, kind) in disks.iter().enumerate() {
        debug_assert_eq!(kind.disk(), Some(n));
        let disk = disk_name(n);
        host = match kind {
            Kind::Firmware { .. } => host.disk(&debian.efi_image).file(
                firmware::ghost_vm_path(&disk),
                firmware::ghost_vm_file(&disk),
                0o644,
            ),
            _ => host.disk(&debian.image).file(
                format!("/ghost/vm/debian-{disk}.toml"),
                debian_vm_file("debian", &format!("/dev/{disk}")),
                0o644,
            ),
        };
    }
    if disks.iter().any(|k| matches!(k, Kind::Firmware { .. })) {
        host = host
            .with_ovmf()
            .map_err(|e| format!("OVMF and the fixed L1 QEMU (tests/testhost/setup.sh): {e}"))?;
    }
    Ok(match cloud_hypervisor {
        Some(ch) => host.binary(L2_CLOUD_HYPERVISOR, ch).file(
            L2_PTYRUN,
            build_static(work, "ptyrun"),
            0o755,
        ),
        None => host,
    })
}

/// Runs `jobs` (a scenario each) in as few test-host boots as it takes: a scenario that did
/// not finish runs once more, and a host that died is booted again for what it had left, up to
/// [`max_host_boots`] boots in all.
fn collect(
    host: &TestHost,
    vmms: &[Vmm],
    debian: &DebianImage,
    jobs: Vec<Job>,
    out: &mut Collected,
) -> Result<(), String> {
    let mut pending = jobs;
    let mut retried: Vec<String> = Vec::new();
    let max_boots = max_host_boots(pending.len());
    while !pending.is_empty() && out.host_boots < max_boots {
        out.host_boots += 1;
        let mut scenarios = vec![Scenario::new(
            "versions",
            "echo \"L2_QEMU=$($QEMU --version | head -n 1)\"\necho \"L2_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)\"",
        )];
        scenarios.extend(pending.iter().map(|j| j.scenario(vmms)));
        eprintln!(
            "ghost-bench: test-host boot {} with {} scenarios",
            out.host_boots,
            pending.len()
        );
        let report: RunReport = host
            .run(&scenarios)
            .map_err(|e| format!("test host: {e}"))?;
        if out.environment.is_empty() {
            environment(&report, debian, &mut out.environment);
        }
        let mut next = Vec::new();
        for job in pending {
            let name = job.name(vmms);
            let Some(s) = report.scenario(&name) else {
                next.push(job);
                continue;
            };
            // Never started: the test host died before its turn. Not the guest's failure;
            // it runs in the next boot (counted once, below).
            if s.outcome() == Outcome::NotStarted {
                next.push(job);
                continue;
            }
            match figures_of(s, job.kind, &vmms[job.vmm], job.vmm == 0) {
                Ok(figures) => {
                    for (key, value) in figures {
                        out.samples.record(vmms[job.vmm].label, key, value);
                    }
                    if job.vmm == 0 && job.kind == Kind::General {
                        out.ghost_exit_stats = exit_stats(s);
                    }
                    if let Kind::Debian { .. } | Kind::Firmware { .. } = job.kind {
                        let state = s.line_after(SETTLED).unwrap_or("?");
                        if state != "running" {
                            out.notes.push(format!(
                                "{name}: systemd's state before the stop was {state:?}, not \"running\""
                            ));
                        }
                    }
                }
                Err(why) => {
                    let tail: Vec<String> = s
                        .transcript()
                        .lines()
                        .rev()
                        .take(15)
                        .map(str::to_owned)
                        .collect();
                    let tail: Vec<String> = tail.into_iter().rev().collect();
                    eprintln!("ghost-bench: {why}; its last lines:\n{}", tail.join("\n"));
                    out.incomplete.push(why);
                    if !retried.contains(&name) {
                        retried.push(name);
                        next.push(job);
                    }
                }
            }
        }
        if !report.completed {
            eprintln!(
                "ghost-bench: the test host stopped early (QEMU exit {:?}); its stderr: {}",
                report.exit_status,
                report.qemu_stderr.trim()
            );
            out.incomplete.push(format!(
                "test-host boot {} stopped early (L1 QEMU: {}); {} scenario(s) left for the next boot",
                out.host_boots,
                report
                    .exit_status
                    .map_or_else(|| "no exit status".to_owned(), |st| st.to_string()),
                next.len()
            ));
        }
        pending = next;
    }
    Ok(())
}

/// The lines of ghost-vmm's `--exit-stats` report in a scenario's output.
fn exit_stats(s: &ScenarioResult) -> Option<String> {
    let start = s.lines.iter().position(|l| l.text.contains(": exits "))?;
    let lines: Vec<&str> = s.lines[start..]
        .iter()
        .take(3)
        .map(|l| l.text.as_str())
        .take_while(|t| t.contains(": exits ") || t.contains("busiest"))
        .collect();
    Some(lines.join("\n"))
}

fn environment(report: &RunReport, debian: &DebianImage, env: &mut Vec<String>) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    env.push(format!("machine (L0): {cpu}, {} CPUs", num_cpus()));
    env.push(
        "test host (L2): Linux under QEMU-TCG with emulated SVM (L1), kvm-amd inside; \
         every guest is nested KVM on an emulated CPU"
            .into(),
    );
    env.push(format!(
        "L2 kernel: {}",
        report.l2_field("kernel").unwrap_or("unknown")
    ));
    if let Some(v) = report.scenario("versions") {
        if let Some(q) = v.line_after("L2_QEMU=") {
            env.push(format!("reference VMM in L2: {q}"));
        }
    }
    env.push(
        "guest (L3): Debian's cloud kernel, 1 vCPU, 256 MiB, no hugepages; \
         virtio-blk on a 128 MiB raw file in L2's tmpfs, virtio-net on a TAP"
            .into(),
    );
    env.push(format!(
        "Debian guest (L3): the Debian 12 systemd image of tests/testhost/debian-image.sh \
         ({}), its own kernel {} and initramfs booted directly, 2 vCPUs, 1 GiB, root ext4 on \
         virtio-blk: a pristine copy of the cached image per boot (L1 snapshot overlay, \
         /dev/vdX in L2)",
        debian.dir.file_name().map_or_else(
            || debian.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        ),
        debian.kernel_version
    ));
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn render(opts: &Options, out: &Collected, vmms: &[Vmm]) -> String {
    let mut md = format!(
        "# ghost-vmm against QEMU, {}\n\n{} run(s){}, medians; ratio = ghost-vmm / QEMU \
         (below 1 is better where lower is better, above 1 where higher is better).\n\n",
        today(),
        opts.runs,
        if opts.quick { ", quick sizes" } else { "" }
    );
    md.push_str(&out.samples.table(opts.runs));
    md.push_str("\n## Environment\n\n");
    for e in &out.environment {
        let _ = writeln!(md, "- {e}");
    }
    let _ = writeln!(md, "- L1 QEMU (runs the test host): {}", out.l1_qemu);
    let _ = writeln!(
        md,
        "- VMMs: {}; test-host boots: {}",
        vmms.iter().map(|v| v.label).collect::<Vec<_>>().join(", "),
        out.host_boots
    );
    md.push_str(
        "\nThese are nested figures on an emulated CPU: ratios between VMMs of the same run \
         mean something, absolute values do not carry over to a real PC (see the README for \
         running the set there).\n",
    );
    md.push_str(&vmms::boot_notes(vmms));
    md.push_str(&debian_notes(opts, out.debian_runs, vmms));
    md.push_str(&firmware::notes(
        opts,
        out.firmware_runs,
        vmms,
        out.ovmf_version.as_deref(),
    ));
    if !out.notes.is_empty() {
        md.push('\n');
        for n in &out.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    if let Some(stats) = &out.ghost_exit_stats {
        let _ = write!(
            md,
            "\n## ghost-vmm's exits (last general run, boot and all workloads)\n\n```\n{stats}\n```\n"
        );
    }
    if !out.incomplete.is_empty() {
        md.push_str("\n## Scenarios that did not finish (run again)\n\n");
        for i in &out.incomplete {
            let _ = writeln!(md, "- {i}");
        }
    }
    md
}

/// How the Debian figures were taken, and why some columns have none.
fn debian_notes(opts: &Options, debian_runs: usize, vmms: &[Vmm]) -> String {
    let mut md = String::from(
        "\n## The Debian figures\n\n\
         - boot: from the line L2 prints just before it starts the VMM to the guest's \
         `GHOST-READY uptime=<s>` (the image's ghost-ready.service, ordered after \
         multi-user.target, logind and dbus); the uptime is the guest's own /proc/uptime then, \
         from its kernel's start (so boot minus uptime is the VMM's setup and the kernel's \
         decompression before its clock starts).\n\
         - stop: once systemd's boot is over (`systemctl is-system-running --wait` answered on the \
         serial console) and a second more, from the line L2 prints just before the stop request \
         to the one it prints when the VMM process has exited (status 0 required). ghost-vmm: \
         SIGTERM to its pid; QEMU: QMP `system_powerdown` on L2's loopback. Both press the guest's \
         ACPI power button; systemd-logind powers the guest off; the VMM exits. The times are the \
         host's timestamps of L2's console lines, like every time of this table.\n\
         - the button: ghost-vmm and QEMU microvm have hardware-reduced ACPI, where the power \
         button is a control-method device (PNP0C0C) notified through the Generic Event Device; \
         QEMU q35's is the fixed-feature button of ICH9's PM1 block. Linux turns either into the \
         same KEY_POWER event for logind.\n\
         - each boot has its own pristine copy of the image (an L1 snapshot overlay of the cached \
         file, read once on this machine before the test host starts, so no slot pays for a cold \
         cache).\n",
    );
    if debian_runs == 0 {
        md.push_str("- not taken in this run (no disk slot of the test host left for them).\n");
    } else if debian_runs < opts.runs {
        let _ = writeln!(
            md,
            "- taken in the first {debian_runs} of the {} runs only (medians of {debian_runs}).",
            opts.runs
        );
    }
    for v in vmms {
        if v.debian.is_none() {
            let _ = writeln!(md, "- {}: {}.", v.label, v.no_debian);
        } else if opts.quick && !v.required {
            let _ = writeln!(
                md,
                "- {}: not taken with --quick (a reference column; each Debian boot costs about a \
                 minute nested).",
                v.label
            );
        }
    }
    md
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("ghost-bench: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match bench(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ghost-bench: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench(opts: &Options) -> Result<bool, String> {
    let sizes = if opts.quick { QUICK } else { FULL };
    debug_assert!(READY_LINE.starts_with(DEBIAN_READY));
    let debian = DebianImage::ensure()
        .map_err(|e| format!("the Debian image (tests/testhost/debian-image.sh): {e}"))?;
    let vmms = vmms(opts.cloud_hypervisor.is_some());
    // The Debian image, directly and through the firmware, under every VMM that boots it (the
    // required ones only with --quick), the first slot rotating among them.
    let plan = Plan::new(
        opts.runs,
        &vmms,
        opts.quick,
        opts.debian_runs,
        opts.firmware_runs,
    )?;
    let disks = plan.disks();
    // Every copy of an image in L2 reads the same host file: read it once now, so that the
    // first boot of the run does not pay for a cold page cache on this machine alone.
    let mut images = vec![&debian.image];
    if plan.has_firmware() {
        images.push(&debian.efi_image);
    }
    for image in images {
        std::fs::File::open(image)
            .and_then(|mut f| std::io::copy(&mut f, &mut std::io::sink()))
            .map_err(|e| format!("{}: {e}", image.display()))?;
    }
    let work = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let host = build_host(
        work.path(),
        sizes,
        opts.cloud_hypervisor.as_deref(),
        &debian,
        &disks,
    )?;
    // build_host put OVMF into L2 for the firmware boots (`with_ovmf`, which has made sure of it).
    let ovmf_version = if plan.has_firmware() {
        Some(Ovmf::ensure().map_err(|e| format!("OVMF: {e}"))?.version)
    } else {
        None
    };
    let mut out = Collected {
        debian_runs: plan.debian_runs,
        firmware_runs: plan.firmware_runs,
        ovmf_version,
        l1_qemu: {
            let l1 = &host.assets().l1_qemu;
            let build = if l1.fixed {
                "the project's build with the CR8 fix, tests/testhost/l1-qemu.sh"
            } else {
                "Debian's"
            };
            format!("{} ({build})", l1.binary.display())
        },
        ..Collected::default()
    };
    for v in &vmms {
        out.samples.add_vmm(v.label);
    }
    collect(&host, &vmms, &debian, plan.jobs.clone(), &mut out)?;
    let md = render(opts, &out, &vmms);
    println!("{md}");
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    let file = results_path(&opts.out, &today());
    // Written whole to a temporary name, then renamed: never a half-written results file.
    let tmp = opts.out.join(format!(".{}.md.tmp", today()));
    std::fs::write(&tmp, &md).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &file).map_err(|e| format!("{}: {e}", file.display()))?;
    eprintln!("ghost-bench: results in {}", file.display());
    // Which figures a VMM is held to: microvm's config space is not PIO, and the Debian and
    // the firmware figures are taken only of the VMMs that booted the image that way.
    let boots = |runs: usize, group: &[usize], i: usize| runs > 0 && group.contains(&i);
    let takes = |i: usize, key: &str| {
        (vmms[i].config_pio || key != "pio_exit_ns")
            && (boots(plan.debian_runs, &plan.debian_vmms, i) || !DEBIAN_FIGURES.contains(&key))
            && (boots(plan.firmware_runs, &plan.firmware_vmms, i)
                || !FIRMWARE_FIGURES.contains(&key))
            // The boot-only runs are taken in full runs only, of the VMMs that boot that image.
            && match plan::boot_image_of(key) {
                Some(plan::Image::BzImage) => plan.boot_vmms.contains(&i),
                Some(plan::Image::Vmlinux) => plan.elf_vmms.contains(&i),
                None => true,
            }
            // The general guest's boot is the bzImage's figure (not Cloud Hypervisor's).
            && (vmms[i].bzimage || key != "boot_ms")
    };
    let (missing, reference): (Vec<_>, Vec<_>) =
        out.samples.missing().into_iter().partition(|(vmm, key)| {
            (0..vmms.len()).any(|i| vmms[i].label == vmm && vmms[i].required && takes(i, key))
        });
    for (vmm, key) in &reference {
        if (0..vmms.len()).any(|i| vmms[i].label == vmm && takes(i, key)) {
            eprintln!("ghost-bench: (reference column) no figure for {vmm}: {key}");
        }
    }
    for (vmm, key) in &missing {
        let label = figure(key).map_or(*key, |f| f.label);
        eprintln!("ghost-bench: no figure for {vmm}: {label}");
    }
    debug_assert!(FIGURES.iter().all(|f| figure(f.key).is_some()));
    Ok(missing.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Result<Options, String> {
        parse_args(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn firmware_runs_default_to_the_plan_and_to_one_with_quick() {
        let full = args(&[]).expect("no arguments");
        assert_eq!(
            (full.runs, full.debian_runs, full.firmware_runs),
            (5, None, None)
        );
        let quick = args(&["--quick"]).expect("--quick");
        assert_eq!((quick.runs, quick.firmware_runs), (1, Some(1)));
        let given = args(&["--quick", "--firmware-runs", "0"]).expect("0 skips them");
        assert_eq!(given.firmware_runs, Some(0));
        let given = args(&["--runs", "3", "--firmware-runs", "2"]).expect("2");
        assert_eq!((given.runs, given.firmware_runs), (3, Some(2)));
    }

    #[test]
    fn run_counts_are_checked() {
        assert_eq!(
            args(&["--firmware-runs"]).unwrap_err(),
            "--firmware-runs needs a number"
        );
        assert_eq!(
            args(&["--firmware-runs", "51"]).unwrap_err(),
            "--firmware-runs 51: give 0 to 50"
        );
        assert_eq!(
            args(&["--debian-runs", "0"]).unwrap_err(),
            "--debian-runs 0: give 1 to 50"
        );
        assert_eq!(
            args(&["--runs", "x"]).unwrap_err(),
            "--runs x: give 1 to 50"
        );
    }
}
