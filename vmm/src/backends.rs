//! Host resources behind the VM's devices: disk images (locked), TAP devices, and the
//! console socket (`serial.mode = "socket"`).
//!
//! They are opened once per `ghost-vmm run`, before the first boot, and shared by every
//! rebuild of the VM after a guest reboot: a reboot never drops a disk's lock (another VM
//! could grab the image in between) nor recreates a TAP (the host side's addresses and bridge
//! membership would be lost), nor the console socket (its scrollback and attached client
//! stay). They close when `run` returns, which removes a TAP ghost-vmm created and the
//! console socket.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use ghost_devices::virtio::block::{Block, DiskImage};
use ghost_devices::virtio::net::{Net, NetBackend, NetError, Tap};
use ghost_devices::virtio::VirtioDevice;

use crate::config::{SerialMode, VmConfig};
use crate::console::socket::SocketConsole;
use crate::VmmError;

/// The opened backends of one VM, in config order.
#[derive(Debug)]
pub(crate) struct Backends {
    disks: Vec<Arc<DiskImage>>,
    taps: Vec<Arc<Tap>>,
    console: Option<SocketConsole>,
}

/// A device model with the name its log lines and errors use (`disk[0]`, `net[1]`).
pub(crate) type NamedDevice = (String, Box<dyn VirtioDevice>);

/// A TAP shared between successive boots of the VM.
#[derive(Debug)]
struct SharedTap(Arc<Tap>);

impl AsRawFd for SharedTap {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl NetBackend for SharedTap {
    fn set_offloads(&self, acked_features: u64) -> Result<(), NetError> {
        self.0.set_offloads(acked_features)
    }
}

impl Backends {
    /// Opens every `[[disk]]` (taking its lock), every `[[net]]` TAP (creating it if
    /// missing) and, in socket mode, the console socket. On error, whatever was opened is
    /// closed again before returning.
    pub(crate) fn open(config: &VmConfig) -> Result<Self, VmmError> {
        let disks = Self::open_disks(config)?;
        let mut taps = Vec::with_capacity(config.net.len());
        for (index, net) in config.net.iter().enumerate() {
            let tap = Tap::open(&net.tap).map_err(|source| VmmError::Net { index, source })?;
            if tap.created() {
                log::info!("net[{index}]: created TAP {} (removed on exit)", net.tap);
            }
            taps.push(Arc::new(tap));
        }
        let console = match config.serial.mode {
            SerialMode::Socket => Some(SocketConsole::open(
                &config.vm.name,
                &config.vm.console_socket_path(),
                config.serial.path.as_deref(),
            )?),
            _ => None,
        };
        Ok(Self {
            disks,
            taps,
            console,
        })
    }

    /// The console socket, in `serial.mode = "socket"`.
    pub(crate) fn socket_console(&self) -> Option<&SocketConsole> {
        self.console.as_ref()
    }

    /// Opens and locks every `[[disk]]`, in order.
    pub(crate) fn open_disks(config: &VmConfig) -> Result<Vec<Arc<DiskImage>>, VmmError> {
        config
            .disk
            .iter()
            .enumerate()
            .map(|(index, disk)| {
                DiskImage::open(&disk.path, disk.readonly)
                    .map(Arc::new)
                    .map_err(|source| VmmError::Disk { index, source })
            })
            .collect()
    }

    /// Makes everything written to the writable disks durable (`fdatasync`); errors are
    /// logged. Called when the run ends, however it ends.
    pub(crate) fn flush_disks(&self) {
        for (index, disk) in self.disks.iter().enumerate() {
            if disk.readonly() {
                continue;
            }
            match disk.sync() {
                Ok(()) => log::info!("disk[{index}]: flushed {}", disk.path().display()),
                Err(e) => log::error!("disk[{index}]: cannot flush {}: {e}", disk.path().display()),
            }
        }
    }

    /// Fresh device models for one boot of the VM, with their names, in PCI slot order:
    /// disks first (so `[[disk]]` i is the guest's i-th virtio disk), then NICs.
    pub(crate) fn devices(&self, config: &VmConfig) -> Result<Vec<NamedDevice>, VmmError> {
        let mut devices: Vec<NamedDevice> = Vec::new();
        for (index, image) in self.disks.iter().enumerate() {
            let block = Block::new(image.clone(), disk_serial(&config.vm.name, index))
                .map_err(|source| VmmError::Disk { index, source })?;
            devices.push((format!("disk[{index}]"), Box::new(block)));
        }
        for (index, tap) in self.taps.iter().enumerate() {
            let mac = config.net[index].effective_mac(&config.vm.name, index);
            let net = Net::new(Box::new(SharedTap(tap.clone())), mac.bytes());
            devices.push((format!("net[{index}]"), Box::new(net)));
        }
        Ok(devices)
    }
}

/// The disk's serial number (virtio-blk GET_ID, at most 20 bytes): the VM name and the
/// disk's index, so `/dev/disk/by-id/virtio-<serial>` is stable across boots.
fn disk_serial(vm: &str, index: usize) -> String {
    let suffix = format!("-{index}");
    let keep = 20 - suffix.len();
    let mut name: String = vm.chars().filter(|c| c.is_ascii_graphic()).collect();
    while name.len() > keep {
        name.pop();
    }
    name + &suffix
}

#[cfg(test)]
mod tests {
    use super::disk_serial;

    #[test]
    fn serials_fit_virtio_blk_id() {
        assert_eq!(disk_serial("web", 0), "web-0");
        let long = disk_serial("a-very-long-vm-name-indeed", 12);
        assert_eq!(long.len(), 20);
        assert!(long.ends_with("-12"));
    }
}
