//! Moving a host function to vfio-pci and back, through sysfs (`driver_override`, as libvirt's
//! "managed" devices do): [`bind_to_vfio`] remembers the driver it had, [`Binding::restore`]
//! gives it back. Each sysfs write that can block (a GPU driver letting go of its device) is
//! bounded by a timeout.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// How long one unbind/bind/probe write may take before it is reported as hung.
pub const SYSFS_TIMEOUT: Duration = Duration::from_secs(20);

/// The vfio-pci driver's name in sysfs.
pub const VFIO_PCI: &str = "vfio-pci";

/// Errors moving a function between drivers.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// No such function.
    #[error("there is no PCI device {0} on this host (`lspci -D` lists them)")]
    NoDevice(String),
    /// vfio-pci is not available.
    #[error("the vfio-pci driver is not loaded: `modprobe vfio-pci`")]
    NoVfioPci,
    /// A sysfs write failed.
    #[error("{address}: writing {value:?} to {path} failed: {source}")]
    Write {
        /// The function.
        address: String,
        /// What was written.
        value: String,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs write did not return in time.
    #[error(
        "{address}: writing {value:?} to {path} did not finish in {secs} s (the driver hangs)"
    )]
    Hung {
        /// The function.
        address: String,
        /// What was written.
        value: String,
        /// Where.
        path: PathBuf,
        /// The timeout.
        secs: u64,
    },
    /// The function ended up on another driver than wanted.
    #[error("{address} is bound to {found} after probing, not {wanted}")]
    WrongDriver {
        /// The function.
        address: String,
        /// The driver wanted.
        wanted: String,
        /// The driver found (or "no driver").
        found: String,
    },
}

/// The driver `address` is bound to, if any.
pub fn driver_of(sys: &Path, address: &str) -> Option<String> {
    let link = sys.join("bus/pci/devices").join(address).join("driver");
    std::fs::read_link(link)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn write(sys_file: &Path, address: &str, value: &str, timeout: Duration) -> Result<(), BindError> {
    let (tx, rx) = mpsc::channel();
    let path = sys_file.to_path_buf();
    let owned = value.to_owned();
    // A hung driver blocks the writing thread in the kernel: leave it there, report, go on.
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(&path, owned.as_bytes()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(BindError::Write {
            address: address.to_owned(),
            value: value.trim().to_owned(),
            path: sys_file.to_path_buf(),
            source,
        }),
        Err(_) => Err(BindError::Hung {
            address: address.to_owned(),
            value: value.trim().to_owned(),
            path: sys_file.to_path_buf(),
            secs: timeout.as_secs(),
        }),
    }
}

/// A function ghost-vmm moved to vfio-pci, and the driver to give it back to.
#[derive(Debug)]
pub struct Binding {
    sys: PathBuf,
    address: String,
    /// The driver it had (`None`: it had none).
    original: Option<String>,
    /// Whether `bind_to_vfio` changed anything (false when it was on vfio-pci already).
    changed: bool,
    timeout: Duration,
}

impl Binding {
    /// The function's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The driver it had before, if any.
    pub fn original(&self) -> Option<&str> {
        self.original.as_deref()
    }

    /// Whether binding changed the function's driver (restoring then changes it back).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Keeps the function on vfio-pci for good (nothing is restored on drop); returns the
    /// driver it had, for a later [`restore_driver`].
    pub fn keep(mut self) -> Option<String> {
        self.changed = false;
        self.original.take()
    }

    /// Gives the function back to the driver it had (or none, if it had none).
    pub fn restore(mut self) -> Result<(), BindError> {
        let result = self.restore_now();
        self.changed = false;
        result
    }

    fn restore_now(&self) -> Result<(), BindError> {
        if !self.changed {
            return Ok(());
        }
        restore_driver(
            &self.sys,
            &self.address,
            self.original.as_deref(),
            self.timeout,
        )
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        if let Err(e) = self.restore_now() {
            log::error!("{e}");
        }
    }
}

/// Moves `address` from wherever it is to vfio-pci. Nothing changes (and nothing will be
/// restored) if it is on vfio-pci already. On failure the function is put back as it was.
pub fn bind_to_vfio(sys: &Path, address: &str, timeout: Duration) -> Result<Binding, BindError> {
    let dev = sys.join("bus/pci/devices").join(address);
    if !dev.exists() {
        return Err(BindError::NoDevice(address.to_owned()));
    }
    let original = driver_of(sys, address);
    let mut binding = Binding {
        sys: sys.to_path_buf(),
        address: address.to_owned(),
        original: original.clone(),
        changed: false,
        timeout,
    };
    if original.as_deref() == Some(VFIO_PCI) {
        return Ok(binding);
    }
    if !sys.join("bus/pci/drivers").join(VFIO_PCI).exists() {
        return Err(BindError::NoVfioPci);
    }
    // From here on, a failure restores the original driver (through the binding's drop).
    binding.changed = true;
    write(&dev.join("driver_override"), address, VFIO_PCI, timeout)?;
    if original.is_some() {
        write(&dev.join("driver/unbind"), address, address, timeout)?;
    }
    write(
        &sys.join("bus/pci/drivers_probe"),
        address,
        address,
        timeout,
    )?;
    match driver_of(sys, address) {
        Some(d) if d == VFIO_PCI => Ok(binding),
        found => Err(BindError::WrongDriver {
            address: address.to_owned(),
            wanted: VFIO_PCI.to_owned(),
            found: found.unwrap_or_else(|| "no driver".to_owned()),
        }),
    }
}

/// Takes `address` off vfio-pci, clears its override and binds it to `original` (or leaves it
/// without a driver when `original` is `None`). With `original` unknown, use
/// [`probe_default_driver`].
pub fn restore_driver(
    sys: &Path,
    address: &str,
    original: Option<&str>,
    timeout: Duration,
) -> Result<(), BindError> {
    let dev = sys.join("bus/pci/devices").join(address);
    if !dev.exists() {
        return Err(BindError::NoDevice(address.to_owned()));
    }
    if driver_of(sys, address).as_deref() == Some(VFIO_PCI) {
        write(&dev.join("driver/unbind"), address, address, timeout)?;
    }
    // An empty override lets every driver match again.
    write(&dev.join("driver_override"), address, "\n", timeout)?;
    let Some(original) = original else {
        return Ok(());
    };
    let bind = sys.join("bus/pci/drivers").join(original).join("bind");
    if write(&bind, address, address, timeout).is_err() {
        // The driver may have claimed it already, or bind may be refused: probing picks the
        // driver the kernel would choose at boot.
        write(
            &sys.join("bus/pci/drivers_probe"),
            address,
            address,
            timeout,
        )?;
    }
    match driver_of(sys, address) {
        Some(d) if d == original => Ok(()),
        found => Err(BindError::WrongDriver {
            address: address.to_owned(),
            wanted: original.to_owned(),
            found: found.unwrap_or_else(|| "no driver".to_owned()),
        }),
    }
}

/// Takes `address` off vfio-pci and lets the kernel bind the driver it would choose at boot.
/// Returns that driver, if any.
pub fn probe_default_driver(
    sys: &Path,
    address: &str,
    timeout: Duration,
) -> Result<Option<String>, BindError> {
    restore_driver(sys, address, None, timeout)?;
    write(
        &sys.join("bus/pci/drivers_probe"),
        address,
        address,
        timeout,
    )?;
    Ok(driver_of(sys, address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const ADDR: &str = "0000:00:04.0";

    /// A sysfs tree with one function bound to `driver`, and vfio-pci present. The fake
    /// kernel never rebinds anything, so every bind attempt ends on the wrong driver.
    fn tree(driver: Option<&str>) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("bus/pci/devices").join(ADDR);
        std::fs::create_dir_all(&dev).unwrap();
        for d in ["vfio-pci", "nvme"] {
            let dir = t.path().join("bus/pci/drivers").join(d);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("bind"), "").unwrap();
            std::fs::write(dir.join("unbind"), "").unwrap();
        }
        std::fs::write(t.path().join("bus/pci/drivers_probe"), "").unwrap();
        std::fs::write(dev.join("driver_override"), "(null)\n").unwrap();
        if let Some(d) = driver {
            symlink(t.path().join("bus/pci/drivers").join(d), dev.join("driver")).unwrap();
        }
        t
    }

    fn read(t: &tempfile::TempDir, rel: &str) -> String {
        std::fs::read_to_string(t.path().join(rel)).unwrap()
    }

    #[test]
    fn already_on_vfio_pci_changes_nothing() {
        let t = tree(Some("vfio-pci"));
        let b = bind_to_vfio(t.path(), ADDR, SYSFS_TIMEOUT).unwrap();
        assert!(!b.changed());
        assert_eq!(b.original(), Some("vfio-pci"));
        b.restore().unwrap();
        assert_eq!(
            read(&t, &format!("bus/pci/devices/{ADDR}/driver_override")),
            "(null)\n"
        );
        assert_eq!(read(&t, "bus/pci/drivers_probe"), "");
    }

    #[test]
    fn failed_bind_puts_things_back_and_says_where_it_ended() {
        let t = tree(Some("nvme"));
        let e = bind_to_vfio(t.path(), ADDR, SYSFS_TIMEOUT).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{ADDR} is bound to nvme after probing, not vfio-pci")
        );
        // It unbound from nvme and probed; then the rollback cleared the override and
        // rebound nvme.
        assert_eq!(read(&t, "bus/pci/drivers/nvme/unbind"), ADDR);
        assert_eq!(read(&t, "bus/pci/drivers/nvme/bind"), ADDR);
        assert_eq!(
            read(&t, &format!("bus/pci/devices/{ADDR}/driver_override")),
            "\n"
        );
    }

    #[test]
    fn missing_device_or_driver_is_named() {
        let t = tree(None);
        let e = bind_to_vfio(t.path(), "0000:7f:00.0", SYSFS_TIMEOUT).unwrap_err();
        assert!(e.to_string().contains("no PCI device 0000:7f:00.0"), "{e}");
        std::fs::remove_dir_all(t.path().join("bus/pci/drivers/vfio-pci")).unwrap();
        let e = bind_to_vfio(t.path(), ADDR, SYSFS_TIMEOUT).unwrap_err();
        assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");
        assert_eq!(
            read(&t, &format!("bus/pci/devices/{ADDR}/driver_override")),
            "(null)\n",
            "nothing touched"
        );
    }

    #[test]
    fn write_errors_name_the_file() {
        let t = tree(None);
        let e = write(&t.path().join("no/such/file"), ADDR, "x", SYSFS_TIMEOUT).unwrap_err();
        assert!(e.to_string().contains("no/such/file"), "{e}");
        // A FIFO with no reader blocks the writer: the timeout reports it.
        let fifo = t.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = write(&fifo, ADDR, "x", Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, BindError::Hung { .. }), "{e}");
    }
}
