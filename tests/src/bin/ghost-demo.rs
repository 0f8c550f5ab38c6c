//! `ghost-demo`: boots a demo VM with ghost-vmm and gives you its serial console.
//!
//! On a host whose KVM runs stock guests natively (`ghost-vmm doctor --native`), the VM runs
//! right here. Otherwise (for example this project's PVM machines) it runs inside the nested
//! test host: QEMU-TCG boots a Linux with real KVM, and ghost-vmm runs in there.
//!
//! The guest is Debian's cloud kernel with a busybox shell; `poweroff -f` ends the demo.

use std::path::Path;
use std::process::{Command, ExitCode};

use ghost_tests::testhost::{ghost_vmm_binary, Assets, GuestInitramfs, KernelFlavor, TestHost};

const BANNER: &str = r#"echo
echo "=== ghost-vmm demo guest: $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPUs, $(sed -n 's/^MemTotal: *//p' /proc/meminfo) RAM"
echo "=== a busybox shell; 'poweroff -f' ends the demo"
setsid cttyhack sh -l
"#;

fn vm_file(kernel: &Path, initramfs: &Path) -> String {
    format!(
        "[vm]\nname = \"demo\"\nvcpus = 2\n\n[memory]\nsize = \"512M\"\n\n[boot]\nkernel = \"{}\"\ninitramfs = \"{}\"\ncmdline = \"console=ttyS0 quiet panic=-1\"\n",
        kernel.display(),
        initramfs.display()
    )
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ghost-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ghost_vmm = ghost_vmm_binary()?;
    let native = Command::new(&ghost_vmm)
        .args(["doctor", "--native"])
        .status()?
        .success();
    let guest = GuestInitramfs::new(BANNER);
    if native {
        eprintln!("ghost-demo: this host's KVM runs stock guests natively: running the VM here");
        let assets = Assets::ensure()?;
        let dir = ghost_tests::testhost::target_dir().join("demo");
        std::fs::create_dir_all(&dir)?;
        let initramfs = dir.join("demo.cpio.gz");
        guest.build(&assets, &initramfs)?;
        let toml = dir.join("demo.toml");
        std::fs::write(
            &toml,
            vm_file(&assets.kernel(KernelFlavor::Cloud).bzimage, &initramfs),
        )?;
        let status = Command::new(&ghost_vmm).arg("run").arg(&toml).status()?;
        return Ok(ExitCode::from(
            u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
        ));
    }
    eprintln!(
        "ghost-demo: this host's KVM cannot run stock guests at native speed (see `ghost-vmm doctor`);\n\
         ghost-demo: running the VM inside the nested test host (QEMU-TCG with real KVM inside).\n\
         ghost-demo: the test host boots in ~10-30 s, then the guest in ~15 s. Ctrl-A X quits QEMU."
    );
    let script = "echo 'test host up; ghost-vmm run /ghost/vm/demo.toml'\n\
                  $GHOST_VMM run /ghost/vm/demo.toml\n\
                  echo \"ghost-vmm exited with status $?\"\n";
    let host = TestHost::new("demo")?
        .with_built_ghost_vmm()?
        .guest("demo", guest)
        .file(
            "/ghost/vm/demo.toml",
            vm_file(
                Path::new("/ghost/kernel/cloud/bzImage"),
                Path::new("/ghost/initrd/demo.cpio.gz"),
            ),
            0o644,
        );
    let status = host.interactive(script)?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
