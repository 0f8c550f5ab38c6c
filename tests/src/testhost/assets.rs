//! The test host's inputs: Debian's kernels (unpacked by `setup.sh`), busybox and QEMU (L1's,
//! built by `l1-qemu.sh`, and Debian's, the reference VMM inside L2).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use super::error::{Error, Result};
use super::paths::{cache_dir, workspace_root, CACHE_ENV};

/// Environment variable naming the QEMU binary that runs the test host (L1), overriding
/// [`L1Qemu::locate`]'s choice (e.g. Debian's own binary, to compare the two).
pub const L1_QEMU_ENV: &str = "GHOST_L1_QEMU";

/// Debian's firmware directories, passed to L1 QEMU as `-L` (SeaBIOS, linuxboot, the iPXE
/// option ROMs of its emulated NICs).
pub const L1_FIRMWARE_DIRS: &[&str] = &[
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/usr/lib/ipxe/qemu",
];

/// The QEMU that runs the test host (L1 QEMU-TCG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Qemu {
    /// The binary.
    pub binary: PathBuf,
    /// Whether this is the project's build of Debian's QEMU with the CR8 fix
    /// (`tests/testhost/l1-qemu.sh`, `$CACHE/qemu-l1-<hash>/`). Debian's own binary aborts as
    /// soon as an L3 guest writes CR8 (OVMF does, Windows does; Linux does not):
    /// `/work/shared/docs/testhost.md`, "Known L1 QEMU bug".
    pub fixed: bool,
    /// Arguments it needs before any other: `-L` for each of [`L1_FIRMWARE_DIRS`] (the fixed
    /// build; Debian's binary knows its directories).
    pub args: Vec<String>,
}

impl L1Qemu {
    /// `$GHOST_L1_QEMU` if set (fixed unless it is `debian`, Debian's binary); otherwise the
    /// fixed build if `l1-qemu.sh --cached` finds it for the current script, patch and
    /// Debian source version; otherwise `debian`, not fixed. Builds nothing.
    pub fn locate(cache: &Path, debian: &Path) -> Result<L1Qemu> {
        let fixed = |binary: PathBuf| L1Qemu {
            binary,
            fixed: true,
            args: L1_FIRMWARE_DIRS
                .iter()
                .flat_map(|d| ["-L".to_owned(), (*d).to_owned()])
                .collect(),
        };
        let debian_qemu = || L1Qemu {
            binary: debian.to_path_buf(),
            fixed: false,
            args: Vec::new(),
        };
        if let Some(bin) = std::env::var_os(L1_QEMU_ENV).filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            if !bin.is_file() {
                return Err(Error::MissingAsset {
                    what: "L1 QEMU ($GHOST_L1_QEMU)",
                    path: bin,
                });
            }
            return Ok(if bin == debian {
                debian_qemu()
            } else {
                fixed(bin)
            });
        }
        let script = workspace_root().join("tests/testhost/l1-qemu.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("--cached")
            .env(CACHE_ENV, cache)
            .output()
            .map_err(|source| Error::Spawn {
                program: script.display().to_string(),
                source,
            })?;
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let binary = Path::new(&dir).join("qemu-system-x86_64");
        Ok(if output.status.success() && binary.is_file() {
            fixed(binary)
        } else {
            debian_qemu()
        })
    }
}

/// Which Debian kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelFlavor {
    /// The kernel `linux-image-cloud-amd64` depends on: small, virtio-centric, no USB/DRM.
    /// It is also the test host's (L2) kernel.
    Cloud,
    /// The kernel `linux-image-amd64` depends on: the generic one, with xHCI and DRM drivers.
    Generic,
}

impl KernelFlavor {
    /// `"cloud"` or `"generic"`: the name used in cache and in-L2 paths.
    pub fn name(self) -> &'static str {
        match self {
            KernelFlavor::Cloud => "cloud",
            KernelFlavor::Generic => "generic",
        }
    }
}

impl fmt::Display for KernelFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A loadable kernel module of a [`Kernel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The module name with `_` for `-` (`kvm_amd`), as `lsmod` shows it.
    pub name: String,
    /// The path relative to the modules directory (`kernel/arch/x86/kvm/kvm-amd.ko`).
    pub rel_path: String,
    /// The host file.
    pub path: PathBuf,
}

#[derive(Debug)]
struct DepEntry {
    rel_path: String,
    /// Dependency names, as listed in `modules.dep`.
    deps: Vec<String>,
}

/// One unpacked Debian kernel package (see `tests/testhost/setup.sh`).
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Which kernel this is.
    pub flavor: KernelFlavor,
    /// `uname -r` of this kernel (`6.1.0-56-cloud-amd64`).
    pub version: String,
    /// The bzImage as shipped (`boot/vmlinuz-*`).
    pub bzimage: PathBuf,
    /// The ELF64 `vmlinux` extracted from the bzImage.
    pub vmlinux: PathBuf,
    /// `lib/modules/<version>`, with a `modules.dep` generated by `depmod`.
    pub modules_dir: PathBuf,
    deps: Arc<BTreeMap<String, DepEntry>>,
}

/// `kvm-amd`, `kvm_amd`, `kernel/arch/x86/kvm/kvm-amd.ko` → `kvm_amd`.
fn module_name(name_or_path: &str) -> String {
    let base = name_or_path.rsplit('/').next().unwrap_or(name_or_path);
    let base = [".xz", ".zst", ".gz"]
        .iter()
        .fold(base, |b, ext| b.strip_suffix(ext).unwrap_or(b));
    let base = base.strip_suffix(".ko").unwrap_or(base);
    base.replace('-', "_")
}

/// Parses `modules.dep`: `kernel/a.ko: kernel/b.ko kernel/c.ko` lines, keyed by module name.
fn parse_modules_dep(text: &str) -> BTreeMap<String, DepEntry> {
    text.lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            let entry = DepEntry {
                rel_path: module.trim().to_owned(),
                deps: deps.split_whitespace().map(module_name).collect(),
            };
            Some((module_name(module), entry))
        })
        .collect()
}

impl Kernel {
    fn load(flavor: KernelFlavor, cache: &Path) -> Result<Self> {
        let dir = cache.join(format!("kernel-{}", flavor.name()));
        let need = |what: &'static str, path: PathBuf| {
            if path.exists() {
                Ok(path)
            } else {
                Err(Error::MissingAsset { what, path })
            }
        };
        let version_file = need("kernel version file", dir.join("version"))?;
        let version = fs::read_to_string(&version_file)
            .map_err(|e| Error::io("reading", &version_file, e))?
            .trim()
            .to_owned();
        let bzimage = need("kernel bzImage", dir.join("vmlinuz"))?;
        let vmlinux = need("kernel ELF vmlinux", dir.join("vmlinux"))?;
        let modules_dir = need("kernel modules directory", dir.join("modules"))?;
        let dep_file = need("modules.dep", modules_dir.join("modules.dep"))?;
        let text = fs::read_to_string(&dep_file).map_err(|e| Error::io("reading", &dep_file, e))?;
        let deps = parse_modules_dep(&text);
        Ok(Kernel {
            flavor,
            version,
            bzimage,
            vmlinux,
            modules_dir,
            deps: Arc::new(deps),
        })
    }

    /// The module called `name` (`-` and `_` are interchangeable; a `.ko` path works too).
    pub fn module(&self, name: &str) -> Result<Module> {
        let name = module_name(name);
        let entry = self.deps.get(&name).ok_or_else(|| Error::UnknownModule {
            kernel: self.version.clone(),
            module: name.clone(),
        })?;
        Ok(Module {
            path: self.modules_dir.join(&entry.rel_path),
            rel_path: entry.rel_path.clone(),
            name,
        })
    }

    /// The modules `names` plus everything they depend on, in a valid load order (dependencies
    /// first, otherwise in the order asked), and the names this kernel does not have.
    pub fn resolve_modules<S: AsRef<str>>(&self, names: &[S]) -> (Vec<Module>, Vec<String>) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for name in names {
            let name = module_name(name.as_ref());
            if self.deps.contains_key(&name) {
                self.visit(&name, &mut seen, &mut order);
            } else {
                missing.push(name);
            }
        }
        (order, missing)
    }

    /// Depth-first post-order over `modules.dep`.
    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<Module>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        if let Some(entry) = self.deps.get(name) {
            // modules.dep lists a module's dependencies so that the last must load first.
            for dep in entry.deps.iter().rev() {
                self.visit(dep, seen, order);
            }
            order.push(Module {
                name: name.to_owned(),
                rel_path: entry.rel_path.clone(),
                path: self.modules_dir.join(&entry.rel_path),
            });
        }
    }

    /// The `modules.dep` lines of `modules` only (for busybox `modprobe` inside a guest).
    pub(crate) fn modules_dep_subset(&self, modules: &[Module]) -> String {
        let mut out = String::new();
        for m in modules {
            let deps = self
                .deps
                .get(&m.name)
                .map(|e| e.deps.as_slice())
                .unwrap_or(&[]);
            let deps: Vec<&str> = deps
                .iter()
                .filter_map(|d| self.deps.get(d).map(|e| e.rel_path.as_str()))
                .collect();
            out.push_str(&format!("{}: {}\n", m.rel_path, deps.join(" ")));
        }
        out
    }
}

/// Everything the test host is built from, located (and prepared if needed) by
/// [`Assets::ensure`].
#[derive(Debug, Clone)]
pub struct Assets {
    /// The asset cache (`<workspace>/.cache/testhost` unless `$GHOST_TESTHOST_CACHE`).
    pub cache_dir: PathBuf,
    /// The cloud kernel: L2's kernel and the default L3 kernel.
    pub cloud: Kernel,
    /// The generic kernel (USB, DRM) for L3 guests that need it.
    pub generic: Kernel,
    /// The statically linked busybox (Debian's `busybox-static`).
    pub busybox: PathBuf,
    /// Debian's `qemu-system-x86_64` (package `qemu-system-x86`): copied into L2 as the
    /// reference VMM (and runs L2 when there is no fixed [`l1_qemu`](Self::l1_qemu)).
    pub qemu: PathBuf,
    /// The QEMU that runs L2: the fixed build when `setup.sh` has made it, else Debian's.
    pub l1_qemu: L1Qemu,
    applets: Arc<Vec<String>>,
}

static ASSETS: Mutex<Option<Assets>> = Mutex::new(None);

impl Assets {
    /// Locates the assets, running `tests/testhost/setup.sh` first if any is missing.
    ///
    /// The result is cached for the life of the process. Fails with a message naming the
    /// missing file (or the setup script's output) rather than letting a boot hang.
    pub fn ensure() -> Result<Assets> {
        let mut cached = ASSETS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(assets) = cached.as_ref() {
            return Ok(assets.clone());
        }
        let assets = match Self::locate() {
            Ok(assets) => assets,
            Err(_) => {
                run_setup()?;
                Self::locate()?
            }
        };
        *cached = Some(assets.clone());
        Ok(assets)
    }

    /// Locates the assets without preparing anything.
    pub fn locate() -> Result<Assets> {
        let cache = cache_dir();
        for flavor in [KernelFlavor::Cloud, KernelFlavor::Generic] {
            let stamp = cache
                .join(format!("kernel-{}", flavor.name()))
                .join(".complete");
            if !stamp.is_file() {
                return Err(Error::MissingAsset {
                    what: "kernel setup stamp",
                    path: stamp,
                });
            }
        }
        let cloud = Kernel::load(KernelFlavor::Cloud, &cache)?;
        let generic = Kernel::load(KernelFlavor::Generic, &cache)?;
        let busybox = find_program("busybox", &["/bin/busybox", "/usr/bin/busybox"])?;
        let qemu = find_program(
            "qemu-system-x86_64",
            &[
                "/usr/bin/qemu-system-x86_64",
                "/usr/local/bin/qemu-system-x86_64",
            ],
        )?;
        let applets = busybox_applets(&busybox)?;
        let l1_qemu = L1Qemu::locate(&cache, &qemu)?;
        Ok(Assets {
            cache_dir: cache,
            cloud,
            generic,
            busybox,
            qemu,
            l1_qemu,
            applets: Arc::new(applets),
        })
    }

    /// The kernel of `flavor`.
    pub fn kernel(&self, flavor: KernelFlavor) -> &Kernel {
        match flavor {
            KernelFlavor::Cloud => &self.cloud,
            KernelFlavor::Generic => &self.generic,
        }
    }

    /// Busybox's applets as paths relative to `/` (`bin/sh`, `sbin/insmod`, ...).
    pub fn busybox_applets(&self) -> &[String] {
        &self.applets
    }
}

fn find_program(what: &'static str, candidates: &[&str]) -> Result<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingAsset {
            what,
            path: PathBuf::from(candidates[0]),
        })
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| Error::Spawn {
            program: busybox.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{} --list-full", busybox.display()),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Runs `tests/testhost/setup.sh`, echoing its output (captured by the test harness).
pub(crate) fn run_setup() -> Result<()> {
    let script = workspace_root().join("tests/testhost/setup.sh");
    eprintln!("testhost: preparing assets with {}", script.display());
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|source| Error::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{text}");
    if output.status.success() {
        Ok(())
    } else {
        let lines: Vec<&str> = text.lines().collect();
        Err(Error::Setup {
            script,
            status: output.status,
            output_tail: lines[lines.len().saturating_sub(20)..].join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_normalized() {
        assert_eq!(module_name("kvm-amd"), "kvm_amd");
        assert_eq!(
            module_name("kernel/drivers/vfio/pci/vfio-pci.ko"),
            "vfio_pci"
        );
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko.xz"),
            "virtio_blk"
        );
    }

    #[test]
    fn dependencies_load_first() {
        let text = "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n";
        let kernel = Kernel {
            flavor: KernelFlavor::Cloud,
            version: "test".into(),
            bzimage: PathBuf::new(),
            vmlinux: PathBuf::new(),
            modules_dir: PathBuf::from("/m"),
            deps: Arc::new(parse_modules_dep(text)),
        };
        let (order, missing) = kernel.resolve_modules(&["a", "nope", "c"]);
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        assert_eq!(missing, ["nope"]);
    }
}
