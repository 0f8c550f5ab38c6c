//! A Linux TAP interface as a [`NetBackend`].
//!
//! [`Tap::open`] attaches to `/dev/net/tun` in TAP mode with a virtio-net header on every
//! frame (`IFF_VNET_HDR`, 12 bytes: the `VERSION_1` header including `num_buffers`), without
//! the packet-information prefix (`IFF_NO_PI`), non-blocking and close-on-exec.
//!
//! If no interface of that name exists, the kernel creates one. ghost-vmm never makes it
//! persistent, so it disappears when the file descriptor closes, even if ghost-vmm crashes;
//! ghost-vmm brings it up. If a persistent TAP of that name exists (made by the user with
//! `ip tuntap add`, perhaps enslaved to a bridge), ghost-vmm attaches to it and leaves its
//! configuration alone. [`Tap::created`] says which case happened.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{offload_flags, NetBackend, NetError};

/// The character device of the TUN/TAP driver.
const TUN_PATH: &str = "/dev/net/tun";

/// The size of the virtio-net header on every frame the TAP reads or writes
/// (`struct virtio_net_hdr_v1`, with `num_buffers`).
const VNET_HDR_LEN: libc::c_int = 12;

/// A TAP interface opened by this process.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    created: bool,
}

impl Tap {
    /// Opens TAP interface `name`, creating it (non-persistent, up) if it does not exist.
    ///
    /// Errors name the interface and say what to do: [`NetError::InvalidName`],
    /// [`NetError::NoTunDevice`], [`NetError::Permission`], [`NetError::Busy`],
    /// [`NetError::NotTap`], or [`NetError::Ioctl`] for anything unexpected.
    pub fn open(name: &str) -> Result<Tap, NetError> {
        let ifr_name = ifreq_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => NetError::NoTunDevice {
                    name: name.to_owned(),
                },
                io::ErrorKind::PermissionDenied => NetError::Permission {
                    name: name.to_owned(),
                },
                _ => NetError::Ioctl {
                    name: name.to_owned(),
                    op: "opening /dev/net/tun",
                    source: e,
                },
            })?;

        let mut ifr = new_ifreq(ifr_name);
        ifr.ifr_ifru.ifru_flags =
            flags_to_short(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is and which
        // outlives the call; `file` is an open /dev/net/tun descriptor.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            let name = name.to_owned();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => NetError::Busy { name },
                Some(libc::EPERM) | Some(libc::EACCES) => NetError::Permission { name },
                // An existing interface of another kind (a bridge, a TUN, a multi-queue TAP).
                Some(libc::EINVAL) => NetError::NotTap { name },
                _ => NetError::Ioctl {
                    name,
                    op: "TUNSETIFF",
                    source: e,
                },
            });
        }

        let mut tap = Tap {
            file,
            name: name.to_owned(),
            created: false,
        };

        // A TAP that existed before and is not attached elsewhere is persistent (a
        // non-persistent one lives only while its creator holds it, and would have been
        // busy). So "not persistent" means the kernel created it just now for us. Asking the
        // kernel avoids the race of looking at /sys/class/net before TUNSETIFF.
        let mut ifr = new_ifreq([0; libc::IFNAMSIZ]);
        tap.ioctl_ptr("TUNGETIFF", libc::TUNGETIFF, &mut ifr)?;
        // SAFETY: TUNGETIFF filled `ifru_flags`; every bit pattern is a valid c_short.
        let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
        tap.created = flags & libc::IFF_PERSIST == 0;

        let mut hdr_len = VNET_HDR_LEN;
        tap.ioctl_ptr("TUNSETVNETHDRSZ", libc::TUNSETVNETHDRSZ, &mut hdr_len)?;
        // No offloads until the driver negotiates them (the activation sets them).
        tap.set_offload_flags(0)?;
        if tap.created {
            tap.bring_up()?;
        }
        Ok(tap)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this process created the interface (it then disappears when the `Tap` is
    /// dropped) rather than attaching to a persistent one.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Tells the kernel which offloads the reader accepts (`TUN_F_*` bits): with `TUN_F_CSUM`
    /// it may hand over frames with partial checksums, with `TUN_F_TSO4` etc. large segments.
    pub fn set_offload_flags(&self, flags: libc::c_uint) -> Result<(), NetError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long), reads no
        // memory; the descriptor is an attached TAP.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(self.ioctl_error("TUNSETOFFLOAD"));
        }
        Ok(())
    }

    /// `ioctl(fd, request, arg)` where `arg` points to a `T` the kernel reads or writes.
    fn ioctl_ptr<T>(
        &self,
        op: &'static str,
        request: libc::Ioctl,
        arg: &mut T,
    ) -> Result<(), NetError> {
        // SAFETY: callers pass the type each request expects (`ifreq` for TUNGETIFF, `int`
        // for TUNSETVNETHDRSZ); `arg` is valid for reads and writes for the whole call.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, arg as *mut T) };
        if ret < 0 {
            return Err(self.ioctl_error(op));
        }
        Ok(())
    }

    fn ioctl_error(&self, op: &'static str) -> NetError {
        NetError::Ioctl {
            name: self.name.clone(),
            op,
            source: io::Error::last_os_error(),
        }
    }

    /// Sets `IFF_UP` on the interface, through an `AF_INET` datagram socket.
    fn bring_up(&self) -> Result<(), NetError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(self.ioctl_error("socket(AF_INET)"));
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ifr = new_ifreq(ifreq_name(&self.name)?);
        // SAFETY: SIOCGIFFLAGS reads and writes one `struct ifreq`, valid for the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
            return Err(self.ioctl_error("SIOCGIFFLAGS"));
        }
        // SAFETY: SIOCGIFFLAGS filled `ifru_flags`; writing a c_short into the union is sound.
        unsafe { ifr.ifr_ifru.ifru_flags |= flags_to_short(libc::IFF_UP) };
        // SAFETY: SIOCSIFFLAGS reads one `struct ifreq`, valid for the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
            return Err(self.ioctl_error("SIOCSIFFLAGS (bringing the interface up)"));
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for Tap {
    fn set_offloads(&self, acked_features: u64) -> Result<(), NetError> {
        self.set_offload_flags(offload_flags(acked_features))
    }
}

/// The `IFF_*` interface flags the kernel takes in a C `short`; all of them fit.
fn flags_to_short(flags: libc::c_int) -> libc::c_short {
    // The flags used here are all below 0x8000.
    libc::c_short::try_from(flags).unwrap_or(0)
}

/// Checks `name` the way the kernel does (`dev_valid_name`) and returns it as `ifr_name`.
fn ifreq_name(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ], NetError> {
    let invalid = |reason: &'static str| NetError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(invalid("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("\".\" and \"..\" are reserved"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == b'%' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(invalid("it contains '/', ':', '%', NUL or whitespace"));
    }
    let mut out = [0; libc::IFNAMSIZ];
    for (dst, src) in out.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(out)
}

fn new_ifreq(name: [libc::c_char; libc::IFNAMSIZ]) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers, sockaddrs and
    // a pointer); all-zeroes is a valid value of each.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = name;
    ifr
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    /// Whether an interface named `name` exists (`/sys/class/net/<name>`).
    fn interface_exists(name: &str) -> bool {
        std::path::Path::new("/sys/class/net").join(name).exists()
    }

    /// A name no other test (or test run) uses: `gvt` + pid + counter, at most 15 bytes.
    fn unique_name(tag: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("gv{tag}{}{n}", std::process::id() % 100_000);
        assert!(name.len() < libc::IFNAMSIZ, "{name}");
        name
    }

    fn is_up(name: &str) -> bool {
        let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).unwrap();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        flags & 1 != 0
    }

    /// Makes a persistent TAP, as `ip tuntap add mode tap` would, and deletes it on drop.
    struct PersistentTap(String);

    impl PersistentTap {
        fn new(name: &str) -> Self {
            let tap = Tap::open(name).unwrap();
            // SAFETY: TUNSETPERSIST takes its argument by value.
            let ret =
                unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
            assert_eq!(ret, 0, "{}", io::Error::last_os_error());
            drop(tap);
            assert!(interface_exists(name));
            Self(name.to_owned())
        }
    }

    impl Drop for PersistentTap {
        fn drop(&mut self) {
            // Attach and clear the persist flag: the interface goes when this fd closes.
            if let Ok(tap) = Tap::open(&self.0) {
                // SAFETY: TUNSETPERSIST takes its argument by value.
                unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) };
            }
        }
    }

    fn tun_available() -> bool {
        // SAFETY: geteuid has no preconditions.
        std::path::Path::new(TUN_PATH).exists() && unsafe { libc::geteuid() } == 0
    }

    #[test]
    fn fresh_tap_is_created_up_and_removed_on_drop() {
        if !tun_available() {
            eprintln!("skipped: needs root and /dev/net/tun");
            return;
        }
        let name = unique_name("c");
        assert!(!interface_exists(&name));
        let tap = Tap::open(&name).unwrap();
        assert!(tap.created());
        assert_eq!(tap.name(), name);
        assert!(interface_exists(&name));
        assert!(is_up(&name));
        tap.set_offloads(u64::MAX).unwrap();
        tap.set_offloads(0).unwrap();
        drop(tap);
        assert!(!interface_exists(&name));
    }

    #[test]
    fn persistent_tap_is_attached_and_survives_drop() {
        if !tun_available() {
            eprintln!("skipped: needs root and /dev/net/tun");
            return;
        }
        let name = unique_name("p");
        let persistent = PersistentTap::new(&name);
        let was_up = is_up(&name);
        let tap = Tap::open(&name).unwrap();
        assert!(!tap.created());
        // Left as the user configured it.
        assert_eq!(is_up(&name), was_up);

        let err = Tap::open(&name).unwrap_err();
        assert!(matches!(err, NetError::Busy { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("tap {name} is in use by another process")
        );

        drop(tap);
        assert!(interface_exists(&name));
        drop(persistent);
        assert!(!interface_exists(&name));
    }

    #[test]
    fn second_open_of_a_created_tap_is_busy() {
        if !tun_available() {
            eprintln!("skipped: needs root and /dev/net/tun");
            return;
        }
        let name = unique_name("b");
        let tap = Tap::open(&name).unwrap();
        let err = Tap::open(&name).unwrap_err();
        assert!(matches!(err, NetError::Busy { .. }), "{err}");
        drop(tap);
        assert!(!interface_exists(&name));
    }

    #[test]
    fn existing_non_tap_interface_is_refused() {
        if !tun_available() {
            eprintln!("skipped: needs root and /dev/net/tun");
            return;
        }
        let err = Tap::open("lo").unwrap_err();
        assert!(matches!(err, NetError::NotTap { .. }), "{err}");
        assert!(err.to_string().contains("tap lo"), "{err}");
    }

    #[test]
    fn invalid_names_are_refused_before_touching_the_host() {
        for name in [
            "",
            "a-name-of-16-chr",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "tap%d",
        ] {
            let err = Tap::open(name).unwrap_err();
            assert!(
                matches!(err, NetError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
        assert!(ifreq_name("fifteen-chars-x").is_ok());
    }
}
