//! A newc ("070701") cpio writer for initramfs images, with optional gzip compression.
//!
//! Written here rather than driving `cpio(1)` so that archive paths, modes and symlinks are
//! exactly what the harness says, independent of the host's file tree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{Error, Result};

/// How an initramfs image is compressed.
///
/// The Linux kernel unpacks either. Under TCG every byte of decompression is emulated, so a
/// large image (the test host's, ~100 MiB with QEMU and the L3 kernels) boots faster
/// uncompressed; small images (an L3 guest's) are gzip'd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain cpio archive.
    None,
    /// `gzip -<level>` (1 = fastest .. 9 = smallest).
    Gzip {
        /// The gzip level, 1..=9.
        level: u32,
    },
}

impl Compression {
    /// The usual file name suffix (`.cpio` or `.cpio.gz`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => ".cpio",
            Compression::Gzip { .. } => ".cpio.gz",
        }
    }
}

/// The contents of a file placed in an image.
#[derive(Debug, Clone)]
pub enum Contents {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The contents of this host file (symlinks followed), read when the image is written.
    Host(PathBuf),
}

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { contents: Contents, mode: u32 },
    Symlink(String),
}

/// An initramfs under construction: absolute guest paths mapped to entries.
///
/// Parent directories are created implicitly. Adding a path twice replaces the first entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Normalizes a guest path: strips the leading `/`, rejects empty, `.` and `..` components.
fn normalize(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(Error::Config(format!("bad path inside an image: {path:?}")));
    }
    Ok(parts.join("/"))
}

impl Archive {
    /// Adds a directory.
    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.entries.insert(normalize(path)?, Entry::Dir);
        Ok(())
    }

    /// Adds a regular file with permission bits `mode` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, contents: Contents, mode: u32) -> Result<()> {
        self.entries.insert(
            normalize(path)?,
            Entry::File {
                contents,
                mode: mode & 0o7777,
            },
        );
        Ok(())
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.entries
            .insert(normalize(path)?, Entry::Symlink(target.to_owned()));
        Ok(())
    }

    /// Whether `path` has been added.
    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// Writes the image to `out`; returns the size of the uncompressed archive in bytes.
    pub fn write(&self, out: &Path, compression: Compression) -> Result<u64> {
        let file = File::create(out).map_err(|e| Error::io("creating", out, e))?;
        match compression {
            Compression::None => {
                let mut w = BufWriter::with_capacity(1 << 20, file);
                let size = self.write_cpio(&mut w, out)?;
                w.flush().map_err(|e| Error::io("writing", out, e))?;
                Ok(size)
            }
            Compression::Gzip { level } => {
                let level = level.clamp(1, 9);
                let program = format!("gzip -{level} -n -c");
                let mut child = Command::new("gzip")
                    .arg(format!("-{level}"))
                    .args(["-n", "-c"])
                    .stdin(Stdio::piped())
                    .stdout(file)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|source| Error::Spawn {
                        program: program.clone(),
                        source,
                    })?;
                let written = match child.stdin.take() {
                    Some(stdin) => {
                        let mut w = BufWriter::with_capacity(1 << 20, stdin);
                        self.write_cpio(&mut w, out).and_then(|size| {
                            w.flush().map_err(|e| Error::io("writing", out, e))?;
                            Ok(size)
                        })
                    }
                    None => Err(Error::Config("gzip has no stdin".into())),
                };
                let output = child.wait_with_output().map_err(|source| Error::Spawn {
                    program: program.clone(),
                    source,
                })?;
                if !output.status.success() {
                    return Err(Error::Command {
                        command: program,
                        status: output.status,
                        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    });
                }
                written
            }
        }
    }

    /// Writes the newc archive: every directory before its contents, then the trailer.
    fn write_cpio(&self, w: &mut impl Write, out: &Path) -> Result<u64> {
        let mut cpio = CpioWriter { w, ino: 1, size: 0 };
        let werr = |e| Error::io("writing", out, e);

        // Implicit parent directories, merged with the explicit entries. A parent is a prefix
        // of its children, so BTreeMap order emits it first.
        let mut all: BTreeMap<&str, Option<&Entry>> = BTreeMap::new();
        for (path, entry) in &self.entries {
            let mut end = 0;
            while let Some(slash) = path[end..].find('/') {
                end += slash;
                all.entry(&path[..end]).or_insert(None);
                end += 1;
            }
            all.insert(path, Some(entry));
        }

        for (path, entry) in all {
            match entry {
                None | Some(Entry::Dir) => cpio.entry(path, 0o040_755, 2, &[]).map_err(werr)?,
                Some(Entry::Symlink(target)) => cpio
                    .entry(path, 0o120_777, 1, target.as_bytes())
                    .map_err(werr)?,
                Some(Entry::File {
                    contents: Contents::Bytes(bytes),
                    mode,
                }) => cpio.entry(path, 0o100_000 | mode, 1, bytes).map_err(werr)?,
                Some(Entry::File {
                    contents: Contents::Host(src),
                    mode,
                }) => {
                    let mut f = File::open(src).map_err(|e| Error::io("opening", src, e))?;
                    let len = f
                        .metadata()
                        .map_err(|e| Error::io("reading metadata of", src, e))?
                        .len();
                    cpio.header(path, 0o100_000 | mode, 1, len).map_err(werr)?;
                    let copied =
                        io::copy(&mut f, cpio.w).map_err(|e| Error::io("reading", src, e))?;
                    if copied != len {
                        return Err(Error::io(
                            "reading",
                            src,
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "file changed while packing",
                            ),
                        ));
                    }
                    cpio.size += len;
                    cpio.pad().map_err(werr)?;
                }
            }
        }
        cpio.entry("TRAILER!!!", 0, 1, &[]).map_err(werr)?;
        Ok(cpio.size)
    }
}

/// Low-level newc record writer.
struct CpioWriter<'a, W: Write> {
    w: &'a mut W,
    ino: u32,
    size: u64,
}

impl<W: Write> CpioWriter<'_, W> {
    fn entry(&mut self, path: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        self.header(path, mode, nlink, data.len() as u64)?;
        self.w.write_all(data)?;
        self.size += data.len() as u64;
        self.pad()
    }

    fn header(&mut self, path: &str, mode: u32, nlink: u32, len: u64) -> io::Result<()> {
        let len = u32::try_from(len).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: over 4 GiB"))
        })?;
        let name_len = path.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, nlink, 0, len, 0, 0, 0, 0, name_len, 0
        );
        self.ino += 1;
        self.w.write_all(header.as_bytes())?;
        self.w.write_all(path.as_bytes())?;
        self.w.write_all(&[0])?;
        self.size += (header.len() + name_len) as u64;
        self.pad()
    }

    /// Pads the archive to a multiple of 4 bytes.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.size % 4) % 4;
        self.w.write_all(&[0u8; 3][..n as usize])?;
        self.size += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_checked() {
        assert_eq!(normalize("/a//b/").expect("valid"), "a/b");
        assert!(normalize("/").is_err());
        assert!(normalize("a/../b").is_err());
    }

    #[test]
    fn archive_unpacks_with_cpio() {
        let dir = std::env::temp_dir().join(format!("ghost-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut a = Archive::default();
        a.file("/bin/x", Contents::Bytes(b"hello".to_vec()), 0o755)
            .expect("file");
        a.symlink("/bin/y", "x").expect("symlink");
        a.dir("/empty").expect("dir");
        for compression in [Compression::None, Compression::Gzip { level: 1 }] {
            let out = dir.join(format!("t{}", compression.suffix()));
            a.write(&out, compression).expect("write");
            let unpacked = dir.join("root");
            std::fs::create_dir_all(&unpacked).expect("unpack dir");
            let status = Command::new("sh")
                .arg("-c")
                .arg("gzip -dcf \"$0\" | (cd \"$1\" && cpio -i -d --quiet)")
                .arg(&out)
                .arg(&unpacked)
                .status()
                .expect("run cpio");
            assert!(status.success(), "cpio -i failed for {compression:?}");
            assert_eq!(
                std::fs::read(unpacked.join("bin/y")).expect("read through symlink"),
                b"hello"
            );
            assert!(unpacked.join("empty").is_dir());
            std::fs::remove_dir_all(&unpacked).expect("cleanup");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
