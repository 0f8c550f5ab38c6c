//! Building blocks shared by the L2 and L3 images: busybox, dynamically linked binaries with
//! their libraries, kernel modules.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::assets::{Assets, Kernel, Module};
use super::cpio::{Archive, Contents};
use super::error::{Error, Result};

/// In-image list of modules to load at boot, one `name rel_path` line each in load order;
/// `name -` marks a module the kernel package does not have (the init reports it).
pub(crate) const MODULE_LIST: &str = "/etc/ghost/modules";

/// Adds `/bin/busybox` and a symlink for each of its applets.
pub(crate) fn add_busybox(archive: &mut Archive, assets: &Assets) -> Result<()> {
    archive.file(
        "/bin/busybox",
        Contents::Host(assets.busybox.clone()),
        0o755,
    )?;
    for applet in assets.busybox_applets() {
        if !archive.contains(applet) {
            archive.symlink(applet, "/bin/busybox")?;
        }
    }
    Ok(())
}

/// Adds the host binary `src` at `dest` and the shared libraries `ldd` lists for it, at the
/// paths `ldd` reports (so the dynamic loader finds them in its default directories).
pub(crate) fn add_dynamic_binary(archive: &mut Archive, dest: &str, src: &Path) -> Result<()> {
    archive.file(dest, Contents::Host(src.to_path_buf()), 0o755)?;
    for (guest_path, host_path) in shared_libraries(src)? {
        if !archive.contains(&guest_path) {
            archive.file(&guest_path, Contents::Host(host_path), 0o755)?;
        }
    }
    Ok(())
}

/// `ldd`'s libraries of `binary`: (path to use in the image, host file with symlinks resolved).
/// A static binary has none.
pub(crate) fn shared_libraries(binary: &Path) -> Result<Vec<(String, PathBuf)>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Spawn {
            program: "ldd".into(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // ldd exits 1 for static executables.
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
            || stdout.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        return Err(Error::Command {
            command: format!("ldd {}", binary.display()),
            status: output.status,
            stderr: stderr.trim().to_owned(),
        });
    }
    let mut libs = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
        // "linux-vdso.so.1 (0x...)", "libfoo.so => not found".
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(Error::MissingLibrary {
                        binary: binary.to_path_buf(),
                        library: name.trim().to_owned(),
                    });
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if !path.starts_with('/') {
            continue; // the vDSO, "statically linked"
        }
        let host = fs::canonicalize(path).map_err(|e| Error::io("resolving", path, e))?;
        libs.push((path.to_owned(), host));
    }
    Ok(libs)
}

/// Adds `modules` (in load order) under `/lib/modules/<version>/`, a `modules.dep` for busybox
/// `modprobe`, and the [`MODULE_LIST`] the init scripts load them from. `missing` names are
/// listed too, so the init can say they were skipped. Compressed modules (`.ko.xz`, `.ko.zst`)
/// are decompressed, as busybox `insmod` needs plain ELF.
pub(crate) fn add_modules(
    archive: &mut Archive,
    kernel: &Kernel,
    modules: &[Module],
    missing: &[String],
) -> Result<()> {
    let base = format!("/lib/modules/{}", kernel.version);
    let mut list = String::new();
    let mut plain = Vec::with_capacity(modules.len());
    for m in modules {
        let (contents, rel) = match decompressor(&m.rel_path) {
            Some((program, rel)) => (Contents::Bytes(decompress(program, &m.path)?), rel),
            None => (Contents::Host(m.path.clone()), m.rel_path.clone()),
        };
        archive.file(&format!("{base}/{rel}"), contents, 0o644)?;
        list.push_str(&format!("{} {base}/{rel}\n", m.name));
        plain.push(Module {
            rel_path: rel,
            ..m.clone()
        });
    }
    for name in missing {
        list.push_str(&format!("{name} -\n"));
    }
    archive.file(
        &format!("{base}/modules.dep"),
        Contents::Bytes(kernel.modules_dep_subset(&plain).into_bytes()),
        0o644,
    )?;
    archive.file(MODULE_LIST, Contents::Bytes(list.into_bytes()), 0o644)?;
    Ok(())
}

/// The decompressor for a compressed module and its uncompressed relative path.
fn decompressor(rel: &str) -> Option<(&'static str, String)> {
    [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")]
        .iter()
        .find_map(|(ext, program)| rel.strip_suffix(ext).map(|r| (*program, r.to_owned())))
}

fn decompress(program: &str, path: &Path) -> Result<Vec<u8>> {
    let output = Command::new(program)
        .args(["-d", "-c"])
        .arg(path)
        .output()
        .map_err(|source| Error::Spawn {
            program: program.into(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{program} -dc {}", path.display()),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_of_a_dynamic_binary_lists_libc_and_the_loader() {
        let libs = shared_libraries(Path::new("/bin/ls")).expect("ldd /bin/ls");
        let guest: Vec<&str> = libs.iter().map(|(g, _)| g.as_str()).collect();
        assert!(guest.iter().any(|g| g.ends_with("/libc.so.6")), "{guest:?}");
        assert!(guest.contains(&"/lib64/ld-linux-x86-64.so.2"), "{guest:?}");
        assert!(libs.iter().all(|(_, host)| host.is_file()));
    }

    #[test]
    fn compressed_modules_are_recognized() {
        assert_eq!(
            decompressor("kernel/a/b.ko.xz"),
            Some(("xz", "kernel/a/b.ko".to_owned()))
        );
        assert_eq!(decompressor("kernel/a/b.ko"), None);
    }
}
